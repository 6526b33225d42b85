//! Configuration is the environment.
//!
//! Every variable is read and checked once at start. All problems are reported together, one
//! line each naming the variable and what is wrong, and the program exits non-zero instead of
//! starting half-configured. Operators' scripts depend on these names: keep them.
//!
//! Every variable, its default and its meaning are in `docs/configuration.md`, the one reference
//! (`tests/it/docs.rs` checks it lists exactly the names the code reads); a new variable goes
//! there.

use crate::secret::Secret;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_REST_URL: &str = "https://api.binance.us";
pub const DEFAULT_WS_URL: &str = "wss://stream.binance.us:9443";

/// `SYNCD_FSYNC`'s values; the fill log owns the type, which config only reads.
pub use crate::filllog::FsyncPolicy;

#[derive(Debug, Clone)]
pub struct Config {
    pub api_key: Option<Secret>,
    pub api_secret: Option<Secret>,
    pub rest_url: String,
    pub ws_url: String,
    /// `SYNCD_MARKET_WS_URL`: where the market stream connects (default `SYNCD_WS_URL`; the
    /// public streams carry no key). Tests point it elsewhere to feed the market themselves.
    pub market_ws_url: String,
    /// `SYNCD_CA_FILE`, if set: its certificates are trusted beside the web roots.
    pub ca_file: Option<PathBuf>,
    /// Built once from the roots above; REST and the stream both use it (`crate::tls`).
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    pub symbols: Vec<String>,
    pub state_dir: PathBuf,
    pub fill_log: PathBuf,
    /// `SYNCD_FILL_LOG_MODE`: permission bits of the fill log.
    pub fill_log_mode: u32,
    pub keepalive: Duration,
    pub plugin_dir: Option<PathBuf>,
    pub recv_window_ms: u64,
    pub fsync: FsyncPolicy,
    pub fill_log_check: Duration,
    pub clock_sync: Duration,
    pub http_timeout: Duration,
    pub ws_ping: Duration,
    pub ws_silence: Duration,
    pub backoff_max: Duration,
    pub reconcile_up: Duration,
    pub reconcile_down: Duration,
    pub rules_refresh: Duration,
    pub price_poll: Duration,
    pub avg_price_poll: Duration,
    pub book_refresh: Duration,
    /// `SYNCD_MARKET_STREAM`: run the `market` thread.
    pub market_stream: bool,
    /// `SYNCD_MARKET_STALE_S`: a market-stream price older than this is polled by REST instead.
    pub market_stale: Duration,
    pub cancel_on_exit: bool,
    pub strategy_limits: crate::limits::StrategyLimits,
    pub strategy_queue: usize,
    pub plugin_scan: Duration,
    pub plugin_stall: Duration,
    pub plugin_tick: Duration,
    /// How long a plugin thread waits awake for a fill being written (0: asleep).
    pub plugin_spin: Duration,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub stream_deadline: Duration,
    pub alert_webhook: Option<Secret>,
    pub alert_repeat: Duration,
    pub alert_quiet: Duration,
}

/// What a command needs beyond the defaults.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub credentials: bool,
    pub symbols: bool,
}

impl Config {
    pub fn from_env(needs: Needs) -> Result<Config, Vec<String>> {
        Config::from_lookup(|name| std::env::var(name).ok(), needs)
    }

