//! Request parameters: decoding the query and form body, the documented patterns, and parsing
//! the values every endpoint shares (symbols, limits, time ranges, a new order).

use crate::engine::{ApiError, Engine, NewOrder, RespType, TimeInForce};
use crate::http::Request;
use crate::order::{OrderType, Side};
use binance_syncd_plugin::Decimal;

use super::{fail, Failed};

pub(super) const DECIMAL_PATTERN: &str = "^([0-9]{1,20})(\\.[0-9]{1,20})?$";
pub(super) const INT_PATTERN: &str = "^[0-9]{1,20}$";
pub(super) const CLIENT_ID_PATTERN: &str = "^[a-zA-Z0-9-_]{1,36}$";

/// The parameters of one request, decoded, with query values winning over body values.
pub(super) struct Params {
    list: Vec<(String, String)>,
}

impl Params {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.list.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|(k, _)| k.as_str())
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn decimal(&self, name: &str) -> Result<Option<Decimal>, ApiError> {
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

    pub(super) fn uint(&self, name: &str) -> Result<Option<u64>, ApiError> {
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

    pub(super) fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::mandatory(name)),
        }
    }

    pub(super) fn client_id(&self, name: &str) -> Result<Option<String>, ApiError> {
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

pub(super) fn percent_decode(s: &str) -> Option<String> {
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
pub(super) fn split_params(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
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

pub(super) fn body_is_form(req: &Request) -> bool {
    match req.header("content-type") {
        None => true,
        Some(ct) => ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"),
    }
}

pub(super) fn parse_params(req: &Request) -> Result<Params, ApiError> {
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
pub(super) fn signed_payload(req: &Request) -> (String, String, Option<String>) {
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

pub(super) fn symbol_list_unlocked(engine: &Engine, params: &Params) -> Result<Option<Vec<String>>, Failed> {
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

pub(super) fn limit_param(params: &Params) -> Result<usize, Failed> {
    match params.uint("limit").map_err(fail)? {
        None => Ok(500),
        Some(0) => Err(fail(ApiError::bad(-1130, "Data sent for parameter 'limit' is not valid."))),
        Some(n) => Ok(n.min(1000) as usize),
    }
}

pub(super) fn time_range(params: &Params) -> Result<(Option<i64>, Option<i64>), Failed> {
    let s = params.uint("startTime").map_err(fail)?.map(|v| v as i64);
    let e = params.uint("endTime").map_err(fail)?.map(|v| v as i64);
    Ok((s, e))
}

pub(super) fn parse_new_order(params: &Params, test: bool) -> Result<NewOrder, Failed> {
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
