//! Market-data figures (issue 22 "Performance"), in one run:
//!
//! - exchange event sent → `on_book` entered in an isolated plugin (the test plugin in `stamp`
//!   mode), on loopback: p50/p99/max with 2 symbols at 10 updates/s each and with 10 symbols at
//!   100 updates/s each, beside the wake-up floor of the same run (a process asleep on a
//!   socketpair, `common::bare_process`). The events come from this bench's own market server
//!   (`SYNCD_MARKET_WS_URL`), which stamps each `depthUpdate` as it writes it: the paper
//!   exchange's diff streams go out every 100 ms, too slow for 100 updates/s. Its update ids
//!   continue the paper exchange's book (`U` = its `lastUpdateId` + 1 on each connection), so
//!   the daemon's snapshot from the paper exchange joins them as on Binance. Each event sets
//!   the quantity of the best bid; updates are spread evenly over the symbols;
//! - CPU of the thread named `market` at 100 updates/s on each of 10 symbols
//!   (`/proc/self/task/<tid>/schedstat`: time on CPU over wall time);
//! - RSS of the daemon with the market stream keeping 10 symbols' books (20 levels kept each)
//!   against the same daemon with `SYNCD_MARKET_STREAM=false`, each in a child process of its
//!   own (this bench again with `MARKET_BENCH_RSS=on|off`);
//! - `GET /api/v3/ticker/bookTicker` requests while the stream is up: a daemon on the paper
//!   exchange's own streams, its market moving every 100 ms, for 10 s (from the paper report's
//!   `requests_by_path`).
//!
//! `cargo bench --bench market` (about 90 s). `MARKET_BENCH_SECONDS` sets each latency row's
//! measuring time (10).

mod common;
use common::{bare_process, build, percentile};

use binance_syncd::config::{Config, Needs};
use binance_syncd::daemon::{Daemon, Tuning};
use binance_syncd::Decimal;
use binance_syncd_paper::engine::SymbolSpec;
use binance_syncd_paper::{PaperConfig, PaperExchange};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tungstenite::Message;

const BOOK_TICKER: &str = "/api/v3/ticker/bookTicker";

