//! What plugins see of the market (issue 22, ABI 1.5): books and public trades from the
//! daemon's market view reach isolated plugins through `on_book` and `on_trade`, books in
//! update-id order and conflated for a slow plugin (what it skipped counted exactly), trades
//! in order; a plugin that exports neither subscribes to nothing.
//!
//! The paper exchange does not serve the public streams here, so the market stream is pointed
//! at a port nobody listens on (`SYNCD_MARKET_WS_URL`) and the test publishes into the
//! daemon's [`MarketView`] feed itself, as the `market` thread does.

use crate::plugins::{build_plugin, cc, wait_until, Rig};
use crate::sync::temp_dir;
use binance_syncd::decimal::Decimal;
use binance_syncd::market::{BookUpdate, Feed, TradeUpdate};
use std::path::Path;
use std::time::Duration;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A book of `symbol` at `id` whose best bid is `100.{id}0` and best ask one above, 20 levels.
fn book(symbol: &str, id: u64) -> BookUpdate {
    let level = |base: i64, i: i64| {
        (Decimal::from_int(base + i).checked_add(d(&format!("0.{id:02}0"))).unwrap(), d("0.00000001"))
    };
    BookUpdate {
        symbol: symbol.into(),
        update_id: id,
        event_time_ms: 1_700_000_000_000 + id as i64,
        received_ms: 1_700_000_000_001 + id as i64,
        bids: (0..20).map(|i| level(100, -i)).collect(),
        asks: (0..20).map(|i| level(101, i)).collect(),
    }
}

