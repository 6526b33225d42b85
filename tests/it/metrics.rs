//! `/metrics`, `/healthz`, the webhook alerts and the `deploy/` files against a running daemon.
//!
//! The exposition is checked by `promtool check metrics` (Debian's `prometheus` package, which
//! `.ci/run` installs); where promtool is missing, by `prometheus_client`'s parser from the
//! venv of `tests/py/requirements.txt`; with neither, that check is skipped with the reason
//! printed (the rest of each test still runs).

use crate::faults::wait_until;
use crate::sync::{config, fast, fill_all, rest_buy, temp_dir, wait_lines};
use crate::util::{client, init_log, paper_with};
use binance_syncd::daemon::Daemon;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback address with a port free a moment ago, for a child process to listen on.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// GET `path` from the daemon's metrics server: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent.get(format!("http://{addr}{path}")).call().expect("metrics server answers");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().expect("a text body"))
}

/// Like [`get`], `None` while nothing answers.
fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent.get(format!("http://{addr}{path}")).call().ok()?;
    Some((resp.status().as_u16(), resp.body_mut().read_to_string().ok()?))
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every metric name the exposition declares (`# TYPE`) or samples.
pub fn exported_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        };
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            names.insert(n.to_string());
        }
    }
    names
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

fn venv_python() -> PathBuf {
    match std::env::var_os("SYNCD_PYENV") {
        Some(p) if !p.is_empty() => PathBuf::from(p).join("bin/python"),
        _ => manifest().join("target/pyenv/bin/python"),
    }
}

/// Runs `cmd` with `input` on stdin: (success, stdout + stderr).
fn run_with_input(cmd: &mut Command, input: &str) -> (bool, String) {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Checks the exposition with promtool, else prometheus_client; false if neither was there.
fn check_exposition(text: &str) -> bool {
    if let Some(promtool) = which("promtool") {
        let (ok, out) = run_with_input(Command::new(promtool).args(["check", "metrics"]), text);
        assert!(ok, "promtool check metrics failed:\n{out}\n--- exposition ---\n{text}");
        return true;
    }
    let python = venv_python();
    let parse = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\n\
                 n = len(list(p(sys.stdin.read())))\nprint(n, 'families')";
    if python.exists() {
        let (ok, out) = run_with_input(Command::new(&python).args(["-c", parse]), text);
        if !out.contains("No module named") {
            eprintln!("promtool not found; checked with prometheus_client instead: {}", out.trim());
            assert!(ok, "prometheus_client cannot parse the exposition:\n{out}\n--- exposition ---\n{text}");
            return true;
        }
    }
    eprintln!(
        "SKIPPED the format check: no promtool on PATH (apt-get install prometheus) and no prometheus_client in {}",
        python.display()
    );
    false
}

/// A webhook sink on loopback: the JSON bodies it was sent, in order.
pub struct Sink {
    pub url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Sink {
    pub fn start() -> Sink {
        Sink::failing(0)
    }

    /// A sink that answers the first `fail_first` POSTs with a 500 (and does not keep them).
    pub fn failing(fail_first: usize) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/services/T000/B000/SECRETTOKEN", listener.local_addr().unwrap());
        let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let body = loop {
                    let n = conn.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            break Some(body[..len].to_string());
                        }
                    }
                };
                if n < fail_first {
                    let _ = conn.write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                if let Some(b) = body {
                    seen.lock().unwrap().push(serde_json::from_str(&b).unwrap_or(serde_json::Value::String(b)));
                }
            }
        });
        Sink { url, bodies }
    }

    pub fn texts(&self) -> Vec<String> {
        self.bodies.lock().unwrap().iter().map(|b| b["text"].as_str().unwrap_or("?").to_string()).collect()
    }
}

/// Waits until the alert thread has looked twice more with nothing left to send.
fn settle_alerts(addr: SocketAddr) {
    let checks = |m: &str| value(m, "syncd_alert_checks_total").unwrap_or(0.0);
    let start = checks(&get(addr, "/metrics").1);
    wait_until("two more alert looks, outbox empty", Duration::from_secs(10), || {
        let m = get(addr, "/metrics").1;
        checks(&m) >= start + 2.0 && value(&m, "syncd_alerts_pending") == Some(0.0)
    });
}

