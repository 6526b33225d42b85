//! Reconciliation never holds up the stream: a fill pushed on the stream reaches the fill log
//! while a reconciliation request is still unanswered (issue 14: the fill-log writer does no
//! network I/O).

use crate::faults::wait_until;
use crate::sync::{assert_matches_truth, config, fast, fill_whole, rest_buy, temp_dir, wait_lines};
use crate::util::{client, init_log, paper_with};
use binance_syncd::config::Config;
use binance_syncd::daemon::{Daemon, Tuning};
use binance_syncd::filllog::FillRecord;
use binance_syncd_paper::engine::{NewOrder, Origin};
use binance_syncd_paper::order::{OrderType, Side};
use binance_syncd_paper::PaperExchange;
use std::time::Duration;

#[test]
fn a_stream_fill_is_logged_while_a_my_trades_request_is_held() {
    let ex = paper_with(|_| {});
    // Longer than every wait below, so that only `release_rest` ends the held request.
    let (daemon, cfg) = start(&ex, "held", |c| c.http_timeout = Duration::from_secs(60));
    let rest = client(&ex);
    let order = rest_buy(&ex, &rest, "BTCUSD", "0.01", "held-1");
    ex.fault("hold_rest", &[("path", "/api/v3/myTrades"), ("ms", "60000")]).unwrap();
    wait_until("a held myTrades request", Duration::from_secs(15), || ex.report()["rest_held"].as_u64() >= Some(1));
    fill_whole(&ex, "BTCUSD", order);
    let fills = wait_lines(&cfg.fill_log, 1, Duration::from_secs(20));
    let held = ex.report()["rest_held"].as_u64().unwrap_or(0);
    ex.fault("release_rest", &[]).unwrap();
    assert!(held >= 1, "the myTrades request was no longer held when the log was read");
    assert_eq!(fills.len(), 1, "the stream fill waited behind the held myTrades request");
    // Once the held page arrives it carries the same trade: still logged exactly once.
    let report = ex.report();
    wait_until("the held pass to finish", Duration::from_secs(15), || ex.report()["rest_held"] == 0);
    daemon.stop(Duration::from_secs(8));
    assert_matches_truth(&crate::sync::read_log(&cfg.fill_log), &report);
}

#[test]
fn shutdown_leaves_a_held_reconciliation_request_behind_and_keeps_its_deadline() {
    let ex = paper_with(|_| {});
    let (daemon, cfg) = start(&ex, "held-stop", |c| c.http_timeout = Duration::from_secs(60));
    let rest = client(&ex);
    let order = rest_buy(&ex, &rest, "BTCUSD", "0.01", "held-stop-1");
    ex.fault("hold_rest", &[("path", "/api/v3/myTrades"), ("ms", "60000")]).unwrap();
    wait_until("a held myTrades request", Duration::from_secs(15), || ex.report()["rest_held"].as_u64() >= Some(1));
    fill_whole(&ex, "BTCUSD", order);
    wait_lines(&cfg.fill_log, 1, Duration::from_secs(20));
    let deadline = Duration::from_secs(2);
    let started = std::time::Instant::now();
    daemon.stop(deadline);
    let took = started.elapsed();
    // The request is still held: stop did not wait for it, and the log was flushed anyway.
    assert!(ex.report()["rest_held"].as_u64() >= Some(1), "the held request ended before stop returned");
    // The deadline is the contract of `Daemon::stop` (SIGTERM → exit within 10 s), not a speed.
    assert!(took < deadline + Duration::from_secs(2), "stop took {took:?} with a {deadline:?} deadline");
    assert_matches_truth(&crate::sync::read_log(&cfg.fill_log), &ex.report());
}

fn wait_session(ex: &PaperExchange) {
    wait_until("the stream session", Duration::from_secs(30), || {
        ex.report()["sessions"].as_array().is_some_and(|s| s.iter().any(|x| x["closed_ms"].is_null()))
    });
}

