//! The blocking REST client: one request function for every endpoint.
//!
//! Every request goes through the shared [`RateGate`] first and reports the usage headers back
//! to it. Signed requests carry `recvWindow` and a `timestamp` from the server-synced clock, and
//! a `-1021` (clock out of window) triggers one clock resync and a bounded retry. Responses map
//! to [`Error`] by what the caller should do: a 5xx, a `-1006`/`-1007`, a timeout or a reset on
//! an order endpoint is [`Error::OutcomeUnknown`], never a plain failure, because the order may
//! exist.
//!
//! Requests take one of two lanes (issue 22), each with its own HTTP agent and one request on
//! the wire at a time: the order desk's, and the background one (reconciliation, depth
//! snapshots, polls, the listen key). An order never waits for a background round trip; the
//! one gate still budgets both, and a 429/418 seen on either holds both. Orders keep a reserve:
//! background reads go only within their share of each limit (`call_background`), orders
//! within the gate's whole headroom.
//!
//! The endpoints that change orders (`POST/DELETE /api/v3/order`, `DELETE /api/v3/openOrders`,
//! `POST /api/v3/order/cancelReplace`) are private to this module: [`RestClient::call`] and its
//! siblings refuse them, and the only way to send one is the [`desk::OrderDesk`] that the
//! executor thread owns. So "only the executor changes orders" is a property of the types:
//!
//! ```compile_fail
//! // The order endpoints cannot even be named outside the crate's REST module.
//! use binance_syncd::rest::ORDER_NEW;
//! ```
//!
//! ```compile_fail
//! // Nor can a desk be had without the executor: its constructor is crate-private and one-shot.
//! fn sneak(rest: &std::sync::Arc<binance_syncd::rest::RestClient>) {
//!     let _ = rest.order_desk();
//! }
//! ```
//!
//! Nothing here logs a query string: it holds the signature (and, for `userDataStream`, the
//! listen key). Logs name the method and path only.

pub mod desk;
pub mod sign;

use crate::clock::{local_ms, ServerClock, TimeSample};
use crate::error::Error;
use crate::filters::ExchangeRules;
use crate::lock::{LockAnyway, WaitAnyway};
use crate::ratelimit::{Denied, RateGate};
use crate::secret::Secret;
use sign::Signer;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// What a request must carry: the Binance.US API docs' "Endpoint Security Type" (NONE, API key
/// header, or SIGNED), <https://docs.binance.us/>.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Nothing.
    None,
    /// The API-key header only. `userDataStream` is this: a timestamp or signature gets `-1101`.
    ApiKey,
    /// API-key header, `timestamp`, `recvWindow` and `signature`.
    Signed,
}

/// One REST endpoint with its conservative weight. The static weights are the Binance.com
/// column of the reference (Binance.US's 2026 upgrade matched it where announced); the live
/// `X-MBX-USED-WEIGHT-1M` header corrects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub security: Security,
    pub weight: u64,
    /// New orders this request places (counts toward the ORDERS limits).
    pub orders: u64,
    /// A request that changes orders: transport trouble after sending leaves its outcome unknown.
    pub mutates: bool,
}

const fn ep(method: Method, path: &'static str, security: Security, weight: u64) -> Endpoint {
    Endpoint { method, path, security, weight, orders: 0, mutates: false }
}

