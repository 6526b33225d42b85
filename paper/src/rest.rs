//! Binance.US REST semantics for the paper exchange: routing, parameters, authentication,
//! weights and limits, error codes, and acting out the REST fault knobs of [`super::control`].
//!
//! Strict where Binance is strict (the Binance.US API docs, <https://docs.binance.us/>): the signature is verified over
//! the raw query and body as received; checks run in the documented order (API key → timestamp
//! → timing → signature → parameters → precision → filters → order rate → engine); every
//! response carries the usage headers; a request inside a 429 hold is answered 418.

use super::control::{rest_delay, ArmedFault, OrderFault, RestFaults};
use super::engine::{ApiError, Engine, NewOrder, Origin, RespType, TimeInForce};
use super::http::{Outcome, Request, Response};
use super::Shared;
use crate::lock::LockAnyway;
use crate::order::{OrderType, Side};
use binance_syncd_plugin::Decimal;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::thread;
use std::time::Duration;

/// Which weight table the exchange charges (each endpoint's "Weight" in the Binance.US docs,
/// before and after the 2026-08-31 upgrade in its changelog).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightProfile {
    /// Binance.US before 2026-08-31.
    Us2023,
    /// Binance.US after 2026-08-31 (the Binance.com column).
    Us2026,
}

impl WeightProfile {
    pub fn parse(s: &str) -> Option<WeightProfile> {
        match s {
            "us-2023" => Some(WeightProfile::Us2023),
            "us-2026" => Some(WeightProfile::Us2026),
            _ => None,
        }
    }
}

/// Limits and credentials of the REST side.
#[derive(Debug, Clone)]
pub struct RestSettings {
    /// API key → secret.
    pub credentials: Vec<(String, crate::sign::Secret)>,
    pub weight_limit: u64,
    pub orders_per_10s: u64,
    pub orders_per_day: u64,
    pub weights: WeightProfile,
    /// First ban length; it doubles with each ban, up to 3 days.
    pub ban_base: Duration,
    /// Requests one 429 hold tolerates before a ban: each is answered 429 with what is left of
    /// the hold. 0 (the default): the first request inside a hold is banned. Binance bans for
    /// "continuing after 429s" without saying after how many; a client that keeps two requests
    /// in flight can have one on the wire when the other's 429 comes, and a test of such a
    /// client sets 1 and counts `in_hold` in the report.
    pub hold_grace: u64,
}

#[derive(Debug, Default)]
struct IpRate {
    minute: i64,
    used: u64,
    hold_until: i64,
    /// Requests that arrived inside the current hold.
    in_hold: u64,
    banned_until: i64,
    bans: u32,
}

#[derive(Debug, Default)]
pub struct RateState {
    ips: HashMap<IpAddr, IpRate>,
    order_windows: [(i64, u64); 2],
    pub http_429: u64,
    pub http_418: u64,
    /// Requests that arrived inside a 429 hold (tolerated or banned).
    pub in_hold: u64,
    pub peak_weight: u64,
    pub requests: u64,
}

/// What an order request answers under an injected fault.
fn fault_answer(fault: OrderFault) -> Dispatched {
    match fault {
        OrderFault::Status503 => Dispatched::Raw(
            503,
            json!({"code": -1007, "msg": "Timeout waiting for response from backend server. Send status unknown; execution status unknown."}).to_string(),
        ),
        OrderFault::Status504 => Dispatched::Raw(504, "<html>504 Gateway Time-out</html>".into()),
        OrderFault::Reset => Dispatched::Hangup,
    }
}

/// One error the exchange returned, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorRecord {
    pub time_ms: i64,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub code: i64,
    pub msg: String,
    pub why: String,
}

const MAX_ERROR_RECORDS: usize = 20_000;
const DECIMAL_PATTERN: &str = "^([0-9]{1,20})(\\.[0-9]{1,20})?$";
const INT_PATTERN: &str = "^[0-9]{1,20}$";
const CLIENT_ID_PATTERN: &str = "^[a-zA-Z0-9-_]{1,36}$";

/// The parameters of one request, decoded, with query values winning over body values.
struct Params {
    list: Vec<(String, String)>,
}

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.list.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|(k, _)| k.as_str())
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn decimal(&self, name: &str) -> Result<Option<Decimal>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("") => Err(ApiError::bad(-1105, format!("Parameter '{name}' was empty."))),
            Some(v) => {
                let ok = !v.starts_with('-') && v.parse::<Decimal>().is_ok();
                if !ok {
                    return Err(ApiError::bad(
                        -1100,
                        format!("Illegal characters found in parameter '{name}'; legal range is '{DECIMAL_PATTERN}'."),
                    ));
                }
                Ok(v.parse().ok())
            }
        }
    }

    fn uint(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("") => Err(ApiError::bad(-1105, format!("Parameter '{name}' was empty."))),
            Some(v) if v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => {
                v.parse::<u64>().map(Some).map_err(|_| ApiError::bad(-1108, format!("Parameter '{name}' overflowed.")))
            }
            Some(_) => Err(ApiError::bad(
                -1100,
                format!("Illegal characters found in parameter '{name}'; legal range is '{INT_PATTERN}'."),
            )),
        }
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::mandatory(name)),
        }
    }

    fn client_id(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => {
                let ok = (1..=36).contains(&v.len())
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    return Err(ApiError::bad(
                        -1100,
                        format!(
                            "Illegal characters found in parameter '{name}'; legal range is '{CLIENT_ID_PATTERN}'."
                        ),
                    ));
                }
                Ok(Some(v.to_string()))
            }
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Splits `a=1&b=2` into decoded pairs; a name twice in one part is `-1101`.
fn split_params(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut list: Vec<(String, String)> = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k).ok_or_else(|| ApiError::bad(-1100, "Illegal characters found in a parameter."))?;
        let v = percent_decode(v)
            .ok_or_else(|| ApiError::bad(-1100, format!("Illegal characters found in parameter '{k}'.")))?;
        if list.iter().any(|(name, _)| *name == k) {
            return Err(ApiError::bad(-1101, "Duplicate values for a parameter detected."));
        }
        list.push((k, v));
    }
    Ok(list)
}

