//! Plugin figures, in one run, with the test plugin (`plugins/test-plugin`) built here:
//!
//! - fill line durable → plugin callback entered: the fill log's publish time (`FillTap`) to
//!   the plugin's own clock reading at the top of `on_fill`, p50/p99/max (target p99 < 50 µs);
//! - hot-swap pause: the old version's last callback to the new one's first, over 20 swaps;
//! - intents/s from one plugin through the executor to loopback ACKs (500 orders at once).
//!
//! `cargo bench --bench plugins` (about 30 s).

use binance_syncd::config::{Config, Needs};
use binance_syncd::daemon::{Daemon, Tuning};
use binance_syncd::paper::trader::Trader;
use binance_syncd::paper::{PaperConfig, PaperExchange, DEMO_API_KEY, DEMO_API_SECRET};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent().and_then(|p| p.parent()).and_then(|p| p.parent()).expect("target dir").to_path_buf()
}

/// Builds the test plugin (release) with a version string and returns a private copy.
fn build(version: &str) -> PathBuf {
    let target = target_dir();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "-p", "test-plugin", "--target-dir"])
        .arg(&target)
        .env("SYNCD_TEST_PLUGIN_VERSION", version)
        .status()
        .expect("cargo build");
    assert!(status.success(), "cargo build -p test-plugin");
    let copy = std::env::temp_dir().join(format!("syncd-bench-plugin-{}-{version}.so", std::process::id()));
    std::fs::copy(target.join("release").join("libtest_plugin.so"), &copy).expect("copy");
    copy
}

