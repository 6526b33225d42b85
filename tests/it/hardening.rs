//! Issue 19, the daemon as a process: one daemon per state directory, clear text only on
//! loopback, no secret within reach of a plugin or a child, file modes whatever the umask.

use crate::process::{configure, sigterm, wait_exit};
use crate::sync::{assert_matches_truth, fill_whole, read_log, rest_buy, temp_dir, wait_lines};
use crate::util::{client, paper_with, Killed};
use binance_syncd::lock::LockAnyway;
use binance_syncd_paper::{PaperExchange, DEMO_API_KEY, DEMO_API_SECRET};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn spawn(ex: &PaperExchange, dir: &Path, stderr: Stdio, adjust: impl FnOnce(&mut Command)) -> Killed {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
    cmd.arg("run");
    configure(&mut cmd, ex, dir, DEMO_API_KEY, stderr, "info");
    adjust(&mut cmd);
    Killed(cmd.spawn().expect("spawn binance-syncd"))
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Killed) -> String {
    let mut err = String::new();
    if let Some(pipe) = child.stderr.as_mut() {
        let _ = std::io::Read::read_to_string(pipe, &mut err);
    }
    err
}

fn live_key(ex: &PaperExchange) -> Option<String> {
    ex.shared().engine.lock_anyway().current_key()
}