    /// Builds a config from any variable source, so tests need not touch the process env.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>, needs: Needs) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        // An empty variable is treated as unset: `FOO= binance-syncd` is a common way to clear one.
        let var = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());

        // systemd's LoadCredential= hands secrets over as files in CREDENTIALS_DIRECTORY, out of
        // the environment (which the service's own user can read in /proc): a fallback for
        // both variables.
        let credential = |file: &str| {
            let dir = var("CREDENTIALS_DIRECTORY")?;
            let text = std::fs::read_to_string(std::path::Path::new(&dir).join(file)).ok()?;
            Some(text.trim().to_string()).filter(|t| !t.is_empty())
        };
        let api_key = var("BINANCE_API_KEY").or_else(|| credential("binance-api-key")).map(Secret::new);
        let api_secret = var("BINANCE_API_SECRET").or_else(|| credential("binance-api-secret")).map(Secret::new);
        if needs.credentials {
            if api_key.is_none() {
                problems.push("BINANCE_API_KEY: not set (the API key of the account)".to_string());
            }
            if api_secret.is_none() {
                problems.push("BINANCE_API_SECRET: not set (the secret that signs requests)".to_string());
            }
        }
        for (name, value) in [("BINANCE_API_KEY", &api_key), ("BINANCE_API_SECRET", &api_secret)] {
            if let Some(v) = value {
                // Header values and HMAC keys must be plain printable ASCII; say so without echoing it.
                if !v.expose().bytes().all(|b| b.is_ascii_graphic()) {
                    problems.push(format!("{name}: contains spaces or non-ASCII characters"));
                }
            }
        }

        let rest_url = url_var(&var, "SYNCD_REST_URL", DEFAULT_REST_URL, &["http://", "https://"], &mut problems);
        let ws_url = url_var(&var, "SYNCD_WS_URL", DEFAULT_WS_URL, &["ws://", "wss://"], &mut problems);
        let market_ws_url = url_var(&var, "SYNCD_MARKET_WS_URL", &ws_url, &["ws://", "wss://"], &mut problems);
        // The API key header and signed orders (replayable within recvWindow) must not cross a
        // network in clear text by a typo: plain schemes are for loopback (the paper exchange).
        let allow_plaintext = bool_var(&var, "SYNCD_ALLOW_PLAINTEXT", &mut problems);
        for (name, url, plain) in [("SYNCD_REST_URL", &rest_url, "http://"), ("SYNCD_WS_URL", &ws_url, "ws://")] {
            // A wrong scheme was reported above; one problem per variable.
            if url.starts_with(plain) && !allow_plaintext && !crate::tls::plaintext_ok(url) {
                problems.push(format!(
                    "{name}: {url:?} is clear text to a host other than loopback: the API key and signed orders would be readable on the way; use https:// or wss://, or set SYNCD_ALLOW_PLAINTEXT=true behind a TLS-terminating proxy you trust"
                ));
            }
        }
        let ca_file = var("SYNCD_CA_FILE").map(PathBuf::from);
        let extra_roots = match &ca_file {
            Some(path) => crate::tls::read_ca_file(path).unwrap_or_else(|e| {
                problems.push(format!("SYNCD_CA_FILE: {e}"));
                Vec::new()
            }),
            None => Vec::new(),
        };
        let tls =
            crate::tls::client_config(&extra_roots).map_err(|e| problems.push(format!("SYNCD_CA_FILE: {e}"))).ok();

        let mut symbols = Vec::new();
        match var("SYNCD_SYMBOLS") {
            Some(list) => {
                for raw in list.split(',') {
                    let s = raw.trim().to_ascii_uppercase();
                    if s.is_empty() {
                        continue;
                    }
                    if s.len() > 20 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        problems.push(format!("SYNCD_SYMBOLS: {raw:?} is not a symbol like BTCUSD"));
                    } else if !symbols.contains(&s) {
                        symbols.push(s);
                    }
                }
                if list.split(',').all(|s| s.trim().is_empty()) && needs.symbols {
                    problems.push("SYNCD_SYMBOLS: no symbols listed (e.g. BTCUSD,ETHUSD)".to_string());
                }
            }
            None if needs.symbols => {
                problems.push("SYNCD_SYMBOLS: not set (comma-separated symbols, e.g. BTCUSD,ETHUSD)".to_string())
            }
            None => {}
        }

        let state_dir = PathBuf::from(var("SYNCD_STATE_DIR").unwrap_or_else(|| "./syncd-state".into()));
        let fill_log = var("SYNCD_FILL_LOG").map(PathBuf::from).unwrap_or_else(|| state_dir.join("fills.jsonl"));
        let fill_log_mode = match var("SYNCD_FILL_LOG_MODE") {
            None => crate::filllog::DEFAULT_MODE,
            Some(text) => match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
                // Nobody but the daemon may write it, and no execute or special bits.
                Ok(m) if m & !0o644 == 0 && m & 0o600 == 0o600 => m,
                _ => {
                    problems.push(format!(
                        "SYNCD_FILL_LOG_MODE: {text:?} is not an octal mode from 0600 to 0644, like 0640"
                    ));
                    crate::filllog::DEFAULT_MODE
                }
            },
        };
        if fill_log.is_dir() {
            problems.push(format!("SYNCD_FILL_LOG: {} is a directory, not a file", fill_log.display()));
        }
        if state_dir.exists() && !state_dir.is_dir() {
            problems.push(format!("SYNCD_STATE_DIR: {} exists and is not a directory", state_dir.display()));
        }

        let keepalive = int_var(&var, "SYNCD_KEEPALIVE_S", 1800, 1, 3599, &mut problems);
        let plugin_dir = var("SYNCD_PLUGIN_DIR").map(PathBuf::from);
        if let Some(dir) = &plugin_dir {
            if !dir.is_dir() {
                problems.push(format!("SYNCD_PLUGIN_DIR: {} is not a directory", dir.display()));
            }
        }
        let recv_window_ms = int_var(&var, "SYNCD_RECV_WINDOW_MS", 5000, 1, 60_000, &mut problems);
        let fsync = match var("SYNCD_FSYNC").as_deref() {
            None | Some("always") => FsyncPolicy::Always,
            Some("never") => FsyncPolicy::Never,
            Some(other) => {
                problems.push(format!("SYNCD_FSYNC: {other:?} is not one of always, never"));
                FsyncPolicy::Always
            }
        };
        let clock_sync = int_var(&var, "SYNCD_CLOCK_SYNC_S", 600, 1, 86_400, &mut problems);
        let http_timeout = int_var(&var, "SYNCD_HTTP_TIMEOUT_MS", 10_000, 100, 120_000, &mut problems);

        let ws_ping = secs_var(&var, "SYNCD_WS_PING_S", "5", &mut problems);
        let ws_silence = secs_var(&var, "SYNCD_WS_SILENCE_S", "15", &mut problems);
        if ws_silence <= ws_ping {
            problems.push("SYNCD_WS_SILENCE_S: must be longer than SYNCD_WS_PING_S".to_string());
        }
        let backoff_max = secs_var(&var, "SYNCD_BACKOFF_MAX_S", "8", &mut problems);
        let reconcile_up = secs_var(&var, "SYNCD_RECONCILE_S", "60", &mut problems);
        let reconcile_down = secs_var(&var, "SYNCD_RECONCILE_DOWN_S", "10", &mut problems);
        let rules_refresh = secs_var(&var, "SYNCD_RULES_REFRESH_S", "600", &mut problems);
        let price_poll = secs_var(&var, "SYNCD_PRICE_POLL_S", "2", &mut problems);
        let avg_price_poll = secs_var(&var, "SYNCD_AVG_PRICE_POLL_S", "10", &mut problems);
        let book_refresh = secs_var(&var, "SYNCD_BOOK_REFRESH_S", "300", &mut problems);
        let market_stream = bool_var_or(&var, "SYNCD_MARKET_STREAM", true, &mut problems);
        let market_stale = secs_var(&var, "SYNCD_MARKET_STALE_S", "5", &mut problems);
        let cancel_on_exit = bool_var(&var, "SYNCD_CANCEL_ON_EXIT", &mut problems);
        let strategy_limits = crate::executor::StrategyLimits {
            max_open: int_var(&var, "SYNCD_STRATEGY_MAX_OPEN", 20, 1, 100_000, &mut problems),
            max_orders_10s: int_var(&var, "SYNCD_STRATEGY_MAX_ORDERS_10S", 10, 1, 100_000, &mut problems),
            max_order_notional: notional_var(&var, "SYNCD_STRATEGY_MAX_ORDER_NOTIONAL", "1000", &mut problems),
            max_symbol_notional: notional_var(&var, "SYNCD_STRATEGY_MAX_SYMBOL_NOTIONAL", "10000", &mut problems),
        };
        let strategy_queue = int_var(&var, "SYNCD_STRATEGY_QUEUE", 64, 1, 1024, &mut problems) as usize;
        let fill_log_check = secs_var(&var, "SYNCD_FILL_LOG_CHECK_S", "5", &mut problems);
        let plugin_scan = secs_var(&var, "SYNCD_PLUGIN_SCAN_S", "1", &mut problems);
        let plugin_stall = secs_var(&var, "SYNCD_PLUGIN_STALL_S", "5", &mut problems);
        let plugin_tick = secs_var(&var, "SYNCD_PLUGIN_TICK_S", "1", &mut problems);
        let plugin_spin = Duration::from_micros(int_var(&var, "SYNCD_PLUGIN_SPIN_US", 1000, 0, 10_000, &mut problems));
        let metrics_public = bool_var(&var, "SYNCD_METRICS_PUBLIC", &mut problems);
        let metrics_addr = var("SYNCD_METRICS_ADDR").and_then(|text| match text.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() || metrics_public => Some(a),
            Ok(a) => {
                problems.push(format!(
                    "SYNCD_METRICS_ADDR: {a} is not a loopback address; set SYNCD_METRICS_PUBLIC=true to serve metrics there"
                ));
                None
            }
            Err(_) => {
                problems.push(format!("SYNCD_METRICS_ADDR: {text:?} is not an address like 127.0.0.1:9464"));
                None
            }
        });
        let stream_deadline = secs_var(&var, "SYNCD_STREAM_DEADLINE_S", "60", &mut problems);
        let alert_webhook = var("SYNCD_ALERT_WEBHOOK").map(Secret::new);
        if let Some(url) = &alert_webhook {
            // Checked without echoing it: the URL carries the webhook's token.
            let scheme = url.expose().split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if !matches!(scheme.as_deref(), Some("http" | "https")) {
                problems.push("SYNCD_ALERT_WEBHOOK: must start with http:// or https://".to_string());
            } else if !allow_plaintext && !crate::tls::plaintext_ok(url.expose()) {
                // Not echoed: the URL is the webhook's token.
                problems.push("SYNCD_ALERT_WEBHOOK: http:// to a host other than loopback would send its token in clear text; use https://, or set SYNCD_ALLOW_PLAINTEXT=true".to_string());
            }
        }
        let alert_repeat = secs_var(&var, "SYNCD_ALERT_REPEAT_S", "900", &mut problems);
        let alert_quiet = secs_var(&var, "SYNCD_ALERT_QUIET_S", "600", &mut problems);

        if !problems.is_empty() {
            return Err(problems);
        }
        // `None` pushed a problem above; this only keeps the types honest.
        let Some(tls) = tls else { return Err(vec!["SYNCD_CA_FILE: no TLS configuration".into()]) };
        Ok(Config {
            api_key,
            api_secret,
            rest_url,
            ws_url,
            market_ws_url,
            ca_file,
            tls,
            symbols,
            state_dir,
            fill_log,
            fill_log_mode,
            keepalive: Duration::from_secs(keepalive),
            plugin_dir,
            recv_window_ms,
            fsync,
            fill_log_check,
            clock_sync: Duration::from_secs(clock_sync),
            http_timeout: Duration::from_millis(http_timeout),
            ws_ping,
            ws_silence,
            backoff_max,
            reconcile_up,
            reconcile_down,
            rules_refresh,
            price_poll,
            avg_price_poll,
            book_refresh,
            market_stream,
            market_stale,
            cancel_on_exit,
            strategy_limits,
            strategy_queue,
            plugin_scan,
            plugin_stall,
            plugin_tick,
            plugin_spin,
            metrics_addr,
            stream_deadline,
            alert_webhook,
            alert_repeat,
            alert_quiet,
        })
    }
}

