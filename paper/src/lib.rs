//! The paper exchange: a Binance.US-compatible REST + WebSocket exchange on loopback, with
//! fault injection and a ground-truth report.
//!
//! It is the demo's default exchange, the ground of every integration test, and a tool in its
//! own right: point any Binance.US client at it to rehearse outages. It imports none of the
//! daemon's roles; it shares only the pure rule code (`filters`, `decimal`, request signing),
//! so each rule has one implementation, while its JSON is its own.
//!
//! Threads: `paper-http` (accept) + one per REST connection, `paper-ws` (accept) + one per
//! stream connection, `paper-market` (moves prices, fills crossed orders, expires keys),
//! `paper-depth` (sends the depth streams' diff events at their cadence) and `paper-timeline`
//! (fires scheduled faults).
//!
//! Time: `time_scale` divides every interval (ping, pong timeout, listen-key life, the 24 h cut,
//! ban length, market tick, the depth streams' 100 ms and 1000 ms) so tests run fast; the server clock itself is not scaled, since
//! clients sign with it.

pub mod control;
pub mod engine;
pub mod feed;
pub mod http;
pub mod hub;
mod lock;
pub mod order;
pub mod rest;
pub mod sign;
pub mod tls;
pub mod trader;
pub mod ws;

use crate::lock::LockAnyway;
pub use crate::sign::Secret;
use control::RestFaults;
use crossbeam_channel::{Receiver, Sender};
use engine::{Engine, EngineSettings};
use hub::StreamHub;
use rest::{ErrorRecord, RateState, RestSettings, WeightProfile};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Wall-clock milliseconds since the Unix epoch (the exchange's server time).
fn local_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Property-test case counts, as the daemon's (`docs/testing.md`): `PROPTEST_CASES` sets them,
/// `SYNCD_PROPTEST_SCALE` multiplies each property's default.
#[cfg(test)]
fn proptest_config(default_cases: u32) -> proptest::test_runner::Config {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u32>().ok());
    let cases = match (env("PROPTEST_CASES"), env("SYNCD_PROPTEST_SCALE")) {
        (Some(n), _) => n,
        (None, Some(k)) => default_cases.saturating_mul(k),
        (None, None) => default_cases,
    };
    proptest::test_runner::Config { cases, failure_persistence: None, ..Default::default() }
}

/// The documented Binance example key pair ("SIGNED Endpoint Examples" in the Binance.US API
/// docs, <https://docs.binance.us/>): the paper
/// exchange accepts it by default, so the documented signature vectors work against it.
pub const DEMO_API_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
pub const DEMO_API_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

/// Everything `PaperExchange::start` needs. Intervals are in exchange time (Binance's real
/// values); `time_scale` divides them.
#[derive(Debug, Clone)]
pub struct PaperConfig {
    pub rest_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub time_scale: u32,
    pub engine: EngineSettings,
    pub rest: RestSettings,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub connection_life: Duration,
    pub incoming_per_second: u32,
    pub market_tick: Duration,
    pub timeline: Vec<control::TimelineEntry>,
    /// Serve REST and the stream over TLS (`https://`, `wss://`) with this certificate.
    pub tls: Option<Arc<tls::PaperTls>>,
}

impl PaperConfig {
    /// A market that stands still unless moved, with request, order and open-order limits no
    /// benchmark client reaches: the benchmarks measure the daemon, not the limits.
    pub fn unthrottled() -> PaperConfig {
        let mut c = PaperConfig { market_tick: Duration::from_secs(3600), ..PaperConfig::default() };
        c.rest.weight_limit = 1_000_000;
        c.rest.orders_per_10s = 100_000;
        c.rest.orders_per_day = 10_000_000;
        c.engine.max_num_orders = 100_000;
        c
    }
}

