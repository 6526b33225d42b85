//! What `/metrics` and the alerts read: the registry ([`crate::registry`], atomics the threads
//! bump) together with everything a scrape can read from an owner that already keeps it (the
//! rate gate's 429/418 counts and weight, the clock offset, the executor's counters, the
//! plugins' view), read there at scrape time instead of being copied into the registry. Above
//! every role it reads; THREAD `metrics` (`/metrics`, `/healthz`) and THREAD `alerts` (webhook).
//!
//! [`render`] writes the Prometheus text exposition format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>).

pub mod alerts;
pub mod server;
mod service;

pub use service::Service;

use crate::clock::ServerClock;
use crate::executor::ExecutorLink;
use crate::filllog::{FillRecord, FillTap};
use crate::plugin::PluginView;
use crate::ratelimit::RateGate;
use crate::registry::{Labeled, Metrics, Source, StreamHealth, LATENCY_BOUNDS};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Counts a fill: `fill` is durable in the fill log; `read_at`: when its frame was read off the socket
/// (a stream fill), `None` for one read over REST.
pub fn fill_logged(metrics: &Metrics, fill: &FillRecord, read_at: Option<Instant>) {
    let source = if read_at.is_some() { Source::Stream } else { Source::Rest };
    // Before the executor has said which instance it is, any daemon's id counts: a
    // taker fill of ours is an alarm, better once too often than missed.
    let own_taker = !fill.maker && crate::executor::ids::tag_in(&fill.client_order_id, metrics.instance()).is_some();
    metrics.count_fill(&fill.symbol, source, read_at, own_taker);
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
    /// The market thread's view, when it runs.
    pub market: Option<crate::market::MarketView>,
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
            market: None,
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

    if let Some(market) = &src.market {
        render_market(&mut o, &market.state());
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
        // The market as plugins get it (on_book, on_trade), counted from each version's start.
        type Count = fn(&crate::plugin::PluginStatus) -> u64;
        let market: [(&str, &str, Count); 4] = [
            ("syncd_plugin_books_total", "Books handed to a plugin's on_book.", |p| p.books),
            (
                "syncd_plugin_books_skipped_total",
                "Books a busy plugin did not get: a newer one of the symbol came first (conflation).",
                |p| p.books_skipped,
            ),
            ("syncd_plugin_trades_total", "Public trades handed to a plugin's on_trade.", |p| p.trades),
            ("syncd_plugin_trades_dropped_total", "Public trades dropped from a plugin's full queue.", |p| {
                p.trades_dropped
            }),
        ];
        for (name, help, value) in market {
            o.head(name, "counter", help);
            for p in &all {
                o.sample(name, &[("plugin", &p.name)], value(p));
            }
        }
        // Isolated plugins only (an in-process one shares the daemon's figures).
        let usage: Vec<_> = all.iter().filter_map(|p| crate::plugin::usage(p.pid).map(|u| (p, u))).collect();
        o.head(
            "syncd_plugin_cpu_seconds_total",
            "counter",
            "CPU time of a plugin's process since it started (a restart starts it again).",
        );
        for (p, u) in &usage {
            o.sample("syncd_plugin_cpu_seconds_total", &[("plugin", &p.name)], secs(u.cpu));
        }
        o.head("syncd_plugin_rss_bytes", "gauge", "Resident memory of a plugin's process.");
        for (p, u) in &usage {
            o.sample("syncd_plugin_rss_bytes", &[("plugin", &p.name)], u.rss_bytes);
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

/// The market stream's series: its state, sessions and losses, and per symbol whether the book
/// is synchronised, its age (see [`crate::market::MarketState::age`]), resyncs, gaps and
/// snapshots.
fn render_market(o: &mut Out, m: &crate::market::MarketState) {
    let now = Instant::now();
    o.one("syncd_market_stream_up", "gauge", "1 while the market stream is connected.", u8::from(m.up));
    o.one("syncd_market_sessions_total", "counter", "Market-stream connections opened.", m.sessions);
    o.one(
        "syncd_market_connect_failures_total",
        "counter",
        "Market-stream connection attempts that failed.",
        m.connect_failures,
    );
    o.head("syncd_market_reconnects_total", "counter", "Market-stream connections lost, by cause.");
    for (cause, n) in &m.reconnects {
        o.sample("syncd_market_reconnects_total", &[("cause", cause)], n);
    }
    o.one(
        "syncd_market_skipped_frames_total",
        "counter",
        "Market-stream frames skipped as unreadable.",
        m.skipped_frames,
    );
    o.one(
        "syncd_market_rest_quotes_total",
        "counter",
        "ticker/bookTicker reads the executor made because the market stream could not confirm a price.",
        m.rest_quotes,
    );
    o.head("syncd_market_book_synced", "gauge", "1 while a symbol's local order book is synchronised.");
    for (symbol, s) in &m.symbols {
        o.sample("syncd_market_book_synced", &[("symbol", symbol)], u8::from(s.synced));
    }
    o.head(
        "syncd_market_book_age_seconds",
        "gauge",
        "Seconds since the market stream last confirmed a symbol's best bid/ask (absent while it cannot).",
    );
    for symbol in m.symbols.keys() {
        if let Some(age) = m.age(symbol, now) {
            o.sample("syncd_market_book_age_seconds", &[("symbol", symbol)], secs(age));
        }
    }
    type Count = fn(&crate::market::SymbolMarket) -> u64;
    let per_symbol: [(&str, &str, Count); 4] = [
        ("syncd_market_resyncs_total", "Local books discarded (a gap, a reconnect).", |s| s.resyncs),
        ("syncd_market_gaps_total", "Gaps in a symbol's depth update ids.", |s| s.gaps),
        ("syncd_market_snapshots_total", "GET /api/v3/depth snapshots asked for.", |s| s.snapshots),
        ("syncd_market_snapshot_failures_total", "Snapshots that failed or could not be joined to the stream.", |s| {
            s.snapshot_failures
        }),
    ];
    for (name, help, get) in per_symbol {
        o.head(name, "counter", help);
        for (symbol, s) in &m.symbols {
            o.sample(name, &[("symbol", symbol)], get(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        fill_logged(&m, &fill("sd-grid-ab12-k2x9-1", true), Some(Instant::now()));
        fill_logged(&m, &fill("web-order-7", false), None);
        fill_logged(&m, &fill("sd-grid-zz99-k2x9-1", false), None);
        assert_eq!(m.taker_fills.get(), 0, "a maker fill of ours, someone else's and another daemon's taker fill");
        fill_logged(&m, &fill("sd-grid-ab12-k2x9-2", false), None);
        assert_eq!(m.taker_fills.get(), 1);
        assert_eq!((m.fills.get(&["BTCUSD", "stream"]), m.fills.get(&["BTCUSD", "rest"])), (1, 3));
        assert_eq!(m.fill_latency.count(), 1, "only stream fills are timed");
    }

    #[test]
    fn the_market_streams_series_are_rendered_per_symbol() {
        let mut src = Sources::bare();
        let view = crate::market::MarketView::new(&["BTCUSD".to_string(), "ETHUSD".to_string()], true);
        view.with(|s| {
            s.up = true;
            s.last_frame = Some(Instant::now());
            s.reconnects.insert("silence", 2);
            let btc = s.symbols.get_mut("BTCUSD").unwrap();
            btc.synced = true;
            btc.gaps = 3;
            btc.top = Some(crate::market::Top {
                bid: crate::Decimal::ONE,
                ask: crate::Decimal::from_int(2),
                update_id: 1,
                event_time_ms: None,
                received: Instant::now(),
            });
        });
        src.market = Some(view);
        let text = render(&src);
        for line in [
            "syncd_market_stream_up 1",
            "syncd_market_reconnects_total{cause=\"silence\"} 2",
            "syncd_market_book_synced{symbol=\"BTCUSD\"} 1",
            "syncd_market_book_synced{symbol=\"ETHUSD\"} 0",
            "syncd_market_gaps_total{symbol=\"BTCUSD\"} 3",
            "syncd_market_resyncs_total{symbol=\"ETHUSD\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing");
        }
        assert!(text.contains("syncd_market_book_age_seconds{symbol=\"BTCUSD\"} 0.0"), "{text}");
        assert!(!text.contains("syncd_market_book_age_seconds{symbol=\"ETHUSD\"}"), "no price for ETHUSD yet");
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
