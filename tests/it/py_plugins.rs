//! Python strategies on the real SDK (issue 23): `plugins/python/binance_syncd.py` installed
//! in the plugin folder as a module (0644: not a plugin), beside `plugins/python/examples/grid.py`
//! or a small strategy written here. The grid trades maker-only with no rejection; every fill
//! reaches a strategy exactly once across a swap and across SIGKILLs of the daemon (repeats
//! only marked `replayed`); what a careless author can do wrong (raise in `on_fill`, call
//! `sys.exit`, write to the SDK's channel, never return) and a program that never reads its
//! channel once started are restarted and then quarantined while the daemon and a calm
//! strategy go on, and what the SDK makes harmless (printing,
//! writing to descriptor 1 or `sys.__stdout__`) is.

use crate::exec_plugins::{assert_faulty_programs_quarantined, install_program, lines, swap_while_filling};
use crate::plugins::{
    alive, assert_in_order_repeats_marked, assert_maker_only_no_rejection, children_of, fills_of, wait_until, Rig,
};
use crate::sync::{assert_matches_truth, fill_whole, read_log, temp_dir, wait_lines};
use crate::util::{daemon_env, paper_with, Killed};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The SDK as a module of the plugin folder: not executable, so no plugin of its own.
pub(crate) fn install_sdk(dir: &Path) {
    let text = std::fs::read_to_string(repo("plugins/python/binance_syncd.py")).unwrap();
    install_program(dir, "binance_syncd.py", &text, 0o644);
}

/// A strategy on the SDK. Its NAME.conf: `record = PATH` (it appends `start V`, `fill V SEQ
/// REPLAYED`, `stop V`), `mode` (what it does on a fill, after recording it).
const STRATEGY: &str = r#"#!/usr/bin/env python3
import os
import sys
import time

# Found in the plugin folder through the PYTHONPATH the daemon sets (it runs a private copy of
# this file elsewhere); no .pyc written there (PYTHONDONTWRITEBYTECODE).
import binance_syncd as sdk


class Rec(sdk.Strategy):
    VERSION = "@VERSION@"

    def on_start(self, info):
        self.path = self.setting("record")
        self.mode = self.setting("mode", "calm")
        self.note("start " + self.VERSION)

    def note(self, line):
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def on_fill(self, fill):
        self.note("fill %s %d %d" % (self.VERSION, fill.seq, 1 if fill.replayed else 0))
        if self.mode == "raise":
            raise RuntimeError("boom in on_fill #%d" % fill.seq)
        elif self.mode == "exit":
            sys.exit(3)
        elif self.mode == "garbage":
            # The one way to reach the channel: the SDK's private descriptor.
            os.write(sdk._FD_OUT, b"debug: got a fill\n")
            time.sleep(30)
        elif self.mode == "stall":
            time.sleep(3600)
        elif self.mode == "print":
            # All of these end on stderr (the SDK moved descriptor 1 there at import).
            print("a fill", fill.seq)
            os.write(1, b"raw descriptor 1\n")
            sys.__stdout__.write("sys.__stdout__\n")
            sys.__stdout__.flush()

    def on_stop(self):
        self.note("stop " + self.VERSION)


if __name__ == "__main__":
    sdk.run(Rec)
"#;

/// A Python plugin that answers `hello` and `start` and then never reads its channel again
/// (written without the SDK, which always reads again once a callback returns): `deaf` sleeps;
/// `asks` asks for rules over and over and never reads the answers, so the daemon's answers
/// fill the channel and a write of its blocks.
const NEVER_READS: &str = r#"#!/usr/bin/env python3
import json
import os
import struct
import sys
import time

IN = sys.stdin.buffer
OUT = sys.stdout.buffer


def read():
    head = IN.read(4)
    if len(head) < 4:
        sys.exit(0)
    return json.loads(IN.read(struct.unpack(">I", head)[0]))


def write(msg):
    body = json.dumps(msg).encode()
    OUT.write(struct.pack(">I", len(body)) + body)
    OUT.flush()


read()  # hello
write({"t": "ready", "proto": 1, "version": "1", "abi_minor": 5})
read()  # call start
write({"t": "done", "status": 0, "seq": 0})
if os.environ.get("SYNCD_PLUGIN_NAME") == "asks":
    while True:
        write({"t": "rules_of", "symbol": "BTCUSD"})
while True:
    time.sleep(3600)
"#;

fn strategy(version: &str) -> String {
    STRATEGY.replace("@VERSION@", version)
}

