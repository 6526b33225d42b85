//! Metrics figures, in one run (`cargo bench --bench metrics`, about a minute):
//!
//! - idle RSS of `binance-syncd run` (a child process, the binary cargo built for this bench)
//!   with `SYNCD_METRICS_ADDR` on and `/metrics` scraped every second, against a paper
//!   exchange in this process: at the first scrape and after `SYNCD_BENCH_IDLE_S` (default 30);
//! - how long one scrape takes (p50/p99 over those scrapes);
//! - the fill-latency histogram's p50/p99 after `binance-syncd demo` (the built binary, 30 s; its summary lines):
//!   the daemon's own figure, frame read off the socket to line durable in the fill log.
//!
//! Binary size and `ldd` are `deploy/` material of another change; this prints only the above.

mod common;
use common::percentile;

use binance_syncd_paper::{PaperConfig, PaperExchange};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

fn scrape(addr: SocketAddr) -> Option<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    text.starts_with("HTTP/1.1 200").then_some(text)
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn main() {
    let idle_s: u64 = std::env::var("SYNCD_BENCH_IDLE_S").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let ex = PaperExchange::start(PaperConfig { market_tick: Duration::from_secs(3600), ..PaperConfig::default() })
        .expect("paper exchange");
    let dir = std::env::temp_dir().join(format!("syncd-bench-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let addr = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_binance-syncd"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(common::daemon_env(&ex, &dir, "BTCUSD,ETHUSD"))
        .env("SYNCD_METRICS_ADDR", addr.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("binance-syncd run");
    let up = Instant::now();
    let first = loop {
        if let Some(text) = scrape(addr).filter(|t| t.contains("\nsyncd_stream_up 1")) {
            break text;
        }
        assert!(up.elapsed() < Duration::from_secs(30), "the daemon's stream did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    let pid = child.id();
    let rss_start = rss_kib(pid).unwrap_or(0);
    let mut took = Vec::new();
    let mut bytes = first.len();
    let started = Instant::now();
    // At least one scrape, so SYNCD_BENCH_IDLE_S=0 still has a latency to report.
    while took.is_empty() || started.elapsed() < Duration::from_secs(idle_s) {
        let t = Instant::now();
        let text = scrape(addr).expect("scrape");
        took.push(t.elapsed());
        bytes = text.len();
        std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
    }
    let rss_end = rss_kib(pid).unwrap_or(0);
    took.sort();
    println!(
        "idle RSS, metrics on, scraped every second: {:.1} MiB at the first scrape, {:.1} MiB after {} scrapes over {idle_s} s",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        took.len()
    );
    println!(
        "one scrape ({} bytes): p50 {:.3} ms, p99 {:.3} ms",
        bytes,
        percentile(&took, 0.5).as_secs_f64() * 1e3,
        percentile(&took, 0.99).as_secs_f64() * 1e3
    );
    // SIGTERM through kill(1): the crate has no unsafe outside the plugin loader.
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    drop(ex);

    let demo_dir = dir.join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_binance-syncd"))
        .args(["demo", "--seconds", "30", "--quiet", "--dir"])
        .arg(&demo_dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("demo runs");
    // The demo's own summary: trades, missing/duplicates -> PASS/FAIL, and its fill latency.
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("demo: ")) {
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