#[test]
fn metrics_pass_promtool_and_move_after_a_fill_and_a_429() {
    init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("metrics");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let mut cfg = config(&ex, &dir);
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    // An empty plugin directory: the plugin families are declared, so the dashboard test sees them.
    cfg.plugin_dir = Some(plugins);
    let daemon = Daemon::start(&cfg, &fast()).unwrap();
    let addr = daemon.metrics_addr().expect("metrics address");
    wait_until("the stream to be up", Duration::from_secs(20), || {
        value(&get(addr, "/metrics").1, "syncd_stream_up") == Some(1.0)
    });
    let before = get(addr, "/metrics").1;
    check_exposition(&before);
    let stream_fills = "syncd_fills_total{symbol=\"BTCUSD\",source=\"stream\"}";
    assert_eq!(value(&before, stream_fills), Some(0.0), "registered at start:\n{before}");
    assert_eq!(value(&before, "syncd_fill_latency_seconds_count"), Some(0.0));

    let rest = client(&ex);
    let id = rest_buy(&ex, &rest, "BTCUSD", "0.01", "metrics-1");
    fill_all(&ex, "BTCUSD", id);
    let trades = ex.report()["trades"].as_array().map_or(0, Vec::len);
    assert!(trades > 0);
    wait_lines(&cfg.fill_log, trades, Duration::from_secs(10));
    // The counters move just after the line is durable: a scrape may land in between.
    let counted = |text: &str| {
        value(text, stream_fills).unwrap_or(0.0)
            + value(text, "syncd_fills_total{symbol=\"BTCUSD\",source=\"rest\"}").unwrap_or(0.0)
    };
    let end = Instant::now() + Duration::from_secs(5);
    let mut after_fill = get(addr, "/metrics").1;
    while counted(&after_fill) < trades as f64 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        after_fill = get(addr, "/metrics").1;
    }
    assert_eq!(counted(&after_fill), trades as f64, "every trade counted once:\n{after_fill}");
    assert!(value(&after_fill, stream_fills).unwrap_or(0.0) >= 1.0, "the stream carried the fills here");
    assert!(value(&after_fill, "syncd_fill_latency_seconds_count").unwrap_or(0.0) >= 1.0, "{after_fill}");
    assert!(value(&after_fill, "syncd_filllog_seq").unwrap_or(0.0) >= trades as f64);

    let http_429 = value(&after_fill, "syncd_rest_http_429_total").unwrap_or(-1.0);
    assert_eq!(http_429, 0.0);
    ex.fault("burst_429", &[("count", "2"), ("retry_after", "1")]).unwrap();
    wait_until("a 429 in /metrics", Duration::from_secs(20), || {
        value(&get(addr, "/metrics").1, "syncd_rest_http_429_total").unwrap_or(0.0) >= 1.0
    });
    let after_429 = get(addr, "/metrics").1;
    check_exposition(&after_429);
    assert!(value(&after_429, "syncd_reconcile_passes_total").unwrap_or(0.0) >= 1.0);
    assert!(value(&after_429, "syncd_rest_weight_limit{interval=\"1m\"}").unwrap_or(0.0) > 0.0, "{after_429}");

    // The dashboard names only metrics the daemon exports.
    let names = exported_names(&after_429);
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest().join("deploy/grafana/binance-syncd.json")).unwrap())
            .unwrap();
    let mut queries = 0;
    let mut stack: Vec<&serde_json::Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let used: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("syncd_"))
                .collect();
            assert!(!used.is_empty(), "panel {:?} queries no syncd metric: {expr}", panel["title"]);
            for name in used {
                assert!(
                    names.contains(name),
                    "panel {:?} uses {name}, which the daemon does not export",
                    panel["title"]
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 20, "only {queries} queries in the dashboard");
    assert_eq!(get(addr, "/nope").0, 404);
    daemon.stop(Duration::from_secs(8));
}

