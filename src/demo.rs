//! `binance-syncd demo`: the whole product on the paper exchange, in one process.
//!
//! Starts a paper exchange on loopback (with an external trader acting on the same account, as a
//! web-UI user would), runs the daemon against it, places maker orders through the daemon's
//! executor (as a strategy would), injects a stream outage and duplicate and garbage
//! frames, prints every fill as it lands in the fill log, and at the end grades the log against
//! the exchange's ground truth: missing and duplicate lines must both be zero.

use binance_syncd::config::{Config, Needs};
use binance_syncd::daemon::{Daemon, Tuning};
use binance_syncd::decimal::Decimal;
use binance_syncd::error::Error;
use binance_syncd::executor::{Intent, Outcome, Reply, StrategyHandle};
use binance_syncd::filllog::FillRecord;
use binance_syncd::lock::LockAnyway;
use binance_syncd::model::Side;
use binance_syncd::rest::{RestClient, BOOK_TICKER};
use binance_syncd_paper::{PaperConfig, PaperExchange, DEMO_API_KEY, DEMO_API_SECRET};
use crossbeam_channel::Receiver;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub seconds: u64,
    pub dir: PathBuf,
    /// Print each fill as it lands.
    pub verbose: bool,
    /// The grid-maker plugin (a `.so`, or an executable plugin such as
    /// `plugins/python/examples/grid.py`); `None`: look beside this program (`cargo build
    /// --release --workspace` puts `libgrid_maker.so` there), and trade directly if it is not
    /// there.
    pub plugin: Option<PathBuf>,
}

/// The grid-maker beside the running program, if it was built.
fn find_plugin(opts: &DemoOptions) -> Option<PathBuf> {
    if let Some(p) = &opts.plugin {
        return Some(p.clone());
    }
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.join("libgrid_maker.so");
    beside.is_file().then_some(beside)
}

/// Modes set whatever the umask: the daemon refuses plugin files and folders that group or
/// others may write (`plugin::trust`).
fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(Error::io(path))
}

/// How the demo installs `plugin` in its plugin folder: its file name there and the plugin's
/// name. A `.so` goes in as `grid_maker.so` (plugin `grid_maker`) whatever it was called; any
/// other file is an executable plugin (`plugins/python/examples/grid.py`) and keeps its name,
/// the plugin named after it without the extension (`grid`).
fn plugin_names(plugin: &Path) -> (String, String) {
    if plugin.extension().and_then(|x| x.to_str()) == Some("so") {
        return ("grid_maker.so".into(), "grid_maker".into());
    }
    let text = |s: Option<&std::ffi::OsStr>| s.map_or_else(|| "grid".to_string(), |s| s.to_string_lossy().into_owned());
    (text(plugin.file_name()), text(plugin.file_stem()))
}

/// Installs `plugin` as `dir/file` the way an operator should: copy, then rename; mode 0755,
/// which an executable plugin needs to run at all.
fn install_plugin(plugin: &Path, dir: &Path, file: &str) -> Result<(), Error> {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::copy(plugin, &tmp).map_err(Error::io(&tmp))?;
    set_mode(&tmp, 0o755)?;
    let target = dir.join(file);
    std::fs::rename(&tmp, &target).map_err(Error::io(&target))
}

/// A Python plugin imports the SDK, `binance_syncd.py`: the one beside the plugin or one
/// folder up (the repository's `plugins/python/`) is copied into `above`, the folder above the
/// plugin folder, where `examples/grid.py` looks for it (so the plugin folder holds plugins
/// only). Nothing for another plugin, or where there is no SDK to copy.
fn install_python_sdk(plugin: &Path, above: &Path) -> Result<(), Error> {
    if plugin.extension().and_then(|x| x.to_str()) != Some("py") {
        return Ok(());
    }
    let dir = plugin.parent().unwrap_or(Path::new("."));
    let Some(sdk) =
        [dir.join("binance_syncd.py"), dir.join("..").join("binance_syncd.py")].into_iter().find(|p| p.is_file())
    else {
        return Ok(());
    };
    let target = above.join("binance_syncd.py");
    std::fs::copy(&sdk, &target).map_err(Error::io(&target))?;
    set_mode(&target, 0o644)
}

