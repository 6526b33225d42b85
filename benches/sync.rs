//! The daemon end to end: fills pushed by the paper exchange, timed from the moment the event is
//! published to the moment its line is in the fill log; sustained fills/s; RSS and CPU while
//! idle for 60 s. A small Python client (websocket-client, installed here into `target/pyenv`
//! if missing) does the same job beside it in the same run, and both are printed with ratios.
//!
//! A second daemon, "far", runs beside the first on the same stream: its REST requests and
//! answers are each delayed 50 ms (`rest_delay` on its own API key, so about 100 ms a round trip,
//! as from a VPS far from the exchange) and it reconciles every 3 s. Its stream fills must not
//! wait behind those requests (issue 14). It is timed open-loop: the fills keep their pace
//! whether or not it has caught up, and each of its lines is timed from its own fill's publish.
//! Timed like the others, a stall would hide: while the bench waits for the one fill stuck
//! behind a request it publishes no other, so a 100 ms stall costs one sample in 600 and never
//! reaches the p99.
//!
//! `cargo bench --bench sync` (about 90 s). `SYNC_BENCH_IDLE_S` shortens the idle phase;
//! `SYNC_BENCH_FSYNC=always` runs the daemons with the default fsync policy (`never` here).
//! Targets: p99 < 1 ms without fsync, far p99 within 2 ms of near p99, idle RSS < 10 MB, idle
//! CPU < 0.5 % of a core.

use binance_syncd::rest::RestClient;
use binance_syncd_paper::{PaperConfig, PaperExchange, DEMO_API_KEY, DEMO_API_SECRET};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The far daemon's own key pair on the same account, so the delay can be its alone.
const FAR_API_KEY: &str = "farDaemonBenchKey0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN";
const FAR_API_SECRET: &str = "farDaemonBenchSecret0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH";
/// Added to each REST request and to each answer of the far daemon.
const FAR_DELAY_MS: u64 = 50;

mod common;
use common::percentile;

fn daemon(ex: &PaperExchange, state: &Path, log: &Path, key: &str, secret: &str, reconcile_s: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_binance-syncd"))
        .arg("run")
        .env("BINANCE_API_KEY", key)
        .env("BINANCE_API_SECRET", secret)
        .env("SYNCD_REST_URL", ex.rest_url())
        .env("SYNCD_WS_URL", ex.ws_url())
        .env("SYNCD_SYMBOLS", "BTCUSD")
        .env("SYNCD_STATE_DIR", state)
        .env("SYNCD_FILL_LOG", log)
        .env("SYNCD_FSYNC", std::env::var("SYNC_BENCH_FSYNC").unwrap_or_else(|_| "never".into()))
        .env("SYNCD_RECONCILE_S", reconcile_s)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("daemon")
}

fn rest(ex: &PaperExchange) -> RestClient {
    common::paper_client(ex, true).expect("clock sync")
}

fn python(root: &Path) -> Option<PathBuf> {
    let env = std::env::var_os("SYNCD_PYENV").map(PathBuf::from).unwrap_or_else(|| root.join("target/pyenv"));
    let py = env.join("bin/python");
    let has = |py: &Path| Command::new(py).args(["-c", "import websocket"]).status().is_ok_and(|s| s.success());
    if !has(&py) {
        println!("python: installing websocket-client into {}", env.display());
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&env).status().is_ok_and(|s| s.success())
            && Command::new(&py)
                .args(["-m", "pip", "install", "-q", "websocket-client==1.9.2"])
                .status()
                .is_ok_and(|s| s.success());
        if !ok || !has(&py) {
            println!("python: could not install websocket-client; the Python column is skipped");
            return None;
        }
    }
    Some(py)
}

/// Bytes in the log: a new line shows as growth. Cheaper than reading it, so the poll loop
/// disturbs the clients it measures as little as possible.
fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn lines(path: &Path) -> usize {
    std::fs::read(path).map(|b| b.iter().filter(|c| **c == b'\n').count()).unwrap_or(0)
}