impl Default for PaperConfig {
    fn default() -> PaperConfig {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        PaperConfig {
            rest_addr: loopback,
            ws_addr: loopback,
            time_scale: 1,
            engine: EngineSettings::default(),
            rest: RestSettings {
                credentials: vec![(DEMO_API_KEY.to_string(), Secret::new(DEMO_API_SECRET))],
                weight_limit: 6000,
                orders_per_10s: 100,
                orders_per_day: 200_000,
                weights: WeightProfile::Us2026,
                ban_base: Duration::from_secs(120),
                hold_grace: 0,
            },
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
            connection_life: Duration::from_secs(24 * 3600),
            incoming_per_second: 5,
            market_tick: Duration::from_secs(1),
            timeline: Vec::new(),
            tls: None,
        }
    }
}

/// The server clock: local time plus an injectable jump (clock-jump faults).
#[derive(Debug, Default)]
pub struct PaperClock {
    jump_ms: AtomicI64,
}

impl PaperClock {
    pub fn now_ms(&self) -> i64 {
        local_ms() + self.jump_ms.load(Ordering::Relaxed)
    }

    pub fn jump(&self, ms: i64) {
        self.jump_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// State shared by every thread of one exchange.
pub struct Shared {
    pub engine: Mutex<Engine>,
    pub hub: StreamHub,
    pub clock: PaperClock,
    pub rest: RestSettings,
    pub rate: Mutex<RateState>,
    pub rest_faults: Mutex<RestFaults>,
    pub rest_hold: control::RestHold,
    pub errors: Mutex<Vec<ErrorRecord>>,
    pub fault_log: Mutex<Vec<control::FaultRecord>>,
    pub time_scale: u32,
    pub(crate) ws: Mutex<Option<Arc<ws::WsServer>>>,
}

impl Shared {
    /// An interval in exchange time, as this exchange runs it.
    pub fn scaled(&self, d: Duration) -> Duration {
        d / self.time_scale.max(1)
    }
}

struct Keys(Weak<Shared>);

impl ws::KeyCheck for Keys {
    fn live_key(&self, key: &str) -> Option<String> {
        let shared = self.0.upgrade()?;
        let now = shared.clock.now_ms();
        let live = shared.engine.lock_anyway().live_key(key, now);
        live.then(|| Secret::new(key).fingerprint())
    }

    fn now_ms(&self) -> i64 {
        self.0.upgrade().map(|s| s.clock.now_ms()).unwrap_or_else(local_ms)
    }
}

/// A running paper exchange. Dropping it stops every thread and closes every connection.
pub struct PaperExchange {
    shared: Arc<Shared>,
    http: Option<http::HttpServer>,
    ws_addr: SocketAddr,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    tls: Option<Arc<tls::PaperTls>>,
}

impl PaperExchange {
    pub fn start(config: PaperConfig) -> io::Result<PaperExchange> {
        let scale = config.time_scale.max(1);
        let mut engine_settings = config.engine.clone();
        engine_settings.listen_key_ttl /= scale;
        let mut rest_settings = config.rest.clone();
        rest_settings.ban_base /= scale;
        let hub = StreamHub::new();
        let shared = Arc::new(Shared {
            engine: Mutex::new(Engine::new(engine_settings, hub.clone())),
            hub: hub.clone(),
            clock: PaperClock::default(),
            rest: rest_settings,
            rate: Mutex::new(RateState::default()),
            rest_faults: Mutex::new(RestFaults::default()),
            rest_hold: control::RestHold::default(),
            errors: Mutex::new(Vec::new()),
            fault_log: Mutex::new(Vec::new()),
            time_scale: scale,
            ws: Mutex::new(None),
        });
        let ws_settings = ws::WsSettings {
            ping_interval: config.ping_interval / scale,
            pong_timeout: config.pong_timeout / scale,
            max_connection_life: config.connection_life / scale,
            // The limit counts real seconds; with time compressed, pings (and so pongs) come
            // `scale` times as often, so the allowance scales with them.
            incoming_per_second: config.incoming_per_second.saturating_mul(scale),
            max_frame: 64 * 1024,
        };
        let server_tls = config.tls.as_ref().map(|t| t.server_config().clone());
        let keys = Arc::new(Keys(Arc::downgrade(&shared)));
        let ws_server = Arc::new(ws::WsServer::start(config.ws_addr, ws_settings, server_tls.clone(), hub, keys)?);
        let ws_addr = ws_server.local_addr();
        *shared.ws.lock_anyway() = Some(ws_server);

        let handler_shared = shared.clone();
        let handler: Arc<http::Handler> = Arc::new(move |req| route(&handler_shared, req));
        let http = http::HttpServer::start(config.rest_addr, http::HttpLimits::default(), server_tls, handler)?;

        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let mut threads = Vec::new();
        let tick = config.market_tick / scale;
        threads.push(spawn_market(shared.clone(), stop_rx.clone(), tick.max(Duration::from_millis(1)))?);
        threads.push(spawn_depth(shared.clone(), stop_rx.clone())?);
        if !config.timeline.is_empty() {
            threads.push(control::spawn_timeline(shared.clone(), stop_rx, config.timeline.clone())?);
        }
        Ok(PaperExchange { shared, http: Some(http), ws_addr, stop: Some(stop_tx), threads, tls: config.tls })
    }

    pub fn rest_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match &self.http {
            Some(h) => format!("{scheme}://{}", h.local_addr()),
            None => String::new(),
        }
    }

    pub fn ws_url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.ws_addr)
    }

    /// The certificates a client must trust to reach this exchange: none when it is plain.
    pub fn trust(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.tls.as_ref().map(|t| t.trust().to_vec()).unwrap_or_default()
    }

    /// [`PaperExchange::trust`] as PEM, for a CA file; `None` when it is plain.
    pub fn trust_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.trust_pem())
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Applies a fault now, exactly as `POST /paper/fault` does.
    pub fn fault(&self, name: &str, params: &[(&str, &str)]) -> Result<serde_json::Value, String> {
        control::apply(&self.shared, name, params)
    }

    /// The ground-truth report, as `GET /paper/report` returns it.
    pub fn report(&self) -> serde_json::Value {
        control::report(&self.shared)
    }
}