#[test]
fn a_second_daemon_on_the_same_state_dir_exits_2_at_once_and_the_first_keeps_its_key_and_fills() {
    let ex = paper_with(|_| {});
    let dir = temp_dir("twice");
    let first_log = std::fs::File::create(dir.join("first.log")).unwrap();
    let mut first = spawn(&ex, &dir, Stdio::from(first_log), |_| {});
    wait_for("the first daemon's stream", Duration::from_secs(15), || {
        !ex.report()["sessions"].as_array().unwrap().is_empty()
    });
    let key = live_key(&ex).expect("the first daemon's listen key");
    let rest = client(&ex);
    let id = rest_buy(&ex, &rest, "BTCUSD", "0.01", "twice-1");
    fill_whole(&ex, "BTCUSD", id);
    wait_lines(&dir.join("fills.jsonl"), 1, Duration::from_secs(10));

    let started = Instant::now();
    let mut second = spawn(&ex, &dir, Stdio::piped(), |_| {});
    let status = wait_exit(&mut second, Duration::from_secs(1));
    if status.is_none() {
        // Its stderr ends only with it.
        let _ = second.kill();
    }
    let err = stderr_of(&mut second);
    let status = status.unwrap_or_else(|| panic!("the second daemon still runs after 1 s; stderr:\n{err}"));
    println!("second daemon exited in {:?}", started.elapsed());
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&dir.join("state").display().to_string()), "names the directory: {err}");
    assert!(err.contains(&format!("pid {}", first.id())), "names the holder's pid: {err}");

    // The first one goes on as if nothing happened: same listen key, every fill once.
    let id = rest_buy(&ex, &rest, "BTCUSD", "0.02", "twice-2");
    fill_whole(&ex, "BTCUSD", id);
    wait_lines(&dir.join("fills.jsonl"), 2, Duration::from_secs(10));
    assert_eq!(live_key(&ex).as_deref(), Some(key.as_str()), "the first daemon's listen key was replaced or deleted");
    let closed = ex.report()["listen_keys"].as_array().unwrap().iter().filter(|k| k["what"] == "closed").count();
    assert_eq!(closed, 0, "a listen key was deleted: {}", ex.report()["listen_keys"]);
    sigterm(&first);
    assert_eq!(wait_exit(&mut first, Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
    let fills = read_log(&dir.join("fills.jsonl"));
    assert_eq!(fills.len(), 2, "{fills:?}");
    assert_matches_truth(&fills, &ex.report());
    // The lock went with the process: a new daemon starts on the directory.
    let mut third = spawn(&ex, &dir, Stdio::piped(), |_| {});
    assert!(wait_exit(&mut third, Duration::from_secs(2)).is_none(), "a dead holder's lock blocked a start");
}

/// A port on this machine that `0.0.0.0` reaches: a host that is not loopback by name, so the
/// daemon must refuse it, yet no packet can leave the machine if it did not.
fn local_listener() -> std::net::TcpListener {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

fn connections(l: &std::net::TcpListener, within: Duration) -> usize {
    let end = Instant::now() + within;
    let mut n = 0;
    while Instant::now() < end {
        match l.accept() {
            Ok(_) => n += 1,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    n
}

#[test]
fn clear_text_to_a_host_other_than_loopback_exits_2_and_sends_nothing() {
    let ex = paper_with(|_| {});
    let dir = temp_dir("plaintext");
    let listener = local_listener();
    let url = format!("http://0.0.0.0:{}", listener.local_addr().unwrap().port());
    let mut child = spawn(&ex, &dir, Stdio::piped(), |c| {
        c.env("SYNCD_REST_URL", &url);
    });
    let status = wait_exit(&mut child, Duration::from_secs(5)).expect("exits by itself");
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("SYNCD_REST_URL") && err.contains("clear text"), "{err}");
    assert_eq!(connections(&listener, Duration::from_millis(300)), 0, "something was sent");

    let ws = format!("ws://0.0.0.0:{}", listener.local_addr().unwrap().port());
    let mut child = spawn(&ex, &dir, Stdio::piped(), |c| {
        c.env("SYNCD_WS_URL", &ws);
    });
    let status = wait_exit(&mut child, Duration::from_secs(5)).expect("exits by itself");
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("SYNCD_WS_URL"), "{err}");
    assert_eq!(connections(&listener, Duration::from_millis(300)), 0, "something was sent");

    // The same URL with the documented override does connect: the listener would have seen it.
    let _allowed = spawn(&ex, &dir, Stdio::null(), |c| {
        c.env("SYNCD_REST_URL", &url).env("SYNCD_ALLOW_PLAINTEXT", "true");
    });
    assert!(
        connections(&listener, Duration::from_secs(3)) > 0,
        "the override did not connect: the test proves nothing"
    );
}

#[test]
fn a_plugin_and_its_children_find_no_secret_and_the_daemon_is_not_dumpable() {
    let ex = paper_with(|_| {});
    let dir = temp_dir("secrets");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let record = dir.join("probe.txt");
    let so = crate::plugins::build_plugin("test-plugin", "probe");
    std::fs::write(plugins.join("probe.conf"), format!("record = {}\nprobe = true\n", record.display())).unwrap();
    crate::plugins::install(&so, &plugins, "probe");
    let webhook_token = "hooks-token-4f2a9c";
    let hook = format!("http://127.0.0.1:9/{webhook_token}");
    let mut child = spawn(&ex, &dir, Stdio::piped(), |c| {
        c.env("SYNCD_PLUGIN_DIR", &plugins).env("SYNCD_PLUGIN_SCAN_S", "0.2").env("SYNCD_ALERT_WEBHOOK", &hook);
    });
    wait_for("the probe's record", Duration::from_secs(20), || {
        std::fs::read_to_string(&record).is_ok_and(|t| t.contains("dumpable"))
    });
    let text = std::fs::read_to_string(&record).unwrap();
    // The probe works: it sees the rest of the environment, through getenv and a child.
    assert!(text.lines().any(|l| l.starts_with("getenv PATH /")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("child-env ") && l.contains("PATH=")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("self-environ ") && l.contains("PATH=")), "{text}");
    for secret in [DEMO_API_SECRET, DEMO_API_KEY, webhook_token] {
        assert!(!text.contains(secret), "a plugin found {}...:\n{text}", &secret[..6]);
    }
    assert!(text.lines().any(|l| l == "dumpable 0"), "the plugin's process is dumpable:\n{text}");
    // No capability, even when the daemon (and so the child, at exec) runs as root.
    let caps = text.lines().find(|l| l.starts_with("caps ")).unwrap_or_else(|| panic!("no caps line:\n{text}"));
    for set in ["CapEff:0000000000000000", "CapPrm:0000000000000000", "CapBnd:0000000000000000"] {
        assert!(caps.contains(set), "the plugin's process holds capabilities ({caps}); wanted {set}");
    }
    // It ran in a child of the daemon (issue 21), not in the daemon itself ...
    let daemon = child.id();
    assert!(text.lines().any(|l| l.starts_with("pid ") && l.ends_with(&format!(" ppid {daemon}"))), "{text}");
    assert!(!text.lines().any(|l| l.starts_with(&format!("pid {daemon} "))), "the plugin ran in the daemon:\n{text}");
    // ... holding no descriptor of the daemon's: its channel, stdio, its own record file.
    let fds: Vec<&str> = text.lines().filter(|l| l.starts_with("fd ")).collect();
    assert_eq!(fds.iter().filter(|l| l.contains("socket:")).count(), 1, "one socket, its channel: {fds:#?}");
    assert!(!fds.iter().any(|l| l.contains("fills") || l.contains(".lock")), "{fds:#?}");
    assert!(fds.len() <= 6, "0, 1, 2, the channel, the record, the listing: {fds:#?}");
    // And the kernel's view of the daemon's environment from outside holds no secret either
    // (readable here only because the test may run as root; otherwise it is refused).
    if let Ok(environ) = std::fs::read(format!("/proc/{}/environ", child.id())) {
        let environ = String::from_utf8_lossy(&environ);
        for secret in [DEMO_API_SECRET, DEMO_API_KEY, webhook_token] {
            assert!(!environ.contains(secret), "/proc/PID/environ shows {}...", &secret[..6]);
        }
    }
    sigterm(&child);
    let _ = wait_exit(&mut child, Duration::from_secs(10));
}

#[test]
fn state_files_and_the_fill_log_get_their_modes_whatever_the_umask() {
    let ex = paper_with(|_| {});
    let dir = temp_dir("modes");
    let mut child = spawn(&ex, &dir, Stdio::null(), |_| {});
    let rest = client(&ex);
    let id = rest_buy(&ex, &rest, "BTCUSD", "0.01", "modes-1");
    fill_whole(&ex, "BTCUSD", id);
    wait_lines(&dir.join("fills.jsonl"), 1, Duration::from_secs(15));
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
    let mode = |p: &Path| {
        std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
    };
    let state = dir.join("state");
    assert_eq!(mode(&state), 0o700, "state dir");
    assert_eq!(mode(&dir.join("fills.jsonl")), 0o640, "fill log");
    let files: Vec<_> = std::fs::read_dir(&state).unwrap().flatten().map(|e| e.path()).collect();
    assert!(files.len() >= 3, "cursors, carry, lock at least: {files:?}");
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    // A wider setting widens it; a group- or world-writable one is refused at start.
    std::fs::set_permissions(dir.join("fills.jsonl"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut child = spawn(&ex, &dir, Stdio::null(), |c| {
        c.env("SYNCD_FILL_LOG_MODE", "0644");
    });
    wait_for("the mode to be set", Duration::from_secs(15), || mode(&dir.join("fills.jsonl")) == 0o644);
    sigterm(&child);
    let _ = wait_exit(&mut child, Duration::from_secs(10));
    let mut child = spawn(&ex, &dir, Stdio::piped(), |c| {
        c.env("SYNCD_FILL_LOG_MODE", "0666");
    });
    let status = wait_exit(&mut child, Duration::from_secs(5)).expect("exits by itself");
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("SYNCD_FILL_LOG_MODE"), "{err}");
}

#[test]
fn demo_refuses_a_daemons_state_directory_and_leaves_its_fill_log_alone() {
    let dir = temp_dir("demo-on-state");
    std::fs::write(dir.join("cursors.json"), "{}").unwrap();
    std::fs::write(dir.join("fills.jsonl"), "a real fill\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_binance-syncd"))
        .args(["demo", "--seconds", "1", "--dir"])
        .arg(&dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the demo ran in a daemon's state directory: {err}");
    assert!(err.contains("holds a daemon's state"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("fills.jsonl")).unwrap(), "a real fill\n");
}