/// `true`/`false` (and 1/0, yes/no, on/off); unset is false.
fn bool_var(var: &impl Fn(&str) -> Option<String>, name: &str, problems: &mut Vec<String>) -> bool {
    bool_var_or(var, name, false, problems)
}

/// [`bool_var`] with `default` when unset.
fn bool_var_or(var: &impl Fn(&str) -> Option<String>, name: &str, default: bool, problems: &mut Vec<String>) -> bool {
    match var(name).map(|v| v.to_ascii_lowercase()).as_deref() {
        None => default,
        Some("false" | "0" | "no" | "off") => false,
        Some("true" | "1" | "yes" | "on") => true,
        Some(other) => {
            problems.push(format!("{name}: {other:?} is not one of true, false"));
            default
        }
    }
}

/// A non-negative exact amount; `0` means no limit.
fn notional_var(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: &str,
    problems: &mut Vec<String>,
) -> Option<crate::decimal::Decimal> {
    let text = var(name).unwrap_or_else(|| default.to_string());
    match text.parse::<crate::decimal::Decimal>() {
        Ok(d) if d.is_zero() => None,
        Ok(d) if !d.is_negative() => Some(d),
        _ => {
            problems.push(format!("{name}: {text:?} is not an amount like 1000 or 0.5 (0: no limit)"));
            None
        }
    }
}

