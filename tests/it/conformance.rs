//! `binance-syncd conformance` (issue 23): the protocol's own test, run against the Python
//! SDK (with a strategy that sends every kind of message), against the `.so` host (with a C
//! plugin that calls every host function), and against a plugin written by hand from the
//! protocol page, first as written (it passes) and then broken in one way at a time: each
//! fault must be named by the check it breaks.

use crate::plugins::{build_plugin, cc};
use crate::sync::temp_dir;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn write_program(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs the conformance command on `file` with `args`, its temporary folder in a fresh
/// `TMPDIR`: its exit code, its report (stdout), its stderr and what it left in that `TMPDIR`.
fn conformance_with(file: &Path, args: &[&str]) -> (i32, String, String, Vec<String>) {
    let tmp = temp_dir(&format!("conformance-tmp-{}", file.file_name().unwrap().to_string_lossy()));
    let out = Command::new(env!("CARGO_BIN_EXE_binance-syncd"))
        .arg("conformance")
        .arg(file)
        .args(args)
        .env_remove("SYNCD_PLUGIN_STALL_S")
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let left =
        std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), report, err, left)
}

/// [`conformance_with`] without options, checking it left nothing behind.
fn conformance(file: &Path) -> (i32, String) {
    let (code, report, _, left) = conformance_with(file, &[]);
    assert!(left.is_empty(), "its temporary folder stayed: {left:?}");
    (code, report)
}

/// Every check of the report kept, none failed and none left unexercised: the plugin sent
/// every kind of message, so the side of the protocol it runs on was judged whole.
fn assert_whole_pass(code: i32, report: &str) {
    assert_eq!(code, 0, "{report}");
    assert!(report.contains(" 0 failed, 0 not exercised"), "{report}");
    let checks: Vec<&str> = report.lines().filter(|l| l.starts_with("  ")).collect();
    assert!(checks.len() >= 36, "every check ran: {report}");
    assert!(checks.iter().all(|l| l.starts_with("  ok  ")), "{report}");
    for needed in [
        "refuses protocol 2",
        "call start (a snapshot of 402 symbols",
        "call fill (another client's order), seq 2",
        "call order, unresolved",
        "call book",
        "call trade",
        "BUSY is not retried in the call",
        "a refused intent is not sent again",
        "intent replace",
        "rules_of: asked for a traded symbol (answered its rules) and a symbol not traded",
        "log: levels 1, 2, 3, 4 used",
        "a new process goes on from the cursor: started again; acknowledged fill 2 again (replayed",
        "call order, placed (resolving an unknown, resolved true)",
        "exits at the end of its channel, without stop",
    ] {
        assert!(report.contains(needed), "{needed:?} missing from: {report}");
    }
}

#[test]
fn the_python_sdk_keeps_every_rule_of_the_protocol() {
    let dir = temp_dir("conformance-sdk");
    std::fs::copy(repo("plugins/python/binance_syncd.py"), dir.join("binance_syncd.py")).unwrap();
    let probe = dir.join("probe.py");
    write_program(&probe, &std::fs::read_to_string(repo("tests/conformance/probe.py")).unwrap());
    let (code, report) = conformance(&probe);
    assert_whole_pass(code, &report);
    assert!(report.contains("version \"probe 1\", abi_minor 5, books true, trades true"), "{report}");
}

#[test]
fn the_so_host_keeps_every_rule_of_the_protocol_with_a_c_plugin() {
    let source = std::fs::read_to_string(repo("tests/conformance/probe.c")).unwrap();
    let so = cc("conformance_probe", &source);
    let (code, report) = conformance(&so);
    assert_whole_pass(code, &report);
    assert!(report.contains("a shared library, through the plugin host"), "{report}");
    assert!(report.contains("version \"c probe 1\", abi_minor 5"), "{report}");
}

#[test]
fn the_rust_grid_maker_keeps_every_rule_it_exercises() {
    // Built on the Rust SDK, through the .so host: a strategy, not a probe, so some messages
    // (replace, rules_of) are not exercised; nothing fails.
    let so = build_plugin("grid-maker", "1");
    let (code, report) = conformance(&so);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains(" 0 failed,"), "{report}");
    for ran in [
        "  ok    answers hello with ready",
        "  ok    intent place:",
        "  ok    BUSY is not retried in the call:",
        "  ok    a new process goes on from the cursor",
    ] {
        assert!(report.contains(ran), "{ran:?} missing from: {report}");
    }
}

