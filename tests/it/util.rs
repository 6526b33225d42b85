//! Shared helpers: a paper exchange on ephemeral ports, the daemon's REST client pointed at it,
//! and a raw HTTP helper for requests the client would never send.

use binance_syncd::rest::sign::Signer;
use binance_syncd::rest::RestClient;
use binance_syncd::secret::Secret;
use binance_syncd_paper::{PaperConfig, PaperExchange, DEMO_API_SECRET};
use std::time::Duration;

// The binary's paper REST client (src/paper_client.rs): neither the library's nor the paper
// crate's, so the tests include the one file.
#[path = "../../src/paper_client.rs"]
mod paper_client;
pub use paper_client::paper_client;

pub fn paper() -> PaperExchange {
    paper_with(|_| {})
}

/// A paper exchange whose market stands still unless a test moves it, so tests are exact.
/// Its weight limit is raised: the daemons under test reconcile every half second (a hundred
/// times the production pace), and the SIGKILL test starts 23 of them in a minute, all on one
/// IP; a test of the limit itself sets its own.
pub fn paper_with(adjust: impl FnOnce(&mut PaperConfig)) -> PaperExchange {
    let mut config = PaperConfig { market_tick: Duration::from_secs(3600), ..PaperConfig::default() };
    config.rest.weight_limit = 120_000;
    adjust(&mut config);
    PaperExchange::start(config).expect("paper exchange starts on loopback")
}

pub fn client(ex: &PaperExchange) -> RestClient {
    paper_client(ex, false).expect("clock sync")
}

pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn code(&self) -> i64 {
        self.body["code"].as_i64().unwrap_or(0)
    }

    pub fn msg(&self) -> &str {
        self.body["msg"].as_str().unwrap_or("")
    }
}

/// Sends exactly what it is given: `query` and `body` as raw text.
pub fn raw(method: &str, url: &str, query: &str, body: &str, api_key: Option<&str>) -> RawReply {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let full = if query.is_empty() { url.to_string() } else { format!("{url}?{query}") };
    let with_key = |r: ureq::RequestBuilder<ureq::typestate::WithoutBody>| match api_key {
        Some(k) => r.header("X-MBX-APIKEY", k),
        None => r,
    };
    let with_key_body = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| match api_key {
        Some(k) => r.header("X-MBX-APIKEY", k),
        None => r,
    };
    let form = "application/x-www-form-urlencoded";
    let result = match method {
        "GET" => with_key(agent.get(&full)).call(),
        "DELETE" if body.is_empty() => with_key(agent.delete(&full)).call(),
        "DELETE" => with_key(agent.delete(&full)).force_send_body().header("Content-Type", form).send(body),
        "POST" => with_key_body(agent.post(&full)).header("Content-Type", form).send(body),
        "PUT" => with_key_body(agent.put(&full)).header("Content-Type", form).send(body),
        other => panic!("method {other}"),
    };
    let mut resp = result.expect("http round trip");
    let status = resp.status().as_u16();
    let headers =
        resp.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    RawReply { status, headers, body }
}

/// `query` + `timestamp` + `signature` with the demo secret, signed as sent.
pub fn signed_query(query: &str, timestamp: i64) -> String {
    let q = if query.is_empty() { format!("timestamp={timestamp}") } else { format!("{query}&timestamp={timestamp}") };
    let sig = Signer::new(&Secret::new(DEMO_API_SECRET)).sign(&q, "");
    format!("{q}&signature={sig}")
}

/// Daemon logs in test output (shown for failing tests; `RUST_LOG` picks the level).
pub fn init_log() {
    // Isolated plugins run in this binary's sibling `binance-syncd plugin-host`: the test
    // harness is not that program.
    binance_syncd::plugin::set_host_program(env!("CARGO_BIN_EXE_binance-syncd"));
    let _ =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).is_test(true).try_init();
}

/// Places a LIMIT_MAKER order with a RESULT response as another client on the account would
/// (the daemon's own REST client cannot place orders: only its executor can).
pub fn place_maker(
    ex: &PaperExchange,
    symbol: &str,
    side: &str,
    qty: &str,
    price: &str,
    client_id: &str,
) -> Result<serde_json::Value, String> {
    binance_syncd_paper::trader::Trader::new(ex).maker(symbol, side, qty, price, client_id)
}

/// A TLS exchange's certificate written to `dir` for `SYNCD_CA_FILE`; `None` for a plain one.
pub fn trust_file(ex: &PaperExchange, dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let pem = ex.trust_pem()?;
    let path = dir.join("paper-ca.pem");
    std::fs::write(&path, pem).expect("write the paper exchange's certificate");
    Some(path)
}

/// The daemon's environment for a child process against `ex`, with state and the fill log in
/// `dir`: the variables every process test sets, nothing inherited but `PATH` (and
/// `SYNCD_CA_FILE` for a TLS exchange).
pub fn daemon_env<'a>(
    cmd: &'a mut std::process::Command,
    ex: &PaperExchange,
    dir: &std::path::Path,
    key: &str,
) -> &'a mut std::process::Command {
    cmd.env_clear();
    if let Some(ca) = trust_file(ex, dir) {
        cmd.env("SYNCD_CA_FILE", ca);
    }
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BINANCE_API_KEY", key)
        .env("BINANCE_API_SECRET", DEMO_API_SECRET)
        .env("SYNCD_REST_URL", ex.rest_url())
        .env("SYNCD_WS_URL", ex.ws_url())
        .env("SYNCD_SYMBOLS", "BTCUSD,ETHUSD")
        .env("SYNCD_STATE_DIR", dir.join("state"))
        .env("SYNCD_FILL_LOG", dir.join("fills.jsonl"))
}

/// A child process killed (and reaped) when dropped, so a test that fails or panics while a
/// daemon runs leaves no process behind to disturb the tests and benchmarks after it.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Killed {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

/// Reads `pipe` (a child's stdout or stderr) line by line on a thread, so a test can wait on a
/// channel with a timeout.
pub fn lines_of(pipe: impl std::io::Read + Send + 'static) -> crossbeam_channel::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Panics unless the injected fault at `path` in the report's `armed` (`"rest/burst_429"`,
/// `"drop_events"`, ...) has fired in full: a test whose fault never bit proves nothing.
pub fn assert_fired(report: &serde_json::Value, path: &str) {
    let left = report["armed"].pointer(&format!("/{path}")).and_then(serde_json::Value::as_u64);
    assert_eq!(left, Some(0), "the injected fault {path} did not fire in full: {}", report["armed"]);
}
