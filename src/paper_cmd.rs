//! `binance-syncd paper`: the paper exchange as a standalone server for any Binance.US client.

use binance_syncd_paper::control::parse_timeline;
use binance_syncd_paper::rest::WeightProfile;
use binance_syncd_paper::tls::PaperTls;
use binance_syncd_paper::Secret;
use binance_syncd_paper::{PaperConfig, PaperExchange, DEMO_API_KEY, DEMO_API_SECRET};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub const PAPER_USAGE: &str = "\
binance-syncd paper — a Binance.US-compatible exchange on loopback, with fault injection

USAGE:
    binance-syncd paper [OPTIONS]

OPTIONS:
    --rest-port P          REST port (default 0: any free port)
    --ws-port Q            WebSocket port (default 0: any free port)
    --bind ADDR            address to bind (default 127.0.0.1; anything else only when asked)
    --seed N               seed of the market's price path (default 1)
    --time-scale X         divide every interval (ping, key life, 24 h cut, bans) by X (default 1)
    --timeline FILE        faults to fire on a schedule (see docs/paper-exchange.md)
    --api-key K            API key to accept (default: the documented Binance example key)
    --api-secret S         its secret (default: the documented example secret)
    --weight-limit N       REQUEST_WEIGHT per minute (default 6000; 1200 before 2026-08-31)
    --weights PROFILE      us-2026 (default) or us-2023 weight table
    --external-trader PCT  another user trades on the account on PCT % of market ticks (default 0)
    --ping-interval S      server ping interval in seconds (default 20; 180 before 2026-08-31)
    --pong-timeout S       disconnect after S seconds without a pong (default 60; 600 before)
    --key-life S           listen-key lifetime in seconds (default 3600)
    --tls                  serve REST (https) and the stream (wss) over TLS
    --tls-cert FILE        PEM certificate chain for --tls (default: a certificate for localhost
                           and 127.0.0.1 from a CA generated at start)
    --tls-key FILE         PEM private key of --tls-cert
    --tls-dir DIR          where the certificate clients must trust is written, printed as
                           SYNCD_CA_FILE=DIR/paper-ca.pem (default: a new directory under the
                           system's temp directory)
    -h, --help             print this help

It prints its REST and WS URLs and the key pair it accepts, then runs until SIGTERM or Ctrl-C.
Faults: POST /paper/fault?name=...; ground truth: GET /paper/report.

EXAMPLE:
    binance-syncd paper --time-scale 10 --external-trader 20
    curl -X POST 'http://127.0.0.1:PORT/paper/fault?name=drop&mode=rst&refuse_ms=3000'
";

fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, String> {
    *i += 1;
    args.get(*i).map(String::as_str).ok_or_else(|| format!("{flag} needs a value"))
}

fn number<T: std::str::FromStr>(text: &str, flag: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("{flag}: {text:?} is not a valid number"))
}

/// What `paper` was asked for beyond the exchange's own config.
pub struct PaperArgs {
    pub config: PaperConfig,
    /// With `--tls`: where the certificate clients must trust goes.
    pub trust_file: Option<PathBuf>,
    /// The trust file's directory is ours to create (the default one), not the operator's.
    pub fresh_dir: bool,
}

pub fn parse(args: &[String]) -> Result<Option<PaperArgs>, String> {
    let mut config = PaperConfig::default();
    let mut tls = false;
    let (mut tls_cert, mut tls_key, mut tls_dir) = (None, None, None);
    let mut bind: IpAddr = IpAddr::from([127, 0, 0, 1]);
    let (mut rest_port, mut ws_port) = (0u16, 0u16);
    let (mut key, mut secret) = (None, None);
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "-h" | "--help" => return Ok(None),
            "--rest-port" => rest_port = number(value(args, &mut i, flag)?, flag)?,
            "--ws-port" => ws_port = number(value(args, &mut i, flag)?, flag)?,
            "--bind" => bind = number(value(args, &mut i, flag)?, flag)?,
            "--seed" => config.engine.seed = number(value(args, &mut i, flag)?, flag)?,
            "--time-scale" => {
                config.time_scale = number(value(args, &mut i, flag)?, flag)?;
                if config.time_scale == 0 {
                    return Err("--time-scale must be at least 1".into());
                }
            }
            "--timeline" => {
                let path = value(args, &mut i, flag)?;
                let text = std::fs::read_to_string(path).map_err(|e| format!("--timeline {path}: {e}"))?;
                config.timeline = parse_timeline(&text).map_err(|e| format!("--timeline {path}: {e}"))?;
            }
            "--api-key" => key = Some(value(args, &mut i, flag)?.to_string()),
            "--api-secret" => secret = Some(value(args, &mut i, flag)?.to_string()),
            "--weight-limit" => config.rest.weight_limit = number(value(args, &mut i, flag)?, flag)?,
            "--weights" => {
                let v = value(args, &mut i, flag)?;
                config.rest.weights =
                    WeightProfile::parse(v).ok_or_else(|| format!("--weights: {v:?} is not us-2023 or us-2026"))?;
            }
            "--external-trader" => {
                config.engine.external_trader_pct = number::<u64>(value(args, &mut i, flag)?, flag)?.min(100)
            }
            "--ping-interval" => config.ping_interval = Duration::from_secs(number(value(args, &mut i, flag)?, flag)?),
            "--pong-timeout" => config.pong_timeout = Duration::from_secs(number(value(args, &mut i, flag)?, flag)?),
            "--key-life" => {
                config.engine.listen_key_ttl = Duration::from_secs(number(value(args, &mut i, flag)?, flag)?)
            }
            "--tls" => tls = true,
            "--tls-cert" => tls_cert = Some(PathBuf::from(value(args, &mut i, flag)?)),
            "--tls-key" => tls_key = Some(PathBuf::from(value(args, &mut i, flag)?)),
            "--tls-dir" => tls_dir = Some(PathBuf::from(value(args, &mut i, flag)?)),
            other => return Err(format!("unknown option {other:?}; see `binance-syncd paper --help`")),
        }
        i += 1;
    }
    match (key, secret) {
        (Some(k), Some(s)) => config.rest.credentials = vec![(k, Secret::new(s))],
        (None, None) => {}
        _ => return Err("--api-key and --api-secret go together".into()),
    }
    config.rest_addr = SocketAddr::new(bind, rest_port);
    config.ws_addr = SocketAddr::new(bind, ws_port);
    if !tls {
        if tls_cert.is_some() || tls_key.is_some() || tls_dir.is_some() {
            return Err("--tls-cert, --tls-key and --tls-dir need --tls".into());
        }
        return Ok(Some(PaperArgs { config, trust_file: None, fresh_dir: false }));
    }
    let paper_tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => PaperTls::from_pem_files(&cert, &key)?,
        (None, None) => PaperTls::generate(&["localhost", "127.0.0.1"])?,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let fresh_dir = tls_dir.is_none();
    let dir =
        tls_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("binance-syncd-paper-{}", std::process::id())));
    config.tls = Some(Arc::new(paper_tls));
    Ok(Some(PaperArgs { config, trust_file: Some(dir.join("paper-ca.pem")), fresh_dir }))
}

