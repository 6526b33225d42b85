//! The path production depends on: REST over `https://` and the stream over `wss://`, against
//! the paper exchange on TLS, with the daemon trusting its CA through `SYNCD_CA_FILE`.

use crate::faults::{wait_until, Rig};
use crate::sync::{assert_matches_truth, fast, fill_whole, read_log, rest_buy, temp_dir, wait_lines};
use crate::util::Killed;
use crate::util::{paper_with, trust_file};
use binance_syncd::daemon::Tuning;
use binance_syncd_paper::tls::PaperTls;
use binance_syncd_paper::{PaperConfig, PaperExchange, DEMO_API_KEY};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// TLS with a certificate for `localhost` and `127.0.0.1`, as `paper --tls` generates it.
fn tls(c: &mut PaperConfig) {
    c.tls = Some(Arc::new(PaperTls::generate(&["localhost", "127.0.0.1"]).expect("generate a certificate")));
}

fn streamed(report: &Value) -> usize {
    report["trades"].as_array().map_or(0, |t| t.iter().filter(|t| t["streamed"] == true).count())
}

#[test]
fn clean_run_over_https_and_wss_logs_every_fill_once() {
    let mut rig = Rig::start("tls-clean", tls, fast());
    assert!(rig.ex.rest_url().starts_with("https://"), "{}", rig.ex.rest_url());
    assert!(rig.ex.ws_url().starts_with("wss://"), "{}", rig.ex.ws_url());
    for i in 0..5 {
        rig.trade(if i % 2 == 0 { "BTCUSD" } else { "ETHUSD" });
    }
    let report = rig.finish();
    assert!(streamed(&report) > 0, "no trade went out on the wss stream");
    let sessions = report["sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(sessions.len(), 1, "a clean run needs one stream session over TLS: {sessions:?}");
}

#[test]
fn rst_drop_and_silent_stream_over_tls_recover() {
    let mut rig = Rig::start("tls-faults", tls, fast());
    rig.trade("BTCUSD");
    rig.ex.fault("drop", &[("mode", "rst")]).unwrap();
    rig.trade("ETHUSD");
    rig.wait_sessions(2);
    rig.trade("BTCUSD");
    rig.ex.fault("silent", &[]).unwrap();
    rig.trade("ETHUSD");
    rig.wait_sessions(3);
    rig.trade("BTCUSD");
    // A FIN without close_notify: an ordinary drop, not a reason to stop.
    rig.ex.fault("drop", &[("mode", "fin")]).unwrap();
    rig.trade("ETHUSD");
    rig.wait_sessions(4);
    rig.trade("BTCUSD");
    let report = rig.finish();
    let sessions = report["sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(sessions[0]["close_reason"], "fault: rst", "{sessions:?}");
    assert_eq!(sessions[2]["close_reason"], "fault: fin", "{sessions:?}");
    assert!(sessions.len() >= 4, "{sessions:?}");
}

#[test]
fn fills_in_small_tls_records_cut_by_read_timeouts_are_all_parsed() {
    // No reconciliation while the stream is up (after the first pass), so every fill below can
    // only reach the log through the stream.
    let tuning = Tuning { reconcile_up: Duration::from_secs(600), ..fast() };
    let rig = Rig::start("tls-trickle", tls, tuning);
    // The pass after `Up` reads a window a minute back: let it finish before the first fill.
    rig.wait_up_pass();
    // Records of 256 bytes, each cut in two with 130 ms between the halves: the daemon's 100 ms
    // read poll times out inside a record again and again.
    let pause = Duration::from_millis(130);
    rig.ex.fault("trickle", &[("frames", "1000"), ("bytes", "256"), ("pause_ms", "130")]).unwrap();
    let started = Instant::now();
    for (i, symbol) in ["BTCUSD", "ETHUSD"].into_iter().enumerate() {
        let id = rest_buy(&rig.ex, &rig.rest, symbol, "0.01", &format!("trickle-{i}"));
        fill_whole(&rig.ex, symbol, id);
    }
    let fills = wait_lines(&rig.cfg.fill_log, 2, Duration::from_secs(30));
    let took = started.elapsed();
    let report = rig.report();
    assert_matches_truth(&fills, &report);
    let sessions = report["sessions"].as_array().cloned().unwrap_or_default();
    // A lost or corrupted frame breaks the WebSocket protocol or the JSON, and the daemon
    // would have reconnected (and reconciled): one session means every frame arrived whole.
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    // The fault's own effect: an executionReport alone is several records, each paused inside.
    assert!(took >= pause * 4, "the frames were not trickled (logged after {took:?})");
    rig.finish();
}

/// `binance-syncd run` against `ex`, logging warnings to a file in `dir`.
fn spawn_run(ex: &PaperExchange, dir: &Path, trust: bool) -> (Killed, std::path::PathBuf) {
    let log = dir.join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
    cmd.arg("run");
    crate::util::daemon_env(&mut cmd, ex, dir, DEMO_API_KEY)
        .env("SYNCD_BACKOFF_MAX_S", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(file));
    if !trust {
        cmd.env_remove("SYNCD_CA_FILE");
    }
    (Killed(cmd.spawn().expect("spawn binance-syncd run")), log)
}

/// The daemon refuses the exchange's certificate with `expect` in its message, retries with
/// backoff, and is still running (it exits 0 on SIGTERM).
fn refused_and_retried(ex: &PaperExchange, dir: &Path, trust: bool, expect: &str) {
    let (mut child, log) = spawn_run(ex, dir, trust);
    let retries = || std::fs::read_to_string(&log).unwrap_or_default().matches("cannot start yet").count();
    let waited = Instant::now();
    while retries() < 3 && waited.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let alive = child.try_wait().expect("wait").is_none();
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().expect("wait");
    assert!(alive, "the daemon exited instead of retrying: {text}");
    assert!(retries() >= 3, "fewer than three attempts: {text}");
    assert!(text.contains(expect), "no {expect:?} in the daemon's log: {text}");
    assert!(text.contains("retrying in"), "{text}");
    assert!(status.success(), "SIGTERM during the retries: {status}; {text}");
}

/// The stream refuses the same certificate with the same words.
fn stream_refuses(ex: &PaperExchange, config: &Arc<rustls::ClientConfig>, expect: &str) {
    let err = match binance_syncd::stream::connect(&ex.ws_url(), "/ws/x", Duration::from_secs(2), config, &mut || {}) {
        Ok(_) => panic!("the stream accepted a certificate it should refuse"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(expect), "{err}");
}

#[test]
fn a_certificate_for_another_host_name_is_refused_and_retried() {
    let ex = paper_with(|c| c.tls = Some(Arc::new(PaperTls::generate(&["other.example"]).unwrap())));
    let dir = temp_dir("tls-wrong-name");
    let ca = trust_file(&ex, &dir).unwrap();
    let config = binance_syncd::tls::client_config(&binance_syncd::tls::read_ca_file(&ca).unwrap()).unwrap();
    stream_refuses(&ex, &config, "not valid for name");
    refused_and_retried(&ex, &dir, true, "not valid for name");
}

#[test]
fn an_untrusted_self_signed_certificate_is_refused_and_retried() {
    let dir = temp_dir("tls-untrusted");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let paper_tls = PaperTls::from_pem_files(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let ex = paper_with(|c| c.tls = Some(Arc::new(paper_tls)));
    let web_roots_only = binance_syncd::tls::client_config(&[]).unwrap();
    stream_refuses(&ex, &web_roots_only, "UnknownIssuer");
    refused_and_retried(&ex, &dir, false, "UnknownIssuer");
}

fn check(ex: &PaperExchange, dir: &Path, ca_file: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
    cmd.arg("check");
    crate::util::daemon_env(&mut cmd, ex, dir, DEMO_API_KEY);
    if let Some(path) = ca_file {
        cmd.env("SYNCD_CA_FILE", path);
    }
    cmd.output().expect("run binance-syncd check")
}

#[test]
fn check_passes_over_tls_and_a_bad_ca_file_is_a_configuration_error() {
    let ex = paper_with(tls);
    let dir = temp_dir("tls-check");
    let out = check(&ex, &dir, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.lines().any(|l| l.trim_start().starts_with("API key: signed access") && l.contains(" ok ")),
        "{stdout}"
    );

    let missing = dir.join("no-such-ca.pem");
    std::fs::write(dir.join("empty.pem"), "no certificate here\n").unwrap();
    for path in [missing.as_path(), &dir.join("empty.pem")] {
        let out = check(&ex, &dir, Some(path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(stderr.contains("SYNCD_CA_FILE"), "{stderr}");
    }
}

#[test]
fn the_paper_command_serves_tls_and_prints_its_ca_file() {
    let dir = temp_dir("tls-paper-cmd");
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_binance-syncd"))
            .args(["paper", "--tls", "--tls-dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn binance-syncd paper --tls"),
    );
    let mut env = std::collections::HashMap::new();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((k, v)) = line.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
            if env.contains_key("BINANCE_API_KEY") {
                break;
            }
        }
    }
    let ca = env.get("SYNCD_CA_FILE").cloned().unwrap_or_default();
    let rest = env.get("SYNCD_REST_URL").cloned().unwrap_or_default();
    let certs = binance_syncd::tls::read_ca_file(Path::new(&ca));
    // One request over https, trusting exactly the printed file.
    let time = certs.as_ref().ok().map(|certs| {
        let config = binance_syncd::tls::client_config(certs).expect("a client config");
        let agent = binance_syncd::tls::agent(ureq::Agent::config_builder().build(), config);
        agent.get(format!("{rest}/api/v3/time")).call().map(|mut r| r.body_mut().read_to_string())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(rest.starts_with("https://127.0.0.1:"), "{env:?}");
    assert!(env.get("SYNCD_WS_URL").is_some_and(|u| u.starts_with("wss://127.0.0.1:")), "{env:?}");
    assert_eq!(Path::new(&ca), dir.join("paper-ca.pem"), "{env:?}");
    assert_eq!(certs.map(|c| c.len()), Ok(1));
    match time {
        Some(Ok(Ok(body))) => assert!(body.contains("serverTime"), "{body}"),
        other => panic!("GET /api/v3/time over https trusting {ca}: {other:?}"),
    }
}

#[test]
fn stream_fills_survive_the_trickle_on_a_plain_socket_too() {
    let rig = Rig::start("plain-trickle", |_| {}, Tuning { reconcile_up: Duration::from_secs(600), ..fast() });
    rig.wait_up_pass();
    let pause = Duration::from_millis(120);
    rig.ex.fault("trickle", &[("frames", "1000"), ("bytes", "200"), ("pause_ms", "120")]).unwrap();
    let started = Instant::now();
    let id = rest_buy(&rig.ex, &rig.rest, "BTCUSD", "0.01", "plain-trickle");
    fill_whole(&rig.ex, "BTCUSD", id);
    wait_until("the trickled fill in the log", Duration::from_secs(20), || !read_log(&rig.cfg.fill_log).is_empty());
    let took = started.elapsed();
    assert_eq!(rig.sessions().len(), 1);
    // The fault's own effect: an executionReport is several 200-byte writes, each paused inside.
    assert!(took >= pause * 2, "the frames were not trickled (logged after {took:?})");
    rig.finish();
}

#[test]
fn a_client_that_never_handshakes_holds_up_no_one_else() {
    let ex = paper_with(tls);
    let addr = |url: String| url.split_once("://").map(|(_, a)| a.to_string()).unwrap_or_default();
    // Connected, silent: their handshakes wait on their own threads.
    let _silent: Vec<std::net::TcpStream> = [addr(ex.rest_url()), addr(ex.ws_url())]
        .iter()
        .map(|a| std::net::TcpStream::connect(a).expect("connect"))
        .collect();
    let started = Instant::now();
    let account = binance_syncd_paper::trader::Trader::new(&ex).signed("GET", "/api/v3/account", &[]).expect("account");
    assert_eq!(account.status, 200, "{:?}", account.body);
    let config = binance_syncd::tls::client_config(&ex.trust()).unwrap();
    // The TLS handshake completes; the unknown key is then refused by the WebSocket handshake.
    match binance_syncd::stream::connect(&ex.ws_url(), "/ws/nokey", Duration::from_secs(3), &config, &mut || {}) {
        Ok(_) => panic!("an unknown listen key was accepted"),
        Err(e) => assert!(e.to_string().contains("http 400"), "{e}"),
    }
    // The server's handshake limit is 5 s: both answers came well before either silent client timed out.
    assert!(started.elapsed() < Duration::from_secs(4), "served after {:?}", started.elapsed());
}
