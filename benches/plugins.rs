//! Plugin figures, in one run, with the test plugin (`plugins/test-plugin`) built here and its
//! Python twin on the SDK (`benches/py_plugin.py`, a program plugin with
//! `plugins/python/binance_syncd.py` beside it; its rows print "skipped: no python3" when no
//! Python 3.9 or newer is on the daemon's plugin `PATH`):
//!
//! - fill line durable → plugin callback entered: the fill log's publish time (`FillTap`) to
//!   the plugin's own clock reading at the top of `on_fill` (`CLOCK_REALTIME` in both),
//!   p50/p99/max (target p99 < 50 µs), for the `.so` and then the Python plugin, each in a
//!   daemon of its own, with `SYNCD_FSYNC` `always` (the default) and `never`, each with the
//!   plugin thread told a line is coming (`SYNCD_PLUGIN_SPIN_US`, default) and without (`0`:
//!   it sleeps), then for each fsync mode a row with no plugin and a plain thread asleep on
//!   the same tap (the machine's wake-up floor; in rows of its own, as its wake-ups would land
//!   on the plugin's), and first, before any daemon runs, the bare machine: one thread handing a
//!   timestamp to another, asleep on a channel or spinning, at the same pace. The latency rows run
//!   with the default intervals (plugin scan, tick, price poll), so that only what a deployment
//!   would run competes for the CPUs;
//! - hot-swap pause: the old version's last callback to the new one's first, over 20 swaps;
//! - restart after a crash: SIGKILL of the plugin's process to its new process's `start`;
//! - intents/s from one plugin through the executor to loopback ACKs (500 orders at once), in
//!   its own process and, for the executor's own pace, in the daemon (`isolation = none`),
//!   then from the Python plugin, with its process's largest RSS meanwhile;
//! - the idle `.so` host and Python processes side by side in one daemon at the default tick
//!   and price poll: RSS, and CPU over `PLUGIN_BENCH_IDLE_S` (10 s).
//!
//! `cargo bench --bench plugins` (about 60 s with the Python rows on the 2-vCPU development VM).
//! `PLUGIN_BENCH_FILLS` sets fills per row (400); `PLUGIN_BENCH_ROWS` the plugin rows, as
//! `FSYNC:SPIN_US,...` (default `always:1000,always:0,never:1000,never:0`).

mod common;
use common::{bare_process, build, install, percentile};

use binance_syncd::config::{Config, Needs};
use binance_syncd::daemon::{Daemon, Tuning};
use binance_syncd_paper::trader::Trader;
use binance_syncd_paper::{PaperConfig, PaperExchange};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < end, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One daemon with the stamp plugin running, against its own paper exchange.
struct Rig {
    dir: PathBuf,
    plugins: PathBuf,
    ex: PaperExchange,
    daemon: Daemon,
    view: binance_syncd::plugin::PluginView,
}

/// The stamp plugin a row runs: the test plugin's `.so` (in its plugin-host process), or its
/// Python twin on the SDK (`benches/py_plugin.py`, a program plugin).
#[derive(Clone, Copy)]
enum Stamp<'a> {
    So(&'a Path),
    Py,
}

impl Stamp<'_> {
    fn label(&self) -> &'static str {
        match self {
            Stamp::So(_) => ".so",
            Stamp::Py => "python",
        }
    }

    /// Installs it in `dir` as plugin `name` (`NAME.so`, or `NAME.py` with the SDK beside it).
    fn install(&self, dir: &Path, name: &str) {
        match self {
            Stamp::So(so) => install(so, dir, name),
            Stamp::Py => {
                write_by_rename(dir, "binance_syncd.py", PY_SDK, 0o644);
                write_by_rename(dir, &format!("{name}.py"), PY_PLUGIN, 0o755);
            }
        }
    }
}

/// The Python bench plugin and the SDK it imports, installed from the bench's own text so
/// that the run does not depend on where it is started from.
const PY_PLUGIN: &str = include_str!("py_plugin.py");
const PY_SDK: &str = include_str!("../plugins/python/binance_syncd.py");

