//! The metrics registry: atomics the threads bump at each site (one call each), read by the
//! `/metrics` server and the alert thread ([`crate::metrics`], which renders them with what
//! it reads from the other owners at scrape time).
//!
//! A leaf: the REST client carries the registry to every thread that holds it, so nothing here
//! may name a role above it. Nothing here can block the thread that reports: counters, gauges
//! and histogram buckets are atomics; a labelled family takes a read lock (shared with
//! scrapers, so never waited on) unless a label value is new, and the fill log's labels
//! (symbols, sources) are registered at start.

use crate::lock::RwLockAnyway;
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
pub(crate) const LATENCY_BOUNDS: [(u64, &str); 16] = [
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
    pub(crate) buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    pub(crate) sum_us: AtomicU64,
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
        let rank = nearest_rank(total as usize, q)?;
        let rank = rank as u64 + 1;
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
    pub(crate) names: &'static [&'static str],
    values: RwLock<Vec<(Vec<String>, Arc<Counter>)>>,
}

impl Labeled {
    fn new(names: &'static [&'static str]) -> Labeled {
        Labeled { names, values: RwLock::new(Vec::new()) }
    }

    fn find(&self, labels: &[&str]) -> Option<Arc<Counter>> {
        let values = self.values.read_anyway();
        values.iter().find(|(v, _)| v.iter().map(String::as_str).eq(labels.iter().copied())).map(|(_, c)| c.clone())
    }

    fn counter(&self, labels: &[&str]) -> Arc<Counter> {
        if let Some(c) = self.find(labels) {
            return c;
        }
        let mut values = self.values.write_anyway();
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
        self.values.read_anyway().iter().map(|(_, c)| c.get()).sum()
    }

    pub(crate) fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        let values = self.values.read_anyway();
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
    pub(crate) started: Instant,
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
    pub(crate) last_pass_ms: AtomicI64,
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

    pub(crate) fn age(&self, at_ms: i64) -> Option<Duration> {
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

    /// The instance set by [`set_instance`](Self::set_instance), if any.
    pub fn instance(&self) -> Option<&str> {
        self.instance.get().map(String::as_str)
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

/// The one rank rule of every percentile the project prints (the histogram's `quantile_bound`
/// and every bench): nearest rank, the smallest value with at least `q` of the sample at or
/// below it. The 0-based index into `n` sorted values; `None` for an empty sample.
pub fn nearest_rank(n: usize, q: f64) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let rank = ((n as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as usize;
    Some(rank.min(n) - 1)
}

/// The `q` percentile of `sorted` by [`nearest_rank`]; `None` for an empty sample.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    nearest_rank(sorted.len(), q).and_then(|i| sorted.get(i).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_is_the_smallest_value_with_q_of_the_sample_at_or_below() {
        assert_eq!(nearest_rank(0, 0.5), None);
        assert_eq!(nearest_rank(1, 0.99), Some(0));
        assert_eq!(nearest_rank(4, 0.5), Some(1));
        assert_eq!(nearest_rank(100, 0.99), Some(98));
        assert_eq!(nearest_rank(5, 1.0), Some(4));
        assert_eq!(nearest_rank(5, 0.0), Some(0));
        let sorted: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile(&sorted, 0.9), Some(9));
        assert_eq!(percentile::<u32>(&[], 0.9), None);
    }

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
}