#[test]
fn a_plugin_written_from_the_protocol_page_passes_and_each_way_of_breaking_it_is_named() {
    let dir = temp_dir("conformance-raw");
    let raw = std::fs::read_to_string(repo("tests/conformance/raw.py")).unwrap();
    let install = |fault: &str| {
        let path = dir.join(format!("raw_{fault}.py"));
        write_program(&path, &raw.replace("@FAULT@", fault));
        path
    };
    let (code, report) = conformance(&install("none"));
    assert_eq!(code, 0, "{report}");
    assert!(report.contains(" 0 failed,"), "{report}");
    for ran in [
        "  ok    refuses protocol 2: answered refused",
        "  ok    BUSY is not retried in the call: answered BUSY in a tick call, then 0 more",
        "  ok    a refused intent is not sent again",
        "  ok    exits at the end of its channel, without stop",
    ] {
        assert!(report.contains(ran), "{ran:?} missing from: {report}");
    }

    // Each fault, the check it must fail and words of why.
    for (fault, check, why) in [
        ("wrong_seq", "call fill (its own order), seq 1", "done with seq 2, the call's is 1"),
        ("stdout", "call fill (its own order), seq 1", "text written to stdout"),
        ("no_refusal", "refuses protocol 2", "answered ready (proto 1) to protocol 2"),
        ("float_price", "call tick", "invalid type: floating point"),
        ("chatty", "silent between calls", "after its done of a tick call, unasked"),
        ("linger", "exits at the end of its channel, after stop", "still running 2 s after the end of its stdin"),
        ("busy_loop", "BUSY is not retried in the call", "50 more intents after BUSY"),
        ("retry", "a refused intent is not sent again", "1 refused intents sent again unchanged"),
        ("bad_level", "call tick", "a log of level 9"),
        ("dup_key", "call tick", "duplicate field `seq`"),
        ("zero_price", "call tick", "with price \"0\": not above zero"),
    ] {
        let (code, report) = conformance(&install(fault));
        assert_eq!(code, 1, "{fault}: {report}");
        let line = format!("  FAIL  {check}: ");
        let failed: Vec<&str> = report.lines().filter(|l| l.starts_with("  FAIL")).collect();
        assert!(
            failed.iter().any(|l| l.starts_with(&line) && l.contains(why)),
            "{fault}: no FAIL of {check:?} saying {why:?} in:\n{report}"
        );
    }
}

#[test]
fn a_plugin_that_stops_reading_fails_at_its_call_within_the_stall_limit_and_nothing_it_started_outlives_it() {
    let dir = temp_dir("conformance-deaf");
    let raw = std::fs::read_to_string(repo("tests/conformance/raw.py")).unwrap();
    let deaf = dir.join("deaf.py");
    write_program(&deaf, &raw.replace("@FAULT@", "deaf"));
    let (code, report, _, left) = conformance_with(&deaf, &["--stall-s", "0.5"]);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("  FAIL  call price: no done within 0.5 s"), "{report}");
    assert!(left.is_empty(), "{left:?}");

    // A plugin that starts a process and leaves it: its process group goes with it.
    let forks = dir.join("forks.py");
    write_program(&forks, &raw.replace("@FAULT@", "forks"));
    let (code, report, err, _) = conformance_with(&forks, &[]);
    assert_eq!(code, 0, "{report}");
    let pids: Vec<u32> =
        err.lines().filter_map(|l| l.split("started pid ").nth(1)).map(|p| p.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "the first process and the restarted one each started one: {err}");
    for pid in pids {
        let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(state.is_empty() || state.contains("State:\tZ"), "sleep {pid} outlived its plugin: {state}");
    }
}

#[test]
fn a_plugin_of_minor_2_is_never_judged_on_busy_and_its_settings_are_read_as_run_reads_them() {
    let dir = temp_dir("conformance-minor2");
    let raw = std::fs::read_to_string(repo("tests/conformance/raw.py")).unwrap();
    let old = dir.join("old.py");
    write_program(&old, &raw.replace("@FAULT@", "minor2"));
    // Four intents a tick: with BUSY judged as for minor 3, that would fail.
    let (code, report) = conformance(&old);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("  --    BUSY is not retried in the call: not sent: below minor 3 (it declared 2)"),
        "{report}"
    );
    assert!(report.contains("abi_minor 2"), "{report}");

    // A fractional stall limit as SYNCD_PLUGIN_STALL_S takes it; settings run would refuse.
    let (code, report, _, _) = conformance_with(&old, &["--stall-s", "2.5"]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("calls within the stall limit (2.5 s)"), "{report}");
    let (code, _, err, left) = conformance_with(&old, &["--stall-s", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("from 0.001 to 86400"), "{err}");
    assert!(left.is_empty(), "{left:?}");
    let conf = dir.join("bad.conf");
    std::fs::write(&conf, "max_pending = 0\n").unwrap();
    let (code, _, err, _) = conformance_with(&old, &["--conf", conf.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("max_pending"), "{err}");
}

#[test]
fn a_file_that_is_no_plugin_is_refused_with_its_reason() {
    let dir = temp_dir("conformance-usage");
    let plain = dir.join("strategy.py");
    std::fs::write(&plain, "print('hi')\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_binance-syncd")).arg("conformance").arg(&plain).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a plugin: a program needs an execute bit (chmod 0755)"), "{err}");
}