#[test]
fn alert_rules_pass_promtool() {
    let Some(promtool) = which("promtool") else {
        eprintln!("SKIPPED: no promtool on PATH (Debian: apt-get install prometheus)");
        return;
    };
    let dir = manifest().join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["check", "config", "prometheus.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool).args(&args).current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn healthz_flips_when_the_stream_is_down_past_its_deadline_and_one_alert_goes_per_incident() {
    init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("healthz");
    let sink = Sink::start();
    let mut cfg = config(&ex, &dir);
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    cfg.stream_deadline = Duration::from_millis(800);
    cfg.alert_webhook = Some(binance_syncd::secret::Secret::new(sink.url.clone()));
    cfg.alert_repeat = Duration::from_secs(60);
    let daemon = Daemon::start(&cfg, &fast()).unwrap();
    let addr = daemon.metrics_addr().unwrap();
    wait_until("healthz up", Duration::from_secs(20), || get(addr, "/healthz").1.contains("\"stream\":\"up\""));
    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"], "ok");

    for incident in 1..=2 {
        // Refused for 3 s: the stream is down well past its 0.8 s deadline.
        ex.fault("drop", &[("mode", "rst"), ("refuse_ms", "3000")]).unwrap();
        wait_until("healthz 503", Duration::from_secs(10), || get(addr, "/healthz").0 == 503);
        let body = get(addr, "/healthz").1;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["stream"], "down", "{body}");
        assert!(json["down_for_s"].as_f64().unwrap() > 0.8, "{body}");
        wait_until("healthz back to 200", Duration::from_secs(20), || get(addr, "/healthz").0 == 200);
        wait_until("the resolve", Duration::from_secs(5), || sink.texts().len() >= 2 * incident);
    }
    // Let a few more looks pass: nothing else may come.
    settle_alerts(addr);
    let texts = sink.texts();
    assert_eq!(texts.len(), 4, "one alert and one resolve per incident: {texts:#?}");
    for pair in texts.chunks(2) {
        assert!(pair[0].contains("ALERT: user-data stream down"), "{texts:#?}");
        assert!(pair[1].contains("RESOLVED") && pair[1].contains("stream down"), "{texts:#?}");
    }
    let m = get(addr, "/metrics").1;
    assert_eq!(value(&m, "syncd_alerts_sent_total"), Some(4.0));
    assert!(value(&m, "syncd_stream_reconnects_total{cause=\"error\"}").unwrap_or(0.0) >= 2.0, "{m}");
    daemon.stop(Duration::from_secs(8));
}

#[test]
fn a_418_is_counted_and_alerted_once_and_resolved_when_the_ban_is_over() {
    init_log();
    // The ban outlasts the 429's hold, so the daemon meets it whoever took the 429.
    let ex = paper_with(|c| c.rest.ban_base = Duration::from_secs(4));
    let dir = temp_dir("metrics-418");
    let sink = Sink::start();
    let mut cfg = config(&ex, &dir);
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    cfg.alert_webhook = Some(binance_syncd::secret::Secret::new(sink.url.clone()));
    cfg.alert_quiet = Duration::from_secs(1);
    let daemon = Daemon::start(&cfg, &fast()).unwrap();
    let addr = daemon.metrics_addr().unwrap();
    wait_until("the stream to be up", Duration::from_secs(20), || {
        value(&get(addr, "/metrics").1, "syncd_stream_up") == Some(1.0)
    });
    // Another client on this IP keeps sending inside a 429 hold: the exchange bans the IP, and
    // with it the daemon.
    ex.fault("burst_429", &[("count", "1"), ("retry_after", "1")]).unwrap();
    let ping = format!("{}/api/v3/ping", ex.rest_url());
    wait_until("the IP banned", Duration::from_secs(10), || crate::util::raw("GET", &ping, "", "", None).status == 418);
    wait_until("a 418 in /metrics", Duration::from_secs(10), || {
        value(&get(addr, "/metrics").1, "syncd_rest_http_418_total").unwrap_or(0.0) >= 1.0
    });
    wait_until("the alert", Duration::from_secs(5), || sink.texts().iter().any(|t| t.contains("ALERT: HTTP 418")));
    // Ban (4 s) over, then a quiet second: resolved, once.
    wait_until("the resolve", Duration::from_secs(15), || sink.texts().iter().any(|t| t.contains("RESOLVED")));
    settle_alerts(addr);
    let texts = sink.texts();
    assert_eq!(texts.len(), 2, "{texts:#?}");
    assert!(texts[1].contains("RESOLVED") && texts[1].contains("418"), "{texts:#?}");
    assert_eq!(value(&get(addr, "/metrics").1, "syncd_rest_banned_seconds"), Some(0.0));
    daemon.stop(Duration::from_secs(8));
}

