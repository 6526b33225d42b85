//! `binance-syncd conformance` (issue 23): the protocol's own test, run against the Python
//! SDK (with a strategy that sends every kind of message), against the `.so` host (with a C
//! plugin that calls every host function), and against a plugin written by hand from the
//! protocol page, first as written (it passes) and then broken in one way at a time: each
//! fault must be named by the check it breaks.

use crate::plugins::cc;
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

/// Runs the conformance command on `file`: its exit code and its report.
fn conformance(file: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_binance-syncd"))
        .arg("conformance")
        .arg(file)
        .env_remove("SYNCD_PLUGIN_STALL_S")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), report)
}

/// Every check of the report kept, none failed and none left unexercised: the plugin sent
/// every kind of message, so the side of the protocol it runs on was judged whole.
fn assert_whole_pass(code: i32, report: &str) {
    assert_eq!(code, 0, "{report}");
    assert!(report.contains(" 0 failed, 0 not exercised"), "{report}");
    let checks: Vec<&str> = report.lines().filter(|l| l.starts_with("  ")).collect();
    assert!(checks.len() >= 38, "every check ran: {report}");
    assert!(checks.iter().all(|l| l.starts_with("  ok  ")), "{report}");
    for needed in [
        "refuses protocol 2",
        "call start (a snapshot of 402 symbols",
        "call fill (replayed), seq 3",
        "call order, unresolved",
        "call book",
        "call trade",
        "BUSY is not retried in the call",
        "a refused intent is not sent again",
        "intent replace",
        "rules_of: asked for a traded symbol (answered its rules) and a symbol not traded",
        "log: levels 1, 2, 3, 4 used",
        "a new process goes on from the cursor",
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
fn a_file_that_is_no_plugin_is_refused_with_its_reason() {
    let dir = temp_dir("conformance-usage");
    let plain = dir.join("strategy.py");
    std::fs::write(&plain, "print('hi')\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_binance-syncd")).arg("conformance").arg(&plain).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a plugin: a program needs an execute bit (chmod 0755)"), "{err}");
}