pub const PING: Endpoint = ep(Method::Get, "/api/v3/ping", Security::None, 1);
pub const TIME: Endpoint = ep(Method::Get, "/api/v3/time", Security::None, 1);
pub const EXCHANGE_INFO: Endpoint = ep(Method::Get, "/api/v3/exchangeInfo", Security::None, 20);
pub const AVG_PRICE: Endpoint = ep(Method::Get, "/api/v3/avgPrice", Security::None, 2);
pub const BOOK_TICKER: Endpoint = ep(Method::Get, "/api/v3/ticker/bookTicker", Security::None, 2);
/// The order-book snapshot at [`DEPTH_LIMIT`] levels a side: weight 10 for 501-1000 levels
/// before Binance.US's 2026-08-31 upgrade, 50 after (counted at 50). "Order Book" at
/// <https://docs.binance.us/#get-order-book-depth>.
pub const DEPTH: Endpoint = ep(Method::Get, "/api/v3/depth", Security::None, 50);
/// Levels a side asked of [`DEPTH`]: the documented local-book procedure's `limit=1000`
/// ("How to manage a local order book correctly", <https://docs.binance.us/#websocket-market-streams>).
pub const DEPTH_LIMIT: &str = "1000";
pub const ACCOUNT: Endpoint = ep(Method::Get, "/api/v3/account", Security::Signed, 20);
const ORDER_NEW: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v3/order",
    security: Security::Signed,
    weight: 1,
    orders: 1,
    mutates: true,
};
pub const ORDER_QUERY: Endpoint = ep(Method::Get, "/api/v3/order", Security::Signed, 4);
const ORDER_CANCEL: Endpoint = Endpoint {
    method: Method::Delete,
    path: "/api/v3/order",
    security: Security::Signed,
    weight: 1,
    orders: 0,
    mutates: true,
};
const ORDER_CANCEL_REPLACE: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v3/order/cancelReplace",
    security: Security::Signed,
    weight: 1,
    orders: 1,
    mutates: true,
};
pub const OPEN_ORDERS: Endpoint = ep(Method::Get, "/api/v3/openOrders", Security::Signed, 6);
pub const ALL_ORDERS: Endpoint = ep(Method::Get, "/api/v3/allOrders", Security::Signed, 20);
pub const MY_TRADES: Endpoint = ep(Method::Get, "/api/v3/myTrades", Security::Signed, 20);
pub const LISTEN_KEY_NEW: Endpoint = ep(Method::Post, "/api/v3/userDataStream", Security::ApiKey, 2);
pub const LISTEN_KEY_KEEPALIVE: Endpoint = ep(Method::Put, "/api/v3/userDataStream", Security::ApiKey, 2);
pub const LISTEN_KEY_CLOSE: Endpoint = ep(Method::Delete, "/api/v3/userDataStream", Security::ApiKey, 2);

/// How many times a request is re-signed after `-1021` before the error is returned.
/// Once ("Timing Security" in the Binance.US API docs): a second -1021 right after a fresh sync
/// means something else is wrong, and more tries only cost weight.
const TIMESTAMP_RETRIES: u32 = 1;

/// Settings of one client; see `config` for the environment variables behind them.
#[derive(Debug, Clone)]
pub struct RestConfig {
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub api_secret: Option<Secret>,
    pub recv_window_ms: u64,
    pub timeout: Duration,
    /// Re-measure the server-time offset before a signed request once it is this old.
    pub clock_resync: Duration,
    /// The process's one TLS client configuration (`crate::tls::client_config`), shared with the stream.
    pub tls: Arc<rustls::ClientConfig>,
}

/// A blocking REST client. Cheap to share behind an `Arc`; ureq pools connections inside.
pub struct RestClient {
    /// The background lane's agent.
    agent: ureq::Agent,
    /// The order lane's own agent: its idle connection is never taken (or left half-read) by a
    /// background request, so an order finds it warm.
    order_agent: ureq::Agent,
    base: String,
    api_key: Option<Secret>,
    signer: Option<Signer>,
    recv_window_ms: u64,
    clock_resync: Duration,
    clock: Arc<ServerClock>,
    gate: Arc<RateGate>,
    /// Set once the order desk has been handed out: there is one per client.
    desk_taken: std::sync::atomic::AtomicBool,
    order_lane: Lane,
    background_lane: Lane,
    metrics: Arc<crate::registry::Metrics>,
}

/// How long a background request waits for its lane before it gives its turn up.
const BACKGROUND_LANE_WAIT: Duration = Duration::from_millis(100);