fn unix_ns() -> u128 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < end, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `n` symbols like BTCUSD: BTCUSD, ETHUSD (the paper's own), then S2USD, S3USD, ...
fn symbols(n: usize) -> Vec<SymbolSpec> {
    (0..n)
        .map(|i| match i {
            0 => SymbolSpec::btcusd(),
            1 => SymbolSpec::ethusd(),
            _ => SymbolSpec { symbol: format!("S{i}USD"), base: format!("S{i}"), ..SymbolSpec::btcusd() },
        })
        .collect()
}

fn paper(n: usize, market_tick: Duration) -> PaperExchange {
    let mut c = PaperConfig::unthrottled();
    c.engine.symbols = symbols(n);
    c.market_tick = market_tick;
    PaperExchange::start(c).expect("paper exchange")
}

/// A market server standing in for Binance's combined stream: every connection gets
/// `depthUpdate` frames for each symbol at `rate` per second, ids continuing the paper
/// exchange's book. Each frame's (symbol, update id, send time) is kept.
struct Feeder {
    url: String,
    sent: Arc<Mutex<Vec<(usize, u64, u128)>>>,
    stop: Arc<AtomicBool>,
}

impl Feeder {
    fn start(ex: &PaperExchange, n: usize, rate: u32) -> Feeder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        let names: Vec<String> = symbols(n).into_iter().map(|s| s.symbol).collect();
        let (sent, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (ex_shared, s2, st2) = (ex.shared().clone(), sent.clone(), stop.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let _ = tcp.set_nodelay(true);
                let Ok(mut ws) = tungstenite::accept(tcp) else { continue };
                // Where the paper book is now: each connection's events continue it.
                let (mut ids, bids): (Vec<u64>, Vec<Decimal>) = {
                    let e = ex_shared.engine.lock().expect("engine");
                    let at = e.book_update_ids();
                    names.iter().map(|s| (at[s], e.touch(s).expect("touch").0)).unzip()
                };
                let every = Duration::from_secs_f64(1.0 / (f64::from(rate) * names.len() as f64));
                let (start, mut k) = (Instant::now(), 0u64);
                let mut qty = 0u64;
                while !st2.load(Ordering::Relaxed) {
                    let i = (k % names.len() as u64) as usize;
                    if let Some(d) = (start + every * k as u32).checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    k += 1;
                    ids[i] += 1;
                    qty += 1;
                    let frame = format!(
                        r#"{{"stream":"{lower}@depth@100ms","data":{{"e":"depthUpdate","E":{E},"s":"{s}","U":{id},"u":{id},"b":[["{bid}","{q}.{f:03}"]],"a":[]}}}}"#,
                        lower = names[i].to_ascii_lowercase(),
                        E = unix_ns() / 1_000_000,
                        s = names[i],
                        id = ids[i],
                        bid = bids[i],
                        q = 1 + qty % 7,
                        f = qty % 1000,
                    );
                    let at = unix_ns();
                    if ws.send(Message::text(frame)).is_err() {
                        break;
                    }
                    s2.lock().expect("sent").push((i, ids[i], at));
                }
            }
        });
        Feeder { url, sent, stop }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Rig {
    dir: PathBuf,
    ex: PaperExchange,
    feeder: Feeder,
    daemon: Daemon,
    names: Vec<String>,
}

/// A daemon on `n` symbols fed by a [`Feeder`] at `rate`, with the stamp plugin (isolated,
/// the default) when `so` is given, or with the market stream off (`market` false).
fn rig(name: &str, n: usize, rate: u32, so: Option<&PathBuf>, market: bool) -> Rig {
    let (dir, plugins) = common::stamp_dir("market", name, so.map(PathBuf::as_path));
    let ex = paper(n, Duration::from_secs(3600));
    let feeder = Feeder::start(&ex, n, rate);
    let names: Vec<String> = symbols(n).into_iter().map(|s| s.symbol).collect();
    let vars: HashMap<&str, String> = common::daemon_env(&ex, &dir, &names.join(","))
        .into_iter()
        .chain([
            ("SYNCD_MARKET_WS_URL", feeder.url.clone()),
            ("SYNCD_MARKET_STREAM", market.to_string()),
            ("SYNCD_PLUGIN_DIR", plugins.display().to_string()),
        ])
        .collect();
    let config =
        Config::from_lookup(|k| vars.get(k).cloned(), Needs { credentials: true, symbols: true }).expect("config");
    let daemon = Daemon::start(&config, &Tuning::from_config(&config)).expect("daemon");
    if so.is_some() {
        let view = daemon.plugins().expect("plugins").clone();
        wait("the stamp plugin running", || view.get("stamp").is_some_and(|s| s.state == "running"));
    }
    if market {
        let m = daemon.market().expect("market").clone();
        wait("every book synced", || m.state().symbols.values().all(|s| s.synced));
    }
    Rig { dir, ex, feeder, daemon, names }
}

/// Runs `rig` for `secs` after a second of warm-up; (latencies of the events sent in that
/// window that reached `on_book`, sorted; events sent; books skipped by conflation; CPU share
/// of the `market` thread).
fn measure(rig: &Rig, secs: u64) -> (Vec<Duration>, usize, u64, f64) {
    std::thread::sleep(Duration::from_secs(1));
    let view = rig.daemon.plugins().expect("plugins").clone();
    let skipped_before = view.get("stamp").map_or(0, |s| s.books_skipped);
    let (from, cpu0, t0) = (unix_ns(), thread_cpu("market"), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (to, cpu1, wall) = (unix_ns(), thread_cpu("market"), t0.elapsed());
    // The last events of the window get their callback a little later.
    std::thread::sleep(Duration::from_millis(500));
    let skipped = view.get("stamp").map_or(0, |s| s.books_skipped) - skipped_before;
    let sent: HashMap<(String, u64), u128> = rig
        .feeder
        .sent
        .lock()
        .expect("sent")
        .iter()
        .filter(|(_, _, at)| (from..to).contains(at))
        .map(|(i, id, at)| ((rig.names[*i].clone(), *id), *at))
        .collect();
    let mut lat: Vec<Duration> = std::fs::read_to_string(rig.dir.join("stamp.rec"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.strip_prefix("bookstamp ")?.split(' ');
            let (symbol, id, at) = (p.next()?, p.next()?.parse::<u64>().ok()?, p.next()?.parse::<u128>().ok()?);
            let sent_at = sent.get(&(symbol.to_string(), id))?;
            Some(Duration::from_nanos(at.saturating_sub(*sent_at) as u64))
        })
        .collect();
    lat.sort();
    let cpu = cpu1.saturating_sub(cpu0) as f64 / wall.as_nanos() as f64;
    (lat, sent.len(), skipped, cpu)
}

/// Nanoseconds on CPU of this process's thread called `name` (`schedstat`'s first field).
fn thread_cpu(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn us(sorted: &[Duration], q: f64) -> f64 {
    percentile(sorted, q).as_secs_f64() * 1e6
}

fn row(what: &str, lat: &[Duration]) -> String {
    format!(
        "  {what:<44} p50 {:>7.1} µs  p99 {:>8.1}  max {:>8.1}  ({} samples)",
        us(lat, 0.5),
        us(lat, 0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        lat.len()
    )
}

/// The RSS child: a daemon on 10 symbols at 10 updates/s each, the market stream on or off,
/// no plugin; prints `rss_kb N` after 3 s.
fn rss_child(market: bool) {
    let r = rig(if market { "rss-on" } else { "rss-off" }, 10, 10, None, market);
    std::thread::sleep(Duration::from_secs(3));
    if market {
        let state = r.daemon.market().expect("market").state();
        let levels: usize = state.symbols.values().map(|s| s.levels.0.len() + s.levels.1.len()).sum();
        println!("levels {levels}");
    }
    println!("rss_kb {}", common::own_rss_kb());
    r.daemon.stop(Duration::from_secs(5));
}

fn rss_of(mode: &str) -> (u64, String) {
    let out = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .env("MARKET_BENCH_RSS", mode)
        .output()
        .expect("rss child");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let kb = text.lines().find_map(|l| l.strip_prefix("rss_kb ")?.parse().ok()).unwrap_or(0);
    (kb, text)
}

fn main() {
    if common::floor_child_if_asked() {
        return;
    }
    if let Ok(mode) = std::env::var("MARKET_BENCH_RSS") {
        return rss_child(mode == "on");
    }
    binance_syncd::plugin::set_host_program(env!("CARGO_BIN_EXE_binance-syncd"));
    let secs: u64 = std::env::var("MARKET_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10).max(1);
    let so = build("1");

    println!("exchange event sent -> on_book entered in an isolated plugin, loopback ({secs} s a row)");
    let floor = bare_process(1000);
    println!("{}", row("floor: a process asleep on a socketpair", &floor));
    for (n, rate) in [(2usize, 10u32), (10, 100)] {
        let r = rig(&format!("lat-{n}x{rate}"), n, rate, Some(&so), true);
        let ticker_before = r.ex.report()["requests_by_path"][BOOK_TICKER].as_u64().unwrap_or(0);
        let (lat, sent, skipped, cpu) = measure(&r, secs);
        let ticker = r.ex.report()["requests_by_path"][BOOK_TICKER].as_u64().unwrap_or(0) - ticker_before;
        println!("{}", row(&format!("{n} symbols x {rate} updates/s"), &lat));
        println!(
            "    {sent} events sent, {} reached on_book, {skipped} conflated away; `market` thread CPU {:.2} % of a core; \
             bookTicker requests {ticker}{}",
            lat.len(),
            cpu * 100.0,
            if n == 2 { format!(" (target p99 <= 1 ms: {})", if us(&lat, 0.99) <= 1000.0 { "met" } else { "MISSED" }) } else {
                format!(" (target CPU <= 5 %: {})", if cpu <= 0.05 { "met" } else { "MISSED" })
            }
        );
        r.daemon.stop(Duration::from_secs(5));
    }

    let (off, _) = rss_of("off");
    let (on, text) = rss_of("on");
    let levels = text.lines().find_map(|l| l.strip_prefix("levels ")).unwrap_or("?");
    println!(
        "RSS, 10 symbols at 10 updates/s: market stream off {:.1} MB, on {:.1} MB ({levels} levels kept): {:+.0} kB \
         (target <= 1 MB more: {})",
        off as f64 / 1e3,
        on as f64 / 1e3,
        on as f64 - off as f64,
        if on <= off + 1024 { "met" } else { "MISSED" }
    );

    // The paper exchange's own streams, its market moving every 100 ms.
    let ex = paper(2, Duration::from_millis(100));
    let dir = std::env::temp_dir().join(format!("syncd-bench-market-{}-ticker", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let vars: HashMap<&str, String> = common::daemon_env(&ex, &dir, "BTCUSD,ETHUSD").into_iter().collect();
    let config =
        Config::from_lookup(|k| vars.get(k).cloned(), Needs { credentials: true, symbols: true }).expect("config");
    let daemon = Daemon::start(&config, &Tuning::from_config(&config)).expect("daemon");
    let m = daemon.market().expect("market").clone();
    wait("both books synced", || m.state().up && m.state().symbols.values().all(|s| s.synced));
    let report = |k: &str| ex.report()["requests_by_path"][k].as_u64().unwrap_or(0);
    let (ticker0, depth0) = (report(BOOK_TICKER), report("/api/v3/depth"));
    std::thread::sleep(Duration::from_secs(secs));
    println!(
        "paper exchange's own streams, market moving every 100 ms, {secs} s with the stream up: bookTicker requests {}, \
         depth snapshots {} (target 0 bookTicker)",
        report(BOOK_TICKER) - ticker0,
        report("/api/v3/depth") - depth0
    );
    daemon.stop(Duration::from_secs(5));
}
