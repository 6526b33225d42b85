//! The sync engine through every fault the paper exchange can inject: each test makes fills
//! around the fault and grades the fill log against the exchange's ground truth.

use crate::sync::{assert_matches_truth, config, fast, fill_all, read_log, rest_buy, temp_dir, wait_lines};
use crate::util::{client, init_log, paper_with};
use binance_syncd::config::Config;
use binance_syncd::daemon::{Daemon, Tuning};
use binance_syncd::rest::RestClient;
use binance_syncd_paper::{PaperConfig, PaperExchange};
use serde_json::Value;
use std::time::{Duration, Instant};

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A paper exchange, a daemon on it and the grading; `tls.rs` runs the same rig over TLS.
pub struct Rig {
    pub ex: PaperExchange,
    pub cfg: Config,
    daemon: Option<Daemon>,
    pub rest: RestClient,
    orders: u64,
}

impl Rig {
    pub fn start(name: &str, adjust: impl FnOnce(&mut PaperConfig), tuning: Tuning) -> Rig {
        init_log();
        let ex = paper_with(adjust);
        let dir = temp_dir(name);
        let cfg = config(&ex, &dir);
        let daemon = Daemon::start(&cfg, &tuning).unwrap();
        let rest = client(&ex);
        let rig = Rig { ex, cfg, daemon: Some(daemon), rest, orders: 0 };
        rig.wait_sessions(1);
        rig
    }

    pub fn report(&self) -> Value {
        self.ex.report()
    }

