//! What TLS costs the stream: stream event → line in the fill log, over `ws://` and `wss://`
//! in the same run. Two paper exchanges, one plain and one on TLS (`paper --tls`'s generated
//! certificate, trusted through `SYNCD_CA_FILE`), each with a `binance-syncd run` of its own;
//! fills alternate between them one at a time (each side first every other time), so both
//! columns see the same machine.
//!
//! `cargo bench --bench tls` (about 15 s). `TLS_BENCH_FILLS` sets the fills per side (default 600).

mod common;
use common::percentile;

use binance_syncd_paper::tls::PaperTls;
use binance_syncd_paper::trader::Trader;
use binance_syncd_paper::{PaperConfig, PaperExchange};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Side {
    name: &'static str,
    ex: PaperExchange,
    daemon: Child,
    log: PathBuf,
    orders: Vec<u64>,
    latencies: Vec<Duration>,
}

fn exchange(tls: bool) -> PaperExchange {
    let mut config = PaperConfig::unthrottled();
    config.engine.balances = vec![("USD".into(), binance_syncd::Decimal::from_int(1_000_000_000))];
    if tls {
        config.tls = Some(Arc::new(PaperTls::generate(&["localhost", "127.0.0.1"]).expect("certificate")));
    }
    PaperExchange::start(config).expect("paper")
}

fn start(name: &'static str, tls: bool, dir: &Path) -> Side {
    let ex = exchange(tls);
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("fills.jsonl");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
    cmd.arg("run")
        .envs(common::daemon_env(&ex, &dir, "BTCUSD"))
        .env("SYNCD_FSYNC", "never")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(pem) = ex.trust_pem() {
        let ca = dir.join("paper-ca.pem");
        std::fs::write(&ca, pem).expect("ca file");
        cmd.env("SYNCD_CA_FILE", ca);
    }
    let daemon = cmd.spawn().expect("daemon");
    Side { name, ex, daemon, log, orders: Vec::new(), latencies: Vec::new() }
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn place(side: &mut Side, n: usize) {
    let (bid, _) = side.ex.shared().engine.lock().expect("engine").touch("BTCUSD").expect("touch");
    let price = bid.checked_sub("1".parse().expect("dec")).expect("price").to_string();
    let trader = Trader::new(&side.ex);
    for i in 0..n {
        let reply = trader.maker("BTCUSD", "BUY", "0.001", &price, &format!("tls-bench-{i}")).expect("order");
        side.orders.push(reply["orderId"].as_u64().expect("orderId"));
    }
}

/// One fill, timed from just before the exchange publishes it to its line in the log.
fn fill(side: &mut Side, order: u64) {
    let base = size(&side.log);
    let t0 = Instant::now();
    side.ex.fault("fill", &[("symbol", "BTCUSD"), ("order_id", &order.to_string()), ("whole", "true")]).expect("fill");
    while size(&side.log) <= base {
        // Yield between looks: a spinning poller on 2 cores delays the threads it times.
        std::thread::sleep(Duration::from_micros(20));
        assert!(t0.elapsed() < Duration::from_secs(10), "{}: a fill never reached the log", side.name);
    }
    side.latencies.push(t0.elapsed());
}

fn main() {
    let fills: usize = std::env::var("TLS_BENCH_FILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let dir = std::env::temp_dir().join(format!("syncd-bench-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut sides = [start("plain ws://", false, &dir), start("tls wss://", true, &dir)];
    let end = Instant::now() + Duration::from_secs(30);
    for side in &sides {
        while side.ex.report()["sessions"].as_array().is_none_or(|s| s.iter().all(|x| !x["closed_ms"].is_null())) {
            assert!(Instant::now() < end, "{}: the daemon did not connect", side.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The first reconciliation pass and book rebuild are done before the clock starts.
    std::thread::sleep(Duration::from_secs(1));
    for side in &mut sides {
        place(side, fills);
    }
    for i in 0..fills {
        // Each side goes first every other time: the first fill after the pause finds colder caches.
        for k in 0..2 {
            let side = &mut sides[(i + k) % 2];
            let order = side.orders[i];
            fill(side, order);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("\ntls bench: {fills} fills per side, alternating, one at a time; event published → line in the log");
    println!("{:<14} {:>10} {:>10} {:>10} {:>10}", "stream", "p50", "p90", "p99", "max");
    let mut rows = Vec::new();
    for side in &mut sides {
        side.latencies.sort();
        let q = [0.5, 0.9, 0.99, 1.0].map(|p| percentile(&side.latencies, p));
        println!(
            "{:<14} {:>8.1}µs {:>8.1}µs {:>8.1}µs {:>8.1}µs",
            side.name,
            q[0].as_secs_f64() * 1e6,
            q[1].as_secs_f64() * 1e6,
            q[2].as_secs_f64() * 1e6,
            q[3].as_secs_f64() * 1e6
        );
        rows.push(q);
    }
    let diff = |i: usize| (rows[1][i].as_secs_f64() - rows[0][i].as_secs_f64()) * 1e6;
    println!("tls - plain: p50 {:+.1} µs, p90 {:+.1} µs, p99 {:+.1} µs", diff(0), diff(1), diff(2));
    for side in &mut sides {
        let _ = Command::new("kill").arg("-TERM").arg(side.daemon.id().to_string()).status();
        let _ = side.daemon.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