fn install(so: &Path, dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(so, &tmp).expect("copy");
    std::fs::rename(&tmp, dir.join(format!("{name}.so"))).expect("rename");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

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

fn main() {
    let v1 = build("1");
    let v2 = build("2");
    let dir = std::env::temp_dir().join(format!("syncd-bench-plugins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("dir");
    let stamps = dir.join("stamp.rec");
    let floods = dir.join("flood.rec");
    std::fs::write(plugins.join("stamp.conf"), format!("record = {}\nmode = stamp\n", stamps.display())).expect("conf");
    install(&v1, &plugins, "stamp");

    let ex = PaperExchange::start(PaperConfig::unthrottled()).expect("paper");
    let vars: HashMap<&str, String> = [
        ("BINANCE_API_KEY", DEMO_API_KEY.to_string()),
        ("BINANCE_API_SECRET", DEMO_API_SECRET.to_string()),
        ("SYNCD_REST_URL", ex.rest_url()),
        ("SYNCD_WS_URL", ex.ws_url()),
        ("SYNCD_SYMBOLS", "BTCUSD".into()),
        ("SYNCD_STATE_DIR", dir.join("state").display().to_string()),
        ("SYNCD_FILL_LOG", dir.join("fills.jsonl").display().to_string()),
        ("SYNCD_FSYNC", "never".into()),
        ("SYNCD_PLUGIN_DIR", plugins.display().to_string()),
        ("SYNCD_PLUGIN_SCAN_S", "0.02".into()),
        ("SYNCD_PLUGIN_TICK_S", "0.05".into()),
        ("SYNCD_PRICE_POLL_S", "0.1".into()),
        ("SYNCD_STRATEGY_MAX_OPEN", "100000".into()),
        ("SYNCD_STRATEGY_MAX_ORDERS_10S", "100000".into()),
        ("SYNCD_STRATEGY_MAX_SYMBOL_NOTIONAL", "0".into()),
        ("SYNCD_STRATEGY_QUEUE", "1024".into()),
    ]
    .into_iter()
    .collect();
    let config =
        Config::from_lookup(|k| vars.get(k).cloned(), Needs { credentials: true, symbols: true }).expect("config");
    let daemon = Daemon::start(&config, &Tuning::from_config(&config)).expect("daemon");
    let view = daemon.plugins().expect("plugins").clone();
    wait("the stamp plugin running", || view.get("stamp").is_some_and(|s| s.state == "running"));

    // Latency: 400 fills of another user's orders, a few ms apart.
    let trader = Trader::new(&ex);
    let (bid, _) = ex.shared().engine.lock().expect("engine").touch("BTCUSD").expect("touch");
    let price = bid.to_string();
    let mut ids = Vec::new();
    for i in 0..400 {
        let v = trader.maker("BTCUSD", "BUY", "0.0001", &price, &format!("web-{i}")).expect("order");
        ids.push(v["orderId"].as_u64().expect("id"));
    }
    // The floor beside it: a plain thread of this process following the same tap, stamping
    // each line on receipt. Its latency is the wake-up cost on this machine, without a plugin.
    let follower = daemon.fill_tap().follow(4096);
    let baseline = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Ok(f) = follower.recv_timeout(Duration::from_secs(5)) {
            seen.push((f.seq, SystemTime::now()));
        }
        seen
    });
    let first = daemon.fill_tap().durable();
    for id in &ids {
        ex.fault("fill", &[("symbol", "BTCUSD"), ("order_id", &id.to_string()), ("whole", "true")]).expect("fill");
        std::thread::sleep(Duration::from_millis(3));
    }
    let last = first + ids.len() as u64;
    wait("every fill stamped", || view.get("stamp").is_some_and(|s| s.delivered >= last));
    let mut lat = Vec::new();
    for line in std::fs::read_to_string(&stamps).unwrap_or_default().lines() {
        let mut p = line.split_whitespace().skip(1);
        let (Some(seq), Some(ns)) =
            (p.next().and_then(|s| s.parse::<u64>().ok()), p.next().and_then(|s| s.parse::<u128>().ok()))
        else {
            continue;
        };
        let Some(published) = daemon.fill_tap().published_at(seq) else { continue };
        let published_ns = published.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        lat.push(Duration::from_nanos(ns.saturating_sub(published_ns) as u64));
    }
    lat.sort();
    let mut floor: Vec<Duration> = baseline
        .join()
        .unwrap_or_default()
        .iter()
        .filter_map(|(seq, at)| at.duration_since(daemon.fill_tap().published_at(*seq)?).ok())
        .collect();
    floor.sort();

    // Swap pause: 20 swaps of the stamp plugin.
    let mut pauses = Vec::new();
    for i in 0..20u64 {
        let loads = view.get("stamp").map_or(0, |s| s.loads);
        install(if i % 2 == 0 { &v2 } else { &v1 }, &plugins, "stamp");
        wait("a swap", || view.get("stamp").is_some_and(|s| s.loads > loads && s.state == "running"));
        if let Some(us) = view.get("stamp").and_then(|s| s.last_swap_pause_us) {
            pauses.push(Duration::from_micros(us));
        }
    }
    pauses.sort();

    // Intents/s: the flood plugin places 500 orders as soon as it sees a price.
    std::fs::write(plugins.join("flood.conf"), format!("record = {}\nflood = 500\n", floods.display())).expect("conf");
    install(&v1, &plugins, "flood");
    wait("the flood", || std::fs::read_to_string(&floods).unwrap_or_default().contains("flood 500 "));
    let flood_ns: u128 = std::fs::read_to_string(&floods)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("flood 500 ")?.trim().parse().ok())
        .expect("flood line");
    let per_s = 500.0 / (flood_ns as f64 / 1e9);
    daemon.stop(Duration::from_secs(8));

    println!(
        "fill durable -> plugin on_fill ({} fills)   p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs  (target p99 < 50 µs: {})",
        lat.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        if percentile(&lat, 0.99) < Duration::from_micros(50) { "met" } else { "MISSED" }
    );
    println!(
        "  beside it, a plain follower thread         p50 {:.1} µs  p99 {:.1} µs  (wake-up floor; plugin/floor p99 {:.2}x)",
        percentile(&floor, 0.5).as_secs_f64() * 1e6,
        percentile(&floor, 0.99).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() / percentile(&floor, 0.99).as_secs_f64().max(1e-9)
    );
    println!(
        "hot-swap pause ({} swaps)                  p50 {}  max {}",
        pauses.len(),
        ms(percentile(&pauses, 0.5)),
        ms(*pauses.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "intents from one plugin to loopback ACKs   {per_s:.0} orders/s (500 at once, {:.1} ms)",
        flood_ns as f64 / 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
}