fn url_var(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: &str,
    schemes: &[&str],
    problems: &mut Vec<String>,
) -> String {
    let value = var(name).unwrap_or_else(|| default.to_string());
    // The daemon appends paths itself, so a trailing slash would double up.
    let value = value.trim_end_matches('/').to_string();
    let host = schemes.iter().find_map(|s| value.strip_prefix(s));
    match host {
        None => problems.push(format!("{name}: {value:?} must start with {}", schemes.join(" or "))),
        Some(rest) if rest.is_empty() || rest.contains(['?', '#', ' ']) => {
            problems.push(format!("{name}: {value:?} is not a base URL like {default}"))
        }
        Some(_) => {}
    }
    value
}

/// `text` as a number of seconds from 0.001 to 86400 (a day), decimals allowed: how every
/// `SYNCD_*_S` setting is read.
pub fn seconds(text: &str) -> Option<Duration> {
    text.parse::<crate::decimal::Decimal>()
        .ok()
        .and_then(|d| d.checked_mul(crate::decimal::Decimal::from_int(1000)))
        .and_then(|d| d.floor_to(crate::decimal::Decimal::ONE))
        .and_then(|d| d.to_fixed_i64(0))
        .filter(|ms| (1..=86_400_000).contains(ms))
        .map(|ms| Duration::from_millis(ms as u64))
}