/// Which of the client's two lanes a request takes (issue 22).
///
/// `Orders` is the executor's: every request of the [`desk::OrderDesk`] (placements, cancels,
/// replaces, the lookups of unknown outcomes, the open-order and account reads of a book
/// rebuild, an `avgPrice` an order waits on). `Background` is everyone else's: reconciliation
/// pages, depth snapshots, price and rules polls, the listen key, start-up reads. Each lane has
/// its own HTTP agent (so its own kept-alive connection) and one request on the wire at a time,
/// so an order never queues behind a background request's round trip, and at most two requests
/// are in flight process-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneId {
    Orders,
    Background,
}

/// One request on the wire at a time, per lane.
///
/// A 429 is answered while another thread's request may already be on its way, and that
/// request then lands inside the hold the 429 just started: the exchange counts it as not
/// backing off, the way to a 418 ban. Within a lane, the gate always knows of a 429 before
/// the next request leaves. Across the two lanes, a 429 can meet at most the one request the
/// other lane already has on the wire (sent before anyone could know of the hold); every
/// request after it waits in the shared gate. That one request is the price of orders not
/// waiting a background round trip.
#[derive(Debug, Default)]
struct Lane {
    busy: std::sync::Mutex<bool>,
    freed: std::sync::Condvar,
}

struct LaneGuard<'a>(&'a Lane);

impl Lane {
    /// `None` if the lane stayed busy for `limit`, or `stopping` said so while we waited (a
    /// request can hold the lane for a whole HTTP timeout; shutdown must not wait that long).
    fn enter(&self, limit: Option<Duration>, stopping: impl Fn() -> bool) -> Option<LaneGuard<'_>> {
        let deadline = limit.map(|l| std::time::Instant::now() + l);
        let mut busy = self.busy.lock_anyway();
        while *busy {
            if stopping() {
                return None;
            }
            let left = deadline.map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(std::time::Instant::now()).min(Duration::from_millis(100))
            });
            if left.is_zero() {
                return None;
            }
            busy = self.freed.wait_timeout_anyway(busy, left);
        }
        *busy = true;
        Some(LaneGuard(self))
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock_anyway() = false;
        self.0.freed.notify_one();
    }
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient").field("base", &self.base).field("api_key", &self.api_key).finish_non_exhaustive()
    }
}

