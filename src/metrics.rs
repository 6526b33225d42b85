//! The metrics registry: atomics the threads bump at each site (one call each), read by the
//! `/metrics` server and the alert thread.
//!
//! Nothing here can block the thread that reports: counters, gauges and histogram buckets are
//! atomics; a labelled family takes a read lock (shared with scrapers, so never waited on)
//! unless a label value is new, and the fill log's labels (symbols, sources) are registered at
//! start. Everything a scrape can read from an owner that already keeps it (the rate gate's
//! 429/418 counts and weight, the clock offset, the executor's counters, the plugins' view) is
//! read there at scrape time instead of being copied here.
//!
//! [`render`] writes the Prometheus text exposition format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>).

pub mod alerts;
pub mod server;
mod service;

pub use service::Service;

use crate::executor::ExecutorLink;
use crate::filllog::FillTap;
use crate::plugin::PluginView;
use crate::ratelimit::RateGate;
use crate::rest::sign::ServerClock;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the fill-latency buckets, in µs and as the `le` label spells them (text,
/// so the exposition never depends on float formatting).
const LATENCY_BOUNDS: [(u64, &str); 16] = [
    (50, "0.00005"),
    (100, "0.0001"),
    (250, "0.00025"),
    (500, "0.0005"),
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (10_000_000, "10"),
];

/// A histogram over fixed buckets; each bucket is an atomic (not cumulative: summed when read).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS.iter().position(|(b, _)| us <= *b).unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1): what a Prometheus
    /// `histogram_quantile` would bound it by. `None` with no samples or past the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return LATENCY_BOUNDS.get(i).map(|(us, _)| Duration::from_micros(*us));
            }
        }
        None
    }
}

/// Counters by label values. Values registered up front (or seen once) are found under a read
/// lock; only a new value takes the write lock.
#[derive(Debug)]
pub struct Labeled {
    names: &'static [&'static str],
    values: RwLock<Vec<(Vec<String>, Arc<Counter>)>>,
}

impl Labeled {
    fn new(names: &'static [&'static str]) -> Labeled {
        Labeled { names, values: RwLock::new(Vec::new()) }
    }

    fn find(&self, labels: &[&str]) -> Option<Arc<Counter>> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        values.iter().find(|(v, _)| v.iter().map(String::as_str).eq(labels.iter().copied())).map(|(_, c)| c.clone())
    }

    fn counter(&self, labels: &[&str]) -> Arc<Counter> {
        if let Some(c) = self.find(labels) {
            return c;
        }
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = values.iter().find(|(v, _)| v.iter().map(String::as_str).eq(labels.iter().copied())) {
            return c.clone();
        }
        let c = Arc::new(Counter::default());
        values.push((labels.iter().map(|s| s.to_string()).collect(), c.clone()));
        c
    }

    pub fn inc(&self, labels: &[&str]) {
        self.counter(labels).inc();
    }

    /// Makes the series exist at 0, so dashboards and rate() see it before its first event.
    pub fn register(&self, labels: &[&str]) {
        self.counter(labels);
    }

    pub fn get(&self, labels: &[&str]) -> u64 {
        self.find(labels).map_or(0, |c| c.get())
    }

    pub fn total(&self) -> u64 {
        self.values.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, c)| c.get()).sum()
    }

    fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(Vec<String>, u64)> = values.iter().map(|(v, c)| (v.clone(), c.get())).collect();
        out.sort();
        out
    }
}

/// Where a logged fill came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stream,
    Rest,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Stream => "stream",
            Source::Rest => "rest",
        }
    }
}

/// The reconnect cause of a stream loss, from the reason the stream thread gives.
pub fn reconnect_cause(reason: &str) -> &'static str {
    if reason.starts_with("listenKeyExpired") {
        "key_expired"
    } else if reason.starts_with("serverShutdown") {
        "server_shutdown"
    } else if reason.starts_with("no frame") {
        "silence"
    } else if reason.starts_with("keep-alive") {
        "key_gone"
    } else if reason.starts_with("server closed") {
        "closed"
    } else {
        "error"
    }
}

