//! Routes and security: which parameters each endpoint takes and how it is authenticated
//! (NONE, API key, SIGNED: API key → timestamp → timing → signature).

use super::params::{signed_payload, Params, INT_PATTERN};
use super::{fail, Failed};
use crate::engine::ApiError;
use crate::http::Request;
use crate::Shared;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sec {
    None,
    ApiKey,
    Signed,
}

pub(super) struct Route {
    sec: Sec,
    allowed: &'static [&'static str],
    /// More allowed names (cancelReplace = an order's parameters + its own).
    also: &'static [&'static str],
}

impl Route {
    pub(super) fn allows(&self, name: &str) -> bool {
        self.allowed.contains(&name) || self.also.contains(&name)
    }
}

pub(super) const ORDER: &[&str] = &[
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

pub(super) const CANCEL_REPLACE: &[&str] =
    &["cancelReplaceMode", "cancelOrderId", "cancelOrigClientOrderId", "cancelNewClientOrderId", "cancelRestrictions"];

pub(super) fn route(method: &str, path: &str) -> Option<Route> {
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

pub(super) fn authenticate(shared: &Shared, req: &Request, route: &Route, params: &Params) -> Result<(), Failed> {
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

pub(super) fn check_params(route: &Route, params: &Params) -> Result<(), Failed> {
    pub(super) const CONTROL: [&str; 3] = ["timestamp", "recvWindow", "signature"];
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
