//! `binance-syncd`: arguments → config → start roles → wait → exit code.
//!
//! Exit codes: 0 done, 1 runtime failure, 2 bad usage or configuration.

use binance_syncd::config::{Config, Needs};
use binance_syncd::exit;
use binance_syncd::Error;
use std::process::ExitCode;

mod demo;
mod paper_client;
mod paper_cmd;

const USAGE: &str = "\
binance-syncd — keeps a Binance.US account's fills flowing to a JSON Lines log

USAGE:
    binance-syncd [COMMAND]

COMMANDS:
    run        Run the daemon (the default): fills to SYNCD_FILL_LOG, exactly once
    check      Check clock, API key, symbols, state dir, fill log and plugins; a table
    fills      Show the fill log as a table with totals per symbol (maker share, fees)
    demo       Run the daemon against an in-process paper exchange and grade the fill log
    paper      Run the paper exchange (Binance.US-compatible, loopback)
    conformance FILE
               Check a strategy plugin (a program or a .so) against the plugin protocol

Every command takes --help, e.g. `binance-syncd fills --help`.

OPTIONS:
    -h, --help       Print this help
    -V, --version    Print the version

Configuration is read from the environment (BINANCE_API_KEY, BINANCE_API_SECRET,
SYNCD_REST_URL, SYNCD_WS_URL, SYNCD_CA_FILE, SYNCD_SYMBOLS, SYNCD_FILL_LOG,
SYNCD_STATE_DIR, SYNCD_KEEPALIVE_S, SYNCD_PLUGIN_DIR, RUST_LOG); see docs/configuration.md.

EXAMPLE:
    export BINANCE_API_KEY=... BINANCE_API_SECRET=... SYNCD_SYMBOLS=BTCUSD,ETHUSD
    binance-syncd check && binance-syncd run
";

const RUN_USAGE: &str = "\
binance-syncd run — the daemon: every fill on the account into SYNCD_FILL_LOG, exactly once

USAGE:
    binance-syncd run

Configuration is the environment (see docs/configuration.md). Signals: SIGTERM/SIGINT
stop it cleanly (exit 0); SIGHUP reopens the fill log after logrotate renamed it. Under systemd
(Type=notify) it sends READY=1 once the stream is up and reconciled, and watchdog pings.

EXAMPLE:
    BINANCE_API_KEY=... BINANCE_API_SECRET=... SYNCD_SYMBOLS=BTCUSD binance-syncd run
";

const CHECK_USAGE: &str = "\
binance-syncd check — checks what `run` needs, prints a table, exits non-zero on any FAIL

USAGE:
    binance-syncd check

Rows: clock offset; API key (signed GET /api/v3/account, canTrade); each of SYNCD_SYMBOLS with
its filters; SYNCD_STATE_DIR and SYNCD_FILL_LOG writable; SYNCD_PLUGIN_DIR readable and each
.so's ABI version (read from its table; the plugin is not started). Same environment as `run`.

EXAMPLE:
    sudo sh -c 'set -a; . /etc/binance-syncd/env; SYNCD_STATE_DIR=$(mktemp -d) binance-syncd check'
";

const FILLS_USAGE: &str = "\
binance-syncd fills — the fill log as a table, with totals per symbol

USAGE:
    binance-syncd fills [--symbol S] [--since T] [--json] [--totals] [--follow] [--file PATH]

