//! Weights and limits: the weight table, the per-IP minute budget with its 429 hold and 418
//! bans, and the account's order-rate windows.

use super::params::Params;
use crate::engine::ApiError;
use crate::http::Request;
use crate::lock::LockAnyway;
use crate::Shared;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
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
pub(super) struct IpRate {
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
    pub(super) order_windows: [(i64, u64); 2],
    pub http_429: u64,
    pub http_418: u64,
    /// Requests that arrived inside a 429 hold (tolerated or banned).
    pub in_hold: u64,
    pub peak_weight: u64,
    pub requests: u64,
    /// Requests by path (`/api/v3/ticker/bookTicker`: how often a client polled prices).
    pub by_path: std::collections::BTreeMap<String, u64>,
}

pub(super) fn weight(profile: WeightProfile, method: &str, path: &str, params: &Params) -> u64 {
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

impl Shared {
    /// Charges the request's weight to its IP and decides 429/418. Returns the used weight.
    pub(super) fn charge(&self, req: &Request, weight: u64) -> Result<u64, (ApiError, Option<u64>, u64)> {
        let now = self.clock.now_ms();
        let mut rate = self.rate.lock_anyway();
        rate.requests += 1;
        *rate.by_path.entry(req.path.clone()).or_default() += 1;
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
    pub(super) fn count_order(&self) -> Result<(u64, u64), (ApiError, u64)> {
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
