//! Binance.US REST semantics for the paper exchange: routing, parameters, authentication,
//! weights and limits, error codes, and acting out the REST fault knobs of [`super::control`].
//!
//! Strict where Binance is strict (the Binance.US API docs, <https://docs.binance.us/>): the signature is verified over
//! the raw query and body as received; checks run in the documented order (API key → timestamp
//! → timing → signature → parameters → precision → filters → order rate → engine); every
//! response carries the usage headers; a request inside a 429 hold is answered 418.

mod auth;
mod limits;
mod orders;
mod params;
mod public;

use super::engine::{ApiError, Engine};
use super::http::{Outcome, Request, Response};
use super::Shared;
use crate::control::rest_delay;
use crate::lock::LockAnyway;
use auth::{authenticate, check_params, route, Route};
use limits::weight;
pub use limits::{RateState, RestSettings, WeightProfile};
use orders::{cancel_order, cancel_replace, my_trades, place_order};
use params::{limit_param, parse_params, symbol_list_unlocked, time_range, Params};
use public::{depth, ticker_24hr, tickers};
use serde_json::{json, Value};
use std::thread;

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
        ("GET", "/api/v3/depth") => depth(shared, params),
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
