//! Strategy plugins against the paper exchange: hot swap with no gap and no repeat in the fills
//! a plugin sees, two versions never running at once; a panicking, a failing and a sleeping
//! plugin leave the daemon, the fill log and another plugin complete; files that are not a
//! plugin of this ABI are refused while the running version stays.

use crate::sync::{assert_matches_truth, config, fast, fill_whole, read_log, rest_buy, temp_dir, wait_lines};
use crate::util::{client, init_log, paper_with};
use binance_syncd::config::Config;
use binance_syncd::daemon::Daemon;
use binance_syncd::lock::LockAnyway;
use binance_syncd::plugin::PluginStatus;
use binance_syncd_paper::PaperExchange;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The workspace's target directory (this binary lives in `<target>/debug/deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|p| p.parent()).and_then(|p| p.parent()).unwrap().to_path_buf()
}

/// Builds plugin crate `name` with `SYNCD_TEST_PLUGIN_VERSION=version` and returns a private
/// copy of the `.so` (builds of different versions share one output path, hence the lock).
pub fn build_plugin(name: &str, version: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock_anyway();
    let target = target_dir();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", name, "--target-dir"])
        .arg(&target)
        .env("SYNCD_TEST_PLUGIN_VERSION", version)
        .status()
        .expect("run cargo build for a plugin");
    assert!(status.success(), "cargo build -p {name} failed");
    let built = target.join("debug").join(format!("lib{}.so", name.replace('-', "_")));
    let copy = std::env::temp_dir().join(format!("syncd-plugin-{}-{name}-v{version}.so", std::process::id()));
    // Whole or not at all: another test may be copying this very file to install it, and a
    // half-written image maps short (SIGBUS in the plugin's process).
    let tmp = copy.with_extension("so.tmp");
    std::fs::copy(&built, &tmp).unwrap();
    std::fs::rename(&tmp, &copy).unwrap();
    copy
}

/// Installs `so` as `dir/NAME.so` the documented way: a temporary file, then `rename`. Mode
/// 0755 whatever the umask: a group-writable plugin is refused (`plugin::trust`).
pub fn install(so: &Path, dir: &Path, name: &str) {
    install_with_mode(so, dir, name, 0o755);
}

fn install_with_mode(so: &Path, dir: &Path, name: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!(".{name}.so.tmp"));
    std::fs::copy(so, &tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.so"))).unwrap();
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) struct Rig {
    pub(crate) ex: PaperExchange,
    pub(crate) cfg: Config,
    pub(crate) dir: PathBuf,
    pub(crate) plugins: PathBuf,
    pub(crate) daemon: Option<Daemon>,
    orders: u64,
}

impl Rig {
    pub(crate) fn start(name: &str, plugins: &[(&str, &Path, &str)]) -> Rig {
        Rig::start_with(name, plugins, |_| {})
    }

    pub(crate) fn start_with(name: &str, plugins: &[(&str, &Path, &str)], adjust: impl FnOnce(&mut Config)) -> Rig {
        init_log();
        let ex = paper_with(|_| {});
        let dir = temp_dir(name);
        let plugin_dir = dir.join("plugins");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        for (pname, so, conf) in plugins {
            std::fs::write(plugin_dir.join(format!("{pname}.conf")), conf).unwrap();
            install(so, &plugin_dir, pname);
        }
        let mut cfg = config(&ex, &dir);
        cfg.plugin_dir = Some(plugin_dir.clone());
        cfg.plugin_scan = Duration::from_millis(100);
        cfg.plugin_stall = Duration::from_millis(800);
        cfg.plugin_tick = Duration::from_millis(100);
        adjust(&mut cfg);
        let daemon = Daemon::start(&cfg, &fast()).unwrap();
        Rig { ex, cfg, dir, plugins: plugin_dir, daemon: Some(daemon), orders: 0 }
    }

    pub(crate) fn status(&self, name: &str) -> PluginStatus {
        self.daemon.as_ref().and_then(|d| d.plugins()).and_then(|v| v.get(name)).unwrap_or_default()
    }

    pub(crate) fn wait_status(&self, name: &str, what: &str, f: impl Fn(&PluginStatus) -> bool) -> PluginStatus {
        wait_until(&format!("plugin {name}: {what} (now {:?})", self.status(name)), Duration::from_secs(30), || {
            f(&self.status(name))
        });
        self.status(name)
    }

    /// One order of another user, filled in one trade: one fill-log line.
    pub(crate) fn fill(&mut self) {
        self.orders += 1;
        let rest = client(&self.ex);
        let id = rest_buy(&self.ex, &rest, "BTCUSD", "0.01", &format!("web-{}", self.orders));
        fill_whole(&self.ex, "BTCUSD", id);
    }

    pub(crate) fn record(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("{name}.rec")))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

/// The paper report's errors answered to order requests (`/api/v3/order...`).
pub(crate) fn order_errors(report: &serde_json::Value) -> Vec<&serde_json::Value> {
    let errors = report["errors"].as_array().map(Vec::as_slice).unwrap_or_default();
    errors.iter().filter(|e| e["path"].as_str().is_some_and(|p| p.starts_with("/api/v3/order"))).collect()
}

/// The `fill V SEQ REPLAYED` lines of a record across daemon kills (run `seed`): in order with no
/// gap, and anything seen again marked replayed. Returns the last seq and how many came again.
pub(crate) fn assert_in_order_repeats_marked<'a>(record: impl Iterator<Item = &'a str>, seed: u64) -> (u64, usize) {
    let (mut max_seen, mut replays) = (0u64, 0);
    for line in record {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (Some(&"fill"), Some(seq), Some(replayed)) =
            (parts.first(), parts.get(2).and_then(|s| s.parse::<u64>().ok()), parts.get(3))
        else {
            continue; // start/stop lines, or a line a kill cut short
        };
        if seq <= max_seen {
            assert_eq!(*replayed, "1", "seed {seed}: fill #{seq} came again unmarked");
            replays += 1;
        } else {
            assert_eq!(seq, max_seen + 1, "seed {seed}: a gap before fill #{seq}");
            max_seen = seq;
        }
    }
    (max_seen, replays)
}

/// The `fill V SEQ REPLAYED` lines of a record as (version, seq).
pub(crate) fn fills_of(record: &[String]) -> Vec<(String, u64)> {
    record
        .iter()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            (p.next() == Some("fill"))
                .then(|| (p.next().unwrap_or("").to_string(), p.next().and_then(|s| s.parse().ok()).unwrap_or(0)))
        })
        .collect()
}

#[test]
fn a_swap_while_fills_stream_in_has_no_gap_no_repeat_and_never_two_versions_at_once() {
    let v1 = build_plugin("test-plugin", "1");
    let v2 = build_plugin("test-plugin", "2");
    let dir = temp_dir("plugin-swap-conf");
    let rec_conf = format!("record = {}\nhistory = all\n", dir.join("rec.rec").display());
    let mut rig = Rig::start("plugin-swap", &[("rec", &v1, &rec_conf)]);
    rig.dir = dir;
    rig.wait_status("rec", "version 1 running", |s| s.version == "1" && s.state == "running");
    for _ in 0..10 {
        rig.fill();
    }
    // Fills keep coming while the new file is picked up, loaded and swapped in.
    install(&v2, &rig.plugins, "rec");
    let end = Instant::now() + Duration::from_secs(30);
    while rig.status("rec").version != "2" {
        assert!(Instant::now() < end, "version 2 never started: {:?}", rig.status("rec"));
        rig.fill();
        std::thread::sleep(Duration::from_millis(30));
    }
    for _ in 0..10 {
        rig.fill();
    }
    let total = rig.orders as usize;
    let fills = wait_lines(&rig.cfg.fill_log, total, Duration::from_secs(20));
    assert_eq!(fills.len(), total);
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("rec", "every fill delivered", |s| s.delivered == last);
    let record = rig.record("rec");
    let seen = fills_of(&record);
    let seqs: Vec<u64> = seen.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>(), "no gap, no repeat: {record:?}");
    assert!(
        seen.iter().any(|(v, _)| v == "1") && seen.iter().any(|(v, _)| v == "2"),
        "both versions saw fills: {record:?}"
    );
    // Never at once: version 1 stopped before version 2 started, and no v1 line comes after.
    let stop1 = record.iter().position(|l| l == "stop 1").expect("version 1 stopped");
    let start2 = record.iter().position(|l| l == "start 2").expect("version 2 started");
    assert!(stop1 < start2, "{record:?}");
    assert!(record[start2..].iter().all(|l| !l.starts_with("fill 1 ")), "{record:?}");
    let s = rig.status("rec");
    assert_eq!((s.loads, s.pauses_timed), (2, 1), "one swap, its pause timed: {s:?}");
    assert!(s.pid != 0 && s.pid != std::process::id(), "in a process of its own: {s:?}");
    assert!(s.last_swap_pause_us.is_some(), "{s:?}");
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

