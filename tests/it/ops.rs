//! Operations (issue 9): the systemd notify datagrams from a real daemon process, and log
//! rotation by rename + SIGHUP while fills stream in.

use crate::process::{configure, signal, sigterm, wait_exit};
use crate::sync::{assert_matches_truth, read_log, temp_dir, wait_lines};
use crate::util::{client, paper_with};
use binance_syncd::filllog::FillRecord;
use binance_syncd::paper::{PaperExchange, DEMO_API_KEY};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn run_daemon(ex: &PaperExchange, dir: &Path, log_name: &str, extra: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(dir.join(log_name)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
    cmd.arg("run");
    configure(&mut cmd, ex, dir, DEMO_API_KEY, Stdio::from(log), "info");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn binance-syncd")
}

fn wait_for_session(ex: &PaperExchange) {
    let end = Instant::now() + Duration::from_secs(10);
    while ex.report()["sessions"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < end, "the daemon never connected its stream");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut child: Child, dir: &Path, log_name: &str) {
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    let log = std::fs::read_to_string(dir.join(log_name)).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("no exit within 10 s of SIGTERM; log:\n{log}"));
    assert!(status.success(), "{status:?}\n{log}");
}

#[test]
fn systemd_gets_ready_watchdog_and_stopping_datagrams() {
    let ex = paper_with(|_| {});
    let dir = temp_dir("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let child = run_daemon(
        &ex,
        &dir,
        "daemon.log",
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "400000")],
    );
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 1024];
    let mut receive = |got: &mut Vec<String>| {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    let end = Instant::now() + Duration::from_secs(15);
    let mut sessions_at_ready = None;
    while Instant::now() < end {
        receive(&mut got);
        if sessions_at_ready.is_none() && got.iter().any(|m| m.starts_with("READY=1")) {
            sessions_at_ready = Some(ex.report()["sessions"].as_array().unwrap().len());
        }
        let beats = got.iter().filter(|m| m.starts_with("WATCHDOG=1")).count();
        if sessions_at_ready.is_some() && beats >= 3 {
            break;
        }
    }
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    assert!(sessions_at_ready.is_some_and(|n| n > 0), "no READY=1 after the stream was up: {got:?}\n{}", log());
    let beats: Vec<String> = got.iter().filter(|m| m.starts_with("WATCHDOG=1")).cloned().collect();
    assert!(beats.len() >= 3, "watchdog pings: {got:?}");
    assert!(beats.iter().any(|m| m.contains("\nSTATUS=stream up")), "a status line comes with the pings: {got:?}");
    sigterm(&child);
    let end = Instant::now() + Duration::from_secs(10);
    while !got.iter().any(|m| m.starts_with("STOPPING=1")) && Instant::now() < end {
        receive(&mut got);
    }
    assert!(got.iter().any(|m| m.starts_with("STOPPING=1")), "no STOPPING=1 after SIGTERM: {got:?}");
    let mut child = child;
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", log());
    println!("notify: {} datagrams, {} watchdog pings; first: {:?}", got.len(), beats.len(), got.first());
}

/// Every line of every file parses (no line split across files), and together they hold each
/// trade once, numbered 1..=n without a gap in file order.
fn assert_rotated_logs(files: &[&Path], ex: &PaperExchange) -> Vec<FillRecord> {
    let all: Vec<FillRecord> = files.iter().flat_map(|f| read_log(f)).collect();
    assert_matches_truth(&all, &ex.report());
    let seqs: Vec<u64> = all.iter().map(|f| f.seq).collect();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(seqs, expected, "seq goes on across the files, in order");
    all
}

#[test]
fn sighup_mid_stream_rotates_the_fill_log_without_loss_or_repeat_and_seq_survives_a_restart() {
    let ex = paper_with(|_| {});
    let dir = temp_dir("rotate");
    let (live, first, second) = (dir.join("fills.jsonl"), dir.join("fills.jsonl.1"), dir.join("fills.jsonl.2"));
    let child = run_daemon(&ex, &dir, "daemon.log", &[]);
    wait_for_session(&ex);
    // Fills keep coming from another thread while the log is renamed and the daemon told.
    std::thread::scope(|scope| {
        let feeder = scope.spawn(|| {
            let rest = client(&ex);
            for i in 0..40 {
                let symbol = if i % 2 == 0 { "BTCUSD" } else { "ETHUSD" };
                let id = crate::sync::rest_buy(&ex, &rest, symbol, "0.01", &format!("rot-{i}"));
                crate::sync::fill_whole(&ex, symbol, id);
                std::thread::sleep(Duration::from_millis(15));
            }
        });
        wait_lines(&live, 10, Duration::from_secs(10));
        std::fs::rename(&live, &first).unwrap();
        signal(&child, "HUP");
        feeder.join().unwrap();
    });
    let total = ex.report()["trades"].as_array().unwrap().len();
    assert!(total >= 40);
    let end = Instant::now() + Duration::from_secs(15);
    while read_log(&first).len() + read_log(&live).len() < total && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (old, new) = (read_log(&first).len(), read_log(&live).len());
    assert!(old >= 10 && new > 0, "old file {old} lines, new file {new}: the rotation did not happen mid-stream");
    assert_rotated_logs(&[&first, &live], &ex);
    println!("rotation: {old} lines in the old file, {new} in the new one");

    // Rotated again and stopped before the new file's first line: the next run numbers on.
    std::fs::rename(&live, &second).unwrap();
    signal(&child, "HUP");
    let end = Instant::now() + Duration::from_secs(5);
    while !live.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(live.exists(), "SIGHUP did not create a new file at the path");
    stop(child, &dir, "daemon.log");
    let child = run_daemon(&ex, &dir, "daemon2.log", &[]);
    let rest = client(&ex);
    let id = crate::sync::rest_buy(&ex, &rest, "BTCUSD", "0.01", "rot-after");
    crate::sync::fill_whole(&ex, "BTCUSD", id);
    let after = wait_lines(&live, 1, Duration::from_secs(15));
    // A reconciliation pass or two more: a fill of an older file must not come back.
    std::thread::sleep(Duration::from_millis(2500));
    stop(child, &dir, "daemon2.log");
    assert_eq!(after.first().map(|f| f.seq), Some(total as u64 + 1), "seq after a restart on an empty file");
    let all = assert_rotated_logs(&[&first, &second, &live], &ex);
    assert_eq!(all.len(), total + 1);
}
