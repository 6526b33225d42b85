//! The messages a plugin sends, judged as the daemon reads them, and small pieces of the
//! messages sent to it.

use crate::plugin::proto::{self, Up};
use binance_syncd_plugin::abi;
use binance_syncd_plugin::Decimal;
use serde_json::{json, Value};

/// One intent as the plugin sent it, with the status it was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sent {
    pub kind: u8,
    pub side: u8,
    pub order_id: u64,
    pub symbol: String,
    pub price: String,
    pub qty: String,
    pub client_order_id: String,
    pub request: u64,
    pub status: i32,
}

/// `v` as the daemon reads it; `Err` says why the daemon could not.
pub(super) fn typed(v: &Value) -> Result<Up, String> {
    serde_json::from_value::<Up>(v.clone()).map_err(|e| {
        let text = v.to_string();
        let text = proto::cut(&text, 200);
        format!("the daemon cannot read its frame {text}: {e}")
    })
}

pub(super) fn name_of(up: &Up) -> &'static str {
    match up {
        Up::Ready { .. } => "ready",
        Up::Refused { .. } => "refused",
        Up::Done { .. } => "done",
        Up::Intent { .. } => "intent",
        Up::RulesOf { .. } => "rules_of",
        Up::Log { .. } => "log",
    }
}

/// Why the daemon would refuse `s` (`submitted` -3), if it would.
pub(super) fn malformed(s: &Sent) -> Option<String> {
    let decimal = |what: &str, text: &str| -> Option<String> {
        match text.parse::<Decimal>() {
            Ok(d) if !d.is_zero() && !d.is_negative() => None,
            Ok(_) => Some(format!("with {what} {text:?}: it must be above zero")),
            Err(_) => Some(format!("with {what} {text:?}: not a decimal")),
        }
    };
    if s.kind > abi::INTENT_REPLACE {
        return Some(format!("of kind {}: kinds are 0 (place) to 3 (replace)", s.kind));
    }
    if s.symbol.is_empty() {
        return Some("with no symbol".into());
    }
    if matches!(s.kind, abi::INTENT_PLACE | abi::INTENT_REPLACE) {
        if s.side > abi::SIDE_SELL {
            return Some(format!("with side {}: sides are 0 (buy) and 1 (sell)", s.side));
        }
        if let Some(why) = decimal("price", &s.price).or_else(|| decimal("qty", &s.qty)) {
            return Some(why);
        }
    }
    if matches!(s.kind, abi::INTENT_CANCEL | abi::INTENT_REPLACE) && s.order_id == 0 && s.client_order_id.is_empty() {
        return Some("naming no order: a cancel or replace needs order_id or client_order_id".into());
    }
    None
}

/// The same request again (its answer aside).
pub(super) fn same(a: &Sent, b: &Sent) -> bool {
    (a.kind, a.side, a.order_id, &a.symbol, &a.price, &a.qty, &a.client_order_id)
        == (b.kind, b.side, b.order_id, &b.symbol, &b.price, &b.qty, &b.client_order_id)
}

pub(super) fn kind_name(kind: u8) -> &'static str {
    match kind {
        abi::UPDATE_PLACED => "placed",
        abi::UPDATE_CANCELED => "canceled",
        abi::UPDATE_REPLACED => "replaced",
        abi::UPDATE_REFUSED => "refused",
        abi::UPDATE_REJECTED => "rejected",
        abi::UPDATE_UNKNOWN => "unknown",
        abi::UPDATE_NOT_DONE => "not done",
        abi::UPDATE_CANCELED_ALL => "canceled all",
        abi::UPDATE_REPORT => "report",
        _ => "unresolved",
    }
}

/// Adds a field no version of the protocol has.
pub(super) fn unknown_field(msg: &mut Value) {
    if let Some(map) = msg.as_object_mut() {
        map.insert("x_conformance".into(), json!({"ignore": "me"}));
    }
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