impl Drop for PaperExchange {
    fn drop(&mut self) {
        drop(self.stop.take()); // closes the stop channel for every thread
        self.shared.rest_hold.release(); // a held request's thread must not outlive us
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        drop(self.http.take());
        let ws = self.shared.ws.lock_anyway().take();
        drop(ws);
    }
}

/// The one router of the REST port: `/paper/*` is the operator's handle (faults, report), not
/// rate-limited or signed; everything else is the Binance API.
fn route(shared: &Shared, req: http::Request) -> http::Outcome {
    if req.path.starts_with("/paper/") {
        return http::Outcome::Respond(control::handle(shared, &req));
    }
    rest::handle(shared, req)
}

/// The depth streams' cadence, 100 ms and 1000 ms, compressed with the rest of time (but no
/// finer than 5 ms: a diff event per millisecond would only burn the test machine's cores).
fn spawn_depth(shared: Arc<Shared>, stop: Receiver<()>) -> io::Result<JoinHandle<()>> {
    let every = shared.scaled(Duration::from_millis(100)).max(Duration::from_millis(5));
    thread::Builder::new().name("paper-depth".into()).spawn(move || {
        let mut n: u64 = 0;
        loop {
            match stop.recv_timeout(every) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    n += 1;
                    shared.hub.flush_depth(shared.clock.now_ms(), n.is_multiple_of(10));
                }
                _ => return,
            }
        }
    })
}

fn spawn_market(shared: Arc<Shared>, stop: Receiver<()>, tick: Duration) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name("paper-market".into()).spawn(move || loop {
        match stop.recv_timeout(tick) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let now = shared.clock.now_ms();
                shared.engine.lock_anyway().tick(now);
            }
            _ => return,
        }
    })
}