fn body_is_form(req: &Request) -> bool {
    match req.header("content-type") {
        None => true,
        Some(ct) => ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"),
    }
}

fn parse_params(req: &Request) -> Result<Params, ApiError> {
    let mut list = split_params(&req.query)?;
    if body_is_form(req) {
        for (k, v) in split_params(&req.body)? {
            // The query string wins when both carry a name ("General API Information").
            if !list.iter().any(|(name, _)| *name == k) {
                list.push((k, v));
            }
        }
    }
    Ok(Params { list })
}

/// The raw text that was signed: query and body with their `signature=` pair removed.
fn signed_payload(req: &Request) -> (String, String, Option<String>) {
    let mut signature = None;
    let mut strip = |raw: &str| -> String {
        raw.split('&')
            .filter(|p| {
                if let Some(sig) = p.strip_prefix("signature=") {
                    signature.get_or_insert_with(|| sig.to_string());
                    false
                } else {
                    true
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    };
    let query = strip(&req.query);
    let body = if body_is_form(req) { strip(&req.body) } else { String::new() };
    (query, body, signature)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sec {
    None,
    ApiKey,
    Signed,
}

struct Route {
    sec: Sec,
    allowed: &'static [&'static str],
    /// More allowed names (cancelReplace = an order's parameters + its own).
    also: &'static [&'static str],
}

impl Route {
    fn allows(&self, name: &str) -> bool {
        self.allowed.contains(&name) || self.also.contains(&name)
    }
}

const ORDER: &[&str] = &[
    "symbol",
    "side",
    "type",
    "timeInForce",
    "quantity",
    "quoteOrderQty",
    "price",
    "newClientOrderId",
    "newOrderRespType",
    "selfTradePreventionMode",
    "stopPrice",
    "trailingDelta",
    "icebergQty",
    "strategyId",
    "strategyType",
];

const CANCEL_REPLACE: &[&str] =
    &["cancelReplaceMode", "cancelOrderId", "cancelOrigClientOrderId", "cancelNewClientOrderId", "cancelRestrictions"];

fn route(method: &str, path: &str) -> Option<Route> {
    let r = |sec, allowed| Some(Route { sec, allowed, also: &[] });
    match (method, path) {
        ("GET", "/api/v3/ping") => r(Sec::None, &[]),
        ("GET", "/api/v3/time") => r(Sec::None, &[]),
        ("GET", "/api/v3/exchangeInfo") => {
            r(Sec::None, &["symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"])
        }
        ("GET", "/api/v3/avgPrice") => r(Sec::None, &["symbol"]),
        ("GET", "/api/v3/ticker/bookTicker") => r(Sec::None, &["symbol", "symbols"]),
        ("GET", "/api/v3/ticker/price") => r(Sec::None, &["symbol", "symbols"]),
        ("GET", "/api/v3/depth") => r(Sec::None, &["symbol", "limit"]),
        ("GET", "/api/v3/account") => r(Sec::Signed, &["omitZeroBalances"]),
        ("POST", "/api/v3/order") => r(Sec::Signed, ORDER),
        ("POST", "/api/v3/order/test") => {
            Some(Route { sec: Sec::Signed, allowed: ORDER, also: &["computeCommissionRates"] })
        }
        ("GET", "/api/v3/order") => r(Sec::Signed, &["symbol", "orderId", "origClientOrderId"]),
        ("DELETE", "/api/v3/order") => {
            r(Sec::Signed, &["symbol", "orderId", "origClientOrderId", "newClientOrderId", "cancelRestrictions"])
        }
        ("GET", "/api/v3/openOrders") => r(Sec::Signed, &["symbol"]),
        ("DELETE", "/api/v3/openOrders") => r(Sec::Signed, &["symbol"]),
        ("GET", "/api/v3/allOrders") => r(Sec::Signed, &["symbol", "orderId", "startTime", "endTime", "limit"]),
        ("GET", "/api/v3/myTrades") => {
            r(Sec::Signed, &["symbol", "orderId", "startTime", "endTime", "fromId", "limit"])
        }
        ("POST", "/api/v3/order/cancelReplace") => {
            Some(Route { sec: Sec::Signed, allowed: ORDER, also: CANCEL_REPLACE })
        }
        ("GET", "/api/v3/ticker/24hr") => r(Sec::None, &["symbol", "symbols", "type"]),
        ("GET", "/api/v3/rateLimit/order") => r(Sec::Signed, &[]),
        ("POST" | "PUT" | "DELETE", "/api/v3/userDataStream") => r(Sec::ApiKey, &["listenKey"]),
        _ => None,
    }
}

fn weight(profile: WeightProfile, method: &str, path: &str, params: &Params) -> u64 {
    let us23 = profile == WeightProfile::Us2023;
    let pick = |old: u64, new: u64| if us23 { old } else { new };
    let has = |n: &str| params.get(n).is_some();
    match (method, path) {
        ("GET", "/api/v3/exchangeInfo") => pick(10, 20),
        ("GET", "/api/v3/avgPrice") => pick(1, 2),
        ("GET", "/api/v3/ticker/bookTicker") | ("GET", "/api/v3/ticker/price") => {
            if has("symbol") {
                pick(1, 2)
            } else {
                pick(2, 4)
            }
        }
        ("GET", "/api/v3/ticker/24hr") => {
            if has("symbol") {
                pick(1, 2)
            } else {
                pick(40, 80)
            }
        }
        ("GET", "/api/v3/depth") => {
            let limit = params.get("limit").and_then(|l| l.parse::<u64>().ok()).unwrap_or(100);
            let tier = match limit {
                0..=100 => 0,
                101..=500 => 1,
                501..=1000 => 2,
                _ => 3,
            };
            if us23 {
                [1, 5, 10, 50][tier]
            } else {
                [5, 25, 50, 250][tier]
            }
        }
        ("GET", "/api/v3/account") => pick(10, 20),
        ("GET", "/api/v3/order") => pick(2, 4),
        ("GET", "/api/v3/openOrders") => {
            if has("symbol") {
                pick(3, 6)
            } else {
                pick(40, 80)
            }
        }
        ("GET", "/api/v3/allOrders") => pick(10, 20),
        ("GET", "/api/v3/myTrades") => {
            if has("orderId") {
                pick(10, 5)
            } else {
                pick(10, 20)
            }
        }
        ("GET", "/api/v3/rateLimit/order") => pick(20, 40),
        (_, "/api/v3/userDataStream") => pick(1, 2),
        _ => 1,
    }
}

fn error_body(e: &ApiError) -> String {
    json!({"code": e.code, "msg": e.msg}).to_string()
}

impl Shared {
    fn record_error(&self, req: &Request, e: &ApiError, why: String) {
        let mut r = self.errors.lock_anyway();
        if r.len() < MAX_ERROR_RECORDS {
            r.push(ErrorRecord {
                time_ms: self.clock.now_ms(),
                method: req.method.clone(),
                path: req.path.clone(),
                status: e.status,
                code: e.code,
                msg: e.msg.clone(),
                why,
            });
        }
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock_anyway()
    }

    /// Charges the request's weight to its IP and decides 429/418. Returns the used weight.
    fn charge(&self, req: &Request, weight: u64) -> Result<u64, (ApiError, Option<u64>, u64)> {
        let now = self.clock.now_ms();
        let mut rate = self.rate.lock_anyway();
        rate.requests += 1;
        let limit = self.rest.weight_limit;
        let burst = {
            let mut f = self.rest_faults.lock_anyway();
            match &mut f.burst_429 {
                Some((n, retry)) if *n > 0 => {
                    *n -= 1;
                    Some(*retry)
                }
                _ => None,
            }
        };
        let ip = rate.ips.entry(req.peer).or_default();
        let minute = now.div_euclid(60_000);
        if ip.minute != minute {
            ip.minute = minute;
            ip.used = 0;
        }
        if ip.banned_until > now {
            let until = ip.banned_until;
            let used = ip.used;
            rate.http_418 += 1;
            let msg = format!(
                "Way too much request weight used; IP banned until {until}. Please use WebSocket Streams for live updates to avoid bans."
            );
            return Err((ApiError::new(418, -1003, msg), Some(((until - now + 999) / 1000) as u64), used));
        }
        if ip.hold_until > now {
            ip.in_hold += 1;
            if ip.in_hold <= self.rest.hold_grace {
                let (until, used) = (ip.hold_until, ip.used);
                rate.in_hold += 1;
                rate.http_429 += 1;
                let msg = format!("Too much request weight used; current limit is {limit} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.");
                return Err((ApiError::new(429, -1003, msg), Some(((until - now + 999) / 1000).max(1) as u64), used));
            }
            // Kept sending inside a 429 hold: that is what Binance bans for.
            ip.bans += 1;
            let base = self.rest.ban_base.as_millis() as i64;
            let ban = base.saturating_mul(1i64 << (ip.bans - 1).min(20)).min(3 * 86_400_000);
            ip.banned_until = now + ban;
            let until = ip.banned_until;
            let used = ip.used;
            rate.in_hold += 1;
            rate.http_418 += 1;
            let msg = format!(
                "Way too much request weight used; IP banned until {until}. Please use WebSocket Streams for live updates to avoid bans."
            );
            return Err((ApiError::new(418, -1003, msg), Some(((ban + 999) / 1000) as u64), used));
        }
        ip.used += weight;
        let used = ip.used;
        rate.peak_weight = rate.peak_weight.max(used);
        let ip = rate.ips.entry(req.peer).or_default();
        if let Some(retry) = burst {
            ip.hold_until = now + retry as i64 * 1000;
            ip.in_hold = 0;
            rate.http_429 += 1;
            let msg = format!("Too much request weight used; current limit is {limit} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.");
            return Err((ApiError::new(429, -1003, msg), Some(retry), used));
        }
        if used > limit {
            let window_end = (minute + 1) * 60_000;
            ip.hold_until = window_end;
            ip.in_hold = 0;
            rate.http_429 += 1;
            let msg = format!("Too much request weight used; current limit is {limit} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.");
            return Err((ApiError::new(429, -1003, msg), Some(((window_end - now + 999) / 1000).max(1) as u64), used));
        }
        Ok(used)
    }

    /// Counts one new order against the account's 10 s and 1 day windows.
    fn count_order(&self) -> Result<(u64, u64), (ApiError, u64)> {
        let now = self.clock.now_ms();
        let mut rate = self.rate.lock_anyway();
        let specs =
            [(10_000i64, self.rest.orders_per_10s, "10 SECOND"), (86_400_000, self.rest.orders_per_day, "1 DAY")];
        for (i, (len, limit, name)) in specs.iter().enumerate() {
            let idx = now.div_euclid(*len);
            let w = &mut rate.order_windows[i];
            if w.0 != idx {
                *w = (idx, 0);
            }
            if w.1 + 1 > *limit {
                let retry = (((idx + 1) * len - now + 999) / 1000).max(1) as u64;
                return Err((
                    ApiError::new(
                        429,
                        -1015,
                        format!("Too many new orders; current limit is {limit} orders per {name}."),
                    ),
                    retry,
                ));
            }
        }
        for w in rate.order_windows.iter_mut() {
            w.1 += 1;
        }
        Ok((rate.order_windows[0].1, rate.order_windows[1].1))
    }

    pub fn rate_limits_json(&self) -> Value {
        json!([
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.rest.weight_limit},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.rest.orders_per_10s},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": self.rest.orders_per_day},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000}
        ])
    }
}