#[test]
fn the_python_grid_trades_maker_only_with_no_rejection() {
    let mut rig = Rig::start_with("py-grid", &[], |c| c.strategy_limits.max_orders_10s = 100);
    install_sdk(&rig.plugins);
    std::fs::write(rig.plugins.join("grid.conf"), "levels = 3\nspacing = 5\nquote = 25\n").unwrap();
    let grid = std::fs::read_to_string(repo("plugins/python/examples/grid.py")).unwrap();
    install_program(&rig.plugins, "grid.py", &grid, 0o755);
    rig.wait_status("grid", "running", |s| s.state == "running");
    let link = rig.daemon.as_ref().unwrap().executor().clone();
    let view = || link.view();
    let mine = |o: &&binance_syncd::executor::OpenOrder| o.client_order_id.starts_with("sd-grid-");
    wait_until("the grid on both symbols", Duration::from_secs(30), || {
        view().open_orders.iter().filter(mine).count() >= 12
    });
    // Fill some of its orders: each fill makes it quote the other side.
    let filled: Vec<(String, u64)> =
        view().open_orders.iter().filter(mine).take(4).map(|o| (o.symbol.clone(), o.order_id)).collect();
    for (symbol, id) in &filled {
        fill_whole(&rig.ex, symbol, *id);
    }
    rig.fill(); // and someone else's, which it sees but does not act on
    let expected = rig.ex.report()["trades"].as_array().unwrap().len();
    let fills = wait_lines(&rig.cfg.fill_log, expected, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("grid", "every fill", |s| s.delivered == last);
    wait_until("quotes after its fills", Duration::from_secs(20), || view().stats.placed >= 16);
    let report = assert_maker_only_no_rejection(&rig.ex, "sd-grid-", 4);
    let stats = view().stats;
    assert_eq!((stats.rejected, stats.filter_rejections, stats.taker_rejections), (0, 0, 0), "{stats:?}");
    let s = rig.status("grid");
    assert_eq!((s.restarts, s.state.as_str()), (0, "running"), "{s:?}");
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    assert_matches_truth(&fills, &report);
}

#[test]
fn a_python_strategy_gets_every_fill_once_across_a_swap() {
    let out = temp_dir("py-swap-out");
    let record = out.join("rec.rec");
    let mut rig = Rig::start("py-swap", &[]);
    install_sdk(&rig.plugins);
    std::fs::write(rig.plugins.join("rec.conf"), format!("record = {}\nhistory = all\n", record.display())).unwrap();
    install_program(&rig.plugins, "rec.py", &strategy("1"), 0o755);
    rig.wait_status("rec", "version 1 running", |s| s.version == "1" && s.state == "running");
    let total = swap_while_filling(&mut rig, &strategy("2"));
    let fills = wait_lines(&rig.cfg.fill_log, total, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("rec", "every fill delivered", |s| s.delivered == last);
    let rec = lines(&record);
    let seqs: Vec<u64> = fills_of(&rec).iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>(), "no gap, no repeat: {rec:?}");
    let stop1 = rec.iter().position(|l| l == "stop 1").expect("version 1 stopped");
    let start2 = rec.iter().position(|l| l == "start 2").expect("version 2 started");
    assert!(stop1 < start2, "never two versions at once: {rec:?}");
    assert!(rec.iter().filter(|l| l.starts_with("fill ")).all(|l| l.ends_with(" 0")), "nothing replayed: {rec:?}");
    let s = rig.status("rec");
    assert_eq!((s.loads, s.restarts), (2, 0), "{s:?}");
    let report = rig.ex.report();
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    assert_matches_truth(&fills, &report);
}

#[test]
fn sigkill_of_the_daemon_with_a_python_strategy_loses_no_fill_and_marks_every_repeat() {
    use binance_syncd_paper::DEMO_API_KEY;
    let ex = paper_with(|c| {
        c.market_tick = Duration::from_millis(20);
        c.engine.external_trader_pct = 60;
    });
    let dir = temp_dir("py-kill");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    install_sdk(&plugins);
    let record = dir.join("rec.rec");
    std::fs::write(plugins.join("rec.conf"), format!("record = {}\nhistory = all\n", record.display())).unwrap();
    install_program(&plugins, "rec.py", &strategy("1"), 0o755);
    let seed = std::env::var("SYNCD_TEST_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
    });
    let mut rng = seed | 1;
    let run = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
        cmd.arg("run");
        daemon_env(&mut cmd, &ex, &dir, DEMO_API_KEY)
            .env("SYNCD_PLUGIN_DIR", &plugins)
            .env("SYNCD_PLUGIN_SCAN_S", "0.05")
            .env("SYNCD_RECONCILE_S", "1")
            .env("SYNCD_RECONCILE_DOWN_S", "0.5")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Killed(cmd.spawn().expect("spawn binance-syncd"))
    };
    let delivered = || fills_of(&lines(&record)).len();
    let mut killed_with_fills = 0;
    for _ in 0..6 {
        let before = delivered();
        let mut child = run();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Killed once the strategy has taken a fill in this run, at a random moment after.
        wait_until(&format!("seed {seed}: a fill delivered in this run"), Duration::from_secs(30), || {
            delivered() > before
        });
        std::thread::sleep(Duration::from_millis(rng % 700));
        let hosts = children_of(child.id());
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        killed_with_fills += usize::from(!hosts.is_empty());
        // Its Python process dies with it (PR_SET_PDEATHSIG).
        wait_until(&format!("seed {seed}: {hosts:?} gone with the daemon"), Duration::from_secs(10), || {
            hosts.iter().all(|&pid| !alive(pid))
        });
    }
    assert!(killed_with_fills > 0, "seed {seed}: no kill found the Python process; the test proves nothing");
    // A last run with a still market: everything must arrive, then a clean stop.
    ex.fault("quiesce", &[]).unwrap();
    ex.fault("external", &[("pct", "0")]).unwrap();
    let mut child = run();
    let expected = ex.report()["trades"].as_array().unwrap().len();
    let last = || read_log(&dir.join("fills.jsonl")).iter().map(|f| f.seq).max().unwrap_or(0);
    wait_until(&format!("seed {seed}: every fill logged and delivered"), Duration::from_secs(30), || {
        read_log(&dir.join("fills.jsonl")).len() >= expected
            && fills_of(&lines(&record)).iter().map(|f| f.1).max() == Some(last())
    });
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let record = lines(&record);
    let (max_seen, replays) = assert_in_order_repeats_marked(record.iter().map(String::as_str), seed);
    assert_eq!(max_seen, last(), "seed {seed}");
    assert!(expected > 10, "seed {seed}: only {expected} trades; the test proves nothing");
    println!("python sigkill test: {max_seen} fills delivered, {replays} replayed after kills (seed {seed})");
}

