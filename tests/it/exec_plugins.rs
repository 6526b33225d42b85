//! Program plugins (issue 23): an executable file in the plugin folder speaking
//! `docs/plugin-protocol.md` over its stdin and stdout, here `tests/py/exec_plugin.py` (Python 3,
//! standard library only, the protocol by hand). Every fill reaches it exactly once across a
//! swap; one that prints garbage to its channel, exits, raises or stops reading is restarted and
//! then quarantined while a calm one goes on; its environment holds no secret and its
//! descriptors are the channel and a stderr pipe, whose lines reach the daemon's log.

use crate::plugins::{check_row, check_table, fills_of, wait_until, Rig};
use crate::sync::{assert_matches_truth, temp_dir, wait_lines};
use crate::util::{daemon_env, lines_of, Killed};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn script(version: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("py").join("exec_plugin.py");
    std::fs::read_to_string(path).unwrap().replace("@VERSION@", version)
}

/// Installs `text` as `dir/FILE` the documented way: a hidden temporary file, then `rename`.
pub(crate) fn install_program(dir: &Path, file: &str, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// The programs `garbage`, `exit`, `raise` and `stall` (`NAME.py`, recording to
/// `out/NAME.rec`) each died on fill `first` three times in a row soon after a start: each is
/// quarantined (file, status, reason and the advice to replace it), having seen that fill three
/// times, the second and third marked replayed.
pub(crate) fn assert_faulty_programs_quarantined(rig: &Rig, out: &Path, first: u64) {
    for (name, why) in [
        ("garbage", "broke the protocol"),
        ("exit", "exited with status 3"),
        ("raise", "exited with status 1"),
        ("stall", "SIGKILL"),
    ] {
        let s = rig.wait_status(name, "quarantined", |s| s.state == "quarantined");
        assert_eq!((s.restarts, s.pid, s.delivered), (2, 0, first - 1), "{name}: {s:?}");
        assert!(s.last_exit.contains(why) && s.problem.contains("died 3 times"), "{name}: {s:?}");
        assert!(s.problem.contains(&format!("replace {name}.py")), "{name}: {s:?}");
        let rec: Vec<String> =
            lines(&out.join(format!("{name}.rec"))).into_iter().filter(|l| l.starts_with("fill")).collect();
        assert_eq!(
            rec,
            [format!("fill 1 {first} 0"), format!("fill 1 {first} 1"), format!("fill 1 {first} 1")],
            "{name}"
        );
        assert!(rig.cfg.state_dir.join("plugins").join(format!("{name}.quarantine")).exists(), "{name}");
    }
}

pub(crate) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Ten fills, then `text` (version 2) installed over plugin `rec` (`rec.py`) while fills keep
/// coming until it runs, then ten more; how many fills were made.
pub(crate) fn swap_while_filling(rig: &mut Rig, text: &str) -> usize {
    let mut total = 0;
    for _ in 0..10 {
        rig.fill();
        total += 1;
    }
    // Fills keep coming while the new file is picked up, started and swapped in.
    install_program(&rig.plugins, "rec.py", text, 0o755);
    let end = Instant::now() + Duration::from_secs(30);
    while rig.status("rec").version != "2" {
        assert!(Instant::now() < end, "version 2 never started: {:?}", rig.status("rec"));
        rig.fill();
        total += 1;
        std::thread::sleep(Duration::from_millis(30));
    }
    for _ in 0..10 {
        rig.fill();
        total += 1;
    }
    total
}

#[test]
fn a_python_plugin_gets_every_fill_once_across_a_swap_and_runs_as_its_own_program() {
    let out = temp_dir("exec-swap-out");
    let record = out.join("rec.rec");
    let mut rig = Rig::start("exec-swap", &[]);
    std::fs::write(rig.plugins.join("rec.conf"), format!("record = {}\nhistory = all\n", record.display())).unwrap();
    install_program(&rig.plugins, "rec.py", &script("1"), 0o755);
    let s = rig.wait_status("rec", "version 1 running", |s| s.version == "1" && s.state == "running");
    // The plugin's own program in its process, not the daemon's plugin host.
    let cmd = cmdline(s.pid);
    assert!(cmd.contains("python") && cmd.contains("rec-") && !cmd.contains("plugin-host"), "{cmd}");
    let total = swap_while_filling(&mut rig, &script("2"));
    let fills = wait_lines(&rig.cfg.fill_log, total, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("rec", "every fill delivered", |s| s.delivered == last);
    let rec = lines(&record);
    let seen = fills_of(&rec);
    let seqs: Vec<u64> = seen.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>(), "no gap, no repeat: {rec:?}");
    assert!(seen.iter().any(|(v, _)| v == "1") && seen.iter().any(|(v, _)| v == "2"), "{rec:?}");
    let stop1 = rec.iter().position(|l| l == "stop 1").expect("version 1 stopped");
    let start2 = rec.iter().position(|l| l == "start 2").expect("version 2 started");
    assert!(stop1 < start2, "never two versions at once: {rec:?}");
    assert!(rec[start2..].iter().all(|l| !l.starts_with("fill 1 ")), "{rec:?}");
    assert!(rec.iter().all(|l| !l.ends_with(" 1") || !l.starts_with("fill")), "nothing replayed: {rec:?}");
    let s = rig.status("rec");
    assert_eq!((s.loads, s.restarts), (2, 0), "{s:?}");
    // The private copy is gone once the program answered (it holds it open).
    let images = rig.cfg.state_dir.join("plugins").join("images");
    let left: Vec<_> =
        std::fs::read_dir(&images).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let report = rig.ex.report();
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    assert_matches_truth(&fills, &report);
}

#[test]
fn a_python_plugin_that_prints_garbage_exits_raises_or_stops_reading_is_restarted_then_quarantined() {
    let out = temp_dir("exec-faults-out");
    let mut rig = Rig::start("exec-faults", &[]);
    let bad = ["garbage", "exit", "raise", "stall"];
    std::fs::write(
        rig.plugins.join("calm.conf"),
        format!("record = {}\nhistory = all\n", out.join("calm.rec").display()),
    )
    .unwrap();
    install_program(&rig.plugins, "calm.py", &script("1"), 0o755);
    for mode in bad {
        let conf = format!(
            "mode = {mode}\nrecord = {}\nhistory = all\nrestart_backoff_ms = 50\n",
            out.join(format!("{mode}.rec")).display()
        );
        std::fs::write(rig.plugins.join(format!("{mode}.conf")), conf).unwrap();
        install_program(&rig.plugins, &format!("{mode}.py"), &script("1"), 0o755);
    }
    for name in std::iter::once("calm").chain(bad) {
        let s = rig.wait_status(name, "running", |s| s.state == "running");
        assert!(s.pid != 0 && s.pid != std::process::id(), "{name}: {s:?}");
    }
    rig.fill();
    let fills = wait_lines(&rig.cfg.fill_log, 1, Duration::from_secs(20));
    let first = fills[0].seq;
    assert_faulty_programs_quarantined(&rig, &out, first);
    assert!(rig.status("stall").last_exit.contains("ran over"), "{:?}", rig.status("stall"));
    // The calm one and the daemon go on.
    rig.fill();
    rig.fill();
    let fills = wait_lines(&rig.cfg.fill_log, 3, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("calm", "every fill", |s| s.delivered == last);
    let calm: Vec<u64> = fills_of(&lines(&out.join("calm.rec"))).iter().map(|(_, s)| *s).collect();
    assert_eq!(calm, (1..=last).collect::<Vec<u64>>());
    // A new file releases one: here the calm program under the name, from its cursor.
    std::fs::write(rig.plugins.join("exit.conf"), "history = all\n").unwrap();
    install_program(&rig.plugins, "exit.py", &script("2"), 0o755);
    let s = rig.wait_status("exit", "released", |s| s.state == "running" && s.delivered == last);
    assert_eq!(s.version, "2");
    let report = rig.ex.report();
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    assert_matches_truth(&fills, &report);
}

fn wait_log(log: &crossbeam_channel::Receiver<String>, seen: &mut Vec<String>, what: &str, f: impl Fn(&str) -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|l| f(l)) {
        let left = end.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("timed out waiting for {what} in the daemon's log:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn a_program_gets_no_secret_only_its_channel_and_its_stderr_reaches_the_log_under_its_name() {
    use binance_syncd_paper::DEMO_API_SECRET;
    let ex = crate::util::paper_with(|_| {});
    let dir = temp_dir("exec-env");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let env_file = dir.join("env.json");
    std::fs::write(plugins.join("envy.conf"), format!("env = {}\n", env_file.display())).unwrap();
    install_program(&plugins, "envy.py", &script("1"), 0o755);
    std::fs::write(plugins.join("raiser.conf"), "mode = raise\nquarantine_after = 1\n").unwrap();
    install_program(&plugins, "raiser.py", &script("1"), 0o755);
    // Two files of one name: both refused, with the reason. A file without an execute bit is
    // no plugin (a module beside the programs).
    install_program(&plugins, "twin.py", &script("1"), 0o755);
    install_program(&plugins, "twin.sh", "#!/bin/sh\nexit 0\n", 0o755);
    install_program(&plugins, "helper.py", "X = 1\n", 0o644);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
    cmd.arg("run");
    daemon_env(&mut cmd, &ex, &dir, binance_syncd_paper::DEMO_API_KEY)
        .env("SYNCD_PLUGIN_DIR", &plugins)
        .env("SYNCD_PLUGIN_SCAN_S", "0.1")
        .env("CREDENTIALS_DIRECTORY", &dir)
        .env("SYNCD_ALERT_WEBHOOK", "http://127.0.0.1:9/hook-secret")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut daemon = Killed(cmd.spawn().expect("spawn binance-syncd"));
    let log = lines_of(daemon.0.stderr.take().unwrap());
    let mut seen = Vec::new();
    wait_log(&log, &mut seen, "envy started", |l| l.contains("plugin envy: version \"1\""));
    wait_log(&log, &mut seen, "raiser started", |l| l.contains("plugin raiser: version \"1\""));
    wait_log(&log, &mut seen, "the clash refused", |l| {
        l.contains("plugin twin: refused: 2 files give the plugin name twin (twin.py, twin.sh)")
    });
    wait_until("its environment written", Duration::from_secs(20), || env_file.exists());
    let dump: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&env_file).unwrap()).unwrap();
    let environ = dump["environ"].as_object().unwrap();
    let workdir = std::fs::canonicalize(dir.join("state").join("plugins").join("run").join("envy")).unwrap();
    let home = workdir.to_string_lossy().into_owned();
    let folder = std::fs::canonicalize(&plugins).unwrap().to_string_lossy().into_owned();
    for (key, want) in [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("SYNCD_PLUGIN_NAME", "envy"),
        ("HOME", &home),
        ("SYNCD_PLUGIN_DIR", &folder),
        ("PYTHONPATH", &folder),
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ] {
        assert_eq!(environ.get(key).and_then(|v| v.as_str()), Some(want), "{key} in {environ:?}");
    }
    // Nothing else (Python may add LC_CTYPE when it coerces a C locale): no key, no webhook.
    for (key, value) in environ {
        assert!(
            [
                "PATH",
                "LANG",
                "SYNCD_PLUGIN_NAME",
                "SYNCD_PLUGIN_DIR",
                "PYTHONPATH",
                "PYTHONDONTWRITEBYTECODE",
                "HOME",
                "LC_CTYPE"
            ]
            .contains(&key.as_str()),
            "{key} passed"
        );
        let value = value.as_str().unwrap_or("");
        assert!(!value.contains(DEMO_API_SECRET) && !value.contains("hook-secret"), "{key}={value}");
    }
    assert_eq!(dump["cwd"].as_str(), Some(home.as_str()));
    // The host role was not dumpable; execve of a readable image made it so again (no secret in
    // it to read: docs/plugin-protocol.md, "The process").
    assert_eq!(dump["dumpable"].as_i64(), Some(1), "{dump}");
    // 0 and 1 the one socket, 2 a pipe, and nothing else but the listing's own descriptor.
    let fds = dump["fds"].as_object().unwrap();
    let own: Vec<(&String, &str)> =
        fds.iter().map(|(k, v)| (k, v.as_str().unwrap_or(""))).filter(|(_, v)| !v.contains("/proc/")).collect();
    assert_eq!(own.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["0", "1", "2"], "{fds:?}");
    assert!(own[0].1.starts_with("socket:") && own[0].1 == own[1].1, "{fds:?}");
    assert!(own[2].1.starts_with("pipe:"), "{fds:?}");
    // A fill kills the raiser: its traceback, line by line, under its name, then quarantined.
    let rest = crate::util::client(&ex);
    let id = crate::sync::rest_buy(&ex, &rest, "BTCUSD", "0.01", "web-1");
    crate::sync::fill_whole(&ex, "BTCUSD", id);
    wait_log(&log, &mut seen, "the traceback", |l| l.contains("plugin raiser: RuntimeError: boom in on_fill #1"));
    assert!(seen.iter().any(|l| l.contains("plugin raiser: Traceback (most recent call last):")), "{seen:#?}");
    wait_log(&log, &mut seen, "the quarantine", |l| l.contains("plugin raiser: quarantined"));
    assert!(!seen.iter().any(|l| l.contains("helper")), "a file without an execute bit is no plugin: {seen:#?}");
    drop(daemon);
}

#[test]
fn check_lists_program_plugins_as_run_would_and_never_runs_one() {
    let ex = crate::util::paper_with(|_| {});
    let dir = temp_dir("check-programs");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let marker = dir.join("ran.marker");
    // Each program, if anything ran it, would leave the marker.
    let mark = format!("open({:?}, \"w\").close()\n", marker.display().to_string());
    crate::py_plugins::install_sdk(&plugins);
    let sdk_strategy = format!(
        "#!/usr/bin/env python3\nimport os\nimport sys\n{mark}sys.path.insert(0, os.environ[\"SYNCD_PLUGIN_DIR\"])\n\
         from binance_syncd import Strategy, run  # noqa: E402\n\n\nclass S(Strategy):\n    pass\n\n\nrun(S)\n"
    );
    install_program(&plugins, "strat.py", &sdk_strategy, 0o755);
    let touch = format!("touch '{}'\n", marker.display());
    install_program(&plugins, "lost.sh", &format!("#!/opt/no-such-interpreter/bin/sh\n{touch}"), 0o755);
    install_program(&plugins, "unbuf.py", &format!("#!/usr/bin/env python3 -u\n{mark}"), 0o755);
    install_program(&plugins, "junk", &touch, 0o755);
    // A Python program and a library of one name: both refused, as run refuses them.
    install_program(&plugins, "grid.py", &format!("#!/usr/bin/env python3\n{mark}"), 0o755);
    install_program(&plugins, "grid.so", "not even a library", 0o644);
    std::fs::write(plugins.join("inproc.conf"), "isolation = none\n").unwrap();
    install_program(&plugins, "inproc.py", &format!("#!/usr/bin/env python3\n{mark}"), 0o755);
    std::fs::write(plugins.join("greedy.conf"), "max_pending = 0\n").unwrap();
    install_program(&plugins, "greedy.sh", &format!("#!/bin/sh\n{touch}"), 0o755);
    // A binary: read as ELF, its loader found. A module without an execute bit: no plugin.
    let bin = std::fs::read("/bin/true").unwrap();
    std::fs::write(plugins.join(".elfy.tmp"), bin).unwrap();
    std::fs::set_permissions(plugins.join(".elfy.tmp"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(plugins.join(".elfy.tmp"), plugins.join("elfy")).unwrap();
    // Modules beside them, imported through PYTHONPATH: a loose one and one Python runs at
    // start-up warn; a trusted one (the SDK, 0644) does not.
    install_program(&plugins, "helper.py", "X = 1\n", 0o666);
    install_program(&plugins, "sitecustomize.py", &mark, 0o644);
    let text = check_table(&ex, &dir, &plugins);
    let row = |what: &str| check_row(&text, what);
    assert!(row("plugin dir").contains(" ok ") && row("plugin dir").contains("8 plugins"), "{text}");
    let strat = row("plugin strat.py");
    assert!(strat.contains(" ok "), "{text}");
    assert!(strat.contains("tag strat") && strat.contains("a script for /usr/bin/env python3 (python3 is /"), "{text}");
    assert!(strat.contains("imports binance_syncd:") && strat.contains("binance_syncd.py found"), "{text}");
    let elfy = row("plugin elfy");
    assert!(elfy.contains(" ok ") && elfy.contains("an ELF executable"), "{text}");
    for (what, why) in [
        ("plugin lost.sh", "its #! interpreter /opt/no-such-interpreter/bin/sh does not exist: it would fail to start"),
        ("plugin unbuf.py", "gives env the one argument \"python3 -u\""),
        ("plugin junk", "neither an ELF binary nor a script starting with #!: it would fail to start"),
        ("plugin grid.py", "2 files give the plugin name grid (grid.py, grid.so): remove all but one"),
        ("plugin grid.so", "2 files give the plugin name grid (grid.py, grid.so): remove all but one"),
        ("plugin inproc.py", "isolation = none is for .so plugins; inproc.py is a program"),
        ("plugin greedy.sh", "greedy.conf: max_pending = \"0\""),
    ] {
        assert!(row(what).contains("FAIL") && row(what).contains(why), "{what}: {text}");
    }
    for module in ["helper", "binance_syncd", "sitecustomize"] {
        assert!(!text.contains(&format!("plugin {module}")), "{module} is no plugin: {text}");
    }
    let helper = row("module helper.py");
    assert!(helper.contains(" warn ") && helper.contains("is writable by group or others (mode 0666)"), "{text}");
    assert!(helper.contains("(PYTHONPATH)") && helper.contains("chmod 0644"), "{text}");
    let site = row("module sitecustomize.py");
    assert!(site.contains(" warn ") && site.contains("at start-up in every Python plugin"), "{text}");
    assert!(!text.contains("module binance_syncd.py"), "the SDK, 0644, is trusted: {text}");
    assert!(!marker.exists(), "check ran a plugin");
}