/// Characters sent as they are; everything else is percent-encoded before signing.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// `k1=v1&k2=v2`, values percent-encoded (UTF-8) as Binance expects before signing.
pub fn encode_params(params: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(params.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        for &b in v.as_bytes() {
            if is_unreserved(b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The ms timestamp in "…IP banned until 1659146400000. …" (the 418 message of the Binance.US
/// API docs' "Rate Limits").
fn ban_end_ms(msg: &str) -> Option<i64> {
    let rest = msg.split("banned until ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `msg` plus the inner `{code,msg}` of each failed half of a cancelReplace answer.
fn with_replace_detail(msg: String, body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else { return msg };
    let mut out = msg;
    for (half, key) in [("cancel", "cancelResponse"), ("new order", "newOrderResponse")] {
        let inner = &v["data"][key];
        if let (Some(code), Some(text)) = (inner["code"].as_i64(), inner["msg"].as_str()) {
            out.push_str(&format!(" ({half}: {code} {text})"));
        }
    }
    out
}

/// The public ways of calling refuse anything that could change an order, however the endpoint
/// was spelled: the private constants are one guard, the path is the other.
fn refuse_orders(ep: &Endpoint) -> Result<(), Error> {
    let order_path = matches!(
        (ep.method, ep.path.trim_end_matches('/')),
        (Method::Post, "/api/v3/order")
            | (Method::Delete, "/api/v3/order")
            | (Method::Delete, "/api/v3/openOrders")
            | (Method::Post, "/api/v3/order/cancelReplace")
    );
    if ep.mutates || order_path {
        return Err(Error::Config(format!(
            "{} {} is reserved for the executor; send it an intent",
            ep.method.as_str(),
            ep.path
        )));
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(ep: &Endpoint, body: &str) -> Result<T, Error> {
    serde_json::from_str(body).map_err(|e| Error::Decode(format!("{} {}: {e}", ep.method.as_str(), ep.path)))
}

/// How a request gets past the rate gate.
#[derive(Debug, Clone, Copy)]
enum Admission {
    /// Wait as long as the gate says.
    Wait,
    /// Wait at most this long, and bound the request by what is left.
    Within(Duration),
    /// Go now within this share of the limits, or not at all.
    Share(u64),
}

/// The parts of a response the caller and the gate need.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

impl RestClient {
    pub fn new(config: RestConfig, clock: Arc<ServerClock>, gate: Arc<RateGate>) -> RestClient {
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .timeout_connect(Some(config.timeout.min(Duration::from_secs(5))))
            .max_redirects(0)
            .user_agent(concat!("binance-syncd/", env!("CARGO_PKG_VERSION")))
            .build();
        RestClient {
            agent: crate::tls::agent(agent_config.clone(), config.tls.clone()),
            order_agent: crate::tls::agent(agent_config, config.tls.clone()),
            base: config.base_url.trim_end_matches('/').to_string(),
            signer: config.api_secret.as_ref().map(Signer::new),
            api_key: config.api_key,
            recv_window_ms: config.recv_window_ms,
            clock_resync: config.clock_resync,
            clock,
            gate,
            desk_taken: std::sync::atomic::AtomicBool::new(false),
            order_lane: Lane::default(),
            background_lane: Lane::default(),
            metrics: Arc::default(),
        }
    }

    /// The one handle to the order endpoints, for the executor thread. `None` after the first
    /// call: a second holder would be a second path to the orders.
    pub(crate) fn order_desk(self: &Arc<Self>) -> Option<desk::OrderDesk> {
        let taken = self.desk_taken.swap(true, std::sync::atomic::Ordering::SeqCst);
        (!taken).then(|| desk::OrderDesk::new(self.clone()))
    }

    /// `recvWindow` of signed requests: how long after its `timestamp` the exchange may still
    /// accept a request that was delayed on the way.
    pub fn recv_window(&self) -> Duration {
        Duration::from_millis(self.recv_window_ms)
    }

    pub fn clock(&self) -> &Arc<ServerClock> {
        &self.clock
    }

    pub fn gate(&self) -> &Arc<RateGate> {
        &self.gate
    }

    /// The daemon's metrics registry: every thread that holds this client reports there.
    pub fn metrics(&self) -> &Arc<crate::registry::Metrics> {
        &self.metrics
    }

    /// Sends one request and returns the body of a 2xx answer. Signs if the endpoint needs it
    /// (and re-signs with a resynced clock after `-1021`, once).
    pub fn call(&self, ep: &Endpoint, params: &[(&str, &str)]) -> Result<String, Error> {
        refuse_orders(ep)?;
        self.call_with(ep, params, Admission::Wait, LaneId::Background)
    }

    /// [`call`](Self::call) and parse the JSON body into `T`.
    pub fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        ep: &Endpoint,
        params: &[(&str, &str)],
    ) -> Result<T, Error> {
        decode(ep, &self.call(ep, params)?)
    }

    /// One attempt bounded by `limit` in all: the gate wait and the request itself
    /// (shutdown's last request).
    pub fn call_within(&self, ep: &Endpoint, params: &[(&str, &str)], limit: Duration) -> Result<String, Error> {
        refuse_orders(ep)?;
        self.call_once(ep, params, Admission::Within(limit), LaneId::Background)
    }

    /// For background work (reconciliation): never waits in the gate. If the request may not go
    /// now within `share_pct` % of the limits, it is not sent and `RateLimited` says how long
    /// to wait, so the caller can do other work meanwhile (log stream fills) and try later.
    pub fn call_background<T: serde::de::DeserializeOwned>(
        &self,
        ep: &Endpoint,
        params: &[(&str, &str)],
        share_pct: u64,
    ) -> Result<T, Error> {
        refuse_orders(ep)?;
        decode(ep, &self.call_with(ep, params, Admission::Share(share_pct), LaneId::Background)?)
    }

    /// The clock discipline around [`call_once`](Self::call_once): resync a stale offset before
    /// signing, and after a `-1021` resync and re-sign, once. The resync goes through the gate
    /// the same way as the call itself, so a background call never waits there either, and on
    /// the same lane.
    fn call_with(
        &self,
        ep: &Endpoint,
        params: &[(&str, &str)],
        admission: Admission,
        lane: LaneId,
    ) -> Result<String, Error> {
        let signed = ep.security == Security::Signed;
        if signed && self.clock.is_stale(self.clock_resync) {
            // Clocks drift; re-measure before the offset is old enough to cost a -1021.
            if let Err(e) = self.sync_clock_with(admission, lane) {
                log::warn!("clock resync failed ({e}); signing with the last offset");
            }
        }
        let mut attempt = 0;
        loop {
            match self.call_once(ep, params, admission, lane) {
                Err(e) if signed && e.api_code() == Some(-1021) && attempt < TIMESTAMP_RETRIES => {
                    attempt += 1;
                    log::warn!(
                        "{} {}: -1021 timestamp outside recvWindow; resyncing clock",
                        ep.method.as_str(),
                        ep.path
                    );
                    self.sync_clock_with(admission, lane)?;
                }
                other => return other,
            }
        }
    }

    fn call_once(
        &self,
        ep: &Endpoint,
        params: &[(&str, &str)],
        admission: Admission,
        lane: LaneId,
    ) -> Result<String, Error> {
        if (ep.security != Security::None) && self.api_key.is_none() {
            return Err(Error::Config("BINANCE_API_KEY is needed for this request".into()));
        }
        let mut request_timeout = None;
        // The lane first, the gate second: a 429 that arrived while we waited for the lane
        // must be seen by the gate before we go.
        let start = std::time::Instant::now();
        let lane_limit = match admission {
            Admission::Wait => None,
            Admission::Within(limit) => Some(limit),
            Admission::Share(_) => Some(BACKGROUND_LANE_WAIT),
        };
        let (lane, agent) = match lane {
            LaneId::Orders => (&self.order_lane, &self.order_agent),
            LaneId::Background => (&self.background_lane, &self.agent),
        };
        let Some(_lane) = lane.enter(lane_limit, || self.gate.is_closed()) else {
            return match admission {
                Admission::Share(_) => Err(Error::RateLimited { retry_after: BACKGROUND_LANE_WAIT }),
                _ => Err(Error::Stopped),
            };
        };
        let pass = match admission {
            Admission::Wait => self.gate.acquire(ep.weight, ep.orders).ok_or(Error::Stopped)?,
            Admission::Within(limit) => {
                let left = limit.saturating_sub(start.elapsed());
                let pass = self.gate.acquire_within(ep.weight, ep.orders, Some(left)).ok_or(Error::Stopped)?;
                request_timeout = Some(limit.saturating_sub(start.elapsed()).max(Duration::from_millis(100)));
                pass
            }
            Admission::Share(pct) => match self.gate.try_acquire(ep.weight, ep.orders, pct) {
                Ok(pass) => pass,
                Err(Denied::Closed) => return Err(Error::Stopped),
                Err(Denied::Wait(retry_after)) => return Err(Error::RateLimited { retry_after }),
            },
        };
        let mut query = encode_params(params);
        if ep.security == Security::Signed {
            let Some(signer) = &self.signer else {
                return Err(Error::Config("BINANCE_API_SECRET is needed for this request".into()));
            };
            if !query.is_empty() {
                query.push('&');
            }
            // Taken after the gate: a wait there must not eat into the recvWindow.
            query.push_str(&format!("recvWindow={}&timestamp={}", self.recv_window_ms, self.clock.now_ms()));
            let signature = signer.sign(&query, "");
            query.push_str("&signature=");
            query.push_str(&signature);
        }
        let mut url = String::with_capacity(self.base.len() + ep.path.len() + query.len() + 1);
        url.push_str(&self.base);
        url.push_str(ep.path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        log::debug!("{} {}", ep.method.as_str(), ep.path);
        let reply = self.send(agent, ep, &url, request_timeout).map_err(|e| self.transport_error(ep, e))?;
        let status = reply.status;
        // Classified first: a 429 reaches the gate before a waiter can take the probe's turn.
        let result = self.classify(ep, reply);
        pass.answered(status);
        result
    }

    fn send(
        &self,
        agent: &ureq::Agent,
        ep: &Endpoint,
        url: &str,
        timeout: Option<Duration>,
    ) -> Result<Reply, ureq::Error> {
        // Public endpoints get no key: it has no business travelling where it is not needed.
        let key = match ep.security {
            Security::None => None,
            _ => self.api_key.as_ref().map(|k| k.expose()),
        };
        macro_rules! prepare {
            ($builder:expr) => {{
                let mut b = $builder;
                if let Some(k) = key {
                    b = b.header("X-MBX-APIKEY", k);
                }
                if let Some(t) = timeout {
                    b = b.config().timeout_global(Some(t)).build();
                }
                b
            }};
        }
        let mut response = match ep.method {
            Method::Get => prepare!(agent.get(url)).call()?,
            Method::Delete => prepare!(agent.delete(url)).call()?,
            Method::Post => prepare!(agent.post(url)).send_empty()?,
            Method::Put => prepare!(agent.put(url)).send_empty()?,
        };
        let status = response.status().as_u16();
        let mut retry_after = None;
        for (name, value) in response.headers() {
            let name = name.as_str();
            let Ok(value) = value.to_str() else { continue };
            if name.starts_with("x-mbx-used-weight-") || name.starts_with("x-mbx-order-count-") {
                self.gate.observe_header(name, value);
            } else if name == "retry-after" {
                retry_after = value.trim().parse::<u64>().ok().map(Duration::from_secs);
            }
        }
        let body = response.body_mut().read_to_string()?;
        Ok(Reply { status, retry_after, body })
    }

    fn transport_error(&self, ep: &Endpoint, e: ureq::Error) -> Error {
        use ureq::Timeout;
        // These fail before a byte of the request left: the order cannot exist.
        let before_send = match &e {
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::BadUri(_) => true,
            ureq::Error::Timeout(t) => matches!(t, Timeout::Resolve | Timeout::Connect),
            ureq::Error::Io(io) => {
                io.kind() == std::io::ErrorKind::ConnectionRefused || crate::tls::is_handshake_error(io)
            }
            // Only the handshake reports these (`tls::SharedTls`).
            ureq::Error::Rustls(_) | ureq::Error::Tls(_) => true,
            _ => false,
        };
        let what = match &e {
            ureq::Error::Io(io) => crate::tls::describe_io(io),
            ureq::Error::Rustls(e) => crate::tls::describe(e),
            ureq::Error::Timeout(t) => format!("timeout: {t:?}"),
            ureq::Error::HostNotFound => "host not found".into(),
            ureq::Error::ConnectionFailed => "connection failed".into(),
            ureq::Error::Tls(what) => format!("tls: {what}"),
            _ => "http client error".into(),
        };
        let what = format!("{} {}: {what}", ep.method.as_str(), ep.path);
        if ep.mutates && !before_send {
            Error::OutcomeUnknown(what)
        } else {
            Error::Transport(what)
        }
    }

    fn classify(&self, ep: &Endpoint, reply: Reply) -> Result<String, Error> {
        if (200..300).contains(&reply.status) {
            return Ok(reply.body);
        }
        #[derive(serde::Deserialize)]
        struct ApiError {
            code: i64,
            #[serde(default)]
            msg: String,
        }
        let parsed: Option<ApiError> = serde_json::from_str(&reply.body).ok();
        let code = parsed.as_ref().map(|p| p.code);
        match reply.status {
            429 => {
                let orders_only = code == Some(-1015);
                self.gate.on_429(reply.retry_after, orders_only);
                log::warn!("{} {}: http 429 (retry-after {:?})", ep.method.as_str(), ep.path, reply.retry_after);
                return Err(Error::RateLimited { retry_after: reply.retry_after.unwrap_or(Duration::ZERO) });
            }
            418 => {
                // Without Retry-After the ban's end is in the message: "IP banned until <ms>".
                let from_msg = parsed
                    .as_ref()
                    .and_then(|p| ban_end_ms(&p.msg))
                    .map(|until| Duration::from_millis(until.saturating_sub(self.clock.now_ms()).max(0) as u64));
                let retry_after = reply.retry_after.or(from_msg);
                self.gate.on_418(retry_after);
                return Err(Error::Banned { retry_after: retry_after.unwrap_or(Duration::from_secs(120)) });
            }
            403 => {
                self.gate.on_403();
                return Err(Error::RateLimited { retry_after: Duration::from_secs(300) });
            }
            _ => {}
        }
        let unknown_code = matches!(code, Some(-1000 | -1001 | -1006 | -1007));
        if ep.mutates && (reply.status >= 500 || unknown_code) {
            return Err(Error::OutcomeUnknown(format!(
                "{} {}: http {} {}",
                ep.method.as_str(),
                ep.path,
                reply.status,
                code.map(|c| c.to_string()).unwrap_or_default()
            )));
        }
        match parsed {
            // cancelReplace says which half failed, and why, in `data` (-2021/-2022): keep the
            // reason of each failed half in the message.
            Some(p) if matches!(p.code, -2021 | -2022) => {
                Err(Error::Api { status: reply.status, code: p.code, msg: with_replace_detail(p.msg, &reply.body) })
            }
            Some(p) => Err(Error::Api { status: reply.status, code: p.code, msg: p.msg }),
            None => Err(Error::Api {
                status: reply.status,
                code: 0,
                msg: format!("non-JSON body of {} bytes", reply.body.len()),
            }),
        }
    }

    /// Measures the server-time offset from three `GET /api/v3/time` round trips and installs
    /// the best. Returns the offset in ms.
    pub fn sync_clock(&self) -> Result<i64, Error> {
        self.sync_clock_with(Admission::Wait, LaneId::Background)
    }

    fn sync_clock_with(&self, admission: Admission, lane: LaneId) -> Result<i64, Error> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Time {
            server_time: i64,
        }
        let mut samples = Vec::with_capacity(3);
        for _ in 0..3 {
            let sent_local = local_ms();
            let t: Time = decode(&TIME, &self.call_once(&TIME, &[], admission, lane)?)?;
            samples.push(TimeSample { sent_local, server: t.server_time, received_local: local_ms() });
        }
        let offset = ServerClock::estimate(&samples).ok_or_else(|| Error::Decode("no usable time sample".into()))?;
        let previous = self.clock.offset_ms();
        self.clock.set_offset(offset);
        if (offset - previous).abs() > 1000 {
            log::info!("clock offset to the exchange is now {offset} ms (was {previous} ms)");
        }
        Ok(offset)
    }

    /// Reads `exchangeInfo` for `symbols` (all symbols if empty) and installs its rate limits
    /// in the gate.
    pub fn exchange_info(&self, symbols: &[String]) -> Result<ExchangeRules, Error> {
        self.exchange_info_with(symbols, Admission::Wait, LaneId::Background)
    }

    /// [`exchange_info`](Self::exchange_info) for periodic refreshes: never waits in the gate.
    pub fn exchange_info_background(&self, symbols: &[String], share_pct: u64) -> Result<ExchangeRules, Error> {
        self.exchange_info_with(symbols, Admission::Share(share_pct), LaneId::Background)
    }

    fn exchange_info_with(
        &self,
        symbols: &[String],
        admission: Admission,
        lane: LaneId,
    ) -> Result<ExchangeRules, Error> {
        let list;
        let params: Vec<(&str, &str)> = match symbols {
            [] => vec![],
            [one] => vec![("symbol", one.as_str())],
            many => {
                list = serde_json::to_string(many).map_err(|e| Error::Decode(e.to_string()))?;
                vec![("symbols", list.as_str())]
            }
        };
        let body: serde_json::Value =
            decode(&EXCHANGE_INFO, &self.call_with(&EXCHANGE_INFO, &params, admission, lane)?)?;
        let rules = ExchangeRules::from_json(&body).map_err(Error::Decode)?;
        if rules.rate_limits.is_empty() {
            log::warn!("exchangeInfo lists no rate limits; budgeting with Binance.US's older, lower ones");
            self.gate.set_limits(crate::ratelimit::fallback_limits());
        } else {
            self.gate.set_limits(rules.rate_limits.clone());
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::{dribble, server};

    /// A client for `https://` at `addr` with a 1 s budget for connect and handshake.
    fn https_client(addr: std::net::SocketAddr) -> RestClient {
        let clock = Arc::new(ServerClock::new());
        let gate = Arc::new(RateGate::new(crate::ratelimit::fallback_limits(), clock.clone()));
        let config = RestConfig {
            base_url: format!("https://{addr}"),
            api_key: Some(Secret::new("key")),
            api_secret: Some(Secret::new("secret")),
            recv_window_ms: 5000,
            timeout: Duration::from_secs(1),
            clock_resync: Duration::from_secs(600),
            tls: crate::tls::client_config(&[]).unwrap(),
        };
        RestClient::new(config, clock, gate)
    }

    fn place(rest: &RestClient) -> Result<String, Error> {
        rest.call_once(&ORDER_NEW, &[("symbol", "BTCUSD"), ("side", "BUY")], Admission::Wait, LaneId::Orders)
    }

    #[test]
    fn an_order_whose_handshake_fails_was_not_sent() {
        // Accepted and closed: the handshake reads end of file.
        let rest = https_client(server(drop));
        match place(&rest) {
            Err(Error::Transport(what)) => assert!(what.contains("tls handshake"), "{what}"),
            other => panic!("a handshake failure must count as not sent: {other:?}"),
        }
    }

    #[test]
    fn an_order_whose_handshake_times_out_was_not_sent_and_says_timeout() {
        let rest = https_client(server(|tcp| {
            let _ = dribble(tcp, Duration::from_secs(5)).join();
        }));
        let started = std::time::Instant::now();
        match place(&rest) {
            Err(Error::Transport(what)) => assert!(what.contains("timeout"), "{what}"),
            other => panic!("a handshake timeout must count as not sent: {other:?}"),
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "the 1 s connect budget ran {took:?}");
    }

    #[test]
    fn the_lane_admits_one_request_at_a_time() {
        let lane = Lane::default();
        let first = lane.enter(None, || false).unwrap();
        assert!(lane.enter(Some(Duration::from_millis(30)), || false).is_none(), "busy: the second gives up");
        assert!(lane.enter(None, || true).is_none(), "shutdown ends a wait");
        drop(first);
        assert!(lane.enter(Some(Duration::ZERO), || false).is_some(), "free again");
    }

    #[test]
    fn public_calls_refuse_order_endpoints_however_spelled() {
        for ep in [ORDER_NEW, ORDER_CANCEL, ORDER_CANCEL_REPLACE] {
            assert!(matches!(refuse_orders(&ep), Err(Error::Config(_))), "{ep:?}");
        }
        // A hand-made endpoint that claims not to mutate is refused by its path.
        let disguised = ep(Method::Post, "/api/v3/order", Security::Signed, 1);
        assert!(refuse_orders(&disguised).is_err());
        assert!(refuse_orders(&ep(Method::Delete, "/api/v3/openOrders/", Security::Signed, 1)).is_err());
        for fine in [ORDER_QUERY, OPEN_ORDERS, ACCOUNT, MY_TRADES] {
            assert!(refuse_orders(&fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn ban_end_is_read_from_the_documented_message() {
        let msg = "Way too much request weight used; IP banned until 1659146400000. Please use WebSocket Streams for live updates to avoid bans.";
        assert_eq!(ban_end_ms(msg), Some(1659146400000));
        assert_eq!(ban_end_ms("Too many requests queued."), None);
    }

    #[test]
    fn encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode_params(&[("symbol", "BTCUSD"), ("price", "0.1")]), "symbol=BTCUSD&price=0.1");
        assert_eq!(encode_params(&[("symbols", "[\"A\",\"B\"]")]), "symbols=%5B%22A%22%2C%22B%22%5D");
        // The documented V4 vector's symbol, UTF-8 percent-encoded.
        assert_eq!(encode_params(&[("symbol", "１２３")]), "symbol=%EF%BC%91%EF%BC%92%EF%BC%93");
    }
}