#[test]
fn a_panicking_a_failing_and_a_sleeping_plugin_leave_the_daemon_the_log_and_a_calm_plugin_complete() {
    let so = build_plugin("test-plugin", "1");
    let dir = temp_dir("plugin-faults-conf");
    let conf = |name: &str, extra: &str| {
        format!("record = {}\nhistory = all\n{extra}\n", dir.join(format!("{name}.rec")).display())
    };
    let sink = crate::metrics::Sink::start();
    let webhook = binance_syncd::secret::Secret::new(sink.url.clone());
    let mut rig = Rig::start_with(
        "plugin-faults",
        &[
            ("panicky", &so, &conf("panicky", "mode = panic")),
            ("failing", &so, &conf("failing", "mode = fail")),
            ("sleepy", &so, &conf("sleepy", "mode = sleep\nsleep_ms = 1500")),
            ("calm", &so, &conf("calm", "")),
        ],
        |cfg| {
            cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
            cfg.alert_webhook = Some(webhook);
        },
    );
    rig.dir = dir;
    for name in ["panicky", "failing", "sleepy", "calm"] {
        rig.wait_status(name, "running", |s| s.state == "running" || s.state == "disabled");
    }
    for _ in 0..6 {
        rig.fill();
    }
    let fills = wait_lines(&rig.cfg.fill_log, 6, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    // The calm plugin gets every fill while the sleeper is still on its second one.
    rig.wait_status("calm", "all fills", |s| s.delivered == last);
    assert_eq!(
        fills_of(&rig.record("calm")).iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<u64>>()
    );
    assert!(fills_of(&rig.record("sleepy")).len() < 6, "the sleeper is behind, and nobody waited for it");
    let panicky = rig.wait_status("panicky", "disabled", |s| s.state == "disabled");
    assert!(panicky.problem.contains("panicked"), "{panicky:?}");
    let failing = rig.wait_status("failing", "disabled", |s| s.state == "disabled");
    assert!(failing.problem.contains("status -2"), "{failing:?}");
    assert_eq!(fills_of(&rig.record("panicky")).len(), 1, "disabled after its first fill");
    rig.wait_status("sleepy", "stalled", |s| s.state == "stalled");
    // Killed for it, and started again.
    let sleepy = rig.wait_status("sleepy", "restarted", |s| s.restarts >= 1);
    assert!(sleepy.last_exit.contains("SIGKILL"), "{sleepy:?}");
    // The metrics and the alerts see the same: one alert each for the panic and the error.
    let addr = rig.daemon.as_ref().and_then(|d| d.metrics_addr()).unwrap();
    let scrape = crate::metrics::get(addr, "/metrics").1;
    for (plugin, state) in [("panicky", "disabled"), ("failing", "disabled"), ("calm", "running")] {
        let series = format!("syncd_plugin_state{{plugin=\"{plugin}\",state=\"{state}\"}}");
        assert_eq!(crate::metrics::value(&scrape, &series), Some(1.0), "{series} in\n{scrape}");
    }
    let calm_seq = crate::metrics::value(&scrape, "syncd_plugin_delivered_seq{plugin=\"calm\"}");
    assert_eq!(calm_seq, Some(last as f64), "{scrape}");
    wait_until("the plugin alerts", Duration::from_secs(5), || {
        let t = sink.texts();
        ["panicky is disabled", "failing is disabled", "sleepy is stalled"]
            .iter()
            .all(|w| t.iter().any(|x| x.contains(w)))
    });
    let texts = sink.texts();
    assert_eq!(texts.iter().filter(|t| t.contains("ALERT: plugin panicky is disabled")).count(), 1, "{texts:#?}");
    assert!(texts.iter().any(|t| t.contains("panicked")), "the problem is in the alert: {texts:#?}");
    // The daemon goes on: more fills are logged and reach the calm plugin.
    rig.fill();
    let fills = wait_lines(&rig.cfg.fill_log, 7, Duration::from_secs(20));
    let calm = rig.wait_status("calm", "the 7th fill", |s| s.delivered == last + 1);
    // Each trade was announced to the calm plugin (SYNCD_PLUGIN_SPIN_US, default on) before
    // its line: it stayed awake for it, slept through it, or found it late (the heads-ups of
    // trades close together can merge into one, so not necessarily seven).
    if std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2) {
        assert!(calm.heads_ups.spins + calm.heads_ups.skips + calm.heads_ups.late >= 1, "{calm:?}");
    }
    let report = rig.ex.report();
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    assert_matches_truth(&fills, &report);
    // Behind but complete: the sleeper got every fill up to where it was stopped, in order;
    // its process is killed at each stall (issue 21) and the fill it was on comes again to the
    // next one, marked replayed.
    let slept: Vec<(u64, bool)> = rig
        .record("sleepy")
        .iter()
        .filter_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            (p.first() == Some(&"fill")).then(|| (p[2].parse().unwrap(), p[3] == "1"))
        })
        .collect();
    let mut next = 1;
    for &(seq, replayed) in &slept {
        if seq == next {
            next += 1;
        } else {
            assert!(seq + 1 == next && replayed, "{slept:?}");
        }
    }
}

/// Compiles a C file into a shared object with the system compiler.
pub(crate) fn cc(name: &str, source: &str) -> PathBuf {
    compile("cc", "c", name, source)
}