    pub fn sessions(&self) -> Vec<Value> {
        self.report()["sessions"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `n` stream sessions have been opened and the last one is open.
    pub fn wait_sessions(&self, n: usize) {
        wait_until(&format!("stream session {n}"), Duration::from_secs(30), || {
            let s = self.sessions();
            s.len() >= n && s.last().is_some_and(|l| l["closed_ms"].is_null())
        });
    }

    /// One order, filled completely (in one or more trades).
    pub fn trade(&mut self, symbol: &str) {
        self.orders += 1;
        let id = rest_buy(&self.ex, &self.rest, symbol, "0.01", &format!("rig-{}", self.orders));
        fill_all(&self.ex, symbol, id);
    }

    pub fn trades(&self) -> usize {
        self.report()["trades"].as_array().map_or(0, Vec::len)
    }

    /// Waits for the daemon's stream to be up and a reconciliation pass to have ended: with a
    /// long `reconcile_up`, a fill made after that reaches the log through the stream (the
    /// pass the `Up` starts follows the one running then, if any, within milliseconds).
    pub fn wait_up_pass(&self) {
        let Some(m) = self.daemon.as_ref().map(|d| d.metrics().clone()) else { return };
        wait_until("the stream up and a reconciliation pass done", Duration::from_secs(10), || {
            m.stream_sessions.get() >= 1 && m.reconcile_passes.get() >= 1
        });
    }

    fn errors_with(&self, code: i64) -> usize {
        self.report()["errors"].as_array().map_or(0, |e| e.iter().filter(|x| x["code"] == code).count())
    }

    /// Waits for every trade to be logged, stops the daemon, grades the log.
    pub fn finish(mut self) -> Value {
        let expected = self.trades();
        let fills = wait_lines(&self.cfg.fill_log, expected, Duration::from_secs(30));
        if let Some(d) = self.daemon.take() {
            d.stop(Duration::from_secs(8));
        }
        let report = self.report();
        assert_matches_truth(&fills, &report);
        assert_eq!(report["http_418"], 0, "the daemon was banned");
        report
    }
}

#[test]
fn abrupt_drop_with_refused_connections_and_fills_in_the_gap() {
    let mut rig = Rig::start("drop", |_| {}, fast());
    rig.trade("BTCUSD");
    let dropped = Instant::now();
    rig.ex.fault("drop", &[("mode", "rst"), ("refuse_ms", "1500")]).unwrap();
    // The hub counts an event as delivered once it is queued to a connection, so wait until
    // the dropped connection has left: from then on no stream can carry a TRADE event.
    wait_until("the dropped session to close", Duration::from_secs(10), || {
        rig.sessions().first().is_some_and(|s| !s["closed_ms"].is_null())
    });
    let before_gap = rig.trades();
    rig.trade("BTCUSD");
    rig.trade("ETHUSD");
    // Fills made while connections are refused arrive over REST, before the stream is back.
    let expected = rig.trades();
    wait_lines(&rig.cfg.fill_log, expected, Duration::from_secs(10));
    assert_eq!(read_log(&rig.cfg.fill_log).len(), expected, "gap fills came by REST");
    // The source, not the count: the exchange says no stream carried the gap's TRADE events
    // (`streamed: false`), yet each is in the log, so reconciliation over REST wrote it.
    let report = rig.report();
    let gap = &report["trades"].as_array().unwrap()[before_gap..];
    let logged: Vec<(String, u64)> = read_log(&rig.cfg.fill_log).into_iter().map(|f| (f.symbol, f.trade_id)).collect();
    assert!(!gap.is_empty(), "no trades in the gap");
    for t in gap {
        assert_eq!(t["streamed"], false, "a gap trade went out on a stream, so the test proves nothing: {t}");
        let id = (t["symbol"].as_str().unwrap().to_string(), t["id"].as_u64().unwrap());
        assert!(logged.contains(&id), "gap trade {id:?} is not in the log");
    }
    rig.wait_sessions(2);
    let back = dropped.elapsed();
    // Refused for 1.5 s, backoff capped at 1 s in this tuning: back well within 10 s.
    assert!(back < Duration::from_secs(10), "stream back after {back:?}");
    rig.trade("ETHUSD");
    rig.ex.fault("drop", &[("mode", "fin")]).unwrap();
    rig.trade("BTCUSD");
    rig.wait_sessions(3);
    rig.finish();
}

#[test]
fn silent_stream_is_replaced_within_20_s_with_default_settings() {
    // Production liveness settings: own ping after 5 s idle, give up after 15 s of nothing.
    let default_cfg = Config::from_lookup(
        |k| match k {
            "SYNCD_SYMBOLS" => Some("BTCUSD".into()),
            _ => None,
        },
        binance_syncd::config::Needs { credentials: false, symbols: true },
    )
    .unwrap();
    let tuning = Tuning { reconcile_up: Duration::from_secs(2), ..Tuning::from_config(&default_cfg) };
    let mut rig = Rig::start("silent", |_| {}, tuning);
    rig.trade("BTCUSD");
    let silenced = Instant::now();
    rig.ex.fault("silent", &[]).unwrap();
    rig.trade("ETHUSD");
    rig.wait_sessions(2);
    let replaced = silenced.elapsed();
    assert!(replaced <= Duration::from_secs(20), "silent stream replaced after {replaced:?}");
    assert!(replaced >= Duration::from_secs(5), "replaced after {replaced:?}: too eager to be true silence detection");
    rig.trade("BTCUSD");
    rig.finish();
}

#[test]
fn listen_key_expiry_gets_a_new_key() {
    let mut rig = Rig::start("expiry", |_| {}, fast());
    rig.trade("BTCUSD");
    rig.ex.fault("expire_key", &[]).unwrap();
    rig.trade("BTCUSD"); // no stream can carry these: the key is gone
    rig.wait_sessions(2);
    rig.trade("ETHUSD");
    let report = rig.finish();
    let whats: Vec<&str> =
        report["listen_keys"].as_array().unwrap().iter().filter_map(|k| k["what"].as_str()).collect();
    let expired = whats.iter().position(|w| *w == "expired").expect("key expired");
    assert!(whats[expired..].contains(&"created"), "a new key after expiry: {whats:?}");
}

#[test]
fn the_24h_cut_is_survived() {
    let mut rig = Rig::start("cut", |_| {}, fast());
    rig.trade("BTCUSD");
    rig.ex.fault("cut", &[]).unwrap();
    rig.trade("ETHUSD");
    rig.wait_sessions(2);
    rig.trade("BTCUSD");
    rig.finish();
}

#[test]
fn a_real_24h_cut_by_connection_age() {
    // 24 h compressed 20000-fold is 4.3 s: the server closes the connection by age.
    let mut rig = Rig::start(
        "age",
        |c| {
            c.time_scale = 20_000;
            c.ping_interval = Duration::from_secs(20_000); // 1 s scaled
            c.pong_timeout = Duration::from_secs(60_000);
            c.engine.listen_key_ttl = Duration::from_secs(3600 * 20_000); // keys still live an hour
        },
        fast(),
    );
    rig.trade("BTCUSD");
    rig.wait_sessions(2);
    let first = &rig.sessions()[0];
    assert_eq!(first["close_reason"], "24h cut", "{first}");
    rig.trade("ETHUSD");
    rig.finish();
}

#[test]
fn duplicated_trade_events_are_logged_once() {
    let mut rig = Rig::start("dupes", |_| {}, fast());
    rig.ex.fault("duplicate_trade", &[("count", "20")]).unwrap();
    for _ in 0..3 {
        rig.trade("BTCUSD");
    }
    // The duplicates were sent: each fill of the three trades used one (count 0 adds none and
    // says what is left).
    let left = rig.ex.fault("duplicate_trade", &[("count", "0")]).unwrap()["pending"].as_u64().unwrap_or(20);
    assert!(left <= 17, "only {} duplicate TRADE events were sent", 20 - left);
    rig.finish();
}

#[test]
fn garbage_frames_are_skipped_and_the_stream_stays_up() {
    let mut rig = Rig::start("garbage", |_| {}, fast());
    rig.trade("BTCUSD");
    let reply = rig.ex.fault("garbage", &[("kind", "all")]).unwrap();
    assert_eq!(reply["frames"], 4, "all four garbage frames went to the daemon's connection");
    rig.trade("ETHUSD");
    let expected = rig.trades();
    wait_lines(&rig.cfg.fill_log, expected, Duration::from_secs(10));
    assert_eq!(rig.sessions().len(), 1, "garbage must not cost the connection");
    rig.finish();
}

#[test]
fn a_429_burst_during_reconciliation_is_waited_out_without_a_ban() {
    let rig = Rig::start("burst", |_| {}, fast());
    rig.ex.fault("drop_events", &[("count", "1000")]).unwrap(); // only REST can deliver now
    let btc = rest_buy(&rig.ex, &rig.rest, "BTCUSD", "0.01", "burst-1");
    let eth = rest_buy(&rig.ex, &rig.rest, "ETHUSD", "0.01", "burst-2");
    // The burst hits whoever asks next: the daemon's reconciliation (fills come from faults,
    // which go around HTTP).
    rig.ex.fault("burst_429", &[("count", "3"), ("retry_after", "1")]).unwrap();
    fill_all(&rig.ex, "BTCUSD", btc);
    fill_all(&rig.ex, "ETHUSD", eth);
    let report = rig.finish();
    crate::util::assert_fired(&report, "rest/burst_429");
    assert!(report["http_429"].as_u64().unwrap() >= 1, "the burst did not hit the daemon");
}

#[test]
fn clock_jumps_both_ways_cost_a_handful_of_minus_1021() {
    let mut rig = Rig::start("clock", |_| {}, fast());
    rig.ex.fault("drop_events", &[("count", "100000")]).unwrap(); // fills by signed REST only
    rig.ex.fault("clock_jump", &[("ms", "30000")]).unwrap();
    rig.trade("BTCUSD");
    let expected = rig.trades();
    wait_lines(&rig.cfg.fill_log, expected, Duration::from_secs(15));
    let after_forward = rig.errors_with(-1021);
    rig.ex.fault("clock_jump", &[("ms", "-60000")]).unwrap();
    rig.trade("ETHUSD");
    let expected = rig.trades();
    wait_lines(&rig.cfg.fill_log, expected, Duration::from_secs(15));
    let total = rig.errors_with(-1021);
    assert!((1..=4).contains(&after_forward), "{after_forward} x -1021 after the forward jump");
    assert!((1..=4).contains(&(total - after_forward)), "{} x -1021 after the backward jump", total - after_forward);
    rig.finish();
}

#[test]
fn keepalive_keeps_a_short_lived_key_alive() {
    let mut rig = Rig::start("keepalive", |c| c.engine.listen_key_ttl = Duration::from_secs(3), fast());
    // The daemon under test renews every SYNCD_KEEPALIVE_S; this one was started with the
    // default 1800 s, so restart it with 1 s.
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    let mut cfg = rig.cfg.clone();
    cfg.keepalive = Duration::from_secs(1);
    rig.daemon = Some(Daemon::start(&cfg, &fast()).unwrap());
    let sessions_before = rig.sessions().len();
    rig.wait_sessions(sessions_before + 1);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        rig.trade("BTCUSD");
        std::thread::sleep(Duration::from_millis(500));
    }
    let report = rig.finish();
    let whats: Vec<&str> =
        report["listen_keys"].as_array().unwrap().iter().filter_map(|k| k["what"].as_str()).collect();
    assert!(!whats.contains(&"expired"), "the key lapsed: {whats:?}");
    assert!(whats.iter().filter(|w| **w == "extended").count() >= 5, "{whats:?}");
}

#[test]
fn a_key_that_silently_stops_is_caught_by_the_keepalive() {
    let mut rig = Rig::start("forget", |_| {}, fast());
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    let mut cfg = rig.cfg.clone();
    cfg.keepalive = Duration::from_secs(1);
    rig.daemon = Some(Daemon::start(&cfg, &fast()).unwrap());
    let before = rig.sessions().len();
    rig.wait_sessions(before + 1);
    rig.trade("BTCUSD");
    // The key vanishes; the open connection still answers pings but will never carry an event.
    rig.ex.fault("forget_key", &[]).unwrap();
    rig.trade("ETHUSD");
    rig.wait_sessions(before + 2);
    rig.trade("BTCUSD");
    let report = rig.finish();
    let whats: Vec<&str> =
        report["listen_keys"].as_array().unwrap().iter().filter_map(|k| k["what"].as_str()).collect();
    let forgotten = whats.iter().position(|w| *w == "forgotten").unwrap();
    assert!(whats[forgotten..].contains(&"keepalive of unknown key"), "{whats:?}");
    assert!(whats[forgotten..].contains(&"created"), "{whats:?}");
}

#[test]
fn lost_state_is_rebuilt_from_the_log_without_skipping_a_gap() {
    init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("rebuild");
    let cfg = config(&ex, &dir);
    let rest = client(&ex);
    for i in 0..3 {
        let id = rest_buy(&ex, &rest, "BTCUSD", "0.01", &format!("gap-{i}"));
        crate::sync::fill_whole(&ex, "BTCUSD", id);
    }
    // The log a previous run left: the first and last fills, the middle one missed (its event
    // was lost), and no state file.
    let trades = ex.report()["trades"].as_array().unwrap().clone();
    assert_eq!(trades.len(), 3);
    let line = |t: &Value| {
        serde_json::json!({
            "symbol": t["symbol"], "trade_id": t["id"], "order_id": t["order_id"],
            "client_order_id": t["client_order_id"], "side": t["side"], "price": t["price"], "qty": t["qty"],
            "quote_qty": t["quote_qty"], "commission": t["commission"], "commission_asset": t["commission_asset"],
            "maker": t["maker"], "time": t["time"],
        })
        .to_string()
    };
    std::fs::write(&cfg.fill_log, format!("{}\n{}\n", line(&trades[0]), line(&trades[2]))).unwrap();
    let daemon = Daemon::start(&cfg, &fast()).unwrap();
    let fills = wait_lines(&cfg.fill_log, 3, Duration::from_secs(15));
    daemon.stop(Duration::from_secs(8));
    assert_matches_truth(&fills, &ex.report());
    assert_eq!(fills[2].trade_id, trades[1]["id"].as_u64().unwrap(), "the gap fill was appended");
}

#[test]
fn server_shutdown_event_moves_to_a_new_connection() {
    let mut rig = Rig::start("shutdown", |_| {}, fast());
    rig.trade("BTCUSD");
    let reply = rig.ex.fault("server_shutdown", &[]).unwrap();
    assert_eq!(reply["connections"], 1);
    rig.wait_sessions(2);
    wait_until("the old session to close", Duration::from_secs(10), || !rig.sessions()[0]["closed_ms"].is_null());
    let s = rig.sessions();
    // On `serverShutdown`, the new connection opens before the old one is dropped, so no event falls between.
    assert!(s[1]["opened_ms"].as_i64() <= s[0]["closed_ms"].as_i64(), "{s:?}");
    rig.trade("ETHUSD");
    rig.finish();
}

#[test]
fn a_time_cursor_days_old_walks_forward_in_windows_and_finds_every_fill() {
    init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("timecursor");
    let cfg = config(&ex, &dir);
    let rest = client(&ex);
    for i in 0..2 {
        let id = rest_buy(&ex, &rest, "BTCUSD", "0.01", &format!("old-{i}"));
        crate::sync::fill_whole(&ex, "BTCUSD", id);
    }
    // A first start that never saw a trade, two days ago: the state holds only a time.
    let two_days_ago = ex.shared().clock.now_ms() - 48 * 3_600_000;
    std::fs::create_dir_all(&cfg.state_dir).unwrap();
    std::fs::write(
        cfg.state_dir.join("cursors.json"),
        serde_json::json!({"version": 1, "next_from_id": {}, "since_ms": {"BTCUSD": two_days_ago, "ETHUSD": two_days_ago}})
            .to_string(),
    )
    .unwrap();
    let daemon = Daemon::start(&cfg, &fast()).unwrap();
    let fills = wait_lines(&cfg.fill_log, 2, Duration::from_secs(15));
    daemon.stop(Duration::from_secs(8));
    assert_matches_truth(&fills, &ex.report());
    let too_long = ex.report()["errors"].as_array().unwrap().iter().filter(|e| e["code"] == -1127).count();
    assert_eq!(too_long, 0, "a window longer than 24 h was asked for");
}