#[test]
fn run_serves_healthz_and_alerts_while_its_start_up_keeps_failing() {
    init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("metrics-startup");
    // The webhook fails the first 2 POSTs: the alert comes after its retries (1 s, then 2 s).
    let sink = Sink::failing(2);
    let addr = free_addr();
    // Nothing listens on the REST address: every start-up attempt fails.
    let dead = free_addr();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
    cmd.arg("run");
    crate::util::daemon_env(&mut cmd, &ex, &dir, "metrics-startup")
        .env("SYNCD_REST_URL", format!("http://{dead}"))
        .env("SYNCD_METRICS_ADDR", addr.to_string())
        .env("SYNCD_STREAM_DEADLINE_S", "0.5")
        .env("SYNCD_ALERT_WEBHOOK", &sink.url)
        .env("SYNCD_BACKOFF_MAX_S", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = crate::util::Killed(cmd.spawn().expect("spawn binance-syncd"));
    wait_until("healthz 503 during the start-up outage", Duration::from_secs(10), || {
        try_get(addr, "/healthz").is_some_and(|(status, body)| status == 503 && body.contains("\"stream\":\"down\""))
    });
    wait_until("the stream-down alert", Duration::from_secs(10), || {
        sink.texts().iter().any(|t| t.contains("ALERT: user-data stream down"))
    });
    settle_alerts(addr);
    let texts = sink.texts();
    assert_eq!(texts.len(), 1, "the alert once, after the failed tries: {texts:#?}");
    let m = get(addr, "/metrics").1;
    assert_eq!((value(&m, "syncd_alerts_failed_total"), value(&m, "syncd_alerts_sent_total")), (Some(2.0), Some(1.0)));
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    wait_until("the daemon to exit", Duration::from_secs(10), || child.try_wait().ok().flatten().is_some());
    assert_eq!(child.try_wait().ok().flatten().and_then(|s| s.code()), Some(0));
}

/// One `/healthz` over a raw socket: (the response as far as it came, how long it took). A
/// connection the server closed unanswered gives an empty response, not a panic.
fn timed_healthz(addr: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    if let Ok(mut c) = std::net::TcpStream::connect(addr) {
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        if c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").is_ok() {
            let _ = c.read_to_end(&mut out);
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
}

#[test]
fn sixteen_idle_connections_to_the_metrics_port_while_healthz_answers_in_under_100_ms() {
    init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("healthz-idle");
    let mut cfg = config(&ex, &dir);
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let daemon = Daemon::start(&cfg, &fast()).unwrap();
    let addr = daemon.metrics_addr().unwrap();
    wait_until("healthz up", Duration::from_secs(20), || get(addr, "/healthz").0 == 200);
    // Connected and silent: what a port scanner, a stuck prober or a slowloris leaves behind.
    let idle: Vec<std::net::TcpStream> = (0..16).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    let mut took = Vec::new();
    for _ in 0..5 {
        let (answer, elapsed) = timed_healthz(addr);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "healthz behind 16 idle connections: {answer:?}");
        took.push(elapsed);
    }
    println!("healthz behind 16 idle connections: {took:?}");
    // The bound (the one timed assertion here): a health checker's timeout is short.
    assert!(took.iter().all(|t| *t < Duration::from_millis(100)), "{took:?}");
    drop(idle);
    daemon.stop(Duration::from_secs(8));
}