/// Compiles `source` (in the language `ext` says) with `compiler` into a shared object,
/// warnings as errors: the header must compile clean in C and C++.
fn compile(compiler: &str, ext: &str, name: &str, source: &str) -> PathBuf {
    compile_with(compiler, ext, name, source, &Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/include"))
}

/// [`compile`] against the header in `include`.
fn compile_with(compiler: &str, ext: &str, name: &str, source: &str, include: &Path) -> PathBuf {
    let dir = temp_dir(&format!("{compiler}-{name}"));
    let c = dir.join(format!("{name}.{ext}"));
    std::fs::write(&c, source).unwrap();
    let so = dir.join(format!("{name}.so"));
    let status = Command::new(compiler)
        .args(["-shared", "-fPIC", "-O1", "-Werror", "-o"])
        .arg(&so)
        .arg("-I")
        .arg(include)
        .arg(&c)
        .status()
        .expect("cc");
    assert!(status.success(), "{compiler} {name}.{ext} failed");
    so
}

#[test]
fn wrong_abi_missing_entry_and_not_an_elf_are_refused_and_the_running_version_stays() {
    let good = build_plugin("test-plugin", "1");
    let dir = temp_dir("plugin-refuse-conf");
    let conf = format!("record = {}\n", dir.join("good.rec").display());
    let rig = Rig::start("plugin-refuse", &[("good", &good, &conf)]);
    rig.wait_status("good", "running", |s| s.state == "running" && s.version == "1");
    let no_entry = cc("noentry", "int some_other_symbol(void) { return 0; }\n");
    let bad_abi = cc(
        "badabi",
        "#include \"binance_syncd_plugin.h\"\n\
         static syncd_plugin_v1 table = { 2, 0, sizeof(syncd_plugin_v1), 0 };\n\
         const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *host) { (void)host; return &table; }\n",
    );
    let junk = rig.dir.join("junk.so");
    std::fs::write(&junk, "this is not a shared object\n").unwrap();
    install(&no_entry, &rig.plugins, "noentry");
    install(&bad_abi, &rig.plugins, "badabi");
    install(&junk, &rig.plugins, "junk");
    let s = rig.wait_status("noentry", "refused", |s| s.state == "refused");
    assert!(s.problem.contains("syncd_plugin_entry_v1"), "{s:?}");
    let s = rig.wait_status("badabi", "refused", |s| s.state == "refused");
    assert!(s.problem.contains("ABI 2.x") && s.problem.contains("ABI 1.x"), "{s:?}");
    let s = rig.wait_status("junk", "refused", |s| s.state == "refused");
    assert!(s.problem.contains("cannot load"), "{s:?}");
    // A bad file over a running plugin: refused, and version 1 keeps running.
    install(&junk, &rig.plugins, "good");
    let s = rig.wait_status("good", "the new file refused", |s| !s.problem.is_empty());
    assert_eq!((s.state.as_str(), s.version.as_str()), ("running", "1"), "{s:?}");
    let _ = read_log(&rig.cfg.fill_log);
}

#[test]
fn the_c_example_loads_and_receives_fills() {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/c-example/example.c")).unwrap();
    let so = cc("c_example", &source);
    let dir = temp_dir("plugin-c-conf");
    let conf = format!("record = {}\nhistory = all\n", dir.join("c.rec").display());
    let mut rig = Rig::start("plugin-c", &[("c_example", &so, &conf)]);
    rig.dir = dir;
    rig.wait_status("c_example", "running", |s| s.state == "running" && s.version == "c-example 1");
    for _ in 0..3 {
        rig.fill();
    }
    let fills = wait_lines(&rig.cfg.fill_log, 3, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("c_example", "every fill", |s| s.delivered == last);
    let seqs: Vec<u64> = std::fs::read_to_string(rig.dir.join("c.rec"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("fill c ")?.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>());
}

#[test]
fn a_cpp_plugin_built_with_cxx_loads_and_receives_fills() {
    // The header alone, from C++: its entry symbol must keep its C name (extern "C" guards)
    // and its layout assertions must hold there too.
    let so = compile(
        "c++",
        "cpp",
        "cpp_plugin",
        r#"#include "binance_syncd_plugin.h"
#include <cstdio>
#include <string>
namespace {
struct Strategy {
    int fills = 0;
    syncd_status fill(const syncd_fill *f) {
        ++fills;
        if (FILE *out = std::fopen("fills.txt", "a")) {
            std::fprintf(out, "%llu\n", static_cast<unsigned long long>(f->seq));
            std::fclose(out);
        }
        return SYNCD_STATUS_OK;
    }
};
const std::string version = "cpp 1";
void *create(const syncd_host_v1 *) { return new Strategy(); }
void destroy(void *s) { delete static_cast<Strategy *>(s); }
syncd_status on_fill(void *s, const syncd_fill *f) { return static_cast<Strategy *>(s)->fill(f); }
syncd_plugin_v1 table = {SYNCD_ABI_MAJOR, SYNCD_ABI_MINOR, sizeof(syncd_plugin_v1), 0,
    {reinterpret_cast<const uint8_t *>(version.data()), version.size()}, create, destroy,
    nullptr, on_fill, nullptr, nullptr, nullptr, nullptr, nullptr};
}
const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *) { return &table; }
"#,
    );
    let mut rig = Rig::start("plugin-cpp", &[("cpp", &so, "history = all\n")]);
    rig.wait_status("cpp", "running", |s| s.state == "running" && s.version == "cpp 1");
    for _ in 0..3 {
        rig.fill();
    }
    let fills = wait_lines(&rig.cfg.fill_log, 3, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("cpp", "every fill", |s| s.delivered == last);
    let record = rig.cfg.state_dir.join("plugins").join("run").join("cpp").join("fills.txt");
    let seqs: Vec<u64> =
        std::fs::read_to_string(record).unwrap().lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>());
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

#[test]
fn grid_maker_quotes_maker_only_with_no_rejection_and_sees_every_fill_once() {
    let so = build_plugin("grid-maker", "1");
    let mut rig =
        Rig::start_with("plugin-grid", &[("grid_maker", &so, "levels = 3\nspacing = 5\nquote = 25\n")], |c| {
            c.strategy_limits.max_orders_10s = 100;
        });
    rig.wait_status("grid_maker", "running", |s| s.state == "running");
    let link = rig.daemon.as_ref().unwrap().executor().clone();
    let view = || link.view();
    wait_until("the grid on both symbols", Duration::from_secs(20), || {
        view().open_orders.iter().filter(|o| o.client_order_id.starts_with("sd-gridmake-")).count() >= 12
    });
    // Fill some of its orders: each fill makes it quote the other side.
    let mine: Vec<(String, u64)> = view()
        .open_orders
        .iter()
        .filter(|o| o.client_order_id.starts_with("sd-gridmake-"))
        .take(4)
        .map(|o| (o.symbol.clone(), o.order_id))
        .collect();
    for (symbol, id) in &mine {
        fill_whole(&rig.ex, symbol, *id);
    }
    rig.fill(); // and someone else's fill, which it must see but not act on
    let expected = rig.ex.report()["trades"].as_array().unwrap().len();
    let fills = wait_lines(&rig.cfg.fill_log, expected, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("grid_maker", "every fill", |s| s.delivered == last);
    wait_until("re-quotes after its fills", Duration::from_secs(20), || view().stats.placed >= 16);
    let report = assert_maker_only_no_rejection(&rig.ex, "sd-gridmake-", 4);
    let stats = view().stats;
    assert_eq!((stats.filter_rejections, stats.taker_rejections), (0, 0));
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    assert_matches_truth(&fills, &report);
}

/// No order of a grid rejected by the exchange, and its `fills` trades (client ids starting
/// with `prefix`) all maker; the report, for the truth check.
pub(crate) fn assert_maker_only_no_rejection(ex: &PaperExchange, prefix: &str, fills: usize) -> serde_json::Value {
    let report = ex.report();
    let mistakes = order_errors(&report);
    assert!(mistakes.is_empty(), "the exchange rejected grid orders: {mistakes:?}");
    let ours: Vec<&serde_json::Value> = report["trades"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["client_order_id"].as_str().is_some_and(|c| c.starts_with(prefix)))
        .collect();
    assert_eq!(ours.len(), fills, "{ours:?}");
    assert!(ours.iter().all(|t| t["maker"] == true), "{ours:?}");
    report
}

#[test]
fn a_torn_or_empty_cursor_file_never_skips_a_fill() {
    let so = build_plugin("test-plugin", "1");
    for (case, body) in [("empty", ""), ("torn", "{\"delivered\":2,\"cle")] {
        let out = temp_dir(&format!("plugin-torn-cursor-{case}-out"));
        let conf = format!("record = {}\n", out.join("p.rec").display());
        let mut rig = Rig::start(&format!("plugin-torn-cursor-{case}"), &[("p", &so, &conf)]);
        rig.wait_status("p", "running", |s| s.state == "running");
        for _ in 0..2 {
            rig.fill();
        }
        rig.wait_status("p", "fills 1 and 2", |s| s.delivered == 2);
        // Its file removed (the cursor saved, clean), two fills it does not see, then a
        // daemon restart that finds the cursor file damaged.
        std::fs::remove_file(rig.plugins.join("p.so")).unwrap();
        rig.wait_status("p", "stopped", |s| s.state == "stopped");
        for _ in 0..2 {
            rig.fill();
        }
        wait_lines(&rig.cfg.fill_log, 4, Duration::from_secs(20));
        if let Some(d) = rig.daemon.take() {
            d.stop(Duration::from_secs(8));
        }
        std::fs::write(rig.cfg.state_dir.join("plugins").join("p.cursor"), body).unwrap();
        install(&so, &rig.plugins, "p");
        rig.daemon = Some(Daemon::start(&rig.cfg, &fast()).unwrap());
        rig.wait_status("p", "every fill", |s| s.delivered == 4);
        let record = std::fs::read_to_string(out.join("p.rec")).unwrap_or_default();
        let fills: Vec<&str> = record.lines().filter(|l| l.starts_with("fill ")).collect();
        // #1 and #2 twice (the second time marked replayed), #3 and #4 after them: none skipped.
        let seqs: Vec<u64> =
            fills_of(&fills.iter().map(|l| l.to_string()).collect::<Vec<_>>()).iter().map(|f| f.1).collect();
        assert_eq!(seqs, [1, 2, 1, 2, 3, 4], "{case}: {record}");
        assert!(fills[2..].iter().all(|l| l.ends_with(" 1")), "{case}: all marked replayed: {record}");
        if let Some(d) = rig.daemon.take() {
            d.stop(Duration::from_secs(8));
        }
    }
}

#[test]
fn sigkill_with_a_plugin_loaded_then_restart_delivers_every_fill_after_its_cursor() {
    use binance_syncd_paper::DEMO_API_KEY;
    init_log();
    let so = build_plugin("test-plugin", "1");
    let ex = paper_with(|c| {
        c.market_tick = Duration::from_millis(20);
        c.engine.external_trader_pct = 60;
    });
    let dir = temp_dir("plugin-kill");
    let plugin_dir = dir.join("plugins");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    let record = dir.join("rec.rec");
    std::fs::write(plugin_dir.join("rec.conf"), format!("record = {}\nhistory = all\n", record.display())).unwrap();
    install(&so, &plugin_dir, "rec");
    // One that never answers: its process does not read its channel, so only the daemon's
    // death signal (PR_SET_PDEATHSIG) ends it with the daemon.
    std::fs::write(plugin_dir.join("hang.conf"), "hang_in_start = true\n").unwrap();
    install(&so, &plugin_dir, "hang");
    let seed = std::env::var("SYNCD_TEST_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
    });
    let mut rng = seed | 1;
    let run = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
        cmd.arg("run");
        let cmd = crate::util::daemon_env(&mut cmd, &ex, &dir, DEMO_API_KEY)
            .env("SYNCD_PLUGIN_DIR", &plugin_dir)
            .env("SYNCD_PLUGIN_SCAN_S", "0.05")
            .env("SYNCD_RECONCILE_S", "1")
            .env("SYNCD_RECONCILE_DOWN_S", "0.5")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        crate::util::Killed(cmd.spawn().expect("spawn binance-syncd"))
    };
    let mut hosts_seen = 0;
    for _ in 0..6 {
        let mut child = run();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(400 + rng % 900));
        let hosts = children_of(child.id());
        hosts_seen += hosts.len();
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        // Its plugin processes die with it (PR_SET_PDEATHSIG): none is left running.
        wait_until(
            &format!("seed {seed}: plugin hosts {hosts:?} gone with the daemon"),
            Duration::from_secs(10),
            || hosts.iter().all(|&pid| !alive(pid)),
        );
    }
    assert!(hosts_seen > 0, "seed {seed}: no kill found a plugin process; the test proves nothing");
    // A last run with a still market: everything must arrive, then a clean stop.
    ex.fault("quiesce", &[]).unwrap();
    ex.fault("external", &[("pct", "0")]).unwrap();
    let mut child = run();
    let expected = ex.report()["trades"].as_array().unwrap().len();
    assert!(expected > 10, "seed {seed}: only {expected} trades; the test proves nothing");
    let last = || read_log(&dir.join("fills.jsonl")).iter().map(|f| f.seq).max().unwrap_or(0);
    let delivered_all = || {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
            .max()
            == Some(last())
    };
    wait_until(&format!("seed {seed}: every fill logged and delivered"), Duration::from_secs(30), || {
        read_log(&dir.join("fills.jsonl")).len() >= expected && delivered_all()
    });
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let (max_seen, replays) = assert_in_order_repeats_marked(std::fs::read_to_string(&record).unwrap().lines(), seed);
    assert_eq!(max_seen, last(), "seed {seed}");
    println!("plugin sigkill test: {max_seen} fills delivered, {replays} replayed after kills (seed {seed})");
}

/// The `(state, ppid)` of process `pid` from `/proc/PID/stat`.
pub(crate) fn proc_stat(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.to_string();
    Some((state, rest.next()?.parse().ok()?))
}

/// Running (not a zombie waiting for a reaper).
pub(crate) fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != "Z" && state != "X")
}

pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Distinct plugin images of `name` still mapped into this process.
fn mapped_images(name: &str) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut images: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains(&format!("/images/{name}-")))
        .collect();
    images.sort_unstable();
    images.dedup();
    images.len()
}

/// In-process (`isolation = none`), where each version's image is mapped into this process:
/// after 50 swaps at most the live one (and the one being let go) stays mapped. Isolated
/// plugins are covered by `isolation::fifty_swaps_and_fifty_crash_restarts_...`, which looks
/// at a real daemon's processes, descriptors and maps. (This test measured this process's RSS
/// once; other tests share the process, so that figure moved with them, not with a leak.)
#[test]
fn fifty_swaps_in_a_row_leave_one_image_mapped() {
    let v1 = build_plugin("test-plugin", "1");
    let v2 = build_plugin("test-plugin", "2");
    let conf = "isolation = none\n";
    let mut rig = Rig::start_with("plugin-50", &[("swap50", &v1, conf)], |c| c.plugin_scan = Duration::from_millis(20));
    rig.wait_status("swap50", "running", |s| s.state == "running");
    let mut most = 0;
    for i in 1..=50u64 {
        install(if i % 2 == 1 { &v2 } else { &v1 }, &rig.plugins, "swap50");
        rig.wait_status("swap50", &format!("swap {i}"), |s| s.loads == i + 1 && s.state == "running");
        most = most.max(mapped_images("swap50"));
    }
    rig.fill();
    let fills = wait_lines(&rig.cfg.fill_log, 1, Duration::from_secs(20));
    rig.wait_status("swap50", "the fill after 50 swaps", |s| s.delivered == fills[0].seq);
    let mapped = mapped_images("swap50");
    println!("50 swaps in-process: {mapped} plugin images mapped at the end, {most} at most between swaps");
    assert!(mapped >= 1, "the running version's image is not where this test looks: it proves nothing");
    assert!(mapped <= 2 && most <= 2, "{mapped} images of the plugin stay mapped after 50 swaps ({most} at most)");
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

#[test]
fn a_changed_conf_restarts_with_the_same_cursor_and_cancel_on_stop_cancels_on_removal() {
    let so = build_plugin("grid-maker", "1");
    let mut rig = Rig::start_with(
        "plugin-conf",
        &[("grid_maker", &so, "levels = 2\nspacing = 5\nquote = 25\ncancel_on_stop = true\n")],
        |c| c.strategy_limits.max_orders_10s = 100,
    );
    let link = rig.daemon.as_ref().unwrap().executor().clone();
    let own = || link.view().open_orders.iter().filter(|o| o.client_order_id.starts_with("sd-gridmake-")).count();
    wait_until("the first grid", Duration::from_secs(20), || own() >= 8);
    rig.fill();
    let fills = wait_lines(&rig.cfg.fill_log, 1, Duration::from_secs(20));
    let delivered = rig.wait_status("grid_maker", "the fill", |s| s.delivered == fills[0].seq).delivered;
    // A new settings file: the same code restarts, from the same cursor, and keeps its orders.
    std::fs::write(rig.plugins.join("grid_maker.conf"), "levels = 1\nspacing = 7\nquote = 25\ncancel_on_stop = true\n")
        .unwrap();
    let s = rig.wait_status("grid_maker", "restarted", |s| s.loads == 2 && s.state == "running");
    assert_eq!(s.delivered, delivered, "{s:?}");
    assert!(own() >= 8, "the first version's orders passed to the second");
    // Its file removed: stopped, and with cancel_on_stop its orders go (and nobody else's).
    std::fs::remove_file(rig.plugins.join("grid_maker.so")).unwrap();
    rig.wait_status("grid_maker", "stopped", |s| s.state == "stopped");
    wait_until("its orders cancelled", Duration::from_secs(20), || own() == 0);
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

#[test]
fn a_plugin_hears_the_streams_reports_of_its_own_orders() {
    let so = build_plugin("test-plugin", "1");
    let dir = temp_dir("plugin-reports-conf");
    let conf = format!("record = {}\nplace_one = true\n", dir.join("one.rec").display());
    let rig = Rig::start("plugin-reports", &[("one", &so, &conf)]);
    let link = rig.daemon.as_ref().unwrap().executor().clone();
    let mine = || link.view().open_orders.iter().find(|o| o.client_order_id.starts_with("sd-one-")).map(|o| o.order_id);
    wait_until("its order", Duration::from_secs(20), || mine().is_some());
    let id = mine().unwrap();
    // Someone else's order fills too: its report must not reach this plugin.
    let rest = client(&rig.ex);
    let other = rest_buy(&rig.ex, &rest, "BTCUSD", "0.01", "web-other");
    fill_whole(&rig.ex, "BTCUSD", other);
    fill_whole(&rig.ex, "BTCUSD", id);
    let record = dir.join("one.rec");
    wait_until("the FILLED report", Duration::from_secs(20), || {
        std::fs::read_to_string(&record).unwrap_or_default().contains(&format!("report FILLED {id}"))
    });
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.contains(&format!("report NEW {id}")), "{text}");
    assert!(!text.contains(&format!(" {other}\n")), "another user's report reached the plugin: {text}");
}

#[test]
fn the_line_a_plugin_failed_on_comes_again_marked_replayed_to_its_next_version() {
    let so = build_plugin("test-plugin", "1");
    let dir = temp_dir("plugin-refail-conf");
    let record = dir.join("p.rec");
    let conf = |mode: &str| format!("record = {}\nhistory = all\nmode = {mode}\n", record.display());
    let mut rig = Rig::start("plugin-refail", &[("p", &so, &conf("panic"))]);
    rig.wait_status("p", "running", |s| s.state == "running");
    rig.fill();
    rig.wait_status("p", "disabled by its panic", |s| s.state == "disabled");
    // A new settings file is a change: the next version starts, and gets fill #1 again, marked.
    std::fs::write(rig.plugins.join("p.conf"), conf("normal")).unwrap();
    rig.wait_status("p", "the next version", |s| s.loads == 2 && s.state == "running" && s.delivered == 1);
    rig.fill();
    rig.wait_status("p", "fill 2", |s| s.delivered == 2);
    let lines: Vec<String> =
        std::fs::read_to_string(&record).unwrap().lines().filter(|l| l.starts_with("fill")).map(String::from).collect();
    assert_eq!(lines, ["fill 1 1 0", "fill 1 1 1", "fill 1 2 0"], "the failed line again, marked, then on");
}

#[test]
fn a_plugin_reads_fills_of_a_rotated_file_and_skips_only_what_no_file_holds() {
    let so = build_plugin("test-plugin", "1");
    let mut rig = Rig::start("plugin-rotated", &[]);
    for _ in 0..4 {
        rig.fill();
    }
    let live = rig.cfg.fill_log.clone();
    assert_eq!(wait_lines(&live, 4, Duration::from_secs(20)).len(), 4);
    let rotated = live.with_extension("jsonl.1");
    std::fs::rename(&live, &rotated).unwrap();
    rig.daemon.as_ref().unwrap().reopen_fill_log();
    for _ in 0..2 {
        rig.fill();
    }
    assert_eq!(wait_lines(&live, 2, Duration::from_secs(20)).len(), 2);
    // A plugin that asks for the whole history after the rotation: fills #1..#4 are only in
    // the rotated file.
    let conf = |name: &str| format!("record = {}\nhistory = all\n", rig.dir.join(format!("{name}.rec")).display());
    std::fs::write(rig.plugins.join("first.conf"), conf("first")).unwrap();
    install(&so, &rig.plugins, "first");
    rig.wait_status("first", "every fill", |s| s.delivered == 6);
    let seqs: Vec<u64> = fills_of(&rig.record("first")).iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    // The rotated file compressed away: a new plugin gets what is left, after one clear error,
    // instead of waiting for ever.
    std::fs::remove_file(&rotated).unwrap();
    std::fs::write(live.with_extension("jsonl.1.gz"), b"\x1f\x8b\x08\x00not a fill log").unwrap();
    std::fs::write(rig.plugins.join("second.conf"), conf("second")).unwrap();
    install(&so, &rig.plugins, "second");
    rig.wait_status("second", "the fills still readable", |s| s.delivered == 6);
    let seqs: Vec<u64> = fills_of(&rig.record("second")).iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, [5, 6]);
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

/// The C example plugin plus a constructor that writes `marker` when the library is loaded:
/// any `dlopen` of it, by the watcher or by `check`, leaves the marker.
pub fn marking_plugin(name: &str, marker: &Path) -> PathBuf {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/c-example/example.c")).unwrap();
    let source = format!(
        "{example}\n#include <stdio.h>\n__attribute__((constructor)) static void loaded(void) {{\n\
         FILE *f = fopen({:?}, \"a\"); if (f) {{ fputs(\"loaded\\n\", f); fclose(f); }}\n}}\n",
        marker.display().to_string()
    );
    cc(name, &source)
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_0666_so_a_symlinked_so_and_a_fifo_are_refused_with_their_reason_and_nothing_of_theirs_runs() {
    let good = build_plugin("test-plugin", "1");
    let dir = temp_dir("plugin-trust-files-out");
    let marker = dir.join("loaded.marker");
    let evil = marking_plugin("trust_files", &marker);
    let good_conf = format!("record = {}\n", dir.join("good.rec").display());
    let mut rig = Rig::start_with("plugin-trust-files", &[("good", &good, &good_conf)], |cfg| {
        cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    });
    rig.wait_status("good", "running", |s| s.state == "running" && s.version == "1");
    let p = rig.plugins.clone();
    // Each would record its start and place an order if it ran (the C example records
    // nothing, but its constructor leaves the marker as soon as it is loaded).
    install_with_mode(&evil, &p, "wide", 0o666);
    std::os::unix::fs::symlink(&evil, p.join("linked.so")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", p.join("zero.so")).unwrap();
    mkfifo(&p.join("x.so"));
    // A trusted image with settings everyone may write: the settings are refused, and so the
    // plugin (settings choose its tag and what it does).
    install(&evil, &p, "wideconf");
    std::fs::write(p.join("wideconf.conf"), "levels = 1\n").unwrap();
    set_mode(&p.join("wideconf.conf"), 0o666);
    // Settings claiming the running plugin's tag.
    install(&evil, &p, "thief");
    std::fs::write(p.join("thief.conf"), "tag = good\n").unwrap();
    // A 0666 file renamed over the running plugin: refused, version 1 stays.
    install_with_mode(&evil, &p, "good", 0o666);
    let mut expected = vec![
        ("wide", "wide.so is writable by group or others (mode 0666)".to_string()),
        ("linked", "linked.so is a symbolic link, not a regular file".to_string()),
        ("zero", "zero.so is a symbolic link, not a regular file".to_string()),
        ("x", "x.so is a FIFO, not a regular file".to_string()),
        ("wideconf", "wideconf.conf is writable by group or others (mode 0666)".to_string()),
        ("thief", "tag good is already held by plugin good".to_string()),
    ];
    if running_as_root() {
        // Files of another user (nobody): only root can make them.
        for (name, file) in [("foreign", "foreign.so"), ("foreignconf", "foreignconf.conf")] {
            install(&evil, &p, name);
            std::fs::write(p.join(format!("{name}.conf")), "levels = 1\n").unwrap();
            std::os::unix::fs::chown(p.join(file), Some(65534), None).unwrap();
            expected.push((name, format!("{file} is owned by uid 65534, not by root")));
        }
    } else {
        println!("skipped: files owned by another user (needs root to chown them)");
    }
    // Installed last: it loads, so the watcher was not stuck on the FIFO or /dev/zero.
    let late_conf = format!("record = {}\n", dir.join("late.rec").display());
    std::fs::write(p.join("late.conf"), &late_conf).unwrap();
    install(&good, &p, "late");
    rig.wait_status("late", "running", |s| s.state == "running");
    for (name, why) in &expected {
        let s = rig.wait_status(name, "refused", |s| s.state == "refused");
        assert!(s.problem.contains(why.as_str()), "{name}: wanted {why:?} in {s:?}");
        assert_eq!(s.loads, 0, "{s:?}");
    }
    let s = rig.wait_status("good", "the 0666 file refused", |s| !s.problem.is_empty());
    assert_eq!((s.state.as_str(), s.version.as_str(), s.loads), ("running", "1", 1), "{s:?}");
    assert!(s.problem.contains("good.so is writable by group or others (mode 0666)"), "{s:?}");
    let addr = rig.daemon.as_ref().and_then(|d| d.metrics_addr()).unwrap();
    let scrape = crate::metrics::get(addr, "/metrics").1;
    for (name, _) in &expected {
        let series = format!("syncd_plugin_state{{plugin=\"{name}\",state=\"refused\"}}");
        assert_eq!(crate::metrics::value(&scrape, &series), Some(1.0), "{series} in\n{scrape}");
    }
    // Another scan or two: refused once, not again and again.
    let loads = rig.status("late").loads;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rig.status("late").loads, loads);
    assert!(!marker.exists(), "a refused plugin was loaded: {}", std::fs::read_to_string(&marker).unwrap_or_default());
    let images = rig.dir.join("state").join("plugins").join("images");
    let staged: Vec<_> =
        std::fs::read_dir(&images).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(staged.is_empty(), "nothing of theirs was copied: {staged:?}");
    let link = rig.daemon.as_ref().unwrap().executor().clone();
    assert!(link.view().open_orders.is_empty(), "no plugin placed an order: {:?}", link.view().open_orders);
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

#[test]
fn a_plugin_in_a_0777_folder_is_refused_and_runs_once_the_folder_is_fixed() {
    let dir = temp_dir("plugin-trust-folder-out");
    let marker = dir.join("loaded.marker");
    let evil = marking_plugin("trust_folder", &marker);
    let rig = Rig::start_with("plugin-trust-folder", &[("p", &evil, "")], |cfg| {
        if let Some(p) = &cfg.plugin_dir {
            set_mode(p, 0o777);
        }
    });
    let folder = rig.plugins.canonicalize().unwrap();
    let s = rig.wait_status("p", "refused", |s| s.state == "refused");
    let why = format!("the plugin folder {} is writable by group or others (mode 0777)", folder.display());
    assert!(s.problem.contains(&why), "wanted {why:?} in {s:?}");
    if running_as_root() {
        set_mode(&rig.plugins, 0o755);
        std::os::unix::fs::chown(&rig.plugins, Some(65534), None).unwrap();
        let why = format!("the plugin folder {} is owned by uid 65534, not by root", folder.display());
        rig.wait_status("p", &why, |s| s.problem.contains(&why));
        std::os::unix::fs::chown(&rig.plugins, Some(0), None).unwrap();
    } else {
        println!("skipped: a folder owned by another user (needs root to chown it)");
    }
    // A folder above it, writable by others and not sticky.
    let above = rig.plugins.parent().unwrap().canonicalize().unwrap();
    set_mode(&rig.plugins, 0o755);
    set_mode(&above, 0o777);
    let why =
        format!("{}, a folder above the plugin folder, is writable by group or others (mode 0777)", above.display());
    rig.wait_status("p", &why, |s| s.problem.contains(&why));
    assert_eq!(rig.status("p").loads, 0);
    assert!(!marker.exists(), "loaded from an untrusted folder");
    set_mode(&above, 0o755);
    rig.wait_status("p", "running once the folders are fixed", |s| s.state == "running" && s.problem.is_empty());
    assert!(marker.exists(), "the marker works: it is there once the plugin loads");
}

#[test]
fn a_conf_cannot_claim_the_tag_a_disabled_plugin_or_another_file_name_holds() {
    let so = build_plugin("test-plugin", "1");
    let dir = temp_dir("plugin-tag-claim-out");
    let conf = |name: &str, extra: &str| format!("record = {}\n{extra}", dir.join(format!("{name}.rec")).display());
    let mut rig = Rig::start("plugin-tag-claim", &[("grid", &so, &conf("grid", "mode = panic\n"))]);
    rig.wait_status("grid", "running", |s| s.state == "running" && s.tag == "grid");
    // Disabled by its panic: not running, but its file is there and its orders stay in the
    // book under its tag, for its next version.
    rig.fill();
    rig.wait_status("grid", "disabled", |s| s.state == "disabled");
    std::fs::write(rig.plugins.join("aa.conf"), conf("aa", "tag = grid\n")).unwrap();
    install(&so, &rig.plugins, "aa");
    // A file whose name gives tag "newname" (not loadable yet) and settings claiming that tag.
    std::fs::write(rig.plugins.join("newname.so"), "not built yet\n").unwrap();
    std::fs::write(rig.plugins.join("bb.conf"), conf("bb", "tag = newname\n")).unwrap();
    install(&so, &rig.plugins, "bb");
    let s = rig.wait_status("aa", "refused", |s| s.state == "refused");
    let why = "tag grid is already held by plugin grid";
    assert!(s.problem.contains(why), "wanted {why:?} in {s:?}");
    let s = rig.wait_status("bb", "refused", |s| s.state == "refused");
    let why = "tag newname (from bb.conf) is plugin newname's, from its file name";
    assert!(s.problem.contains(why), "wanted {why:?} in {s:?}");
    assert!(!dir.join("aa.rec").exists() && !dir.join("bb.rec").exists(), "a claimer ran");
    // The file whose name gave the tag is gone: the claim is looked at again, and stands.
    std::fs::remove_file(rig.plugins.join("newname.so")).unwrap();
    rig.wait_status("bb", "running once newname.so is gone", |s| s.state == "running" && s.tag == "newname");
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

#[test]
fn an_untrusted_file_gives_no_tag_and_a_removed_plugin_keeps_its_tag_while_its_orders_rest() {
    let so = build_plugin("test-plugin", "1");
    let dir = temp_dir("plugin-tag-rest-out");
    let conf = |name: &str, extra: &str| format!("record = {}\n{extra}", dir.join(format!("{name}.rec")).display());
    let mut rig = Rig::start("plugin-tag-rest", &[("keeper", &so, &conf("keeper", "place_one = true\n"))]);
    rig.wait_status("keeper", "running", |s| s.state == "running" && s.tag == "keeper");
    // A world-writable file nobody may load: its name gives no tag to refuse a claim with.
    install_with_mode(&so, &rig.plugins, "untrust", 0o666);
    std::fs::write(rig.plugins.join("claim.conf"), conf("claim", "tag = untrust\n")).unwrap();
    install(&so, &rig.plugins, "claim");
    rig.wait_status("untrust", "refused", |s| s.state == "refused");
    rig.wait_status("claim", "running under the untrusted file's tag", |s| s.state == "running" && s.tag == "untrust");
    // keeper's order rests; its file goes (no cancel_on_stop): the order stays, and so does
    // its tag, which no settings may then claim.
    let link = rig.daemon.as_ref().unwrap().executor().clone();
    let own = || link.view().open_orders.iter().filter(|o| o.client_order_id.starts_with("sd-keeper-")).count();
    wait_until("keeper's order", Duration::from_secs(20), || own() == 1);
    std::fs::remove_file(rig.plugins.join("keeper.so")).unwrap();
    rig.wait_status("keeper", "stopped", |s| s.state == "stopped");
    std::fs::write(rig.plugins.join("heir.conf"), conf("heir", "tag = keeper\n")).unwrap();
    install(&so, &rig.plugins, "heir");
    let s = rig.wait_status("heir", "refused", |s| s.state == "refused");
    assert!(s.problem.contains("tag keeper is already held by plugin keeper"), "{s:?}");
    assert_eq!(own(), 1);
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

/// The table of `binance-syncd check` run on the paper exchange `ex`, state in `dir`, plugins in
/// `plugins`; bounded in time (a check that hung on a file would fail the test, not hold it).
pub(crate) fn check_table(ex: &PaperExchange, dir: &Path, plugins: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
    cmd.arg("check");
    crate::util::daemon_env(&mut cmd, ex, dir, binance_syncd_paper::DEMO_API_KEY).env("SYNCD_PLUGIN_DIR", plugins);
    let mut child = crate::util::Killed(
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().expect("check"),
    );
    wait_until("check to finish", Duration::from_secs(60), || child.0.try_wait().ok().flatten().is_some());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut text).unwrap();
    println!("{text}");
    text
}

/// The row of `check`'s `text` whose first column is `what`.
pub(crate) fn check_row<'a>(text: &'a str, what: &str) -> &'a str {
    text.lines()
        .find(|l| l.strip_prefix(what).is_some_and(|r| r.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {what}: {text}"))
}

#[test]
fn check_shows_refused_plugin_files_and_never_loads_a_plugin() {
    let ex = paper_with(|_| {});
    let dir = temp_dir("check-trust");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let marker = dir.join("loaded.marker");
    let so = marking_plugin("check_trust", &marker);
    install(&so, &plugins, "fine");
    install_with_mode(&so, &plugins, "wide", 0o666);
    std::os::unix::fs::symlink(&so, plugins.join("linked.so")).unwrap();
    mkfifo(&plugins.join("x.so"));
    std::fs::write(plugins.join("thief.conf"), "tag = fine\n").unwrap();
    install(&so, &plugins, "thief");
    // Bounded: a check that opened the FIFO would wait for a writer for ever.
    let text = check_table(&ex, &dir, &plugins);
    let row = |what: &str| check_row(&text, what);
    assert!(row("plugin dir").contains(" ok "), "{text}");
    let fine = row("plugin fine.so");
    assert!(fine.contains(" ok ") && fine.contains("not loaded: entry symbol found"), "{text}");
    for (what, why) in [
        ("plugin wide.so", "refused: wide.so is writable by group or others (mode 0666)"),
        ("plugin linked.so", "refused: linked.so is a symbolic link, not a regular file"),
        ("plugin x.so", "refused: x.so is a FIFO, not a regular file"),
        ("plugin thief.so", "refused: tag fine is already held by plugin fine"),
    ] {
        assert!(row(what).contains("FAIL") && row(what).contains(why), "{what}: {text}");
    }
    assert!(!marker.exists(), "check loaded a plugin (its constructor ran)");
    set_mode(&plugins, 0o777);
    let text = check_table(&ex, &dir, &plugins);
    let folder = plugins.canonicalize().unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("plugin dir")
            && l.contains("FAIL")
            && l.contains(&format!(
                "refused: the plugin folder {} is writable by group or others (mode 0777)",
                folder.display()
            ))),
        "{text}"
    );
    assert!(!marker.exists(), "check loaded a plugin (its constructor ran)");
}

/// A C plugin that records `SEQ REPLAYED` per fill in `fills.txt` of its working directory,
/// then, on the second fill its process sees, dies as `crash` says.
fn crashing_plugin(name: &str, crash: &str) -> PathBuf {
    cc(
        name,
        &format!(
            "#include \"binance_syncd_plugin.h\"\n\
             #include <stdio.h>\n\
             #include <stdlib.h>\n\
             #include <unistd.h>\n\
             static int seen;\n\
             static void *create(const syncd_host_v1 *h) {{ (void)h; static int s; return &s; }}\n\
             static void destroy(void *s) {{ (void)s; }}\n\
             static syncd_status on_fill(void *s, const syncd_fill *f) {{\n\
                 (void)s;\n\
                 FILE *out = fopen(\"fills.txt\", \"a\");\n\
                 if (out) {{ fprintf(out, \"%llu %d\\n\", (unsigned long long)f->seq, f->replayed); fclose(out); }}\n\
                 if (++seen == 2) {{ {crash} }}\n\
                 return SYNCD_STATUS_OK;\n\
             }}\n\
             static syncd_plugin_v1 table = {{ SYNCD_ABI_MAJOR, 0, sizeof(syncd_plugin_v1), 0,\n\
                 {{ (const uint8_t *)\"c1\", 2 }}, create, destroy, 0, on_fill, 0, 0, 0, 0, 0 }};\n\
             const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *h) {{ (void)h; return &table; }}\n"
        ),
    )
}

/// `SEQ REPLAYED` lines of a crashing plugin's record.
fn crash_record(rig: &Rig, name: &str) -> Vec<(u64, bool)> {
    let path = rig.cfg.state_dir.join("plugins").join("run").join(name).join("fills.txt");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (seq, replayed) = l.split_once(' ')?;
            Some((seq.parse().ok()?, replayed == "1"))
        })
        .collect()
}