/// The grade at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    pub exchange_trades: usize,
    pub log_lines: usize,
    pub missing: usize,
    pub duplicates: usize,
    pub unknown: usize,
    pub external_fills: usize,
    pub orders_placed: usize,
    pub orders_not_placed: usize,
    pub fill_log: PathBuf,
    /// Stream fills timed (frame read to line durable), and the bounds of the histogram
    /// buckets holding the median and the 99th percentile.
    pub latency_samples: u64,
    pub latency_p50: Option<Duration>,
    pub latency_p99: Option<Duration>,
}

impl DemoSummary {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.unknown == 0
    }

    /// The daemon's own stream fill latency, from its histogram (bucket bounds).
    pub fn latency_line(&self) -> String {
        let ms =
            |d: Option<Duration>| d.map_or("> 10 s".to_string(), |d| format!("<= {:.2} ms", d.as_secs_f64() * 1e3));
        format!(
            "demo: fill latency (frame read to line durable) over {} stream fills: p50 {}, p99 {}",
            self.latency_samples,
            ms(self.latency_p50),
            ms(self.latency_p99)
        )
    }
}

/// Asks the executor for one maker order a few ticks away from the touch; it rounds and
/// checks it (filters, balance, limits) before anything is sent.
fn place(rest: &RestClient, strategy: &StrategyHandle, symbol: &str, side: Side, n: u64) -> Result<(), Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Book {
        bid_price: Decimal,
        ask_price: Decimal,
    }
    let book: Book = rest.call_json(&BOOK_TICKER, &[("symbol", symbol)])?;
    let offset = Decimal::new((n % 7 + 1) as i128 * 3, 2);
    let price = match side {
        Side::Buy => book.bid_price.checked_sub(offset),
        Side::Sell => book.ask_price.checked_add(offset),
    }
    .unwrap_or(book.bid_price);
    // Quote about 20 USD so MIN_NOTIONAL passes; the executor rounds the quantity down.
    let qty = Decimal::from_int(20).checked_div(price, 8).unwrap_or(Decimal::ONE);
    strategy
        .submit(Intent::Place { symbol: symbol.to_string(), side, price, qty })
        .map_err(|e| Error::Transport(format!("executor: {e}")))?;
    Ok(())
}

/// Counts final replies: (placed, not placed).
fn tally(replies: &Receiver<Reply>, placed: &mut usize, refused: &mut usize) {
    while let Ok(r) = replies.try_recv() {
        match &r.outcome {
            Outcome::Placed(_) => *placed += 1,
            Outcome::Unknown { .. } | Outcome::CanceledAll { .. } | Outcome::Canceled(_) => {}
            other => {
                *refused += 1;
                log::info!("demo: order not placed: {other:?}");
            }
        }
    }
}

/// Reads lines appended to `path` since `offset`.
fn tail(path: &Path, offset: &mut u64) -> Vec<FillRecord> {
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    if f.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut reader = BufReader::new(f);
    let mut line = String::new();
    while let Ok(n) = reader.read_line(&mut line) {
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        *offset += n as u64;
        if let Ok(rec) = serde_json::from_str::<FillRecord>(&line) {
            out.push(rec);
        }
        line.clear();
    }
    out
}