/// Writes the certificate clients must trust. Clients trust whatever this file says, so in the
/// shared temp directory, where its name is predictable, the directory is made here, private
/// (0700), and refused if it exists already (someone else's, or a link to one). In the
/// operator's `--tls-dir`, a file (or link) of that name left from an earlier run is replaced,
/// never written through.
fn write_trust(path: &Path, pem: &str, fresh_dir: bool) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        let made =
            if fresh_dir { std::fs::DirBuilder::new().mode(0o700).create(dir) } else { std::fs::create_dir_all(dir) };
        made.map_err(|e| format!("--tls-dir {}: {e}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot replace {}: {e}", path.display()));
        }
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, pem.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn main(args: &[String]) -> ExitCode {
    let PaperArgs { config, trust_file, fresh_dir } = match parse(args) {
        Ok(Some(c)) => c,
        Ok(None) => {
            print!("{PAPER_USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("binance-syncd paper: {e}");
            return ExitCode::from(2);
        }
    };
    if let (Some(path), Some(tls)) = (&trust_file, &config.tls) {
        if let Err(e) = write_trust(path, tls.trust_pem(), fresh_dir) {
            eprintln!("binance-syncd paper: {e}");
            return ExitCode::from(1);
        }
    }
    let demo_pair = config.rest.credentials.first().is_some_and(|(k, _)| k == DEMO_API_KEY);
    let exchange = match PaperExchange::start(config) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("binance-syncd paper: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let mut signals =
        match signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("binance-syncd paper: cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
    println!("SYNCD_REST_URL={}", exchange.rest_url());
    println!("SYNCD_WS_URL={}", exchange.ws_url());
    if let Some(path) = &trust_file {
        // The daemon's own variable: a client trusts the exchange with exactly this file.
        println!("SYNCD_CA_FILE={}", path.display());
    }
    if demo_pair {
        // Printing the accepted pair is the point: it is the public example pair from Binance's docs.
        println!("BINANCE_API_KEY={DEMO_API_KEY}");
        println!("BINANCE_API_SECRET={DEMO_API_SECRET}");
    } else {
        println!("BINANCE_API_KEY=<as given with --api-key>");
    }
    log::info!("paper exchange running; faults: POST {}/paper/fault?name=...", exchange.rest_url());
    let signal = signals.forever().next();
    log::info!("paper exchange stopping on signal {signal:?}");
    drop(exchange);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::write_trust;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_default_trust_dir_is_made_fresh_and_private_and_a_planted_link_is_not_followed() {
        let base = std::env::temp_dir().join(format!("syncd-write-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let fresh = base.join("fresh");
        write_trust(&fresh.join("paper-ca.pem"), "pem\n", true).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        // Someone who made the directory first (or a link there) is refused.
        let again = write_trust(&fresh.join("paper-ca.pem"), "pem\n", true);
        // In an operator's directory, a link left at the file's name is replaced, not written through.
        let victim = base.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let operator = base.join("operator");
        std::fs::create_dir_all(&operator).unwrap();
        std::os::unix::fs::symlink(&victim, operator.join("paper-ca.pem")).unwrap();
        write_trust(&operator.join("paper-ca.pem"), "pem\n", false).unwrap();
        let victim_text = std::fs::read_to_string(&victim).unwrap();
        let written = std::fs::read_to_string(operator.join("paper-ca.pem")).unwrap();
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(mode, 0o700);
        assert!(again.is_err(), "an existing default directory was accepted");
        assert_eq!(victim_text, "untouched");
        assert_eq!(written, "pem\n");
    }
}