/// A new session has ended the outage once it delivered a frame or lasted this long (or the
/// deadline, if shorter): a stream that drops within a second of every connect stays down.
pub const SETTLE: Duration = Duration::from_secs(10);

/// A stream state as `/healthz` and the alerts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamHealth {
    Up,
    /// Down (or not yet connected) for less than the deadline.
    Recovering,
    /// Down for longer than the deadline.
    Down,
}

impl StreamHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamHealth::Up => "up",
            StreamHealth::Recovering => "recovering",
            StreamHealth::Down => "down",
        }
    }
}

/// The per-daemon registry. Times are ms since `started` (monotonic); -1 means "none".
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// This daemon's order-id instance, once the executor has opened its ids.
    instance: std::sync::OnceLock<String>,
    /// How long the stream may be down before `/healthz` says 503 (`SYNCD_STREAM_DEADLINE_S`).
    deadline_ms: AtomicI64,
    stream_up: AtomicBool,
    /// When the current session connected, and whether it has delivered a frame since.
    connected_ms: AtomicI64,
    session_frame: AtomicBool,
    /// Start of the outage, kept across sessions that never settled (see [`SETTLE`]).
    down_since_ms: AtomicI64,
    last_frame_ms: AtomicI64,
    pub stream_sessions: Counter,
    pub stream_connect_failures: Counter,
    pub reconnects: Labeled,
    pub fills: Labeled,
    /// Exchange rows and stream events refused as fills, by source and reason.
    pub fills_refused: Labeled,
    pub fill_latency: Histogram,
    /// Fills of the daemon's own orders (client id `sd-…`) that took liquidity.
    pub taker_fills: Counter,
    pub filllog_write_errors: Counter,
    filllog_failing: AtomicBool,
    pub rejections: Labeled,
    pub reconcile_passes: Counter,
    last_pass_ms: AtomicI64,
    pub executor_queue: Gauge,
    pub alerts_sent: Counter,
    pub alerts_failed: Counter,
    pub alerts_suppressed: Counter,
    /// Messages in the alert outbox, waiting for the webhook or the rate gate.
    pub alerts_pending: Gauge,
    pub alert_checks: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            started: Instant::now(),
            instance: std::sync::OnceLock::new(),
            deadline_ms: AtomicI64::new(60_000),
            stream_up: AtomicBool::new(false),
            connected_ms: AtomicI64::new(-1),
            session_frame: AtomicBool::new(false),
            down_since_ms: AtomicI64::new(0),
            last_frame_ms: AtomicI64::new(-1),
            stream_sessions: Counter::default(),
            stream_connect_failures: Counter::default(),
            reconnects: Labeled::new(&["cause"]),
            fills: Labeled::new(&["symbol", "source"]),
            fills_refused: Labeled::new(&["source", "reason"]),
            fill_latency: Histogram::default(),
            taker_fills: Counter::default(),
            filllog_write_errors: Counter::default(),
            filllog_failing: AtomicBool::new(false),
            rejections: Labeled::new(&["code"]),
            reconcile_passes: Counter::default(),
            last_pass_ms: AtomicI64::new(-1),
            executor_queue: Gauge::default(),
            alerts_sent: Counter::default(),
            alerts_failed: Counter::default(),
            alerts_suppressed: Counter::default(),
            alerts_pending: Gauge::default(),
            alert_checks: Counter::default(),
        }
    }
}

impl Metrics {
    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn age(&self, at_ms: i64) -> Option<Duration> {
        age_at(self.now_ms(), at_ms)
    }