/// The Binance API on the REST port: every request but `/paper/*` (see `paper::route`).
pub fn handle(shared: &Shared, req: Request) -> Outcome {
    // A far exchange: the request arrives late, and so does the answer. Each connection has its
    // own thread, so the wait costs nobody else anything.
    let delay = rest_delay(shared, &req);
    thread::sleep(delay);
    shared.rest_hold.wait(&req.path);
    let outcome = answer(shared, req);
    thread::sleep(delay);
    outcome
}

fn answer(shared: &Shared, req: Request) -> Outcome {
    let params = match parse_params(&req) {
        Ok(p) => p,
        Err(e) => {
            shared.record_error(&req, &e, "parameters could not be parsed".into());
            return Outcome::Respond(Response::json(e.status, error_body(&e)));
        }
    };
    let Some(route) = route(&req.method, &req.path) else {
        // Not -1000: clients read that as "unknown outcome" and would look for an order.
        let e = ApiError::new(404, -1020, "This operation is not supported.");
        shared.record_error(&req, &e, format!("no route for {} {}", req.method, req.path));
        return Outcome::Respond(Response::json(404, error_body(&e)));
    };
    let w = weight(shared.rest.weights, &req.method, &req.path, &params);
    let used = match shared.charge(&req, w) {
        Ok(used) => used,
        Err((e, retry, used)) => {
            shared.record_error(&req, &e, format!("weight {used} after this request"));
            let mut r = Response::json(e.status, error_body(&e));
            r.headers.push(("X-MBX-USED-WEIGHT-1M".into(), used.to_string()));
            r.headers.push(("X-MBX-USED-WEIGHT".into(), used.to_string()));
            if let Some(s) = retry {
                r.headers.push(("Retry-After".into(), s.to_string()));
            }
            return Outcome::Respond(r);
        }
    };
    let mut extra_headers = Vec::new();
    let result = dispatch(shared, &req, &route, &params, &mut extra_headers);
    let mut response = match result {
        Ok(Dispatched::Body(v)) => Response::json(200, v.to_string()),
        Ok(Dispatched::Hangup) => return Outcome::Hangup,
        Ok(Dispatched::Raw(status, body)) => Response::json(status, body),
        Err((e, why)) => {
            shared.record_error(&req, &e, why);
            Response::json(e.status, error_body(&e))
        }
    };
    response.headers.push(("X-MBX-USED-WEIGHT-1M".into(), used.to_string()));
    response.headers.push(("X-MBX-USED-WEIGHT".into(), used.to_string()));
    response.headers.extend(extra_headers);
    Outcome::Respond(response)
}