/// (utime + stime) in clock ticks, and VmRSS in kB, from /proc.
fn proc_stats(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

fn place(ex: &PaperExchange, _rest: &RestClient, n: usize, tag: &str) -> Vec<u64> {
    let (bid, _) = ex.shared().engine.lock().expect("engine").touch("BTCUSD").expect("touch");
    let price = bid.checked_sub("1".parse().expect("dec")).expect("price").to_string();
    // Another client on the account places them: the daemon's own REST client cannot.
    let trader = binance_syncd_paper::trader::Trader::new(ex);
    (0..n)
        .map(|i| {
            let id = format!("{tag}-{i}");
            let v = trader
                .order(&[
                    ("symbol", "BTCUSD"),
                    ("side", "BUY"),
                    ("type", "LIMIT_MAKER"),
                    ("quantity", "0.001"),
                    ("price", &price),
                    ("newClientOrderId", &id),
                    ("newOrderRespType", "ACK"),
                ])
                .expect("order")
                .body;
            v["orderId"].as_u64().expect("orderId")
        })
        .collect()
}

/// Times a client's lines open-loop: line k of the phase is the k-th fill published in it (one
/// line per fill, in stream order). Reads only the bytes added since the last look.
struct OpenLoop {
    log: PathBuf,
    offset: u64,
    published: Vec<Instant>,
    arrived: usize,
    latencies: Vec<Duration>,
}

impl OpenLoop {
    fn new(log: &Path) -> OpenLoop {
        OpenLoop { log: log.to_path_buf(), offset: size(log), published: Vec::new(), arrived: 0, latencies: Vec::new() }
    }

    fn poll(&mut self) {
        use std::io::{Read, Seek, SeekFrom};
        if size(&self.log) <= self.offset {
            return;
        }
        let now = Instant::now();
        let mut added = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.seek(SeekFrom::Start(self.offset)).and_then(|_| f.read_to_end(&mut added));
        }
        // Whole lines only: a line being written is counted at the next look.
        let whole = added.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for _ in added[..whole].iter().filter(|b| **b == b'\n') {
            if let Some(t0) = self.published.get(self.arrived) {
                self.latencies.push(now - *t0);
            }
            self.arrived += 1;
        }
        self.offset += whole as u64;
    }

    fn caught_up(&self) -> bool {
        self.arrived >= self.published.len()
    }
}