    /// The daemon's settings: the stream deadline and the symbols whose series exist from the start.
    pub fn configure(&self, deadline: Duration, symbols: &[String]) {
        self.deadline_ms.store(i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX), Ordering::Relaxed);
        for s in symbols {
            for source in [Source::Stream, Source::Rest] {
                self.fills.register(&[s, source.as_str()]);
            }
        }
        for source in [Source::Stream, Source::Rest] {
            for reason in crate::wire::Refusal::REASONS {
                self.fills_refused.register(&[source.as_str(), reason]);
            }
        }
        for cause in ["closed", "error", "handover", "key_expired", "key_gone", "server_shutdown", "silence"] {
            self.reconnects.register(&[cause]);
        }
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.load(Ordering::Relaxed).max(0) as u64)
    }

    // ---- hooks, one call at each site ----

    pub fn stream_up(&self) {
        self.stream_up_at(self.now_ms());
    }

    fn stream_up_at(&self, now_ms: i64) {
        self.stream_sessions.inc();
        self.last_frame_ms.store(now_ms, Ordering::Relaxed);
        self.session_frame.store(false, Ordering::Relaxed);
        self.connected_ms.store(now_ms, Ordering::Relaxed);
        self.stream_up.store(true, Ordering::Release);
    }

    pub fn stream_down(&self, reason: &str) {
        self.stream_down_at(self.now_ms(), reason);
    }

    fn stream_down_at(&self, now_ms: i64, reason: &str) {
        self.reconnects.inc(&[reconnect_cause(reason)]);
        // A session that never settled did not end the outage: it goes on from its start.
        if self.settled_at(now_ms) {
            self.down_since_ms.store(now_ms, Ordering::Relaxed);
        }
        self.stream_up.store(false, Ordering::Release);
    }

    /// Connected, and the outage before (if any) is over.
    fn settled_at(&self, now_ms: i64) -> bool {
        if !self.stream_up.load(Ordering::Acquire) {
            return false;
        }
        let settle = i64::try_from(SETTLE.min(self.deadline()).as_millis()).unwrap_or(i64::MAX);
        self.down_since_ms.load(Ordering::Relaxed) < 0
            || self.session_frame.load(Ordering::Relaxed)
            || now_ms.saturating_sub(self.connected_ms.load(Ordering::Relaxed)) >= settle
    }

    /// Whether the stream is connected now (settled or not).
    pub fn stream_connected(&self) -> bool {
        self.stream_up.load(Ordering::Acquire)
    }

    /// `serverShutdown` moved the stream to a new connection without a gap.
    pub fn stream_handover(&self) {
        self.reconnects.inc(&["handover"]);
        self.stream_sessions.inc();
    }

    pub fn frame(&self) {
        self.frame_at(self.now_ms());
    }

    fn frame_at(&self, now_ms: i64) {
        self.last_frame_ms.store(now_ms, Ordering::Relaxed);
        self.session_frame.store(true, Ordering::Relaxed);
    }

    /// Which of the `sd-` ids are this daemon's (for the taker-fill count).
    pub fn set_instance(&self, instance: &str) {
        let _ = self.instance.set(instance.to_string());
    }

    /// `fill` is durable in the fill log; `read_at`: when its frame was read off the socket
    /// (a stream fill), `None` for one read over REST.
    pub fn fill_logged(&self, fill: &crate::filllog::FillRecord, read_at: Option<Instant>) {
        let source = if read_at.is_some() { Source::Stream } else { Source::Rest };
        // Before the executor has said which instance it is, any daemon's id counts: a
        // taker fill of ours is an alarm, better once too often than missed.
        let own_taker = !fill.maker
            && crate::executor::ids::tag_in(&fill.client_order_id, self.instance.get().map(String::as_str)).is_some();
        self.count_fill(&fill.symbol, source, read_at, own_taker);
    }

    pub fn count_fill(&self, symbol: &str, source: Source, read_at: Option<Instant>, own_taker: bool) {
        self.fills.inc(&[symbol, source.as_str()]);
        if let Some(t) = read_at {
            self.fill_latency.observe(t.elapsed());
        }
        if own_taker {
            self.taker_fills.inc();
        }
    }

    /// A row or event was refused as a fill (see [`crate::wire::Refusal`]).
    pub fn fill_refused(&self, source: Source, reason: &str) {
        self.fills_refused.inc(&[source.as_str(), reason]);
    }

    pub fn filllog_failed(&self) {
        self.filllog_write_errors.inc();
        self.filllog_failing.store(true, Ordering::Relaxed);
    }

    pub fn filllog_ok(&self) {
        self.filllog_failing.store(false, Ordering::Relaxed);
    }

    pub fn filllog_failing(&self) -> bool {
        self.filllog_failing.load(Ordering::Relaxed)
    }

    pub fn rejected(&self, code: i64) {
        self.rejections.inc(&[&code.to_string()]);
    }

    pub fn reconcile_pass(&self) {
        self.reconcile_passes.inc();
        self.last_pass_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    // ---- reads ----

    pub fn stream_health(&self) -> (StreamHealth, Duration) {
        self.stream_health_at(self.now_ms())
    }

    /// The stream's state at `now_ms` (ms since start): a function of the hooks' times only.
    fn stream_health_at(&self, now_ms: i64) -> (StreamHealth, Duration) {
        if self.settled_at(now_ms) {
            return (StreamHealth::Up, Duration::ZERO);
        }
        let down = age_at(now_ms, self.down_since_ms.load(Ordering::Relaxed)).unwrap_or_default();
        if down > self.deadline() {
            (StreamHealth::Down, down)
        } else {
            (StreamHealth::Recovering, down)
        }
    }

    pub fn last_event_age(&self) -> Option<Duration> {
        self.age(self.last_frame_ms.load(Ordering::Relaxed))
    }

    /// `/healthz`: healthy, and the short JSON body that says why.
    pub fn health(&self) -> (bool, String) {
        self.health_at(self.now_ms())
    }

    fn health_at(&self, now_ms: i64) -> (bool, String) {
        let (state, down) = self.stream_health_at(now_ms);
        let age = age_at(now_ms, self.last_frame_ms.load(Ordering::Relaxed))
            .map_or("null".to_string(), |a| format!("{:.3}", a.as_secs_f64()));
        let body = format!(
            "{{\"status\":\"{}\",\"stream\":\"{}\",\"down_for_s\":{:.3},\"deadline_s\":{:.3},\"last_event_age_s\":{age}}}\n",
            if state == StreamHealth::Down { "unhealthy" } else { "ok" },
            state.as_str(),
            down.as_secs_f64(),
            self.deadline().as_secs_f64(),
        );
        (state != StreamHealth::Down, body)
    }
}