enum Dispatched {
    Body(Value),
    /// A response that is not the endpoint's usual JSON (faults).
    Raw(u16, String),
    Hangup,
}

type Failed = (ApiError, String);

fn fail(e: ApiError) -> Failed {
    let why = e.msg.clone();
    (e, why)
}

fn authenticate(shared: &Shared, req: &Request, route: &Route, params: &Params) -> Result<(), Failed> {
    if route.sec == Sec::None {
        return Ok(());
    }
    let key = req.header("x-mbx-apikey").unwrap_or("");
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err((ApiError::new(401, -2014, "API-key format invalid."), "missing or malformed X-MBX-APIKEY".into()));
    }
    let Some((_, secret)) = shared.rest.credentials.iter().find(|(k, _)| k == key) else {
        return Err((
            ApiError::new(401, -2015, "Invalid API-key, IP, or permissions for action."),
            "unknown API key".into(),
        ));
    };
    if route.sec == Sec::ApiKey {
        let expected = if req.method == "POST" { 0 } else { 1 };
        if params.len() > expected {
            let e = ApiError::bad(
                -1101,
                format!("Too many parameters; expected '{expected}' and received '{}'.", params.len()),
            );
            let names: Vec<&str> = params.names().collect();
            return Err((e, format!("userDataStream takes the API key only; got {names:?}")));
        }
        return Ok(());
    }
    // SIGNED: timestamp → timing → signature.
    let ts = params.get("timestamp").filter(|t| !t.is_empty()).ok_or_else(|| fail(ApiError::mandatory("timestamp")))?;
    let ts: i64 = ts.parse().map_err(|_| {
        fail(ApiError::bad(
            -1100,
            format!("Illegal characters found in parameter 'timestamp'; legal range is '{INT_PATTERN}'."),
        ))
    })?;
    let recv_window = match params.uint("recvWindow").map_err(fail)? {
        Some(w) if w > 60_000 => {
            return Err(fail(ApiError::bad(-1131, "recvWindow must be less than 60000")));
        }
        Some(w) => w as i64,
        None => 5000,
    };
    let now = shared.clock.now_ms();
    if ts >= now + 1000 {
        return Err((
            ApiError::bad(-1021, "Timestamp for this request was 1000ms ahead of the server's time."),
            format!("timestamp is {} ms ahead of server time", ts - now),
        ));
    }
    if now - ts > recv_window {
        return Err((
            ApiError::bad(-1021, "Timestamp for this request is outside of the recvWindow."),
            format!("timestamp is {} ms behind server time; recvWindow {recv_window}", now - ts),
        ));
    }
    let (query, body, signature) = signed_payload(req);
    let Some(signature) = signature else {
        return Err(fail(ApiError::mandatory("signature")));
    };
    if !crate::sign::verify(secret, &query, &body, &signature) {
        return Err((
            ApiError::bad(-1022, "Signature for this request is not valid."),
            "HMAC mismatch over query+body".into(),
        ));
    }
    Ok(())
}