#[test]
fn python_strategies_that_raise_exit_break_the_channel_or_hang_are_quarantined_and_printing_is_harmless() {
    let out = temp_dir("py-faults-out");
    let mut rig = Rig::start("py-faults", &[]);
    install_sdk(&rig.plugins);
    let bad = ["garbage", "exit", "raise", "stall"];
    for mode in ["calm", "print"].into_iter().chain(bad) {
        let conf = format!(
            "mode = {mode}\nrecord = {}\nhistory = all\nrestart_backoff_ms = 50\n",
            out.join(format!("{mode}.rec")).display()
        );
        std::fs::write(rig.plugins.join(format!("{mode}.conf")), conf).unwrap();
        install_program(&rig.plugins, &format!("{mode}.py"), &strategy("1"), 0o755);
    }
    for name in ["calm", "print"].into_iter().chain(bad) {
        rig.wait_status(name, "running", |s| s.state == "running");
    }
    // Two that stop reading once started: each next call (a tick, every 100 ms here) is never
    // answered, or the daemon's answers to its questions can no longer be written. Each is a
    // stall: killed, restarted, and after three quick deaths quarantined.
    for name in ["deaf", "asks"] {
        std::fs::write(rig.plugins.join(format!("{name}.conf")), "restart_backoff_ms = 50\n").unwrap();
        install_program(&rig.plugins, &format!("{name}.py"), NEVER_READS, 0o755);
    }
    rig.fill();
    let fills = wait_lines(&rig.cfg.fill_log, 1, Duration::from_secs(20));
    let first = fills[0].seq;
    // Each dies on the fill, three times in a row soon after its start: quarantined.
    assert_faulty_programs_quarantined(&rig, &out, first);
    for name in ["deaf", "asks"] {
        let s = rig.wait_status(name, "quarantined", |s| s.state == "quarantined");
        assert_eq!((s.restarts, s.pid), (2, 0), "{name}: {s:?}");
        assert!(s.last_exit.contains("ran over") && s.problem.contains("died 3 times"), "{name}: {s:?}");
    }
    // The daemon, the calm one and the printing one go on: every fill, never restarted.
    rig.fill();
    rig.fill();
    let fills = wait_lines(&rig.cfg.fill_log, 3, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    for name in ["calm", "print"] {
        let s = rig.wait_status(name, "every fill", |s| s.delivered == last);
        assert_eq!((s.restarts, s.state.as_str()), (0, "running"), "{name}: {s:?}");
        let seen: Vec<u64> = fills_of(&lines(&out.join(format!("{name}.rec")))).iter().map(|(_, s)| *s).collect();
        assert_eq!(seen, (1..=last).collect::<Vec<u64>>(), "{name}");
    }
    let report = rig.ex.report();
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    assert_matches_truth(&fills, &report);
}