#[test]
fn a_plugin_that_segfaults_aborts_exits_or_spins_costs_only_itself_and_is_restarted_from_its_cursor() {
    let calm = build_plugin("test-plugin", "1");
    let segv = crashing_plugin("segv", "volatile int *p = 0; *p = 1;");
    let abrt = crashing_plugin("abrt", "abort();");
    let exit = crashing_plugin("quit", "_exit(3);");
    // Spins in the callback for ever: killed at SYNCD_PLUGIN_STALL_S (800 ms in this rig).
    let spin = crashing_plugin("spin", "volatile int forever = 1; while (forever) {}");
    let dir = temp_dir("plugin-crash-conf");
    let calm_conf = format!("record = {}\nhistory = all\n", dir.join("calm.rec").display());
    // Never quarantined here: each of its processes dies soon after its start.
    let bad_conf = "history = all\nrestart_backoff_ms = 50\nquarantine_after = 0\n";
    let mut rig = Rig::start(
        "plugin-crash",
        &[
            ("calm", &calm, &calm_conf),
            ("segv", &segv, bad_conf),
            ("abrt", &abrt, bad_conf),
            ("quit", &exit, bad_conf),
            ("spin", &spin, bad_conf),
        ],
    );
    rig.dir = dir;
    for name in ["calm", "segv", "abrt", "quit", "spin"] {
        let s = rig.wait_status(name, "running", |s| s.state == "running");
        assert!(s.pid != 0 && s.pid != std::process::id(), "{name} runs in a process of its own: {s:?}");
    }
    for _ in 0..5 {
        rig.fill();
    }
    let fills = wait_lines(&rig.cfg.fill_log, 5, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("calm", "every fill", |s| s.delivered == last);
    let calm_seen: Vec<u64> = fills_of(&rig.record("calm")).iter().map(|(_, s)| *s).collect();
    assert_eq!(calm_seen, (1..=last).collect::<Vec<u64>>(), "the calm plugin got every fill, once");
    // Each bad one dies on the second fill of each of its processes, so it gets through all
    // of them one restart at a time, each time from its cursor.
    for (name, signal) in
        [("segv", "SIGSEGV"), ("abrt", "SIGABRT"), ("quit", "exited with status 3"), ("spin", "SIGKILL")]
    {
        let s = rig.wait_status(name, "every fill, restarted", |s| s.delivered == last && s.state == "running");
        assert!(s.restarts >= last - 1, "{name}: one restart per fill after the first: {s:?}");
        assert!(s.last_exit.contains(signal), "{name}: {s:?}");
        let record = crash_record(&rig, name);
        // Every fill, in order; a fill seen again is the one its process died on, marked.
        let mut next = 1;
        for &(seq, replayed) in &record {
            if seq == next {
                next += 1;
            } else {
                assert!(seq + 1 == next && replayed, "{name}: #{seq} out of order or unmarked: {record:?}");
            }
        }
        assert_eq!(next, last + 1, "{name}: {record:?}");
        for seq in 2..=last {
            assert!(
                record.contains(&(seq, true)),
                "{name}: #{seq}, the fill it died on, came again marked: {record:?}"
            );
        }
    }
    // The daemon never went down: more fills, logged and delivered.
    rig.fill();
    let fills = wait_lines(&rig.cfg.fill_log, 6, Duration::from_secs(20));
    rig.wait_status("calm", "the 6th fill", |s| s.delivered == last + 1);
    let report = rig.ex.report();
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    assert_matches_truth(&fills, &report);
}

#[test]
fn a_plugin_that_keeps_dying_is_quarantined_across_a_restart_until_its_file_is_replaced() {
    let calm = build_plugin("test-plugin", "1");
    let segv = crashing_plugin("quarantined_segv", "volatile int *p = 0; *p = 1;");
    let out = temp_dir("plugin-quarantine-out");
    let calm_conf = format!("record = {}\nhistory = all\n", out.join("calm.rec").display());
    let sink = crate::metrics::Sink::start();
    let webhook = binance_syncd::secret::Secret::new(sink.url.clone());
    let mut rig = Rig::start_with(
        "plugin-quarantine",
        &[("calm", &calm, &calm_conf), ("segv", &segv, "history = all\nrestart_backoff_ms = 50\n")],
        |cfg| {
            cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
            cfg.alert_webhook = Some(webhook);
        },
    );
    for name in ["calm", "segv"] {
        rig.wait_status(name, "running", |s| s.state == "running");
    }
    // Its processes die on their second fill: on #2, #3 and #4, each soon after its start.
    for _ in 0..4 {
        rig.fill();
    }
    let s = rig.wait_status("segv", "quarantined", |s| s.state == "quarantined");
    assert_eq!((s.restarts, s.pid, s.delivered), (2, 0, 3), "{s:?}");
    assert!(s.problem.contains("died 3 times in a row") && s.last_exit.contains("SIGSEGV"), "{s:?}");
    let quarantine = rig.cfg.state_dir.join("plugins").join("segv.quarantine");
    assert!(quarantine.exists());
    // The calm one beside it got every fill, once, and the metrics say what happened.
    let fills = wait_lines(&rig.cfg.fill_log, 4, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("calm", "every fill", |s| s.delivered == last);
    let calm_seen: Vec<u64> = fills_of(
        &std::fs::read_to_string(out.join("calm.rec"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>(),
    )
    .iter()
    .map(|(_, s)| *s)
    .collect();
    assert_eq!(calm_seen, (1..=last).collect::<Vec<u64>>());
    let addr = rig.daemon.as_ref().and_then(|d| d.metrics_addr()).unwrap();
    let scrape = crate::metrics::get(addr, "/metrics").1;
    for (series, want) in [
        ("syncd_plugin_state{plugin=\"segv\",state=\"quarantined\"}", 1.0),
        ("syncd_plugin_state{plugin=\"segv\",state=\"crashed\"}", 0.0),
        ("syncd_plugin_restarts_total{plugin=\"segv\"}", 2.0),
    ] {
        assert_eq!(crate::metrics::value(&scrape, series), Some(want), "{series} in\n{scrape}");
    }
    // The calm plugin's own process: its memory and CPU time, read from /proc.
    let rss = crate::metrics::value(&scrape, "syncd_plugin_rss_bytes{plugin=\"calm\"}");
    assert!(rss.is_some_and(|b| b > 100_000.0), "calm's RSS: {rss:?} in\n{scrape}");
    assert!(crate::metrics::value(&scrape, "syncd_plugin_cpu_seconds_total{plugin=\"calm\"}").is_some());
    assert!(
        crate::metrics::value(&scrape, "syncd_plugin_rss_bytes{plugin=\"segv\"}").is_none(),
        "a quarantined plugin has no process"
    );
    wait_until("the quarantine alert", Duration::from_secs(5), || {
        sink.texts().iter().any(|t| t.contains("plugin segv is quarantined"))
    });
    // A daemon restart keeps it: never loaded again, and `check` says so.
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
    rig.daemon = Some(Daemon::start(&rig.cfg, &fast()).unwrap());
    rig.wait_status("calm", "running again", |s| s.state == "running");
    let s = rig.wait_status("segv", "still quarantined", |s| s.state == "quarantined");
    assert_eq!((s.loads, s.pid), (0, 0), "{s:?}");
    rig.fill();
    rig.wait_status("calm", "the fill after the restart", |s| s.delivered == last + 1);
    assert_eq!(rig.status("segv").loads, 0);
    let text = check_table(&rig.ex, &rig.dir, &rig.plugins);
    let segv = check_row(&text, "plugin segv.so");
    assert!(segv.contains("FAIL") && segv.contains("quarantined"), "{text}");
    // A new file releases it: here a calm build, which then gets every fill after its cursor.
    install(&calm, &rig.plugins, "segv");
    let s = rig.wait_status("segv", "released", |s| s.state == "running" && s.delivered == last + 1);
    assert_eq!(s.loads, 1, "{s:?}");
    assert!(!quarantine.exists());
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

#[test]
fn a_submit_flood_gets_busy_answers_past_its_budget_while_another_strategy_trades() {
    let grid = build_plugin("grid-maker", "1");
    let flooder = build_plugin("test-plugin", "1");
    let out = temp_dir("plugin-flood-out");
    let flood_conf = format!("record = {}\nflood = 5000\nmax_pending = 100\n", out.join("flood.rec").display());
    let mut rig = Rig::start_with(
        "plugin-flood",
        &[("grid_maker", &grid, "levels = 2\nspacing = 5\nquote = 25\n"), ("flooder", &flooder, &flood_conf)],
        |c| {
            c.strategy_limits.max_orders_10s = 100;
            // 5000 round trips in one callback: not a stall.
            c.plugin_stall = Duration::from_secs(20);
        },
    );
    let record = || std::fs::read_to_string(out.join("flood.rec")).unwrap_or_default();
    wait_until("the flood", Duration::from_secs(30), || record().lines().any(|l| l.starts_with("busy ")));
    // 100 queued, then every other submit answered busy: nothing more of its was held.
    let busy: Vec<String> = record().lines().filter(|l| l.starts_with("busy ")).map(String::from).collect();
    assert_eq!(busy, ["busy 4900"], "{}", record());
    let link = rig.daemon.as_ref().unwrap().executor().clone();
    let intents = link.stats().intents;
    assert!(intents < 1000, "the executor took {intents} intents: the flood was not held to its budget");
    // Grid-maker beside it keeps quoting.
    let own = || link.view().open_orders.iter().filter(|o| o.client_order_id.starts_with("sd-gridmake-")).count();
    wait_until("grid-maker's quotes", Duration::from_secs(20), || own() >= 4);
    rig.wait_status("flooder", "running", |s| s.state == "running");
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

#[test]
fn isolation_none_runs_the_plugin_in_the_daemon_and_anything_else_is_refused() {
    let so = build_plugin("test-plugin", "1");
    let dir = temp_dir("plugin-inproc-conf");
    let conf = |name: &str, extra: &str| format!("record = {}\n{extra}\n", dir.join(format!("{name}.rec")).display());
    let mut rig = Rig::start(
        "plugin-inproc",
        &[
            ("inproc", &so, &conf("inproc", "isolation = none")),
            ("isolated", &so, &conf("isolated", "isolation = process")),
            ("typo", &so, &conf("typo", "isolation = sandbox")),
        ],
    );
    let s = rig.wait_status("inproc", "running", |s| s.state == "running");
    assert_eq!(s.pid, 0, "in the daemon: {s:?}");
    let s = rig.wait_status("isolated", "running", |s| s.state == "running");
    assert!(s.pid != 0 && s.pid != std::process::id(), "{s:?}");
    let s = rig.wait_status("typo", "refused", |s| s.state == "refused");
    assert!(s.problem.contains("isolation"), "{s:?}");
    rig.fill();
    let fills = wait_lines(&rig.cfg.fill_log, 1, Duration::from_secs(20));
    for name in ["inproc", "isolated"] {
        rig.wait_status(name, "the fill", |s| s.delivered == fills[0].seq);
    }
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

#[test]
fn the_plugin_host_role_is_hidden_and_runs_only_on_the_daemons_socket() {
    let exe = env!("CARGO_BIN_EXE_binance-syncd");
    let help = Command::new(exe).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("plugin-host"));
    let parent = std::process::id().to_string();
    for args in [vec!["plugin-host"], vec!["plugin-host", "--parent", parent.as_str()]] {
        // Stdin a pipe, not a socket: refused before anything is loaded.
        let out = Command::new(exe).args(&args).stdin(std::process::Stdio::piped()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("internal role"), "{out:?}");
    }
    // On a socket but not the child of the pid it names: it does not run either.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let out = Command::new(exe)
        .args(["plugin-host", "--parent", "1"])
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .output()
        .unwrap();
    drop(ours);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

/// A C plugin that compiles against any 1.x header and records what it gets: `order KIND
/// REASON ORDER_ID` per update and `fill SEQ OWN CLIENT_ID` per fill (REASON and OWN `-` when its
/// header has no such field). On its first BTCUSD price it places one maker BUY at the bid and
/// one order on a symbol the daemon does not trade (refused).
const RECORDING_PLUGIN: &str = r#"#include "binance_syncd_plugin.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef struct { const syncd_host_v1 *host; FILE *out; int placed; } st;
static syncd_str s_of(const char *c) { syncd_str r = { (const uint8_t *)c, strlen(c) }; return r; }
static void *create(const syncd_host_v1 *h) { st *s = calloc(1, sizeof *s); if (s) s->host = h; return s; }
static void destroy(void *p) { st *s = p; if (s && s->out) fclose(s->out); free(s); }
static syncd_status start(void *p, const syncd_start *a) {
    st *s = p;
    const char *k = "record = ";
    char path[1024] = {0};
    size_t n = a->settings.len, kl = strlen(k);
    if (n > kl && memcmp(a->settings.ptr, k, kl) == 0) {
        size_t i = kl;
        while (i < n && a->settings.ptr[i] != '\n' && i - kl < sizeof path - 1) { path[i - kl] = (char)a->settings.ptr[i]; i++; }
    }
    s->out = fopen(path, "a");
    return s->out ? SYNCD_STATUS_OK : SYNCD_STATUS_ERROR;
}
static syncd_status on_fill(void *p, const syncd_fill *f) {
    st *s = p;
#ifdef SYNCD_REASON_NONE
    fprintf(s->out, "fill %llu %u %.*s\n", (unsigned long long)f->seq, (unsigned)f->own, (int)f->client_order_id.len, (const char *)f->client_order_id.ptr);
#else
    fprintf(s->out, "fill %llu - %.*s\n", (unsigned long long)f->seq, (int)f->client_order_id.len, (const char *)f->client_order_id.ptr);
#endif
    fflush(s->out);
    return SYNCD_STATUS_OK;
}
static syncd_status on_order(void *p, const syncd_order_update *u) {
    st *s = p;
#ifdef SYNCD_REASON_NONE
    fprintf(s->out, "order %u %u %llu\n", (unsigned)u->kind, (unsigned)u->reason_code, (unsigned long long)u->order_id);
#else
    fprintf(s->out, "order %u - %llu\n", (unsigned)u->kind, (unsigned long long)u->order_id);
#endif
    fflush(s->out);
    return SYNCD_STATUS_OK;
}
static syncd_status on_price(void *p, const syncd_price *pr) {
    st *s = p;
    uint64_t req = 0;
    if (s->placed || pr->symbol.len != 6 || memcmp(pr->symbol.ptr, "BTCUSD", 6) != 0) return SYNCD_STATUS_OK;
    s->placed = 1;
    syncd_intent buy = { SYNCD_INTENT_PLACE, SYNCD_SIDE_BUY, {0}, 0, pr->symbol, pr->bid, s_of("0.001"), s_of("") };
    s->host->submit(s->host->ctx, &buy, &req);
    syncd_intent nope = { SYNCD_INTENT_PLACE, SYNCD_SIDE_BUY, {0}, 0, s_of("NOPEUSD"), pr->bid, s_of("0.001"), s_of("") };
    s->host->submit(s->host->ctx, &nope, &req);
    return SYNCD_STATUS_OK;
}
static const char V[] = "recorder";
static syncd_plugin_v1 table = { SYNCD_ABI_MAJOR, SYNCD_ABI_MINOR, sizeof(syncd_plugin_v1), 0,
    { (const uint8_t *)V, sizeof V - 1 }, create, destroy, start, on_fill, on_order, on_price, NULL, NULL, NULL };
const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *h) { (void)h; return &table; }
"#;

#[test]
fn a_plugin_gets_only_what_its_declared_minor_knows_and_fills_say_whose_order_it_was() {
    let old_header = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/abi-1.0");
    let old = compile_with("cc", "c", "recorder_1_0", RECORDING_PLUGIN, &old_header);
    let new = cc("recorder_new", RECORDING_PLUGIN);
    let dir = temp_dir("plugin-minor-conf");
    let conf = |name: &str, extra: &str| format!("record = {}\n{extra}", dir.join(format!("{name}.rec")).display());
    // The 1.0 build in its own process and in the daemon (`isolation = none`), and today's.
    let (c_old, c_oldin, c_new) = (conf("old", ""), conf("oldin", "isolation = none\n"), conf("new", ""));
    let mut rig =
        Rig::start("plugin-minor", &[("old", &old, &c_old), ("oldin", &old, &c_oldin), ("new", &new, &c_new)]);
    let link = rig.daemon.as_ref().unwrap().executor().clone();
    let order_of = |tag: &str| {
        link.view()
            .open_orders
            .iter()
            .find(|o| o.client_order_id.starts_with(&format!("sd-{tag}-")))
            .map(|o| o.order_id)
    };
    wait_until("each plugin's order", Duration::from_secs(20), || {
        ["old", "oldin", "new"].iter().all(|t| order_of(t).is_some())
    });
    let ids: Vec<u64> = ["old", "oldin", "new"].iter().map(|t| order_of(t).unwrap()).collect();
    rig.fill(); // another client's order on the account (`web-1`), filled by the exchange's trader
    for id in &ids {
        fill_whole(&rig.ex, "BTCUSD", *id);
    }
    let record = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.rec"))).unwrap_or_default();
    let fills = |name: &str| record(name).lines().filter(|l| l.starts_with("fill ")).count();
    // Today's plugin hears its order's FILLED report after the others' fills (stream order);
    // every plugin gets all four fills.
    let filled_report = format!("order {} 0 {}", 8, ids[2]);
    wait_until("the new plugin's report and every fill", Duration::from_secs(30), || {
        record("new").contains(&filled_report) && ["old", "oldin", "new"].iter().all(|n| fills(n) == 4)
    });
    for name in ["old", "oldin"] {
        let text = record(name);
        assert!(!text.lines().any(|l| l.starts_with("order 8 ")), "{name}: a 1.0 plugin got UPDATE_REPORT:\n{text}");
        assert!(text.contains(" 0 - "), "{name}: its order placed:\n{text}");
        assert!(text.contains("order 3 - 0"), "{name}: the refused order:\n{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("order")
                    && l.split(' ').nth(1).and_then(|k| k.parse::<u8>().ok()).unwrap_or(0) > 7),
            "{name}: a kind 1.0 does not know:\n{text}"
        );
    }
    let text = record("new");
    // The refusal says why as a number: SYNCD_REASON_SYMBOL.
    assert!(text.contains("order 3 2 0"), "the refused order's reason code:\n{text}");
    // Fills: the daemon's orders (any plugin's) are its own, the web order is not.
    let own: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let mut p = l.strip_prefix("fill ")?.split(' ').skip(1);
            Some((p.next()?.to_string(), p.next()?.to_string()))
        })
        .collect();
    assert_eq!(own.iter().filter(|(o, c)| o == "0" && c.starts_with("web-")).count(), 1, "{text}");
    assert_eq!(own.iter().filter(|(o, c)| o == "1" && c.starts_with("sd-")).count(), 3, "{text}");
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}