/// `dir/file` with `text` and `mode`, by rename, as a plugin is installed. The SDK is 0644 (a
/// module, not a plugin); a program is 0755 (the trust checks refuse a group- or
/// other-writable file).
fn write_by_rename(dir: &Path, file: &str, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::fs::rename(&tmp, dir.join(file)).expect("rename");
}

/// Whether a program plugin's `#!/usr/bin/env python3` finds a Python 3.9 or newer on the
/// `PATH` the daemon gives it (`src/plugin/remote.rs`).
fn python3_runs() -> bool {
    Command::new("/usr/bin/env")
        .args(["python3", "-c", "import sys; sys.exit(sys.version_info < (3, 9))"])
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `stamp`: the stamp plugin to run, or none (a floor row: only a plain follower of the tap).
/// `fast`: the scan, tick and price poll at test pace (the swap and flood rows), else their
/// defaults.
fn rig(name: &str, stamp: Option<Stamp<'_>>, fsync: &str, spin_us: &str, fast: bool) -> Rig {
    let (dir, plugins) = common::stamp_dir("plugins", name, None);
    if let Some(stamp) = stamp {
        stamp.install(&plugins, "stamp");
    }
    let ex = PaperExchange::start(PaperConfig::unthrottled()).expect("paper");
    let vars: HashMap<&str, String> = common::daemon_env(&ex, &dir, "BTCUSD")
        .into_iter()
        .chain([
            ("SYNCD_FSYNC", fsync.into()),
            ("SYNCD_PLUGIN_SPIN_US", spin_us.into()),
            ("SYNCD_PLUGIN_DIR", plugins.display().to_string()),
            ("SYNCD_PLUGIN_SCAN_S", if fast { "0.02" } else { "1" }.into()),
            ("SYNCD_PLUGIN_TICK_S", if fast { "0.05" } else { "1" }.into()),
            ("SYNCD_PRICE_POLL_S", if fast { "0.1" } else { "2" }.into()),
            ("SYNCD_STRATEGY_MAX_OPEN", "100000".into()),
            ("SYNCD_STRATEGY_MAX_ORDERS_10S", "100000".into()),
            ("SYNCD_STRATEGY_MAX_SYMBOL_NOTIONAL", "0".into()),
            ("SYNCD_STRATEGY_QUEUE", "1024".into()),
        ])
        .collect();
    let config =
        Config::from_lookup(|k| vars.get(k).cloned(), Needs { credentials: true, symbols: true }).expect("config");
    let daemon = Daemon::start(&config, &Tuning::from_config(&config)).expect("daemon");
    let view = daemon.plugins().expect("plugins").clone();
    if stamp.is_some() {
        wait("the stamp plugin running", || view.get("stamp").is_some_and(|s| s.state == "running"));
    }
    Rig { dir, plugins, ex, daemon, view }
}

/// `n` fills of another user's orders, a few ms apart: the stamp plugin's latencies, or,
/// without the plugin, a plain thread's of this process following the same tap, asleep until
/// each line is there: the machine's wake-up floor. Never both in one row: on 2 CPUs the
/// floor thread's own wake-ups would land on the plugin's.
fn latency(rig: &Rig, n: usize, plugin: bool) -> Vec<Duration> {
    let trader = Trader::new(&rig.ex);
    let (bid, _) = rig.ex.shared().engine.lock().expect("engine").touch("BTCUSD").expect("touch");
    let price = bid.to_string();
    let mut ids = Vec::new();
    for i in 0..n {
        let v = trader.maker("BTCUSD", "BUY", "0.0001", &price, &format!("web-{i}")).expect("order");
        ids.push(v["orderId"].as_u64().expect("id"));
    }
    let floor = (!plugin).then(|| {
        let follower = rig.daemon.fill_tap().follow(4096);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < n {
                let Ok(f) = follower.recv_timeout(Duration::from_secs(10)) else { break };
                seen.push((f.seq, SystemTime::now()));
            }
            seen
        })
    });
    let first = rig.daemon.fill_tap().durable();
    for id in &ids {
        rig.ex.fault("fill", &[("symbol", "BTCUSD"), ("order_id", &id.to_string()), ("whole", "true")]).expect("fill");
        std::thread::sleep(Duration::from_millis(3));
    }
    let last = first + ids.len() as u64;
    let tap = rig.daemon.fill_tap();
    let since_publish = |seq: u64, at_ns: u128| {
        let published = tap.published_at(seq)?.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos();
        Some(Duration::from_nanos(at_ns.saturating_sub(published) as u64))
    };
    let mut lat: Vec<Duration> = match floor {
        Some(thread) => thread
            .join()
            .unwrap_or_default()
            .iter()
            .filter_map(|(seq, at)| since_publish(*seq, at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos()))
            .collect(),
        None => {
            wait("every fill stamped", || rig.view.get("stamp").is_some_and(|s| s.delivered >= last));
            std::fs::read_to_string(rig.dir.join("stamp.rec"))
                .unwrap_or_default()
                .lines()
                .filter_map(|line| {
                    let mut p = line.split_whitespace().skip(1);
                    let seq = p.next()?.parse::<u64>().ok()?;
                    (seq > first).then_some(())?;
                    since_publish(seq, p.next()?.parse::<u128>().ok()?)
                })
                .collect()
        }
    };
    lat.sort();
    lat
}