fn start(name: &str, plugins: &[(&str, &Path, &str)]) -> Rig {
    Rig::start_with(name, plugins, |cfg| {
        // Nothing listens there: only this test's books reach the feed.
        cfg.market_ws_url = "ws://127.0.0.1:9".into();
        // The held plugin sits in one callback for as long as the test needs.
        cfg.plugin_stall = Duration::from_secs(30);
        cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
}

fn feed(rig: &Rig) -> &Feed {
    rig.daemon.as_ref().and_then(|d| d.market()).expect("the market view").feed()
}

/// The `book SYMBOL ID SKIPPED NBIDS NASKS BID ASK` lines of a record.
fn books(rig: &Rig, name: &str) -> Vec<Vec<String>> {
    rig.record(name)
        .iter()
        .filter_map(|l| l.strip_prefix("book ").map(|r| r.split(' ').map(String::from).collect()))
        .collect()
}

fn wait_book(rig: &Rig, name: &str, id: u64) {
    wait_until(&format!("{name} gets book {id}"), Duration::from_secs(30), || {
        books(rig, name).iter().any(|b| b[0] == "BTCUSD" && b[1] == id.to_string())
    });
}

#[test]
fn an_isolated_plugin_gets_books_in_update_id_order_conflated_when_slow() {
    let so = build_plugin("test-plugin", "1");
    let dir = temp_dir("market-feed-books");
    let gate = dir.join("gate");
    let fast = format!("record = {}\nmarket = record\nbook_depth = 3\n", dir.join("fast.rec").display());
    let slow =
        format!("record = {}\nmarket = record\nbook_hold = {}\n", dir.join("slow.rec").display(), gate.display());
    let mut rig = start("market-feed-books", &[("fast", &so, &fast), ("slow", &so, &slow)]);
    rig.dir = dir;
    for name in ["fast", "slow"] {
        rig.wait_status(name, "running", |s| s.state == "running" && s.pid != 0);
    }
    // Book 1: each gets it (as it comes, or as the last book when it subscribes), and the
    // slow one then holds in its on_book until the gate opens.
    feed(&rig).book(book("BTCUSD", 1));
    wait_book(&rig, "fast", 1);
    wait_book(&rig, "slow", 1);
    for id in 2..=100 {
        feed(&rig).book(book("BTCUSD", id));
    }
    feed(&rig).book(book("ETHUSD", 7));
    wait_book(&rig, "fast", 100);
    std::fs::write(&gate, b"").unwrap();
    wait_book(&rig, "slow", 100);

    // The slow one: book 1, then only the newest of each symbol, with what it skipped.
    let slow = books(&rig, "slow");
    let got: Vec<(&str, &str, &str)> = slow.iter().map(|b| (b[0].as_str(), b[1].as_str(), b[2].as_str())).collect();
    assert_eq!(got, vec![("BTCUSD", "1", "0"), ("BTCUSD", "100", "98"), ("ETHUSD", "7", "0")], "{slow:?}");
    let status = rig.wait_status("slow", "its counts", |s| s.books == 3);
    assert_eq!(status.books_skipped, 98);
    // Default depth 5 a side, exact decimal strings as published.
    assert_eq!(&slow[1][3..], ["5", "5", "100.1000", "101.1000"]);

    // The fast one: strictly increasing ids, and every book either delivered or counted.
    let fast: Vec<(u64, u64)> = books(&rig, "fast")
        .iter()
        .filter(|b| b[0] == "BTCUSD")
        .map(|b| (b[1].parse().unwrap(), b[2].parse().unwrap()))
        .collect();
    assert!(fast.windows(2).all(|w| w[0].0 < w[1].0), "out of order: {fast:?}");
    let delivered = fast.len() as u64;
    let skipped: u64 = fast.iter().map(|(_, s)| s).sum();
    assert_eq!(delivered + skipped, 100, "{fast:?}");
    assert!(books(&rig, "fast").iter().all(|b| b[3] == "3" && b[4] == "3"), "book_depth = 3");
    assert_eq!(rig.status("fast").books_skipped, skipped);

    // /metrics says the same.
    let addr = rig.daemon.as_ref().and_then(|d| d.metrics_addr()).expect("metrics served");
    let (_, text) = crate::metrics::get(addr, "/metrics");
    assert_eq!(crate::metrics::value(&text, "syncd_plugin_books_skipped_total{plugin=\"slow\"}"), Some(98.0));
    assert_eq!(crate::metrics::value(&text, "syncd_plugin_books_total{plugin=\"slow\"}"), Some(3.0));
}

#[test]
fn an_isolated_plugin_gets_public_trades_in_order_and_one_without_the_callbacks_subscribes_to_nothing() {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/c-example/example.c")).unwrap();
    let c = cc("c_example", &source);
    let dir = temp_dir("market-feed-trades");
    let conf = format!("record = {}\n", dir.join("c.rec").display());
    let mut rig = start("market-feed-trades", &[("c_example", &c, &conf)]);
    rig.dir = dir;
    rig.wait_status("c_example", "running", |s| s.state == "running");
    assert!(!feed(&rig).wants_books() && !feed(&rig).wants_trades(), "no on_book, no on_trade: no subscription");

    let so = build_plugin("test-plugin", "1");
    let rec = format!("record = {}\nmarket = record\n", rig.dir.join("rec.rec").display());
    std::fs::write(rig.plugins.join("rec.conf"), rec).unwrap();
    crate::plugins::install(&so, &rig.plugins, "rec");
    rig.wait_status("rec", "running", |s| s.state == "running" && s.pid != 0);
    wait_until("its subscription", Duration::from_secs(30), || feed(&rig).wants_trades());
    for id in 1..=5u64 {
        feed(&rig).trade(TradeUpdate {
            symbol: "BTCUSD".into(),
            trade_id: id,
            price: d(&format!("30000.{id}0")),
            qty: d("0.00100"),
            time_ms: 1_700_000_000_000,
            event_time_ms: 1_700_000_000_001,
            received_ms: 1_700_000_000_002,
            buyer_maker: id % 2 == 0,
        });
    }
    let trades = || -> Vec<String> { rig.record("rec").into_iter().filter(|l| l.starts_with("trade ")).collect() };
    wait_until("five trades", Duration::from_secs(30), || trades().len() == 5);
    let want: Vec<String> =
        (1..=5).map(|id| format!("trade BTCUSD {id} 30000.{id}0 0.00100 {} 0", u8::from(id % 2 == 0))).collect();
    assert_eq!(trades(), want);
    assert_eq!(rig.wait_status("rec", "its count", |s| s.trades == 5).trades_dropped, 0);

    // Its file removed: its subscription goes with it.
    std::fs::remove_file(rig.plugins.join("rec.so")).unwrap();
    rig.wait_status("rec", "stopped", |s| s.state == "stopped");
    wait_until("no subscription left", Duration::from_secs(30), || {
        !feed(&rig).wants_books() && !feed(&rig).wants_trades()
    });
}