struct Runner {
    name: &'static str,
    child: Child,
    log: PathBuf,
    latencies: Vec<Duration>,
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("syncd-bench-sync-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut config = PaperConfig { market_tick: Duration::from_secs(3600), ..PaperConfig::default() };
    config.rest.weight_limit = u64::MAX / 2;
    config.rest.orders_per_10s = u64::MAX / 2;
    config.engine.max_num_orders = 1000;
    config.engine.balances = vec![("USD".into(), binance_syncd::Decimal::from_int(1_000_000_000))];
    config.rest.credentials.push((FAR_API_KEY.into(), binance_syncd_paper::Secret::new(FAR_API_SECRET)));
    let ex = PaperExchange::start(config).expect("paper");
    ex.fault("rest_delay", &[("ms", &FAR_DELAY_MS.to_string()), ("api_key", FAR_API_KEY)]).expect("rest_delay");
    let client = rest(&ex);

    let daemon_log = dir.join("daemon-fills.jsonl");
    let near = daemon(&ex, &dir.join("state"), &daemon_log, DEMO_API_KEY, DEMO_API_SECRET, "60");
    let far_log = dir.join("far-fills.jsonl");
    let far = daemon(&ex, &dir.join("far-state"), &far_log, FAR_API_KEY, FAR_API_SECRET, "3");
    let mut runners = vec![
        Runner { name: "binance-syncd", child: near, log: daemon_log, latencies: Vec::new() },
        Runner { name: "binance-syncd far", child: far, log: far_log, latencies: Vec::new() },
    ];
    if let Some(py) = python(&root) {
        let py_log = dir.join("python-fills.jsonl");
        let child = Command::new(py)
            .arg(root.join("benches/py_fill_logger.py"))
            .args([ex.rest_url(), ex.ws_url(), DEMO_API_KEY.to_string()])
            .arg(&py_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python");
        runners.push(Runner { name: "python websocket-client", child, log: py_log, latencies: Vec::new() });
    }
    // All must hold a stream before the clock starts.
    let wanted = runners.len();
    let end = Instant::now() + Duration::from_secs(30);
    while ex.report()["sessions"].as_array().map_or(0, |s| s.iter().filter(|x| x["closed_ms"].is_null()).count())
        < wanted
    {
        assert!(Instant::now() < end, "clients did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));

    // Latency: one fill at a time, timed from just before the exchange publishes it.
    let rounds = 4;
    let per_round = 150;
    let far_index = 1;
    let mut far = OpenLoop::new(&runners[far_index].log);
    for r in 0..rounds {
        let orders = place(&ex, &client, per_round, &format!("lat{r}"));
        for id in orders {
            let base: Vec<u64> = runners.iter().map(|x| size(&x.log)).collect();
            let t0 = Instant::now();
            ex.fault("fill", &[("symbol", "BTCUSD"), ("order_id", &id.to_string()), ("whole", "true")]).expect("fill");
            far.published.push(t0);
            let mut done: Vec<bool> = (0..runners.len()).map(|i| i == far_index).collect();
            while done.iter().any(|d| !d) {
                // Yield the core between looks: on 2 cores a spinning poller delays the very
                // threads it times.
                std::thread::sleep(Duration::from_micros(20));
                for (i, run) in runners.iter_mut().enumerate() {
                    if !done[i] && size(&run.log) > base[i] {
                        run.latencies.push(t0.elapsed());
                        done[i] = true;
                    }
                }
                far.poll();
                assert!(t0.elapsed() < Duration::from_secs(10), "a fill never reached a log");
            }
            // Fixed rate: 200 fills/s. The far daemon is looked at meanwhile, less often.
            while t0.elapsed() < Duration::from_millis(5) {
                std::thread::sleep(
                    Duration::from_micros(200).min(Duration::from_millis(5).saturating_sub(t0.elapsed())),
                );
                far.poll();
            }
        }
        // Caught up before the next orders go out, so that no line waits for a look.
        while !far.caught_up() {
            assert!(far.published.last().is_some_and(|t| t.elapsed() < Duration::from_secs(10)), "far fell behind");
            std::thread::sleep(Duration::from_micros(20));
            far.poll();
        }
    }
    runners[far_index].latencies = std::mem::take(&mut far.latencies);
    // Throughput: a burst of fills as fast as the exchange can make them.
    let burst = 600;
    let orders = place(&ex, &client, burst, "burst");
    let base: Vec<usize> = runners.iter().map(|x| lines(&x.log)).collect();
    let t0 = Instant::now();
    for id in &orders {
        ex.fault("fill", &[("symbol", "BTCUSD"), ("order_id", &id.to_string()), ("whole", "true")]).expect("fill");
    }
    let mut rates = Vec::new();
    for (i, run) in runners.iter().enumerate() {
        while lines(&run.log) < base[i] + burst {
            assert!(t0.elapsed() < Duration::from_secs(60), "{} fell behind", run.name);
            std::thread::sleep(Duration::from_micros(200));
        }
        rates.push(burst as f64 / t0.elapsed().as_secs_f64());
    }

    let idle_s: u64 = std::env::var("SYNC_BENCH_IDLE_S").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let before: Vec<(u64, u64)> = runners.iter().map(|r| proc_stats(r.child.id())).collect();
    std::thread::sleep(Duration::from_secs(idle_s));
    let after: Vec<(u64, u64)> = runners.iter().map(|r| proc_stats(r.child.id())).collect();
    let hz = 100.0; // USER_HZ on Linux

    println!(
        "\nsync bench: {} fills timed one at a time (200/s), burst of {burst}, idle {idle_s} s; \
         far: REST +{FAR_DELAY_MS} ms each way, reconciling every 3 s",
        rounds * per_round
    );
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "client", "p50", "p99", "max", "fills/s", "idle RSS", "idle CPU"
    );
    let mut rows = Vec::new();
    for (i, run) in runners.iter_mut().enumerate() {
        run.latencies.sort();
        let (p50, p99, max) =
            (percentile(&run.latencies, 0.5), percentile(&run.latencies, 0.99), percentile(&run.latencies, 1.0));
        let cpu = (after[i].0.saturating_sub(before[i].0)) as f64 / hz / idle_s as f64 * 100.0;
        let rss_mb = after[i].1 as f64 / 1024.0;
        println!(
            "{:<26} {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>12.0} {:>9.1} MB {:>11.3}%",
            run.name,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            rates[i],
            rss_mb,
            cpu
        );
        rows.push((p50, p99, rates[i], rss_mb, cpu));
    }
    let (near, far) = (rows[0], rows[far_index]);
    println!(
        "far (open-loop) vs near: p50 {:+.3} ms, p99 {:+.3} ms",
        (far.0.as_secs_f64() - near.0.as_secs_f64()) * 1e3,
        (far.1.as_secs_f64() - near.1.as_secs_f64()) * 1e3
    );
    if rows.len() == 3 {
        let (d, p) = (rows[0], rows[2]);
        println!(
            "ratio python/daemon: p50 {:.1}x, p99 {:.1}x, fills/s {:.2}x (daemon/python), idle RSS {:.1}x",
            p.0.as_secs_f64() / d.0.as_secs_f64().max(1e-9),
            p.1.as_secs_f64() / d.1.as_secs_f64().max(1e-9),
            d.2 / p.2.max(1e-9),
            p.3 / d.3.max(1e-9)
        );
    }
    let (p99, rss, cpu) = (rows[0].1, rows[0].3, rows[0].4);
    println!(
        "targets: p99 < 1 ms: {}; far p99 within 2 ms of near: {}; idle RSS < 10 MB: {}; idle CPU < 0.5 %: {}",
        if p99 < Duration::from_millis(1) { "met" } else { "MISSED" },
        if far.1 <= near.1 + Duration::from_millis(2) { "met" } else { "MISSED" },
        if rss < 10.0 { "met" } else { "MISSED" },
        if cpu < 0.5 { "met" } else { "MISSED" }
    );
    for mut run in runners {
        let _ = Command::new("kill").arg("-TERM").arg(run.child.id().to_string()).status();
        let _ = run.child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