/// How long before `now_ms` the time `at_ms` was; `None` for -1 (never).
fn age_at(now_ms: i64, at_ms: i64) -> Option<Duration> {
    (at_ms >= 0).then(|| Duration::from_millis(now_ms.saturating_sub(at_ms).max(0) as u64))
}

/// What a scrape reads besides the registry: owners that already keep the numbers.
#[derive(Debug, Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub gate: Arc<RateGate>,
    pub clock: Arc<ServerClock>,
    pub executor: Option<ExecutorLink>,
    pub plugins: Option<PluginView>,
    pub tap: Option<FillTap>,
}

#[cfg(test)]
impl Sources {
    /// A fresh registry with an empty gate and nothing else attached, for unit tests.
    pub(crate) fn bare() -> Sources {
        let clock = Arc::new(ServerClock::new());
        Sources {
            metrics: Arc::default(),
            gate: Arc::new(RateGate::new(Vec::new(), clock.clone())),
            clock,
            executor: None,
            plugins: None,
            tap: None,
        }
    }
}

/// The sources the server and the alerter read, replaced as the daemon attaches its parts.
pub type Shared = Arc<RwLock<Sources>>;

/// A plugin this far behind the fill log (lines) counts as lagging.
pub const PLUGIN_LAG_LINES: u64 = 1000;