/// A positive number of seconds, decimals allowed, at most a day.
fn secs_var(var: &impl Fn(&str) -> Option<String>, name: &str, default: &str, problems: &mut Vec<String>) -> Duration {
    let text = var(name).unwrap_or_else(|| default.to_string());
    match seconds(&text) {
        Some(d) => d,
        None => {
            problems.push(format!("{name}: {text:?} is not a number of seconds from 0.001 to 86400"));
            Duration::from_secs(1)
        }
    }
}

fn int_var(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
    problems: &mut Vec<String>,
) -> u64 {
    match var(name) {
        None => default,
        Some(text) => match text.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => v,
            _ => {
                problems.push(format!("{name}: {text:?} is not a whole number from {min} to {max}"));
                default
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_load_credential_files_when_the_variables_are_unset() {
        let dir = std::env::temp_dir().join(format!("syncd-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("binance-api-key"), "filekey\n").unwrap();
        std::fs::write(dir.join("binance-api-secret"), "filesecret\n").unwrap();
        let vars = |with_env: bool| {
            let d = dir.display().to_string();
            move |k: &str| match k {
                "CREDENTIALS_DIRECTORY" => Some(d.clone()),
                "SYNCD_SYMBOLS" => Some("BTCUSD".to_string()),
                "BINANCE_API_KEY" if with_env => Some("envkey".to_string()),
                _ => None,
            }
        };
        let needs = Needs { credentials: true, symbols: true };
        let c = Config::from_lookup(vars(false), needs).unwrap();
        assert_eq!(c.api_key.as_ref().map(|k| k.expose()), Some("filekey"));
        assert_eq!(c.api_secret.as_ref().map(|k| k.expose()), Some("filesecret"));
        let c = Config::from_lookup(vars(true), needs).unwrap();
        assert_eq!(c.api_key.as_ref().map(|k| k.expose()), Some("envkey"), "the variable wins");
        std::fs::remove_file(dir.join("binance-api-secret")).unwrap();
        let problems = Config::from_lookup(vars(true), needs).unwrap_err();
        assert!(problems.iter().any(|p| p.starts_with("BINANCE_API_SECRET: not set")), "{problems:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    use std::collections::HashMap;

    const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
    const ALL: Needs = Needs { credentials: true, symbols: true };

    fn load(vars: &[(&str, &str)], needs: Needs) -> Result<Config, Vec<String>> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned(), needs)
    }

    #[test]
    fn defaults_apply() {
        let c = load(
            &[("BINANCE_API_KEY", "k"), ("BINANCE_API_SECRET", "s"), ("SYNCD_SYMBOLS", "btcusd, ETHUSD,BTCUSD")],
            ALL,
        )
        .unwrap();
        assert_eq!(c.rest_url, DEFAULT_REST_URL);
        assert_eq!(c.ws_url, DEFAULT_WS_URL);
        assert_eq!(c.symbols, ["BTCUSD", "ETHUSD"]);
        assert_eq!(c.keepalive, Duration::from_secs(1800));
        assert_eq!(c.recv_window_ms, 5000);
        assert_eq!(c.fill_log, PathBuf::from("./syncd-state/fills.jsonl"));
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert_eq!(c.price_poll, Duration::from_secs(2));
        assert!(!c.cancel_on_exit);
        assert_eq!(c.strategy_limits, crate::executor::StrategyLimits::default());
    }

    #[test]
    fn executor_settings_are_read_and_checked() {
        let base = [("BINANCE_API_KEY", "k"), ("BINANCE_API_SECRET", "s"), ("SYNCD_SYMBOLS", "BTCUSD")];
        let mut vars = base.to_vec();
        vars.extend([
            ("SYNCD_CANCEL_ON_EXIT", "true"),
            ("SYNCD_STRATEGY_MAX_ORDER_NOTIONAL", "0"),
            ("SYNCD_STRATEGY_MAX_SYMBOL_NOTIONAL", "250.5"),
            ("SYNCD_PRICE_POLL_S", "0.5"),
        ]);
        let c = load(&vars, ALL).unwrap();
        assert!(c.cancel_on_exit);
        assert_eq!(c.strategy_limits.max_order_notional, None);
        assert_eq!(c.strategy_limits.max_symbol_notional, Some("250.5".parse().unwrap()));
        assert_eq!(c.price_poll, Duration::from_millis(500));
        let mut bad = base.to_vec();
        bad.extend([("SYNCD_CANCEL_ON_EXIT", "maybe"), ("SYNCD_STRATEGY_MAX_ORDER_NOTIONAL", "-5")]);
        let errs = load(&bad, ALL).unwrap_err();
        assert!(errs.iter().any(|e| e.starts_with("SYNCD_CANCEL_ON_EXIT:")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("SYNCD_STRATEGY_MAX_ORDER_NOTIONAL:")), "{errs:?}");
    }

    #[test]
    fn every_problem_is_reported_once_by_name() {
        let errs = load(
            &[
                ("SYNCD_REST_URL", "ftp://x"),
                ("SYNCD_WS_URL", "http://x"),
                ("SYNCD_KEEPALIVE_S", "3600"),
                ("SYNCD_RECV_WINDOW_MS", "60001"),
                ("SYNCD_FSYNC", "sometimes"),
                ("SYNCD_SYMBOLS", "BTC-USD"),
            ],
            ALL,
        )
        .unwrap_err();
        for name in [
            "BINANCE_API_KEY",
            "BINANCE_API_SECRET",
            "SYNCD_REST_URL",
            "SYNCD_WS_URL",
            "SYNCD_KEEPALIVE_S",
            "SYNCD_RECV_WINDOW_MS",
            "SYNCD_FSYNC",
            "SYNCD_SYMBOLS",
        ] {
            assert_eq!(errs.iter().filter(|e| e.starts_with(&format!("{name}:"))).count(), 1, "{name} in {errs:?}");
        }
    }

    #[test]
    fn clear_text_urls_are_for_loopback_unless_allowed() {
        let none = Needs { credentials: false, symbols: false };
        let plain = [("SYNCD_REST_URL", "http://api.binance.us"), ("SYNCD_WS_URL", "ws://stream.binance.us:9443")];
        let errs = load(&plain, none).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("SYNCD_REST_URL:") && errs[1].starts_with("SYNCD_WS_URL:"), "{errs:?}");
        let allowed = [plain[0], plain[1], ("SYNCD_ALLOW_PLAINTEXT", "true")];
        assert_eq!(load(&allowed, none).unwrap().rest_url, "http://api.binance.us");
        let local = [("SYNCD_REST_URL", "http://127.0.0.1:8080"), ("SYNCD_WS_URL", "ws://localhost:9443")];
        assert!(load(&local, none).is_ok());
        let hook = [("SYNCD_ALERT_WEBHOOK", "http://hooks.example/T0KEN")];
        let errs = load(&hook, none).unwrap_err();
        assert!(errs.len() == 1 && !errs[0].contains("T0KEN"), "refused without echoing the token: {errs:?}");
    }

    #[test]
    fn metrics_address_is_loopback_unless_public() {
        let none = Needs { credentials: false, symbols: false };
        let c = load(&[("SYNCD_METRICS_ADDR", "127.0.0.1:9464")], none).unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.stream_deadline, Duration::from_secs(60));
        let errs = load(&[("SYNCD_METRICS_ADDR", "0.0.0.0:9464")], none).unwrap_err();
        assert!(errs.len() == 1 && errs[0].contains("SYNCD_METRICS_PUBLIC=true"), "{errs:?}");
        let c = load(&[("SYNCD_METRICS_ADDR", "0.0.0.0:9464"), ("SYNCD_METRICS_PUBLIC", "true")], none).unwrap();
        assert!(c.metrics_addr.is_some_and(|a| !a.ip().is_loopback()));
        let errs = load(&[("SYNCD_METRICS_ADDR", "localhost")], none).unwrap_err();
        assert!(errs[0].starts_with("SYNCD_METRICS_ADDR:"), "{errs:?}");
    }

    #[test]
    fn a_bad_webhook_is_refused_without_echoing_it() {
        let none = Needs { credentials: false, symbols: false };
        let errs = load(&[("SYNCD_ALERT_WEBHOOK", "hooks.example/T0KEN")], none).unwrap_err();
        assert!(errs.len() == 1 && !errs[0].contains("T0KEN"), "{errs:?}");
        let c = load(&[("SYNCD_ALERT_WEBHOOK", "https://hooks.example/T0KEN")], none).unwrap();
        assert!(!format!("{c:?}").contains("T0KEN"));
        assert!(
            load(&[("SYNCD_ALERT_WEBHOOK", "HTTPS://hooks.example/T0KEN")], none).is_ok(),
            "schemes are case-blind"
        );
    }

    #[test]
    fn credentials_optional_when_not_needed() {
        let c = load(&[], Needs { credentials: false, symbols: false }).unwrap();
        assert!(c.api_key.is_none() && c.symbols.is_empty());
    }

    #[test]
    fn trailing_slash_is_dropped() {
        let c = load(&[("SYNCD_REST_URL", "http://127.0.0.1:9000/")], Needs { credentials: false, symbols: false })
            .unwrap();
        assert_eq!(c.rest_url, "http://127.0.0.1:9000");
    }

    #[test]
    fn config_debug_hides_the_secret() {
        let c = load(&[("BINANCE_API_KEY", "key"), ("BINANCE_API_SECRET", SECRET), ("SYNCD_SYMBOLS", "BTCUSD")], ALL)
            .unwrap();
        for text in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(!text.contains(SECRET), "{text}");
        }
    }

    #[test]
    fn errors_never_echo_a_bad_secret() {
        let bad = "abc def SECRETPART";
        let errs = load(&[("BINANCE_API_KEY", "k"), ("BINANCE_API_SECRET", bad), ("SYNCD_SYMBOLS", "BTCUSD")], ALL)
            .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(!errs[0].contains("SECRETPART"), "{errs:?}");
    }

    #[test]
    fn ca_file_problems_name_the_variable() {
        let dir = std::env::temp_dir().join(format!("syncd-config-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "# no certificate\n").unwrap();
        let broken = dir.join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
        let missing = dir.join("missing.pem");
        let none = Needs { credentials: false, symbols: false };
        for path in [&empty, &broken, &missing] {
            let errs = load(&[("SYNCD_CA_FILE", &path.display().to_string())], none).unwrap_err();
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(errs[0].starts_with("SYNCD_CA_FILE: "), "{errs:?}");
            assert!(errs[0].contains(&path.display().to_string()), "{errs:?}");
        }
        let good = dir.join("good.pem");
        let pem = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap().cert.pem();
        std::fs::write(&good, format!("{pem}{pem}")).unwrap();
        let c = load(&[("SYNCD_CA_FILE", &good.display().to_string())], none).unwrap();
        assert_eq!(c.ca_file.as_deref(), Some(good.as_path()));
        assert_eq!(crate::tls::read_ca_file(&good).map(|certs| certs.len()), Ok(2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