fn check_params(route: &Route, params: &Params) -> Result<(), Failed> {
    const CONTROL: [&str; 3] = ["timestamp", "recvWindow", "signature"];
    let known = |n: &str| route.allows(n) || (route.sec == Sec::Signed && CONTROL.contains(&n));
    let unknown: Vec<&str> = params.names().filter(|n| !known(n)).collect();
    if !unknown.is_empty() {
        let read = params.len() - unknown.len();
        return Err((
            ApiError::bad(
                -1104,
                format!(
                    "Not all sent parameters were read; read '{read}' parameter(s) but was sent '{}'.",
                    params.len()
                ),
            ),
            format!("unknown parameters {unknown:?}"),
        ));
    }
    Ok(())
}

fn dispatch(
    shared: &Shared,
    req: &Request,
    route: &Route,
    params: &Params,
    headers: &mut Vec<(String, String)>,
) -> Result<Dispatched, Failed> {
    authenticate(shared, req, route, params)?;
    check_params(route, params)?;
    let now = shared.clock.now_ms();
    let body = |v: Value| Ok(Dispatched::Body(v));
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/v3/ping") => body(json!({})),
        ("GET", "/api/v3/time") => body(json!({"serverTime": now})),
        ("GET", "/api/v3/exchangeInfo") => {
            let limits = shared.rate_limits_json();
            let engine = shared.engine();
            let symbols = symbol_list_unlocked(&engine, params)?;
            engine.exchange_info(now, symbols.as_deref(), limits).map(Dispatched::Body).map_err(fail)
        }
        ("GET", "/api/v3/avgPrice") => {
            let symbol = params.required("symbol").map_err(fail)?;
            shared.engine().avg_price(symbol, now).map(Dispatched::Body).map_err(fail)
        }
        ("GET", "/api/v3/ticker/bookTicker") | ("GET", "/api/v3/ticker/price") => tickers(shared, req, params),
        ("GET", "/api/v3/depth") => {
            let symbol = params.required("symbol").map_err(fail)?;
            let limit = params.uint("limit").map_err(fail)?.unwrap_or(100) as usize;
            shared.engine().depth(symbol, limit).map(Dispatched::Body).map_err(fail)
        }
        ("GET", "/api/v3/account") => body(shared.engine().account(now)),
        ("POST", "/api/v3/order") | ("POST", "/api/v3/order/test") => place_order(shared, req, params, now, headers),
        ("GET", "/api/v3/order") => {
            let symbol = params.required("symbol").map_err(fail)?;
            let order_id = params.uint("orderId").map_err(fail)?;
            let orig = params.get("origClientOrderId");
            if order_id.is_none() && orig.is_none() {
                return Err(fail(ApiError::bad(
                    -1102,
                    "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
                )));
            }
            let found = shared.engine().query_order(symbol, order_id, orig).map_err(fail)?;
            let mut faults = shared.rest_faults.lock_anyway();
            if faults.lookup_lag > 0 {
                faults.lookup_lag -= 1;
                return Err(fail(ApiError::bad(-2013, "Order does not exist.")));
            }
            Ok(Dispatched::Body(found))
        }
        ("DELETE", "/api/v3/order") => cancel_order(shared, params, now),
        ("GET", "/api/v3/openOrders") => {
            let symbol = params.get("symbol");
            shared.engine().open_orders(symbol).map(Dispatched::Body).map_err(fail)
        }
        ("DELETE", "/api/v3/openOrders") => {
            let symbol = params.required("symbol").map_err(fail)?;
            shared.engine().cancel_all(symbol, now).map(Dispatched::Body).map_err(fail)
        }
        ("GET", "/api/v3/allOrders") => {
            let symbol = params.required("symbol").map_err(fail)?;
            let limit = limit_param(params)?;
            let (start, end) = time_range(params)?;
            let order_id = params.uint("orderId").map_err(fail)?;
            shared.engine().all_orders(symbol, order_id, start, end, limit).map(Dispatched::Body).map_err(fail)
        }
        ("GET", "/api/v3/myTrades") => my_trades(shared, params),
        ("GET", "/api/v3/rateLimit/order") => {
            let rate = shared.rate.lock_anyway();
            body(json!([
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": shared.rest.orders_per_10s, "count": rate.order_windows[0].1},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": shared.rest.orders_per_day, "count": rate.order_windows[1].1}
            ]))
        }
        ("POST", "/api/v3/order/cancelReplace") => cancel_replace(shared, params, now, headers),
        ("GET", "/api/v3/ticker/24hr") => ticker_24hr(shared, params, now),
        ("POST", "/api/v3/userDataStream") => body(json!({"listenKey": shared.engine().listen_key_create(now)})),
        ("PUT", "/api/v3/userDataStream") => {
            let key = params.required("listenKey").map_err(fail)?;
            shared.engine().listen_key_keepalive(key, now).map_err(fail)?;
            body(json!({}))
        }
        ("DELETE", "/api/v3/userDataStream") => {
            let key = params.required("listenKey").map_err(fail)?;
            shared.engine().listen_key_close(key, now).map_err(fail)?;
            body(json!({}))
        }
        _ => Err(fail(ApiError::new(404, -1020, "This operation is not supported."))),
    }
}