/// A daemon on `ex` reconciling every 200 ms, its config as `adjust` leaves it, once its stream
/// is up.
fn start(ex: &PaperExchange, name: &str, adjust: impl FnOnce(&mut Config)) -> (Daemon, Config) {
    init_log();
    let dir = temp_dir(name);
    let mut cfg = config(ex, &dir);
    adjust(&mut cfg);
    let tuning = Tuning { reconcile_up: Duration::from_millis(200), ..fast() };
    let daemon = Daemon::start(&cfg, &tuning).unwrap();
    wait_session(ex);
    (daemon, cfg)
}

/// Places and fills one small LIMIT_MAKER BUY in the paper engine itself (no HTTP, so
/// thousands take seconds); the exchange's stream events and trade records are as for any
/// order, but with `drop_trade` no stream gets the TRADE report. Returns the trade id.
fn engine_trade(ex: &PaperExchange, symbol: &str, client_id: &str, drop_trade: bool) -> u64 {
    let shared = ex.shared();
    let now = shared.clock.now_ms();
    let mut e = shared.engine.lock().unwrap();
    let (bid, _) = e.touch(symbol).unwrap();
    let req = NewOrder {
        symbol: symbol.into(),
        side: Side::Buy,
        order_type: OrderType::LimitMaker,
        time_in_force: None,
        quantity: Some("0.01".parse().unwrap()),
        quote_order_qty: None,
        price: Some(bid.checked_sub("0.05".parse().unwrap()).unwrap()),
        new_client_order_id: Some(client_id.into()),
        resp_type: None,
        stp_mode: None,
        test: false,
    };
    let order_id = e.new_order(req, now, Origin::Api).unwrap()["orderId"].as_u64().unwrap();
    if drop_trade {
        // The order's NEW report went out; its TRADE report is the next event.
        e.faults.drop_events += 1;
    }
    assert_eq!(e.fill_orders(symbol, now, Some(Some(order_id)), true), 1);
    e.trades().last().unwrap().id
}

fn count(fills: &[FillRecord], symbol: &str, trade_id: u64) -> usize {
    fills.iter().filter(|f| f.symbol == symbol && f.trade_id == trade_id).count()
}

/// Issue 19: a stream fill dropped while REST is out (a held `myTrades` request stands for a
/// long ban), followed by 10,001 other fills of its symbol, is still logged once REST runs.
#[test]
fn a_dropped_stream_fill_followed_by_10_001_other_fills_of_its_symbol_is_still_logged_once_rest_runs() {
    let ex = paper_with(|_| {});
    let (daemon, cfg) = start(&ex, "dropped-10001", |c| {
        c.http_timeout = Duration::from_secs(120);
        c.fsync = binance_syncd::config::FsyncPolicy::Never;
    });
    ex.fault("quiesce", &[]).unwrap();
    ex.fault("deposit", &[("asset", "USD"), ("amount", "100000000")]).unwrap();
    // One fill REST has read: the cursor is a trade id.
    let first = engine_trade(&ex, "BTCUSD", "d-first", false);
    let cursors = cfg.state_dir.join("cursors.json");
    wait_until("the cursor past the first fill", Duration::from_secs(20), || {
        std::fs::read_to_string(&cursors).is_ok_and(|t| t.contains(&format!("\"BTCUSD\": {}", first + 1)))
    });
    ex.fault("hold_rest", &[("path", "/api/v3/myTrades"), ("ms", "120000")]).unwrap();
    wait_until("a held myTrades request", Duration::from_secs(15), || ex.report()["rest_held"].as_u64() >= Some(1));
    let dropped = engine_trade(&ex, "BTCUSD", "d-dropped", true);
    let later = 10_001;
    for i in 0..later {
        engine_trade(&ex, "BTCUSD", &format!("d-{i}"), false);
    }
    let fills = wait_lines(&cfg.fill_log, 1 + later, Duration::from_secs(120));
    assert_eq!(fills.len(), 1 + later, "the later fills did not all come by the stream");
    assert_eq!(count(&fills, "BTCUSD", dropped), 0, "the dropped fill came by the stream");
    ex.fault("release_rest", &[]).unwrap();
    let fills = wait_lines(&cfg.fill_log, 2 + later, Duration::from_secs(60));
    daemon.stop(Duration::from_secs(8));
    assert_eq!(count(&fills, "BTCUSD", dropped), 1, "the dropped fill was taken as logged and never came");
    assert_matches_truth(&crate::sync::read_log(&cfg.fill_log), &ex.report());
}