OPTIONS:
    --symbol S    only this symbol (e.g. BTCUSD)
    --since T     only fills at or after T: 2026-12-01, 2026-12-01T09:30Z, ms since the epoch,
                  or an age: 90s, 15m, 6h, 2d
    --json        each fill as its log line (JSON), then one {\"totals\": ...} line
    --totals      totals only, no row per fill
    --follow      after the totals, print new fills as they are logged (through rotations)
    --file PATH   the log to read (default: SYNCD_FILL_LOG, else SYNCD_STATE_DIR/fills.jsonl)
    -h, --help    print this help

Totals per symbol: fills, maker share (maker fills / fills, rounded down: 100.00% means no
taker fill), the daemon's own fills (client id sd-<tag>-<instance>-...) and their maker share, bought and
sold quantity, notional each way (quote_qty summed), fees by asset.
All numbers are exact decimals as the log has them.

EXAMPLE:
    binance-syncd fills --symbol BTCUSD --since 7d --totals
";

/// A logger that never lets tungstenite, ureq or rustls speak below info, whatever `RUST_LOG`
/// says: at debug tungstenite logs the stream URL (listen key inside), and at trace ureq logs
/// query strings (signatures inside). A filter directive alone can be overridden by a more
/// specific one (`RUST_LOG=tungstenite::handshake=trace`); this cannot.
struct Capped(env_logger::Logger);

fn too_chatty(m: &log::Metadata<'_>) -> bool {
    let t = m.target();
    (t.starts_with("tungstenite") || t.starts_with("ureq") || t.starts_with("rustls")) && m.level() > log::Level::Info
}

impl log::Log for Capped {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        !too_chatty(m) && self.0.enabled(m)
    }

    fn log(&self, r: &log::Record<'_>) {
        if !too_chatty(r.metadata()) {
            self.0.log(r);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// `RUST_LOG` decides, with `default` when it is unset, under the caps of [`Capped`].
fn init_logging_at(default: &str) {
    let logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Capped(logger))).is_ok() {
        log::set_max_level(max);
    }
}

fn init_logging() {
    init_logging_at("info");
}

/// The demo prints its own story on stdout; the daemon's log shows warnings and errors only,
/// unless RUST_LOG says otherwise.
fn init_logging_quiet() {
    init_logging_at("warn");
}

fn demo(args: &[String]) -> ExitCode {
    use demo::DemoOptions;
    let mut opts = DemoOptions { seconds: 30, dir: "syncd-demo".into(), verbose: true, plugin: None };
    let mut i = 0;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--seconds", Some(v)) => match v.parse() {
                Ok(s) => opts.seconds = s,
                Err(_) => {
                    eprintln!("binance-syncd demo: --seconds {v:?} is not a whole number");
                    return ExitCode::from(exit::USAGE);
                }
            },
            ("--dir", Some(v)) => opts.dir = v.into(),
            ("--plugin", Some(v)) => opts.plugin = Some(v.into()),
            ("--quiet", _) => {
                opts.verbose = false;
                i += 1;
                continue;
            }
            ("-h" | "--help", _) => {
                println!("binance-syncd demo [--seconds N (default 30)] [--dir DIR (default ./syncd-demo)] [--plugin PATH (a .so or an executable plugin, e.g. plugins/python/examples/grid.py; default: libgrid_maker.so beside this program)] [--quiet]");
                println!();
                println!("EXAMPLE:");
                println!("    cargo build --release --workspace && target/release/binance-syncd demo --seconds 60");
                return ExitCode::SUCCESS;
            }
            (other, _) => {
                eprintln!("binance-syncd demo: unknown option {other:?}; see demo --help");
                return ExitCode::from(exit::USAGE);
            }
        }
        i += 2;
    }
    // The webhook, if the operator set one, is taken out of the environment like `run` does.
    let operator = demo::operator_env();
    harden();
    match demo::run_with(&opts, operator) {
        Ok(s) => {
            println!();
            println!(
                "demo: {} trades on the exchange ({} by the external trader), {} lines in {}",
                s.exchange_trades,
                s.external_fills,
                s.log_lines,
                s.fill_log.display()
            );
            println!(
                "demo: missing {}, duplicates {}, unknown {} -> {}",
                s.missing,
                s.duplicates,
                s.unknown,
                if s.ok() { "PASS" } else { "FAIL" }
            );
            println!(
                "demo: {} maker orders placed, {} not placed (refused locally or would have crossed)",
                s.orders_placed, s.orders_not_placed
            );
            println!("{}", s.latency_line());
            if s.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::FAILURE)
            }
        }
        Err(e) => {
            eprintln!("binance-syncd demo: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The hidden role each isolated plugin runs in (not in --help: the daemon starts it, with
    // its channel as stdin, and it refuses to run otherwise). First: nothing of the daemon's
    // set-up (logging, configuration) happens in a plugin's process.
    if args.first().map(String::as_str) == Some("plugin-host") {
        let code = binance_syncd::plugin::hostrole::main(&args[1..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // This very image hosts the plugins, even if its file is replaced while it runs.
    binance_syncd::plugin::set_host_program("/proc/self/exe");
    let command = args.first().map(String::as_str);
    match command {
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!("binance-syncd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("run" | "check" | "fills") if matches!(args.get(1).map(String::as_str), Some("-h" | "--help")) => {
            print!(
                "{}",
                match command {
                    Some("run") => RUN_USAGE,
                    Some("check") => CHECK_USAGE,
                    _ => FILLS_USAGE,
                }
            );
            ExitCode::SUCCESS
        }
        Some("check") if args.len() == 1 => {
            init_logging_quiet();
            check()
        }
        Some("fills") => fills(&args[1..]),
        Some("conformance") => {
            let code = binance_syncd::plugin::conform::main(&args[1..]);
            ExitCode::from(u8::try_from(code).unwrap_or(exit::FAILURE))
        }
        Some("demo") => {
            init_logging_quiet();
            demo(&args[1..])
        }
        Some("paper") => {
            init_logging();
            paper_cmd::main(&args[1..])
        }
        None => {
            init_logging();
            run()
        }
        Some("run") if args.len() == 1 => {
            init_logging();
            run()
        }
        Some(other) => {
            eprintln!("binance-syncd: unknown command or extra argument {other:?}; see --help");
            ExitCode::from(exit::USAGE)
        }
    }
}

/// Once the configuration holds the secrets: they leave the environment (no child inherits
/// them, no plugin `getenv`s them) and the process is not dumpable (no core file with the key;
/// no other process of this user reads our memory or environment). Runs before any thread.
fn harden() {
    use binance_syncd::plugin::harden;
    // Both run while `main` is the only thread; neither failure stops the daemon, both are said.
    if let Err(e) = harden::scrub_env(&harden::SECRET_VARS) {
        log::warn!("the secrets stay in the environment: {e}");
    }
    if let Err(e) = harden::forbid_dumping() {
        log::warn!("cannot mark the process not dumpable: {e}");
    }
}

fn load_config(needs: Needs) -> Result<Config, ExitCode> {
    Config::from_env(needs).map_err(|problems| {
        for p in &problems {
            eprintln!("binance-syncd: {p}");
        }
        ExitCode::from(exit::USAGE)
    })
}

/// The daemon: start (retrying while the exchange is unreachable), wait, stop.
fn run() -> ExitCode {
    use binance_syncd::daemon::{watch_signals, Daemon, Tuning};
    use binance_syncd::exit::{error_code, Exit};
    let config = match load_config(Needs { credentials: true, symbols: true }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    harden();
    // Before the metrics port, the fill log, the stream or a listen key: a second daemon on
    // this directory stops here, within a second.
    let _lock = match binance_syncd::statedir::StateLock::acquire(&config.state_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("binance-syncd: {e}");
            return ExitCode::from(error_code(&e));
        }
    };
    let (exit_tx, exit_rx) = crossbeam_channel::unbounded();
    let (hangup_tx, hangup_rx) = crossbeam_channel::unbounded::<()>();
    if let Err(e) = watch_signals(exit_tx, hangup_tx) {
        eprintln!("binance-syncd: {e}");
        return ExitCode::from(error_code(&e));
    }
    let tuning = Tuning::from_config(&config);
    let rest = binance_syncd::daemon::rest_client(&config);
    // A signal during start-up must not wait for a slow exchange: closing the gate makes every
    // pending request give up at once.
    let (signal_tx, signal_rx) = crossbeam_channel::unbounded::<Exit>();
    {
        let rest = rest.clone();
        std::thread::spawn(move || {
            if let Ok(exit) = exit_rx.recv() {
                rest.gate().close();
                let _ = signal_tx.send(exit);
            }
        });
    }
    let mut backoff = binance_syncd::backoff::Backoff::new(
        std::time::Duration::from_millis(500),
        config.backoff_max.max(std::time::Duration::from_secs(1)),
        std::time::Duration::from_secs(60),
    );
    // Served and alerting from before the first attempt: a start-up outage shows in /healthz
    // and sends the stream-down alert.
    let service = match binance_syncd::metrics::Service::start(&config, &rest) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("binance-syncd: {e}");
            return ExitCode::from(error_code(&e));
        }
    };
    let daemon = loop {
        match Daemon::start_on(&config, &tuning, rest.clone(), Some(&service)) {
            Ok(d) => break d,
            Err(Error::Stopped) => return ExitCode::SUCCESS,
            Err(e) if e.ends_start() => {
                eprintln!("binance-syncd: {e}");
                return ExitCode::from(error_code(&e));
            }
            Err(e) => {
                let delay = backoff.next_delay(std::time::Instant::now());
                log::warn!("daemon: cannot start yet ({e}); retrying in {delay:?}");
                if signal_rx.recv_timeout(delay).is_ok() {
                    return ExitCode::SUCCESS;
                }
            }
        }
    };
    // SIGHUPs (queued since start-up too) reopen the fill log.
    let reopen = daemon.fill_log_reopener();
    std::thread::spawn(move || {
        for () in hangup_rx {
            let _ = reopen.try_send(());
        }
    });
    // Signals now go to the daemon's own exit channel too.
    let forward = daemon.exit_tx.clone();
    std::thread::spawn(move || {
        if let Ok(exit) = signal_rx.recv() {
            let _ = forward.send(exit);
        }
    });
    let exit = daemon.wait();
    daemon.stop(std::time::Duration::from_secs(8));
    service.stop(std::time::Instant::now() + std::time::Duration::from_secs(1));
    match &exit {
        Exit::Signal => {}
        Exit::Fatal(why) => eprintln!("binance-syncd: {why}"),
        Exit::Died(name) => eprintln!("binance-syncd: thread {name} stopped unexpectedly"),
    }
    ExitCode::from(exit.code())
}

/// Checks what `run` will need, in the order it needs it, and prints the table.
fn check() -> ExitCode {
    let config = match load_config(Needs { credentials: true, symbols: true }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    harden();
    let rest = binance_syncd::daemon::rest_client(&config);
    let rows = binance_syncd::check::run(&config, &rest);
    print!("{}", binance_syncd::check::table(&rows));
    match binance_syncd::check::failure(&rows) {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("binance-syncd: check failed: {e}");
            ExitCode::from(exit::error_code(&e))
        }
    }
}

/// `fills [options]`: see `FILLS_USAGE`.
fn fills(args: &[String]) -> ExitCode {
    use binance_syncd::fills::FillsOptions;
    let usage = |msg: String| {
        eprintln!("binance-syncd fills: {msg}; see fills --help");
        ExitCode::from(exit::USAGE)
    };
    let mut opts = FillsOptions::default();
    let mut file = None;
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1);
        match (args[i].as_str(), value) {
            ("--symbol", Some(v)) => opts.symbol = Some(v.trim().to_ascii_uppercase()),
            ("--since", Some(v)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                match binance_syncd::utc::parse_ms(v, now) {
                    Some(t) => opts.since_ms = Some(t),
                    None => {
                        return usage(format!("--since {v:?} is not a time (2026-12-01, 2026-12-01T09:30Z, 6h, 2d)"))
                    }
                }
            }
            ("--file", Some(v)) => file = Some(std::path::PathBuf::from(v)),
            (flag @ ("--json" | "--totals" | "--follow"), _) => {
                match flag {
                    "--json" => opts.json = true,
                    "--totals" => opts.totals_only = true,
                    _ => opts.follow = true,
                }
                i += 1;
                continue;
            }
            ("--symbol" | "--since" | "--file", None) => return usage(format!("{} needs a value", args[i])),
            (other, _) => return usage(format!("unknown option {other:?}")),
        }
        i += 2;
    }
    opts.file = match file {
        Some(f) => f,
        None => match load_config(Needs { credentials: false, symbols: false }) {
            Ok(c) => c.fill_log,
            Err(code) => return code,
        },
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    match binance_syncd::fills::run(&opts, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing to report.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            drop(out);
            eprintln!("binance-syncd fills: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