/// `POST /api/v3/order` and `order/test`: validated in full (test mode) before the order is
/// counted and before an injected fault fires, so a rejected order never consumes a fault.
fn place_order(
    shared: &Shared,
    req: &Request,
    params: &Params,
    now: i64,
    headers: &mut Vec<(String, String)>,
) -> Result<Dispatched, Failed> {
    let test = req.path.ends_with("/test");
    let order = parse_new_order(params, test)?;
    let mut check = order.clone();
    check.test = true;
    shared.engine().new_order(check, now, Origin::Api).map_err(fail)?;
    if test {
        return Ok(Dispatched::Body(json!({})));
    }
    let (c10, c1d) = match shared.count_order() {
        Ok(counts) => counts,
        Err((e, retry)) => {
            headers.push(("Retry-After".into(), retry.to_string()));
            return Err(fail(e));
        }
    };
    if let Some(lost) = take_fault(shared, |f| &mut f.order_fault, true) {
        return Ok(fault_answer(lost));
    }
    let fault = take_fault(shared, |f| &mut f.order_fault, false);
    let result = shared.engine().new_order(order, now, Origin::Api).map_err(fail)?;
    headers.push(("X-MBX-ORDER-COUNT-10S".into(), c10.to_string()));
    headers.push(("X-MBX-ORDER-COUNT-1D".into(), c1d.to_string()));
    Ok(fault.map_or(Dispatched::Body(result), fault_answer))
}

/// `DELETE /api/v3/order`: carried out (unless an `order_error on=cancel lost=request` fault
/// loses it first), then (under an `order_error on=cancel` fault) answered with an error or a
/// reset.
fn cancel_order(shared: &Shared, params: &Params, now: i64) -> Result<Dispatched, Failed> {
    let symbol = params.required("symbol").map_err(fail)?;
    let order_id = params.uint("orderId").map_err(fail)?;
    let orig = params.get("origClientOrderId").map(str::to_string);
    let new_id = params.client_id("newClientOrderId").map_err(fail)?;
    if let Some(r) = params.get("cancelRestrictions") {
        if r != "ONLY_NEW" && r != "ONLY_PARTIALLY_FILLED" {
            return Err(fail(ApiError::bad(-1145, "Invalid cancelRestrictions")));
        }
    }
    if let Some(lost) = take_fault(shared, |f| &mut f.cancel_fault, true) {
        return Ok(fault_answer(lost));
    }
    let canceled = shared.engine().cancel_order(symbol, order_id, orig.as_deref(), new_id, now).map_err(fail)?;
    let fault = take_fault(shared, |f| &mut f.cancel_fault, false);
    Ok(fault.map_or(Dispatched::Body(canceled), fault_answer))
}

/// `GET /api/v3/myTrades`, with only the documented parameter combinations.
fn my_trades(shared: &Shared, params: &Params) -> Result<Dispatched, Failed> {
    let symbol = params.required("symbol").map_err(fail)?;
    let limit = limit_param(params)?;
    let (start, end) = time_range(params)?;
    let order_id = params.uint("orderId").map_err(fail)?;
    let from_id = params.uint("fromId").map_err(fail)?;
    // Only the documented combinations ("Account Trade List").
    let combo = (order_id.is_some(), start.is_some(), end.is_some(), from_id.is_some());
    let allowed = matches!(
        combo,
        (false, false, false, false)
            | (true, false, false, false)
            | (false, true, false, false)
            | (false, false, true, false)
            | (false, false, false, true)
            | (false, true, true, false)
            | (true, false, false, true)
    );
    if !allowed {
        return Err((
            ApiError::bad(-1128, "Combination of optional parameters invalid."),
            format!("myTrades combination orderId/startTime/endTime/fromId = {combo:?}"),
        ));
    }
    if let (Some(s), Some(e)) = (start, end) {
        if e - s > 86_400_000 {
            return Err(fail(ApiError::bad(-1127, "More than 24 hours between startTime and endTime.")));
        }
    }
    let mut rows = shared.engine().my_trades(symbol, order_id, from_id, start, end, limit).map_err(fail)?;
    let forge = {
        let mut f = shared.rest_faults.lock_anyway();
        if f.bad_trades.as_deref() == Some(symbol) {
            f.bad_trades.take()
        } else {
            None
        }
    };
    if let (Some(_), Value::Array(list)) = (forge, &mut rows) {
        let other = if symbol == "BTCUSD" { "ETHUSD" } else { "BTCUSD" };
        list.extend(super::control::bad_trade_rows(symbol, other, shared.clock.now_ms()));
    }
    Ok(Dispatched::Body(rows))
}