/// Issue 19: a `myTrades` answer with a row of another symbol, one with quantity 0 and one with
/// trade id `u64::MAX` (the `bad_trades` fault): each refused and counted once, none logged, and
/// the cursor intact, so a later fill the stream drops still comes by REST.
#[test]
fn a_my_trades_row_of_another_symbol_a_zero_quantity_and_trade_id_u64_max_are_refused_and_counted() {
    let ex = paper_with(|_| {});
    let (daemon, cfg) = start(&ex, "bad-rows", |_| {});
    let rest = client(&ex);
    ex.fault("quiesce", &[]).unwrap();
    let first = rest_buy(&ex, &rest, "BTCUSD", "0.01", "bad-1");
    fill_whole(&ex, "BTCUSD", first);
    wait_lines(&cfg.fill_log, 1, Duration::from_secs(20));
    let metrics = daemon.metrics().clone();
    let refused = |reason: &str| metrics.fills_refused.get(&["rest", reason]);
    ex.fault("bad_trades", &[("symbol", "BTCUSD")]).unwrap();
    wait_until("the three rows refused", Duration::from_secs(20), || {
        refused("wrong_symbol") == 1 && refused("qty") == 1 && refused("trade_id") == 1
    });
    let second = rest_buy(&ex, &rest, "BTCUSD", "0.01", "bad-2");
    ex.fault("drop_events", &[("count", "1")]).unwrap();
    fill_whole(&ex, "BTCUSD", second);
    let fills = wait_lines(&cfg.fill_log, 2, Duration::from_secs(20));
    daemon.stop(Duration::from_secs(8));
    crate::util::assert_fired(&ex.report(), "drop_events");
    assert_eq!(fills.len(), 2, "the dropped fill did not come by REST: {fills:?}");
    assert_matches_truth(&crate::sync::read_log(&cfg.fill_log), &ex.report());
    for reason in ["wrong_symbol", "qty", "trade_id"] {
        assert_eq!(refused(reason), 1, "{reason}");
    }
}

/// Issue 19: a rotated file others could write (0666), or one of another user's (as root:
/// uid 65534), with 10,001 lines of huge trade ids, is ignored: a real fill is still logged,
/// numbered 1.
#[test]
fn a_forged_rotated_file_cannot_make_a_real_fill_vanish() {
    use std::os::unix::fs::PermissionsExt;
    init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("forged-rotated");
    let cfg = config(&ex, &dir);
    let forged = |first: u64| -> String {
        (0..10_001u64)
            .map(|i| {
                format!(
                    "{{\"symbol\":\"BTCUSD\",\"trade_id\":{},\"order_id\":1,\"client_order_id\":\"\",\"side\":\"BUY\",\
                     \"price\":\"1.00\",\"qty\":\"1.00\",\"quote_qty\":\"1.00\",\"commission\":\"0\",\
                     \"commission_asset\":\"\",\"maker\":true,\"time\":1,\"seq\":{}}}\n",
                    first + i,
                    i + 1
                )
            })
            .collect()
    };
    let open_to_all = dir.join("fills.jsonl.1");
    std::fs::write(&open_to_all, forged(1 << 50)).unwrap();
    std::fs::set_permissions(&open_to_all, std::fs::Permissions::from_mode(0o666)).unwrap();
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if root.unwrap_or(false) {
        let other = dir.join("fills.jsonl.2");
        std::fs::write(&other, forged(1 << 51)).unwrap();
        std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
    } else {
        println!("SKIPPED the other-owner case: needs root to chown a file to uid 65534");
    }
    let daemon = Daemon::start(&cfg, &fast()).unwrap();
    let rest = client(&ex);
    let order = rest_buy(&ex, &rest, "BTCUSD", "0.01", "forged-1");
    fill_whole(&ex, "BTCUSD", order);
    let fills = wait_lines(&cfg.fill_log, 1, Duration::from_secs(20));
    daemon.stop(Duration::from_secs(8));
    assert_eq!(fills.len(), 1, "the real fill vanished");
    assert_eq!(fills[0].seq, 1, "the forged file's numbering was taken up");
    assert_matches_truth(&crate::sync::read_log(&cfg.fill_log), &ex.report());
}
