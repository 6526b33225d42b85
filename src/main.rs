//! `binance-syncd`: arguments → config → start roles → wait → exit code.
//!
//! Exit codes: 0 done, 1 runtime failure, 2 bad usage or configuration.

use binance_syncd::config::{Config, Needs};
use binance_syncd::exit;
use binance_syncd::rest::ACCOUNT;
use binance_syncd::Error;
use std::process::ExitCode;

mod paper_cmd;

const USAGE: &str = "\
binance-syncd — keeps a Binance.US account's fills flowing to a JSON Lines log

USAGE:
    binance-syncd [COMMAND]

COMMANDS:
    run        Run the daemon (the default): fills to SYNCD_FILL_LOG, exactly once
    check      Check the configuration and the exchange: clock, rules, signed access
    demo       Run the daemon against an in-process paper exchange and grade the fill log
    paper      Run the paper exchange (Binance.US-compatible, loopback); see `paper --help`

OPTIONS:
    -h, --help       Print this help
    -V, --version    Print the version

Configuration is read from the environment (BINANCE_API_KEY, BINANCE_API_SECRET,
SYNCD_REST_URL, SYNCD_WS_URL, SYNCD_SYMBOLS, SYNCD_FILL_LOG, SYNCD_STATE_DIR,
SYNCD_KEEPALIVE_S, SYNCD_PLUGIN_DIR, RUST_LOG); see README.md.
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
    use binance_syncd::demo::{run, DemoOptions};
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
                println!("binance-syncd demo [--seconds N (default 30)] [--dir DIR (default ./syncd-demo)] [--plugin PATH (default: libgrid_maker.so beside this program)] [--quiet]");
                return ExitCode::SUCCESS;
            }
            (other, _) => {
                eprintln!("binance-syncd demo: unknown option {other:?}; see demo --help");
                return ExitCode::from(exit::USAGE);
            }
        }
        i += 2;
    }
    match run(&opts) {
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
        Some("check") if args.len() == 1 => {
            init_logging();
            check()
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
    let (exit_tx, exit_rx) = crossbeam_channel::unbounded();
    if let Err(e) = watch_signals(exit_tx) {
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

/// Checks what `run` will need, in the order it needs it, and says what failed.
fn check() -> ExitCode {
    let config = match load_config(Needs { credentials: true, symbols: true }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rest = binance_syncd::daemon::rest_client(&config);
    let result = (|| -> Result<(), Error> {
        let offset = rest.sync_clock()?;
        println!("clock: offset to the exchange {offset} ms");
        let rules = rest.exchange_info(&config.symbols)?;
        for limit in &rules.rate_limits {
            println!("rate limit: {:?} {} per {} ms", limit.kind, limit.limit, limit.interval_ms);
        }
        for symbol in &config.symbols {
            match rules.symbols.get(symbol) {
                Some(s) => println!("symbol {symbol}: {} with {} filters", s.status, s.filters.len()),
                None => return Err(Error::Config(format!("SYNCD_SYMBOLS: {symbol} is not listed by the exchange"))),
            }
        }
        rest.call(&ACCOUNT, &[])?;
        println!("signed access: ok");
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("binance-syncd: check failed: {e}");
            ExitCode::from(exit::error_code(&e))
        }
    }
}