/// `ticker/bookTicker` and `ticker/price`: one symbol, a list, or all.
fn tickers(shared: &Shared, req: &Request, params: &Params) -> Result<Dispatched, Failed> {
    let book = req.path.ends_with("bookTicker");
    let engine = shared.engine();
    let one = |s: &str| if book { engine.book_ticker(s) } else { engine.ticker_price(s) };
    match symbol_list_unlocked(&engine, params)? {
        Some(list) if params.get("symbol").is_some() => one(&list[0]).map(Dispatched::Body).map_err(fail),
        Some(list) => list
            .iter()
            .map(|s| one(s))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Dispatched::Body(Value::Array(v)))
            .map_err(fail),
        None => Ok(Dispatched::Body(if book { engine.book_tickers() } else { engine.ticker_prices() })),
    }
}

/// `ticker/24hr`: one symbol, a list, or all.
fn ticker_24hr(shared: &Shared, params: &Params, now: i64) -> Result<Dispatched, Failed> {
    let engine = shared.engine();
    match symbol_list_unlocked(&engine, params)? {
        Some(list) if params.get("symbol").is_some() => {
            engine.ticker_24hr(&list[0], now).map(Dispatched::Body).map_err(fail)
        }
        Some(list) => list
            .iter()
            .map(|s| engine.ticker_24hr(s, now))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Dispatched::Body(Value::Array(v)))
            .map_err(fail),
        None => Ok(Dispatched::Body(engine.tickers_24hr(now))),
    }
}

/// Counts down an order fault knob; the answer, if a fault is due. `request_lost`: only a fault
/// that loses the request (asked before the engine), or only one that loses the reply (after).
fn take_fault(
    shared: &Shared,
    slot: impl FnOnce(&mut RestFaults) -> &mut Option<ArmedFault>,
    request_lost: bool,
) -> Option<OrderFault> {
    let mut f = shared.rest_faults.lock_anyway();
    match slot(&mut f) {
        Some(armed) if armed.count > 0 && armed.request_lost == request_lost => {
            armed.count -= 1;
            Some(armed.answer)
        }
        _ => None,
    }
}

