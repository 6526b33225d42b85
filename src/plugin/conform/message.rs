//! The messages a plugin sends, judged as the daemon reads them, and small pieces of the
//! messages sent to it.

use crate::plugin::ffi::IntentIn;
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

/// `body` (a frame's JSON) as the daemon reads it, straight from the bytes (a duplicate field,
/// which a parsed-then-converted value would hide, is refused as the daemon refuses it); `Err`
/// says why the daemon could not.
pub(super) fn typed(body: &[u8]) -> Result<Up, String> {
    serde_json::from_slice::<Up>(body).map_err(|e| {
        let text = String::from_utf8_lossy(body);
        format!("the daemon cannot read its frame {}: {e}", proto::cut(&text, 200))
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

/// Why the daemon would refuse `s` at once (`submitted` -3), if it would: its own rule,
/// `services::intent_of`.
pub(super) fn malformed(s: &Sent) -> Option<String> {
    let intent = IntentIn {
        kind: s.kind,
        side: s.side,
        order_id: s.order_id,
        symbol: &s.symbol,
        price: &s.price,
        qty: &s.qty,
        client_order_id: &s.client_order_id,
    };
    crate::plugin::services::intent_of(&intent).err()
}

/// Why an intent the daemon takes (`submitted` 0) is still wrong: the executor refuses it
/// afterwards, as an `order` of kind 3.
pub(super) fn doubtful(s: &Sent) -> Option<String> {
    if s.symbol.is_empty() {
        return Some("with no symbol: the executor refuses it (an order of kind 3)".into());
    }
    if matches!(s.kind, abi::INTENT_PLACE | abi::INTENT_REPLACE) {
        for (what, text) in [("price", &s.price), ("qty", &s.qty)] {
            if text.parse::<Decimal>().is_ok_and(|d| d.is_zero() || d.is_negative()) {
                return Some(format!(
                    "with {what} {text:?}: not above zero, the executor refuses it (an order of kind 3)"
                ));
            }
        }
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