fn us(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).as_secs_f64() * 1e6
}

/// The bare machine, with no daemon running: `n` timestamps, 3 ms apart, from this thread
/// to another that sleeps on a channel (`spin` false) or spins on an atomic. Sorted.
fn bare(n: usize, spin: bool) -> Vec<Duration> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let base = Instant::now();
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::bounded::<u64>(16);
    let (s2, d2) = (sent.clone(), done.clone());
    let follower = std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(n);
        if spin {
            let mut last = 0;
            while !d2.load(Ordering::Relaxed) {
                let at = s2.load(Ordering::Acquire);
                if at != last {
                    last = at;
                    lat.push(Duration::from_nanos((base.elapsed().as_nanos() as u64).saturating_sub(at)));
                }
                std::hint::spin_loop();
            }
        } else {
            while let Ok(at) = rx.recv() {
                lat.push(Duration::from_nanos((base.elapsed().as_nanos() as u64).saturating_sub(at)));
            }
        }
        lat
    });
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(3));
        let at = base.elapsed().as_nanos() as u64;
        if spin {
            sent.store(at, Ordering::Release);
        } else {
            tx.send(at).expect("follower");
        }
    }
    std::thread::sleep(Duration::from_millis(3));
    done.store(true, Ordering::Relaxed);
    drop(tx);
    let mut lat = follower.join().expect("follower");
    lat.sort();
    lat
}