/// `POST /api/v3/order/cancelReplace` ("Cancel an Existing Order and Send a New Order"): filters and the order count before the cancel
/// (and an `order_error on=replace` fault: before the engine or after it),
/// then the documented outcome table, with `-2021` (409) and `-2022` (400) carrying `data`.
fn cancel_replace(
    shared: &Shared,
    params: &Params,
    now: i64,
    headers: &mut Vec<(String, String)>,
) -> Result<Dispatched, Failed> {
    let mode = params.required("cancelReplaceMode").map_err(fail)?;
    let allow_failure = match mode {
        "STOP_ON_FAILURE" => false,
        "ALLOW_FAILURE" => true,
        _ => return Err(fail(ApiError::bad(-1130, "Data sent for parameter 'cancelReplaceMode' is not valid."))),
    };
    let cancel_id = params.uint("cancelOrderId").map_err(fail)?;
    let cancel_orig = params.get("cancelOrigClientOrderId").map(str::to_string);
    if cancel_id.is_none() && cancel_orig.is_none() {
        return Err(fail(ApiError::bad(
            -1102,
            "Param 'cancelOrigClientOrderId' or 'cancelOrderId' must be sent, but both were empty/null!",
        )));
    }
    let cancel_new_id = params.client_id("cancelNewClientOrderId").map_err(fail)?;
    let order = parse_new_order(params, false)?;
    {
        let engine = shared.engine();
        if engine.has_symbol(&order.symbol) && !engine.cancel_replace_allowed(&order.symbol) {
            // Checked before anything else of the order: the symbol's switch, not the order.
            return Err(fail(ApiError::rejected("Order cancel-replace is not supported for this symbol.")));
        }
    }
    let mut check = order.clone();
    check.test = true;
    // A new order that fails its filters is refused before anything is canceled; one that
    // would only fail in the engine (balance, crossing) is decided after the cancel.
    if let Err(e) = shared.engine().new_order(check, now, Origin::Api) {
        if e.code != -2010 {
            return Err(fail(e));
        }
    }
    let counts = shared.count_order().map_err(|(e, retry)| {
        headers.push(("Retry-After".into(), retry.to_string()));
        fail(e)
    })?;
    let symbol = order.symbol.clone();
    if let Some(lost) = take_fault(shared, |f| &mut f.replace_fault, true) {
        return Ok(fault_answer(lost));
    }
    let mut engine = shared.engine();
    let canceled = engine.cancel_order(&symbol, cancel_id, cancel_orig.as_deref(), cancel_new_id, now);
    let err_json = |e: &ApiError| json!({"code": e.code, "msg": e.msg});
    let (status, body) = match canceled {
        Err(ce) if !allow_failure => (
            400,
            json!({"code": -2022, "msg": "Order cancel-replace failed.", "data": {
                "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                "cancelResponse": err_json(&ce), "newOrderResponse": null}}),
        ),
        Err(ce) => match engine.new_order(order, now, Origin::Api) {
            Ok(placed) => (
                409,
                json!({"code": -2021, "msg": "Order cancel-replace partially failed.", "data": {
                    "cancelResult": "FAILURE", "newOrderResult": "SUCCESS",
                    "cancelResponse": err_json(&ce), "newOrderResponse": placed}}),
            ),
            Err(ne) => (
                400,
                json!({"code": -2022, "msg": "Order cancel-replace failed.", "data": {
                    "cancelResult": "FAILURE", "newOrderResult": "FAILURE",
                    "cancelResponse": err_json(&ce), "newOrderResponse": err_json(&ne)}}),
            ),
        },
        Ok(cancel_response) => match engine.new_order(order.clone(), now, Origin::Api) {
            Ok(placed) => (
                200,
                json!({"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS",
                       "cancelResponse": cancel_response, "newOrderResponse": placed}),
            ),
            Err(ne) => {
                // The one case Binance reports x=REJECTED on the stream ("Order Update", execution types).
                engine.publish_rejected(&order, &ne.msg, now);
                (
                    409,
                    json!({"code": -2021, "msg": "Order cancel-replace partially failed.", "data": {
                        "cancelResult": "SUCCESS", "newOrderResult": "FAILURE",
                        "cancelResponse": cancel_response, "newOrderResponse": err_json(&ne)}}),
                )
            }
        },
    };
    drop(engine);
    headers.push(("X-MBX-ORDER-COUNT-10S".into(), counts.0.to_string()));
    headers.push(("X-MBX-ORDER-COUNT-1D".into(), counts.1.to_string()));
    let fault = take_fault(shared, |f| &mut f.replace_fault, false);
    Ok(fault.map_or(Dispatched::Raw(status, body.to_string()), fault_answer))
}

fn symbol_list_unlocked(engine: &Engine, params: &Params) -> Result<Option<Vec<String>>, Failed> {
    if params.get("symbol").is_some() && params.get("symbols").is_some() {
        return Err(fail(ApiError::bad(-1128, "Combination of optional parameters invalid.")));
    }
    if let Some(s) = params.get("symbol") {
        if !engine.has_symbol(s) {
            return Err(fail(ApiError::bad(-1121, "Invalid symbol.")));
        }
        return Ok(Some(vec![s.to_string()]));
    }
    if let Some(list) = params.get("symbols") {
        let parsed: Vec<String> = serde_json::from_str(list)
            .map_err(|_| fail(ApiError::bad(-1135, "JSON sent for parameter 'symbols' is not valid")))?;
        return Ok(Some(parsed));
    }
    Ok(None)
}

fn limit_param(params: &Params) -> Result<usize, Failed> {
    match params.uint("limit").map_err(fail)? {
        None => Ok(500),
        Some(0) => Err(fail(ApiError::bad(-1130, "Data sent for parameter 'limit' is not valid."))),
        Some(n) => Ok(n.min(1000) as usize),
    }
}

fn time_range(params: &Params) -> Result<(Option<i64>, Option<i64>), Failed> {
    let s = params.uint("startTime").map_err(fail)?.map(|v| v as i64);
    let e = params.uint("endTime").map_err(fail)?.map(|v| v as i64);
    Ok((s, e))
}

fn parse_new_order(params: &Params, test: bool) -> Result<NewOrder, Failed> {
    let symbol = params.required("symbol").map_err(fail)?.to_string();
    let side = Side::parse(params.required("side").map_err(fail)?)
        .ok_or_else(|| fail(ApiError::bad(-1117, "Invalid side.")))?;
    let order_type = params.required("type").map_err(fail)?;
    let order_type = match OrderType::parse(order_type) {
        Some(t) => t,
        None if ["STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"].contains(&order_type) => {
            return Err((
                ApiError::bad(-1116, "Invalid orderType."),
                "stop orders are not simulated by the paper exchange".into(),
            ))
        }
        None => return Err(fail(ApiError::bad(-1116, "Invalid orderType."))),
    };
    let time_in_force = match params.get("timeInForce") {
        None => None,
        Some(t) => Some(TimeInForce::parse(t).ok_or_else(|| fail(ApiError::bad(-1115, "Invalid timeInForce.")))?),
    };
    let resp_type =
        match params.get("newOrderRespType") {
            None => None,
            Some(t) => Some(RespType::parse(t).ok_or_else(|| {
                fail(ApiError::bad(-1130, "Data sent for parameter 'newOrderRespType' is not valid."))
            })?),
        };
    for unsupported in ["stopPrice", "trailingDelta", "icebergQty"] {
        if params.get(unsupported).is_some() {
            return Err(fail(ApiError::not_required(unsupported)));
        }
    }
    Ok(NewOrder {
        symbol,
        side,
        order_type,
        time_in_force,
        quantity: params.decimal("quantity").map_err(fail)?,
        quote_order_qty: params.decimal("quoteOrderQty").map_err(fail)?,
        price: params.decimal("price").map_err(fail)?,
        new_client_order_id: params.client_id("newClientOrderId").map_err(fail)?,
        resp_type,
        stp_mode: params.get("selfTradePreventionMode").map(str::to_string),
        test,
    })
}
