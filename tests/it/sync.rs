//! The sync engine against an in-process paper exchange: every fill on the account lands in the
//! fill log exactly once, graded against the exchange's own ground truth (`/paper/report`).

use crate::util::{client, paper_with};
use binance_syncd::config::{Config, Needs};
use binance_syncd::daemon::{Daemon, Tuning};
use binance_syncd::filllog::FillRecord;
use binance_syncd::rest::RestClient;
use binance_syncd_paper::{PaperExchange, DEMO_API_KEY, DEMO_API_SECRET};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("syncd-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn config(ex: &PaperExchange, dir: &Path) -> Config {
    let mut vars: HashMap<&str, String> = [
        ("BINANCE_API_KEY", DEMO_API_KEY.to_string()),
        ("BINANCE_API_SECRET", DEMO_API_SECRET.to_string()),
        ("SYNCD_REST_URL", ex.rest_url()),
        ("SYNCD_WS_URL", ex.ws_url()),
        ("SYNCD_SYMBOLS", "BTCUSD,ETHUSD".to_string()),
        ("SYNCD_STATE_DIR", dir.join("state").display().to_string()),
        ("SYNCD_FILL_LOG", dir.join("fills.jsonl").display().to_string()),
    ]
    .into_iter()
    .collect();
    if let Some(ca) = crate::util::trust_file(ex, dir) {
        vars.insert("SYNCD_CA_FILE", ca.display().to_string());
    }
    Config::from_lookup(|k| vars.get(k).cloned(), Needs { credentials: true, symbols: true }).unwrap()
}

pub fn fast() -> Tuning {
    Tuning {
        ws_ping_every: Duration::from_millis(500),
        ws_silence_timeout: Duration::from_millis(2000),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(1000),
        reconcile_up: Duration::from_secs(2),
        reconcile_down: Duration::from_millis(500),
        rules_refresh: Duration::from_secs(3),
        price_poll: Duration::from_millis(500),
        avg_price_poll: Duration::from_secs(2),
        book_refresh: Duration::from_secs(30),
    }
}

/// Every line of the log, each a fill record: for a log no one is writing (a fragment anywhere
/// fails the parse).
pub fn read_log(path: &Path) -> Vec<FillRecord> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_slice(l.as_bytes()).expect("every line is a fill record")).collect()
}

/// The whole lines of a log being written. A last line without its newline is left out, as
/// `tail -f` and the daemon's own reader leave it: a write in progress, or one being rolled back
/// after a full disk cut it short. A fragment anywhere else fails the parse.
pub fn read_whole_lines(path: &Path) -> Vec<FillRecord> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    whole.lines().map(|l| serde_json::from_str(l).expect("every line is a fill record")).collect()
}

/// Waits until the log holds `n` lines (or the timeout passes; the caller's asserts then fail).
pub fn wait_lines(path: &Path, n: usize, timeout: Duration) -> Vec<FillRecord> {
    let end = Instant::now() + timeout;
    loop {
        let fills = read_whole_lines(path);
        if fills.len() >= n || Instant::now() >= end {
            return fills;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log holds each of the exchange's trades exactly once, with the exchange's values.
pub fn assert_matches_truth(fills: &[FillRecord], report: &Value) {
    let trades = report["trades"].as_array().unwrap();
    let mut seen = HashMap::new();
    for f in fills {
        *seen.entry((f.symbol.clone(), f.trade_id)).or_insert(0) += 1;
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "duplicate lines: {dupes:?}");
    let missing: Vec<&Value> = trades
        .iter()
        .filter(|t| {
            !seen.contains_key(&(t["symbol"].as_str().unwrap_or("").to_string(), t["id"].as_u64().unwrap_or(0)))
        })
        .collect();
    assert!(missing.is_empty(), "{} of {} trades missing from the log: {missing:?}", missing.len(), trades.len());
    assert_eq!(fills.len(), trades.len(), "log has {} lines, exchange made {} trades", fills.len(), trades.len());
    for t in trades {
        let key = (t["symbol"].as_str().unwrap().to_string(), t["id"].as_u64().unwrap());
        let f =
            fills.iter().find(|f| (f.symbol.clone(), f.trade_id) == key).unwrap_or_else(|| panic!("missing {key:?}"));
        assert_eq!(f.order_id, t["order_id"].as_u64().unwrap());
        assert_eq!(f.client_order_id, t["client_order_id"].as_str().unwrap());
        assert_eq!(f.side.as_str(), t["side"].as_str().unwrap());
        assert_eq!(f.price, t["price"].as_str().unwrap().parse().unwrap());
        assert_eq!(f.qty, t["qty"].as_str().unwrap().parse().unwrap());
        assert_eq!(f.commission, t["commission"].as_str().unwrap().parse().unwrap());
        assert_eq!(f.maker, t["maker"].as_bool().unwrap());
    }
}

/// Places a resting LIMIT_MAKER BUY a few ticks under the bid; returns its order id.
pub fn rest_buy(ex: &PaperExchange, _rest: &RestClient, symbol: &str, qty: &str, id: &str) -> u64 {
    let (bid, _) = ex.shared().engine.lock().unwrap().touch(symbol).unwrap();
    let price = bid.checked_sub("0.05".parse().unwrap()).unwrap().to_string();
    let v = crate::util::place_maker(ex, symbol, "BUY", qty, &price, id).unwrap();
    v["orderId"].as_u64().unwrap()
}

/// Fills an order completely in one trade.
pub fn fill_whole(ex: &PaperExchange, symbol: &str, order_id: u64) {
    ex.fault("fill", &[("symbol", symbol), ("order_id", &order_id.to_string()), ("whole", "true")]).unwrap();
}

/// Fills an order completely (the paper market fills in random parts).
pub fn fill_all(ex: &PaperExchange, symbol: &str, order_id: u64) {
    for _ in 0..30 {
        ex.fault("fill", &[("symbol", symbol), ("order_id", &order_id.to_string())]).unwrap();
    }
}

#[test]
fn clean_run_logs_every_fill_once() {
    crate::util::init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("clean");
    let cfg = config(&ex, &dir);
    let daemon = Daemon::start(&cfg, &fast()).unwrap();
    let rest = client(&ex);
    for i in 0..5 {
        let symbol = if i % 2 == 0 { "BTCUSD" } else { "ETHUSD" };
        let id = rest_buy(&ex, &rest, symbol, "0.01", &format!("clean-{i}"));
        fill_all(&ex, symbol, id);
    }
    let expected = ex.report()["trades"].as_array().unwrap().len();
    assert!(expected >= 5);
    let fills = wait_lines(&cfg.fill_log, expected, Duration::from_secs(15));
    daemon.stop(Duration::from_secs(8));
    assert_matches_truth(&fills, &ex.report());
}
