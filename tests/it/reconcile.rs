//! Reconciliation never holds up the stream: a fill pushed on the stream reaches the fill log
//! while a reconciliation request is still unanswered (issue 14: the fill-log writer does no
//! network I/O).

use crate::faults::wait_until;
use crate::sync::{assert_matches_truth, config, fast, fill_whole, rest_buy, temp_dir, wait_lines};
use crate::util::{client, init_log, paper_with};
use binance_syncd::daemon::{Daemon, Tuning};
use std::time::Duration;

#[test]
fn a_stream_fill_is_logged_while_a_my_trades_request_is_held() {
    init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("held");
    let mut cfg = config(&ex, &dir);
    // Longer than every wait below, so that only `release_rest` ends the held request.
    cfg.http_timeout = Duration::from_secs(60);
    let tuning = Tuning { reconcile_up: Duration::from_millis(200), ..fast() };
    let daemon = Daemon::start(&cfg, &tuning).unwrap();
    let rest = client(&ex);
    wait_until("the stream session", Duration::from_secs(30), || {
        ex.report()["sessions"].as_array().is_some_and(|s| s.iter().any(|x| x["closed_ms"].is_null()))
    });
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
    init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("held-stop");
    let mut cfg = config(&ex, &dir);
    cfg.http_timeout = Duration::from_secs(60);
    let tuning = Tuning { reconcile_up: Duration::from_millis(200), ..fast() };
    let daemon = Daemon::start(&cfg, &tuning).unwrap();
    let rest = client(&ex);
    wait_until("the stream session", Duration::from_secs(30), || {
        ex.report()["sessions"].as_array().is_some_and(|s| s.iter().any(|x| x["closed_ms"].is_null()))
    });
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