fn main() {
    if common::floor_child_if_asked() {
        return;
    }
    // Isolated plugins (the default) run in `binance-syncd plugin-host`, not in this program.
    binance_syncd::plugin::set_host_program(env!("CARGO_BIN_EXE_binance-syncd"));
    let v1 = build("1");
    let v2 = build("2");
    let n: usize = std::env::var("PLUGIN_BENCH_FILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(400).max(1);

    const DEFAULT_ROWS: &str = "always:1000,always:0,never:1000,never:0";
    let row_spec = std::env::var("PLUGIN_BENCH_ROWS").unwrap_or_else(|_| DEFAULT_ROWS.into());
    let plugin_rows: Vec<(&str, &str)> =
        row_spec.split(',').map(|r| r.trim().split_once(':').expect("PLUGIN_BENCH_ROWS: FSYNC:SPIN_US,...")).collect();

    println!("bare machine, no daemon: one thread to another, {n} times 3 ms apart");
    let floor = bare_process(n);
    println!(
        "  {:<34} p50 {:.1} µs  p99 {:.1}  max {:.1}",
        "another PROCESS asleep on a socketpair",
        us(&floor, 0.5),
        us(&floor, 0.99),
        floor.last().map_or(0.0, |d| d.as_secs_f64() * 1e6)
    );
    for spin in [false, true] {
        let lat = bare(n, spin);
        println!(
            "  {:<34} p50 {:.1} µs  p99 {:.1}  max {:.1}",
            if spin { "spinning on an atomic" } else { "asleep on a channel (futex wake)" },
            us(&lat, 0.5),
            us(&lat, 0.99),
            lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e6)
        );
    }

    println!(
        "fill durable -> plugin on_fill entered in its process ({n} fills a row, 3 ms apart; target p50 <= 100 µs, \
         p99 <= 1.5x the process floor, {:.1} µs)",
        1.5 * us(&floor, 0.99)
    );
    // Each row runs the `.so` and then, in a daemon of its own, its Python twin: never both in
    // one daemon (on 2 CPUs one's wake-ups would land on the other's); the targets are the
    // `.so`'s (issue 21), the Python row is there to be compared with it.
    let python = python3_runs();
    let stamps: Vec<Stamp<'_>> = if python { vec![Stamp::So(&v1), Stamp::Py] } else { vec![Stamp::So(&v1)] };
    println!(
        "  SYNCD_FSYNC  SPIN_US  plugin   on_fill p50    p99      max           heads-ups: awake/line came/slept/late"
    );
    let mut rows = Vec::new();
    for (fsync, spin) in &plugin_rows {
        for stamp in &stamps {
            let r = rig(&format!("{fsync}-{spin}-{}", stamp.label()), Some(*stamp), fsync, spin, false);
            let lat = latency(&r, n, true);
            let s = r.view.get("stamp").unwrap_or_default();
            r.daemon.stop(Duration::from_secs(8));
            let _ = std::fs::remove_dir_all(&r.dir);
            let so = matches!(stamp, Stamp::So(_));
            println!(
                "  {fsync:<11}  {spin:>7}  {:<6}  {:>8.1} µs {:>6.1} {:>8.1}  {:<6}  {}/{}/{}/{}",
                stamp.label(),
                us(&lat, 0.5),
                us(&lat, 0.99),
                lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
                match (so, us(&lat, 0.5) <= 100.0 && us(&lat, 0.99) <= 1.5 * us(&floor, 0.99)) {
                    (false, _) => "",
                    (true, true) => "met",
                    (true, false) => "MISSED",
                },
                s.heads_ups.spins,
                s.heads_ups.hits,
                s.heads_ups.skips,
                s.heads_ups.late
            );
            if so {
                rows.push(us(&lat, 0.99));
            }
        }
    }
    if !python {
        println!("  python: skipped: no python3 (3.9 or newer, on /usr/local/bin:/usr/bin:/bin)");
    }
    for fsync in ["always", "never"] {
        let r = rig(&format!("floor-{fsync}"), None, fsync, "0", false);
        let lat = latency(&r, n, false);
        r.daemon.stop(Duration::from_secs(8));
        let _ = std::fs::remove_dir_all(&r.dir);
        println!(
            "  {fsync:<11}  (floor: a plain follower thread, no plugin)  p50 {:.1} µs  p99 {:.1}  max {:.1}",
            us(&lat, 0.5),
            us(&lat, 0.99),
            lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e6)
        );
        rows.push(us(&lat, 0.99));
    }
    if row_spec == DEFAULT_ROWS {
        println!(
            "  p99 ratios: heads-up on/off {:.2}x (fsync always), {:.2}x (never); plugin with heads-up / floor {:.2}x (always)",
            rows[0] / rows[1].max(1e-9),
            rows[2] / rows[3].max(1e-9),
            rows[0] / rows[4].max(1e-9)
        );
    }

    // Swap pause: 20 swaps of the stamp plugin.
    let r = rig("swaps", Some(Stamp::So(&v1)), "never", "1000", true);
    let mut pauses = Vec::new();
    for i in 0..20u64 {
        let timed = r.view.get("stamp").map_or(0, |s| s.pauses_timed);
        install(if i % 2 == 0 { &v2 } else { &v1 }, &r.plugins, "stamp");
        // This swap's own pause: `loads` moves a moment before the new thread times it.
        wait("a swap", || r.view.get("stamp").is_some_and(|s| s.pauses_timed > timed && s.state == "running"));
        if let Some(us) = r.view.get("stamp").and_then(|s| s.last_swap_pause_us) {
            pauses.push(Duration::from_micros(us));
        }
    }
    pauses.sort();

    // Restart after a crash: SIGKILL of the stamp plugin's process to the new process's first
    // callback (its `start`, recorded by the stamp plugin), less the 1 ms backoff, with the
    // scan at its default (1 s) so that the restart does not ride on a scan.
    let restarts = rig("restarts", None, "never", "0", false);
    std::fs::write(
        restarts.plugins.join("stamp.conf"),
        format!(
            "record = {}\nmode = stamp\nrestart_backoff_ms = 1\nrestart_backoff_max_ms = 1\nquarantine_after = 0\n",
            restarts.dir.join("stamp.rec").display()
        ),
    )
    .expect("conf");
    install(&v1, &restarts.plugins, "stamp");
    wait("the stamp plugin running", || restarts.view.get("stamp").is_some_and(|s| s.state == "running"));
    let mut restart_lat = Vec::new();
    for i in 0..20u64 {
        let s = restarts.view.get("stamp").unwrap_or_default();
        let starts_before =
            std::fs::read_to_string(restarts.dir.join("stamp.rec")).unwrap_or_default().matches("start ").count();
        let killed = Instant::now();
        let _ = Command::new("kill").arg("-KILL").arg(s.pid.to_string()).status();
        wait("a restart", || {
            std::fs::read_to_string(restarts.dir.join("stamp.rec")).unwrap_or_default().matches("start ").count()
                > starts_before
        });
        restart_lat.push(killed.elapsed().saturating_sub(Duration::from_millis(1)));
        wait("running again", || restarts.view.get("stamp").is_some_and(|s| s.state == "running" && s.restarts > i));
    }
    restart_lat.sort();
    restarts.daemon.stop(Duration::from_secs(8));
    let _ = std::fs::remove_dir_all(&restarts.dir);

    r.daemon.stop(Duration::from_secs(8));
    let _ = std::fs::remove_dir_all(&r.dir);

    // Intents/s: the flood plugin places 500 orders as soon as it sees a price, in its own
    // process, then in the daemon (`isolation = none`) for the executor's own pace, each in a
    // daemon of its own.
    // Then the Python plugin's flood, and the idle plugin processes, `.so` and Python.
    let (per_s, flood_ns, daemon_rss_kb, _) = flood(Stamp::So(&v1), "process");
    let (per_s_local, flood_ns_local, _, _) = flood(Stamp::So(&v1), "none");
    let py_flood = python.then(|| flood(Stamp::Py, "process"));
    let idle_s: u64 = std::env::var("PLUGIN_BENCH_IDLE_S").ok().and_then(|v| v.parse().ok()).unwrap_or(10).max(1);
    let idles = idle(&stamps, Duration::from_secs(idle_s));

    println!(
        "hot-swap pause ({} swaps)                  p50 {}  max {}",
        pauses.len(),
        ms(percentile(&pauses, 0.5)),
        ms(*pauses.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "restart after a crash ({} kills)           first callback p50 {}  p99 {}  max {} after the 1 ms backoff \
         (target < 100 ms)",
        restart_lat.len(),
        ms(percentile(&restart_lat, 0.5)),
        ms(percentile(&restart_lat, 0.99)),
        ms(*restart_lat.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "intents from one plugin to loopback ACKs   {per_s:.0} orders/s (500 at once, {:.1} ms; target >= 1,500); \
         the same plugin in the daemon (isolation = none): {per_s_local:.0} orders/s ({:.1} ms)",
        flood_ns as f64 / 1e6,
        flood_ns_local as f64 / 1e6
    );
    match py_flood {
        Some((per_s, ns, _, peak)) => println!(
            "  the Python plugin (SDK, its own process)  {per_s:.0} orders/s (500 at once, {:.1} ms); its process at \
             most {:.1} MB meanwhile",
            ns as f64 / 1e6,
            peak as f64 / 1e6
        ),
        None => println!("  the Python plugin: skipped: no python3"),
    }
    println!("idle plugin processes, {idle_s} s at the default tick (1 s) and price poll (2 s), in one daemon");
    for (stamp, idle) in stamps.iter().zip(&idles) {
        match idle {
            Some((rss, cpu)) => println!(
                "  {:<6}  RSS {:.1} MB{}  CPU {:.3} % of a core",
                stamp.label(),
                *rss as f64 / 1e6,
                if matches!(stamp, Stamp::So(_)) { " (target <= 4)" } else { "" },
                cpu * 100.0
            ),
            None => println!("  {:<6}  not measured: its process was restarted or gone", stamp.label()),
        }
    }
    if !python {
        println!("  python  skipped: no python3");
    }
    println!(
        "RSS: this process (daemon + paper exchange + bench) at most {:.1} MB during the flood (target for the daemon \
         alone <= 48)",
        daemon_rss_kb as f64 / 1e3
    );
}

/// Each of `stamps` installed as an idle plugin (no settings) in one daemon at the default
/// scan, tick and price poll, as deployed: each one's process RSS (bytes) and CPU (share of
/// one core) over `window`, once a second has passed since all ran (the start's own work,
/// Python's imports, done). `None` for one whose process changed meanwhile.
fn idle(stamps: &[Stamp<'_>], window: Duration) -> Vec<Option<(u64, f64)>> {
    use binance_syncd::plugin::usage;
    let r = rig("idle", None, "never", "1000", false);
    let names: Vec<String> = (0..stamps.len()).map(|i| format!("idle{i}")).collect();
    for (stamp, name) in stamps.iter().zip(&names) {
        stamp.install(&r.plugins, name);
    }
    let pid = |name: &str| r.view.get(name).filter(|s| s.state == "running").map_or(0, |s| s.pid);
    wait("the idle plugins running", || names.iter().all(|n| pid(n) != 0));
    std::thread::sleep(Duration::from_secs(1));
    let before: Vec<_> = names.iter().map(|n| (pid(n), usage(pid(n)))).collect();
    let started = Instant::now();
    std::thread::sleep(window);
    let wall = started.elapsed();
    let out = names
        .iter()
        .zip(before)
        .map(|(n, (was, before))| {
            let after = usage(pid(n)).filter(|_| pid(n) == was)?;
            let cpu = after.cpu.saturating_sub(before?.cpu);
            Some((after.rss_bytes, cpu.as_secs_f64() / wall.as_secs_f64()))
        })
        .collect();
    r.daemon.stop(Duration::from_secs(8));
    let _ = std::fs::remove_dir_all(&r.dir);
    out
}

/// 500 orders from the flood plugin at once (`isolation` as given; a program plugin is
/// always in its own process), through a daemon of its own: orders/s, the time taken in ns,
/// this process's largest RSS meanwhile (kB) and the plugin process's (bytes).
fn flood(stamp: Stamp<'_>, isolation: &str) -> (f64, u128, u64, u64) {
    let r = rig(&format!("flood-{}-{isolation}", stamp.label()), None, "never", "1000", true);
    let floods = r.dir.join("flood.rec");
    let conf = match stamp {
        Stamp::So(_) => format!("record = {}\nflood = 500\nisolation = {isolation}\n", floods.display()),
        Stamp::Py => format!("record = {}\nflood = 500\n", floods.display()),
    };
    std::fs::write(r.plugins.join("flood.conf"), conf).expect("conf");
    stamp.install(&r.plugins, "flood");
    let (mut daemon_rss_kb, mut plugin_rss) = (0, 0);
    wait("the flood", || {
        daemon_rss_kb = daemon_rss_kb.max(common::own_rss_kb());
        let usage = r.view.get("flood").and_then(|s| binance_syncd::plugin::usage(s.pid));
        plugin_rss = plugin_rss.max(usage.map_or(0, |u| u.rss_bytes));
        std::fs::read_to_string(&floods).unwrap_or_default().contains("flood 500 ")
    });
    let flood_ns: u128 = std::fs::read_to_string(&floods)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("flood 500 ")?.trim().parse().ok())
        .expect("flood line");
    r.daemon.stop(Duration::from_secs(8));
    let _ = std::fs::remove_dir_all(&r.dir);
    (500.0 / (flood_ns as f64 / 1e9), flood_ns, daemon_rss_kb, plugin_rss)
}