/// The states a plugin's `syncd_plugin_state` series take (see [`crate::plugin::PluginStatus`]).
const PLUGIN_STATES: [&str; 8] =
    ["running", "stalled", "disabled", "refused", "stopped", "stuck", "crashed", "quarantined"];

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.0.push_str("\\\\"),
                        '"' => self.0.push_str("\\\""),
                        '\n' => self.0.push_str("\\n"),
                        c => self.0.push(c),
                    }
                }
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.sample(name, &[], value);
    }

    fn family(&mut self, name: &str, help: &str, family: &Labeled) {
        self.head(name, "counter", help);
        for (values, n) in family.snapshot() {
            let labels: Vec<(&str, &str)> =
                family.names.iter().copied().zip(values.iter().map(String::as_str)).collect();
            self.sample(name, &labels, n);
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// The whole exposition, metric names prefixed `syncd_`.
pub fn render(src: &Sources) -> String {
    let m = &src.metrics;
    let mut o = Out(String::with_capacity(8192));
    o.head("syncd_build_info", "gauge", "Always 1; the version is a label.");
    o.sample("syncd_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    o.one("syncd_uptime_seconds", "gauge", "Seconds since the daemon started.", secs(m.started.elapsed()));

    let (state, down) = m.stream_health();
    o.one("syncd_stream_up", "gauge", "1 while the user-data stream is connected.", u8::from(m.stream_connected()));
    o.one(
        "syncd_stream_healthy",
        "gauge",
        "1 while the stream is up or being recovered within its deadline (what /healthz says).",
        u8::from(state != StreamHealth::Down),
    );
    o.one("syncd_stream_down_seconds", "gauge", "How long the stream has been down (0 while up).", secs(down));
    o.one(
        "syncd_stream_deadline_seconds",
        "gauge",
        "How long the stream may be down before it is unhealthy.",
        secs(m.deadline()),
    );
    if let Some(age) = m.last_event_age() {
        o.one(
            "syncd_stream_last_event_age_seconds",
            "gauge",
            "Seconds since the last frame from the stream (or since it connected).",
            secs(age),
        );
    }
    o.one(
        "syncd_stream_sessions_total",
        "counter",
        "Stream sessions opened (connects and handovers).",
        m.stream_sessions.get(),
    );
    o.one(
        "syncd_stream_connect_failures_total",
        "counter",
        "Failed attempts to get a listen key or to connect.",
        m.stream_connect_failures.get(),
    );
    o.family("syncd_stream_reconnects_total", "Stream connections lost, by cause.", &m.reconnects);

    o.family("syncd_fills_total", "Fills made durable in the fill log, by symbol and source.", &m.fills);
    o.family(
        "syncd_fills_refused_total",
        "Exchange rows and stream events refused as fills (wrong symbol, id out of range, zero quantity, ...), by source and reason.",
        &m.fills_refused,
    );
    o.head(
        "syncd_fill_latency_seconds",
        "histogram",
        "Stream fills: from the frame read off the socket to the line durable in the fill log.",
    );
    let mut cumulative = 0;
    for (i, (_, le)) in LATENCY_BOUNDS.iter().enumerate() {
        cumulative += m.fill_latency.buckets[i].load(Ordering::Relaxed);
        o.sample("syncd_fill_latency_seconds_bucket", &[("le", le)], cumulative);
    }
    cumulative += m.fill_latency.buckets[LATENCY_BOUNDS.len()].load(Ordering::Relaxed);
    o.sample("syncd_fill_latency_seconds_bucket", &[("le", "+Inf")], cumulative);
    let sum_us = m.fill_latency.sum_us.load(Ordering::Relaxed);
    o.sample("syncd_fill_latency_seconds_sum", &[], format!("{}.{:06}", sum_us / 1_000_000, sum_us % 1_000_000));
    o.sample("syncd_fill_latency_seconds_count", &[], cumulative);
    o.one(
        "syncd_taker_fills_total",
        "counter",
        "Fills of the daemon's own orders that took liquidity (maker-only says: never).",
        m.taker_fills.get(),
    );
    o.one(
        "syncd_filllog_write_errors_total",
        "counter",
        "Failed writes to the fill log.",
        m.filllog_write_errors.get(),
    );
    o.one(
        "syncd_filllog_failing",
        "gauge",
        "1 while fills wait in memory because the log cannot be written.",
        u8::from(m.filllog_failing()),
    );
    if let Some(tap) = &src.tap {
        o.one("syncd_filllog_seq", "gauge", "Sequence number of the last durable line of the fill log.", tap.durable());
    }

    let stats = src.gate.stats();
    o.one("syncd_rest_http_429_total", "counter", "HTTP 429 (rate limited) answers.", stats.http_429);
    o.one("syncd_rest_http_418_total", "counter", "HTTP 418 (IP banned) answers.", stats.http_418);
    o.one("syncd_rest_gate_waits_total", "counter", "Requests that had to wait in the rate gate.", stats.waits);
    o.one(
        "syncd_rest_banned_seconds",
        "gauge",
        "Seconds left of a 418 ban (0 when not banned).",
        secs(src.gate.banned_for().unwrap_or_default()),
    );
    let usage = src.gate.usage();
    o.head("syncd_rest_weight_used", "gauge", "Request weight used in the current window, by interval.");
    for (interval, used, _) in usage.iter().filter(|(_, _, w)| *w) {
        o.sample("syncd_rest_weight_used", &[("interval", interval)], used.0);
    }
    o.head("syncd_rest_weight_limit", "gauge", "The exchange's request-weight limit, by interval.");
    for (interval, used, _) in usage.iter().filter(|(_, _, w)| *w) {
        o.sample("syncd_rest_weight_limit", &[("interval", interval)], used.1);
    }
    o.one(
        "syncd_clock_offset_seconds",
        "gauge",
        "Exchange time minus local time, as last measured.",
        format!("{:.3}", src.clock.offset_ms() as f64 / 1000.0),
    );

    o.family(
        "syncd_order_rejections_total",
        "Order requests (new, replace, cancel) the exchange rejected, by error code.",
        &m.rejections,
    );
    o.one("syncd_executor_queue_depth", "gauge", "Intents waiting in the executor's queues.", m.executor_queue.get());
    if let Some(exec) = &src.executor {
        let s = exec.stats();
        o.head("syncd_executor_outcomes_total", "counter", "Intents the executor settled, by outcome.");
        for (outcome, n) in [
            ("placed", s.placed),
            ("canceled", s.canceled),
            ("refused", s.refused),
            ("rejected", s.rejected),
            ("unknown", s.unknown),
            ("resolved", s.resolved),
        ] {
            o.sample("syncd_executor_outcomes_total", &[("outcome", outcome)], n);
        }
        o.one(
            "syncd_executor_filter_rejections_total",
            "counter",
            "Exchange rejections for a filter (-1013, -1111): the daemon's rules were wrong.",
            s.filter_rejections,
        );
    }

    o.one("syncd_reconcile_passes_total", "counter", "REST reconciliation passes completed.", m.reconcile_passes.get());
    if let Some(lag) = m.age(m.last_pass_ms.load(Ordering::Relaxed)) {
        o.one("syncd_reconcile_lag_seconds", "gauge", "Seconds since the last reconciliation pass ended.", secs(lag));
    }

    if let Some(plugins) = &src.plugins {
        let all = plugins.all();
        let durable = src.tap.as_ref().map_or(0, FillTap::durable);
        o.head("syncd_plugin_state", "gauge", "1 for each plugin's current state.");
        for p in &all {
            for s in PLUGIN_STATES {
                o.sample("syncd_plugin_state", &[("plugin", &p.name), ("state", s)], u8::from(p.state == s));
            }
        }
        let lag = |p: &crate::plugin::PluginStatus| durable.saturating_sub(p.delivered);
        o.head("syncd_plugin_lagging", "gauge", "1 while a plugin is more than 1000 lines behind the fill log.");
        for p in &all {
            o.sample("syncd_plugin_lagging", &[("plugin", &p.name)], u8::from(lag(p) > PLUGIN_LAG_LINES));
        }
        o.head("syncd_plugin_lag_lines", "gauge", "Fill-log lines not yet delivered to a plugin.");
        for p in &all {
            o.sample("syncd_plugin_lag_lines", &[("plugin", &p.name)], lag(p));
        }
        o.head("syncd_plugin_queue_depth", "gauge", "Fills waiting in a plugin's channel.");
        for p in &all {
            o.sample("syncd_plugin_queue_depth", &[("plugin", &p.name)], p.queued);
        }
        o.head("syncd_plugin_delivered_seq", "gauge", "Sequence number of the last fill a plugin took.");
        for p in &all {
            o.sample("syncd_plugin_delivered_seq", &[("plugin", &p.name)], p.delivered);
        }
        o.head("syncd_plugin_loads_total", "counter", "Versions of a plugin loaded since the daemon started.");
        for p in &all {
            o.sample("syncd_plugin_loads_total", &[("plugin", &p.name)], p.loads);
        }
        o.head("syncd_plugin_restarts_total", "counter", "Times a plugin's process was started again after it died.");
        for p in &all {
            o.sample("syncd_plugin_restarts_total", &[("plugin", &p.name)], p.restarts);
        }
    }

    o.one("syncd_alerts_sent_total", "counter", "Alert messages the webhook accepted.", m.alerts_sent.get());
    o.one("syncd_alerts_failed_total", "counter", "Alert messages the webhook did not take.", m.alerts_failed.get());
    o.one(
        "syncd_alerts_suppressed_total",
        "counter",
        "Alert messages held back by the alert rate gate.",
        m.alerts_suppressed.get(),
    );
    o.one(
        "syncd_alerts_pending",
        "gauge",
        "Alert messages waiting for the webhook (failing) or the alert rate gate.",
        m.alerts_pending.get(),
    );
    o.one(
        "syncd_alert_checks_total",
        "counter",
        "Looks the alert thread has taken at the metrics.",
        m.alert_checks.get(),
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile_bound(0.5), None);
        for _ in 0..98 {
            h.observe(Duration::from_micros(300));
        }
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_bound(0.5), Some(Duration::from_micros(500)));
        assert_eq!(h.quantile_bound(0.99), Some(Duration::from_millis(25)));
        assert_eq!(h.quantile_bound(1.0), None, "past the last bound");
    }

    #[test]
    fn causes_of_the_stream_thread_reasons() {
        assert_eq!(reconnect_cause("listenKeyExpired"), "key_expired");
        assert_eq!(reconnect_cause("serverShutdown"), "server_shutdown");
        assert_eq!(reconnect_cause("no frame for 15.2s"), "silence");
        assert_eq!(reconnect_cause("keep-alive found the listen key gone"), "key_gone");
        assert_eq!(reconnect_cause("server closed with 1000"), "closed");
        assert_eq!(reconnect_cause("io: ConnectionReset"), "error");
    }

    #[test]
    fn health_follows_the_deadline() {
        let m = Metrics::default();
        m.configure(Duration::from_secs(30), &[]);
        assert!(m.health_at(30_000).0, "starting: recovering within the deadline");
        let (ok, body) = m.health_at(30_001);
        assert!(!ok && body.contains("\"stream\":\"down\"") && body.contains("\"down_for_s\":30.001"), "{body}");
        m.stream_up_at(31_000);
        m.frame_at(31_500);
        let (ok, body) = m.health_at(31_500);
        assert!(ok && body.contains("\"stream\":\"up\"") && body.contains("\"last_event_age_s\":0.000"), "{body}");
        m.stream_down_at(40_000, "server closed with 1000");
        assert_eq!(m.stream_health_at(70_000), (StreamHealth::Recovering, Duration::from_secs(30)));
        assert_eq!(m.stream_health_at(70_001).0, StreamHealth::Down);
        assert_eq!(m.reconnects.get(&["closed"]), 1);
    }

    #[test]
    fn a_stream_that_drops_right_after_each_connect_stays_down() {
        let m = Metrics::default();
        m.configure(Duration::from_secs(5), &[]);
        m.stream_up_at(0);
        m.frame_at(100);
        m.stream_down_at(1_000, "io: ConnectionReset");
        // Up for 0.5 s of every second, never a frame: the outage goes on from 1 s.
        for s in 1..10 {
            m.stream_up_at(s * 1_000 + 500);
            assert_eq!(m.stream_health_at(s * 1_000 + 600).0 == StreamHealth::Down, s >= 6, "at {s}.6 s");
            m.stream_down_at((s + 1) * 1_000, "io: ConnectionReset");
        }
        assert_eq!(m.stream_health_at(10_000), (StreamHealth::Down, Duration::from_secs(9)));
        assert!(!m.health_at(10_000).0);
        // A session that lasts the settling time (here the 5 s deadline) ends it ...
        m.stream_up_at(10_500);
        assert_eq!(m.stream_health_at(15_499).0, StreamHealth::Down);
        assert_eq!(m.stream_health_at(15_500), (StreamHealth::Up, Duration::ZERO));
        // ... and so does one frame.
        m.stream_down_at(16_000, "io: ConnectionReset");
        m.stream_up_at(16_100);
        m.frame_at(16_200);
        assert_eq!(m.stream_health_at(16_200).0, StreamHealth::Up);
        m.stream_down_at(16_300, "io: ConnectionReset");
        assert_eq!(m.stream_health_at(16_400), (StreamHealth::Recovering, Duration::from_millis(100)));
    }

    #[test]
    fn the_rendered_histogram_is_cumulative_and_adds_up() {
        let src = Sources::bare();
        let h = &src.metrics.fill_latency;
        for us in [40, 300, 300, 20_000, 2_000_000, 60_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let text = render(&src);
        let series = |name: &str| -> Vec<(String, String)> {
            text.lines()
                .filter_map(|l| l.strip_prefix(name))
                .filter_map(|l| l.rsplit_once(' '))
                .map(|(labels, v)| (labels.to_string(), v.to_string()))
                .collect()
        };
        let buckets = series("syncd_fill_latency_seconds_bucket");
        assert_eq!(buckets.len(), LATENCY_BOUNDS.len() + 1);
        let counts: Vec<u64> = buckets.iter().map(|(_, v)| v.parse().unwrap()).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative: {buckets:?}");
        assert_eq!(buckets[0], ("{le=\"0.00005\"}".to_string(), "1".to_string()));
        assert_eq!(buckets[3].1, "3", "le=0.0005 holds 40 µs and both 300 µs");
        assert_eq!(buckets.last().unwrap(), &("{le=\"+Inf\"}".to_string(), "6".to_string()));
        assert_eq!(series("syncd_fill_latency_seconds_count"), vec![(String::new(), "6".to_string())]);
        assert_eq!(series("syncd_fill_latency_seconds_sum"), vec![(String::new(), "62.020640".to_string())]);
    }

    #[test]
    fn only_our_own_taker_fills_count_as_taker_fills() {
        let m = Metrics::default();
        let fill = |client_id: &str, maker: bool| crate::filllog::FillRecord {
            symbol: "BTCUSD".into(),
            trade_id: 1,
            order_id: 2,
            client_order_id: client_id.into(),
            side: crate::model::Side::Buy,
            price: crate::Decimal::ONE,
            qty: crate::Decimal::ONE,
            quote_qty: crate::Decimal::ONE,
            commission: crate::Decimal::ONE,
            commission_asset: "USD".into(),
            maker,
            time: 0,
            seq: 1,
        };
        m.set_instance("ab12");
        m.fill_logged(&fill("sd-grid-ab12-k2x9-1", true), Some(Instant::now()));
        m.fill_logged(&fill("web-order-7", false), None);
        m.fill_logged(&fill("sd-grid-zz99-k2x9-1", false), None);
        assert_eq!(m.taker_fills.get(), 0, "a maker fill of ours, someone else's and another daemon's taker fill");
        m.fill_logged(&fill("sd-grid-ab12-k2x9-2", false), None);
        assert_eq!(m.taker_fills.get(), 1);
        assert_eq!((m.fills.get(&["BTCUSD", "stream"]), m.fills.get(&["BTCUSD", "rest"])), (1, 3));
        assert_eq!(m.fill_latency.count(), 1, "only stream fills are timed");
    }

    #[test]
    fn labels_are_escaped_and_registered_series_start_at_zero() {
        let m = Metrics::default();
        m.configure(Duration::from_secs(1), &["BTCUSD".to_string()]);
        assert_eq!(m.fills.get(&["BTCUSD", "stream"]), 0);
        m.count_fill("BTCUSD", Source::Stream, Some(Instant::now()), false);
        assert_eq!(m.fills.get(&["BTCUSD", "stream"]), 1);
        assert_eq!(m.fill_latency.count(), 1);
        let mut o = Out(String::new());
        o.sample("x", &[("a", "q\"b\\\n")], 1);
        assert_eq!(o.0, "x{a=\"q\\\"b\\\\\\n\"} 1\n");
    }
}