/// When, which fault, with which parameters.
type ScheduledFault = (Duration, &'static str, Vec<(&'static str, &'static str)>);

/// The operator's settings the demo's daemon takes over (a Prometheus can watch the demo; the
/// latency it prints can be compared across settings).
const OPERATOR_VARS: [&str; 8] = [
    "SYNCD_METRICS_ADDR",
    "SYNCD_METRICS_PUBLIC",
    "SYNCD_STREAM_DEADLINE_S",
    "SYNCD_ALERT_WEBHOOK",
    "SYNCD_ALERT_REPEAT_S",
    "SYNCD_ALERT_QUIET_S",
    "SYNCD_FSYNC",
    "SYNCD_PLUGIN_SPIN_US",
];

/// The operator's settings for the demo, read now: `main` takes the secrets among them out of
/// the environment before the demo starts any thread.
pub fn operator_env() -> Vec<(&'static str, String)> {
    OPERATOR_VARS.iter().filter_map(|&name| std::env::var(name).ok().map(|v| (name, v))).collect()
}

/// The demo, with the operator's settings given (see [`operator_env`]).
pub fn run_with(opts: &DemoOptions, operator: Vec<(&'static str, String)>) -> Result<DemoSummary, Error> {
    let fresh = !opts.dir.exists();
    std::fs::create_dir_all(&opts.dir).map_err(Error::io(&opts.dir))?;
    if fresh {
        set_mode(&opts.dir, 0o755)?; // the folder above the plugin folder (see `set_mode`)
    }
    let fill_log = opts.dir.join("fills.jsonl");
    let state_dir = opts.dir.join("state");
    // The demo clears `DIR/fills.jsonl` and `DIR/state/`: never in a daemon's own state
    // directory (its cursors and carry sit at the top, the demo's one level down), running
    // or not, and never while another demo or daemon holds either directory.
    for marker in [binance_syncd::statedir::LOCK_FILE, "cursors.json", "filllog.json"] {
        if opts.dir.join(marker).exists() {
            return Err(Error::Config(format!(
                "demo --dir {}: it holds a daemon's state ({marker}); the demo would delete its fill log. Pick another directory",
                opts.dir.display()
            )));
        }
    }
    let _lock = binance_syncd::statedir::StateLock::acquire(&state_dir)?;
    let _ = std::fs::remove_file(&fill_log);
    for entry in std::fs::read_dir(&state_dir).map_err(Error::io(&state_dir))?.flatten() {
        if entry.file_name() != binance_syncd::statedir::LOCK_FILE {
            let _ = std::fs::remove_file(entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let mut paper = PaperConfig { market_tick: Duration::from_millis(200), ..PaperConfig::default() };
    paper.engine.external_trader_pct = 25;
    paper.engine.seed = 7;
    let ex = PaperExchange::start(paper).map_err(|e| Error::Transport(format!("paper exchange: {e}")))?;
    println!("demo: paper exchange at {} (REST) and {} (stream)", ex.rest_url(), ex.ws_url());

    let vars: HashMap<&str, String> = [
        ("BINANCE_API_KEY", DEMO_API_KEY.to_string()),
        ("BINANCE_API_SECRET", DEMO_API_SECRET.to_string()),
        ("SYNCD_REST_URL", ex.rest_url()),
        ("SYNCD_WS_URL", ex.ws_url()),
        ("SYNCD_SYMBOLS", "BTCUSD,ETHUSD".into()),
        ("SYNCD_STATE_DIR", state_dir.display().to_string()),
        ("SYNCD_FILL_LOG", fill_log.display().to_string()),
        ("SYNCD_RECONCILE_S", "5".into()),
        ("SYNCD_RECONCILE_DOWN_S", "1".into()),
        ("SYNCD_WS_PING_S", "2".into()),
        ("SYNCD_WS_SILENCE_S", "6".into()),
        ("SYNCD_BACKOFF_MAX_S", "2".into()),
        // The demo market moves every 200 ms and the demo quotes twice a second per symbol.
        ("SYNCD_PRICE_POLL_S", "0.5".into()),
        ("SYNCD_STRATEGY_MAX_ORDERS_10S", "40".into()),
        ("SYNCD_STRATEGY_MAX_OPEN", "60".into()),
    ]
    .into_iter()
    .collect();
    let mut vars = vars;
    vars.extend(operator);
    let plugin = find_plugin(opts);
    let plugin_dir = opts.dir.join("plugins");
    let (plugin_file, plugin_name) = plugin.as_deref().map(plugin_names).unwrap_or_default();
    if let Some(so) = &plugin {
        let _ = std::fs::remove_dir_all(&plugin_dir);
        std::fs::create_dir_all(&plugin_dir).map_err(Error::io(&plugin_dir))?;
        set_mode(&plugin_dir, 0o755)?;
        let conf = plugin_dir.join(format!("{plugin_name}.conf"));
        std::fs::write(&conf, "# the demo's grid: 3 levels a side, 10 ticks apart, about 20 USD each\nlevels = 3\nspacing = 10\nquote = 20\n")
            .map_err(Error::io(&conf))?;
        set_mode(&conf, 0o644)?;
        install_python_sdk(so, &opts.dir)?;
        install_plugin(so, &plugin_dir, &plugin_file)?;
        vars.insert("SYNCD_PLUGIN_DIR", plugin_dir.display().to_string());
        vars.insert("SYNCD_PLUGIN_SCAN_S", "0.5".into());
        vars.insert("SYNCD_PLUGIN_TICK_S", "0.5".into());
        vars.insert("SYNCD_CANCEL_ON_EXIT", "true".into());
        let label = if plugin_name == "grid_maker" { "grid-maker" } else { plugin_name.as_str() };
        println!("demo: strategy plugin {} ({label}) in {}", so.display(), plugin_dir.display());
    } else {
        println!(
            "demo: no grid-maker plugin beside this program (cargo build --release --workspace builds it); the demo places orders itself"
        );
    }
    let config = Config::from_lookup(|k| vars.get(k).cloned(), Needs { credentials: true, symbols: true })
        .map_err(|p| Error::Config(p.join("; ")))?;
    let daemon = Daemon::start(&config, &Tuning::from_config(&config))?;
    println!("demo: daemon running; fill log {}", fill_log.display());
    if let Some(addr) = daemon.metrics_addr() {
        println!("demo: metrics at http://{addr}/metrics and http://{addr}/healthz");
    }

    let rest = crate::paper_client::paper_client(&ex, false)?;
    let (strategy, replies) = daemon.executor().strategy("demo")?;
    let total = Duration::from_secs(opts.seconds.max(5));
    let start = Instant::now();
    let faults: [ScheduledFault; 4] = [
        (total * 3 / 10, "duplicate_trade", vec![("count", "3")]),
        (total * 4 / 10, "drop", vec![("mode", "rst"), ("refuse_ms", "2000")]),
        (total * 6 / 10, "garbage", vec![]),
        (total * 7 / 10, "drop_events", vec![("count", "5")]),
    ];
    let mut fired = 0;
    let (mut n, mut placed, mut refused, mut offset) = (0u64, 0usize, 0usize, 0u64);
    let mut printed = 0usize;
    let (mut swapped, mut swap_reported, mut next_status) = (false, false, Instant::now());
    while start.elapsed() < total {
        if let Some(so) = plugin.as_ref().filter(|_| !swapped && start.elapsed() >= total / 2) {
            println!(
                "demo: installing the plugin again (rename over the old file): the daemon swaps it while fills flow"
            );
            install_plugin(so, &plugin_dir, &plugin_file)?;
            swapped = true;
        }
        if let Some(view) = daemon.plugins() {
            if let Some(s) = view
                .get(&plugin_name)
                .filter(|s| swapped && !swap_reported && s.loads >= 2 && s.last_swap_pause_us.is_some())
            {
                let pause = s.last_swap_pause_us.map_or("?".to_string(), |us| format!("{:.1} ms", us as f64 / 1000.0));
                println!(
                    "demo: plugin swapped: version {} now running from fill #{}, pause {pause}",
                    s.version, s.delivered
                );
                swap_reported = true;
            }
        }
        if opts.verbose && Instant::now() >= next_status {
            next_status = Instant::now() + Duration::from_secs(3);
            println!("{}", status_line(&daemon, &ex, printed));
        }
        if let Some((at, name, params)) = faults.get(fired) {
            if start.elapsed() >= *at {
                println!("demo: injecting fault {name} {params:?}");
                if let Err(e) = ex.fault(name, params) {
                    println!("demo: fault {name} failed: {e}");
                }
                fired += 1;
            }
        }
        // With the plugin, the grid-maker trades; without it, the demo does.
        for symbol in config.symbols.iter().filter(|_| plugin.is_none()) {
            n += 1;
            let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
            if let Err(e) = place(&rest, &strategy, symbol, side, n) {
                log::warn!("demo: order failed: {e}");
            }
        }
        tally(&replies, &mut placed, &mut refused);
        printed += show(tail(&fill_log, &mut offset), printed, opts.verbose);
        std::thread::sleep(Duration::from_millis(500));
    }
    // Stop trading, let the last fills arrive, then stop the daemon and grade.
    let _ = ex.fault("quiesce", &[]);
    ex.shared().engine.lock_anyway().set_external_pct(0);
    // Our own orders only: the external trader's stay where they are.
    for symbol in &config.symbols {
        let _ = strategy.submit(Intent::CancelAll { symbol: symbol.clone() });
    }
    let cancels = Instant::now();
    while cancels.elapsed() < Duration::from_secs(5) {
        tally(&replies, &mut placed, &mut refused);
        // The one own-order rule (executor::ids), not a prefix of its own.
        let own = daemon
            .executor()
            .view()
            .open_orders
            .iter()
            .filter(|o| binance_syncd::executor::ids::tag_in(&o.client_order_id, None) == Some("demo"))
            .count();
        if own == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let settle = Instant::now();
    let expected = ex.report()["trades"].as_array().map_or(0, Vec::len);
    while settle.elapsed() < Duration::from_secs(15) {
        let lines = std::fs::read_to_string(&fill_log).map(|t| t.lines().count()).unwrap_or(0);
        if lines >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if plugin.is_some() {
        let stats = daemon.executor().view().stats;
        placed = stats.placed as usize;
        refused = (stats.refused + stats.rejected) as usize;
    }
    let metrics = daemon.metrics().clone();
    daemon.stop(Duration::from_secs(8));
    show(tail(&fill_log, &mut offset), printed, opts.verbose);
    let mut summary = grade(&ex.report(), &fill_log, placed, refused)?;
    summary.latency_samples = metrics.fill_latency.count();
    summary.latency_p50 = metrics.fill_latency.quantile_bound(0.5);
    summary.latency_p99 = metrics.fill_latency.quantile_bound(0.99);
    Ok(summary)
}

/// The market stream's book, oldest of the symbols: how long since the stream confirmed it
/// (`MarketState::age`), `syncing` while a symbol's book is not live, `down` while the stream is.
fn book_age(daemon: &Daemon) -> String {
    let Some(market) = daemon.market() else { return "off".to_string() };
    let state = market.state();
    let now = Instant::now();
    let ages: Option<Vec<Duration>> = state.symbols.keys().map(|s| state.age(s, now)).collect();
    match ages.and_then(|a| a.into_iter().max()) {
        None => "down".to_string(),
        Some(_) if !state.symbols.values().all(|s| s.synced) => "syncing".to_string(),
        Some(age) => format!("{} ms", age.as_millis()),
    }
}

/// One line: the stream, the book's age, fills, orders, weight and plugins.
fn status_line(daemon: &Daemon, ex: &PaperExchange, fills: usize) -> String {
    let report = ex.report();
    let stream = match report["sessions"].as_array().and_then(|s| s.last()) {
        Some(last) if last["closed_ms"].is_null() => "up",
        _ => "down",
    };
    let view = daemon.executor().view();
    let plugins: Vec<String> = daemon
        .plugins()
        .map(|p| p.all().iter().map(|s| format!("{} {} v{} #{}", s.name, s.state, s.version, s.delivered)).collect())
        .unwrap_or_default();
    format!(
        "status: stream {stream} | book {} | fills {fills} | orders placed {} refused {} open {} | peak weight {}/min | plugins [{}]",
        book_age(daemon),
        view.stats.placed,
        view.stats.refused + view.stats.rejected,
        view.open_orders.len(),
        report["peak_weight_1m"],
        plugins.join(", ")
    )
}

/// Prints fills as they land (numbered after the `before` already shown); returns how many.
fn show(fills: Vec<FillRecord>, before: usize, verbose: bool) -> usize {
    if verbose {
        for (i, f) in fills.iter().enumerate() {
            println!(
                "fill #{:<4} {:<7} {:<4} {:>12} @ {:>16}  trade_id={} order={} maker={}",
                before + i + 1,
                f.symbol,
                f.side.as_str(),
                f.qty.to_string(),
                f.price.to_string(),
                f.trade_id,
                if f.client_order_id.is_empty() { "?" } else { f.client_order_id.as_str() },
                f.maker
            );
        }
    }
    fills.len()
}

fn grade(report: &serde_json::Value, fill_log: &Path, placed: usize, refused: usize) -> Result<DemoSummary, Error> {
    let text = std::fs::read_to_string(fill_log).map_err(Error::io(fill_log))?;
    let mut counts: HashMap<(String, u64), usize> = HashMap::new();
    let mut lines = 0;
    for l in text.lines() {
        lines += 1;
        if let Ok(f) = serde_json::from_str::<FillRecord>(l) {
            *counts.entry((f.symbol, f.trade_id)).or_default() += 1;
        }
    }
    let trades = report["trades"].as_array().cloned().unwrap_or_default();
    let truth: HashSet<(String, u64)> =
        trades.iter().filter_map(|t| Some((t["symbol"].as_str()?.to_string(), t["id"].as_u64()?))).collect();
    let external_fills = trades.iter().filter(|t| t["origin"] == "external").count();
    Ok(DemoSummary {
        exchange_trades: truth.len(),
        log_lines: lines,
        missing: truth.iter().filter(|k| !counts.contains_key(*k)).count(),
        duplicates: counts.values().filter(|n| **n > 1).map(|n| n - 1).sum(),
        unknown: counts.keys().filter(|k| !truth.contains(*k)).count(),
        external_fills,
        orders_placed: placed,
        orders_not_placed: refused,
        fill_log: fill_log.to_path_buf(),
        latency_samples: 0,
        latency_p50: None,
        latency_p99: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_executable_plugin_keeps_its_name_and_mode_0755_and_a_python_one_gets_the_sdk_above() {
        assert_eq!(plugin_names(Path::new("x/libgrid_maker.so")), ("grid_maker.so".into(), "grid_maker".into()));
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let grid = repo.join("plugins/python/examples/grid.py");
        let (file, name) = plugin_names(&grid);
        assert_eq!((file.as_str(), name.as_str()), ("grid.py", "grid"));
        let dir = std::env::temp_dir().join(format!("syncd-demo-install-{}", std::process::id()));
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        install_python_sdk(&grid, &dir).unwrap();
        install_plugin(&grid, &plugins, &file).unwrap();
        let installed = plugins.join("grid.py");
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(&grid).unwrap());
        assert!(dir.join("binance_syncd.py").is_file(), "the SDK where grid.py looks, one folder up");
        let names: Vec<_> = std::fs::read_dir(&plugins).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("grid.py")], "no temporary file left, no SDK among plugins");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
