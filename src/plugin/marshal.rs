//! The daemon's records as the plugin's messages: a fill, an executor reply, a stream report.

use super::proto::{FillMsg, UpdateMsg};
use crate::executor::{OrderReport, Outcome, Reply};
use crate::filllog::FillRecord;
use crate::model::Side;
use binance_syncd_plugin::abi;

/// An update's fields for an order the executor placed.
pub(super) fn placed_fields(u: &mut UpdateMsg, p: &crate::executor::Placed) {
    u.symbol = p.symbol.clone();
    u.order_id = p.order_id;
    u.client_order_id = p.client_order_id.clone();
    u.side = if p.side == Side::Sell { abi::SIDE_SELL } else { abi::SIDE_BUY };
    u.price = p.price.to_string();
    u.qty = p.qty.to_string();
    u.status = p.status.clone();
    u.reason = p
        .adjustments
        .iter()
        .map(|a| format!("{} {} -> {}: {}", a.field, a.asked, a.sent, a.why))
        .collect::<Vec<_>>()
        .join("; ");
}

/// A fill-log line as `on_fill` gets it; `replayed`: it may have reached the plugin before.
pub(super) fn fill(fill: &FillRecord, replayed: bool) -> FillMsg {
    FillMsg {
        seq: fill.seq,
        trade_id: fill.trade_id,
        order_id: fill.order_id,
        time_ms: fill.time,
        symbol: fill.symbol.clone(),
        client_order_id: fill.client_order_id.clone(),
        price: fill.price.to_string(),
        qty: fill.qty.to_string(),
        quote_qty: fill.quote_qty.to_string(),
        commission: fill.commission.to_string(),
        commission_asset: fill.commission_asset.clone(),
        side: if fill.side == Side::Sell { abi::SIDE_SELL } else { abi::SIDE_BUY },
        maker: fill.maker,
        replayed,
    }
}

/// The executor's answer to one intent, for a plugin that declared ABI minor `abi_minor`.
pub(super) fn update(reply: &Reply, abi_minor: u32) -> UpdateMsg {
    let mut u = UpdateMsg { request: reply.request, resolved: reply.resolved, ..Default::default() };
    match &reply.outcome {
        Outcome::Placed(p) => {
            u.kind = abi::UPDATE_PLACED;
            placed_fields(&mut u, p);
        }
        Outcome::Replaced { placed, .. } => {
            u.kind = abi::UPDATE_REPLACED;
            placed_fields(&mut u, placed);
        }
        Outcome::Canceled(c) => {
            u.kind = abi::UPDATE_CANCELED;
            u.symbol = c.symbol.clone();
            u.order_id = c.order_id;
            u.client_order_id = c.client_order_id.clone();
        }
        Outcome::CanceledAll { symbol, canceled, failed } => {
            u.kind = abi::UPDATE_CANCELED_ALL;
            u.symbol = symbol.clone();
            u.reason = format!("{} canceled, {} failed", canceled.len(), failed.len());
        }
        Outcome::Refused { rule, reason } => {
            u.kind = abi::UPDATE_REFUSED;
            u.status = rule.clone();
            u.reason = reason.clone();
        }
        Outcome::Rejected { code, msg, .. } => {
            u.kind = abi::UPDATE_REJECTED;
            u.code = *code;
            u.reason = msg.clone();
        }
        Outcome::Unknown { client_order_id } => {
            u.kind = abi::UPDATE_UNKNOWN;
            u.client_order_id = client_order_id.clone();
        }
        Outcome::NotDone { client_order_id, reason } => {
            u.kind = abi::UPDATE_NOT_DONE;
            u.client_order_id = client_order_id.clone();
            u.reason = reason.clone();
        }
        Outcome::Unresolved { client_order_id, reason } => {
            // A plugin built before ABI 1.2 does not know the kind (the SDK then read any
            // unknown kind as NotDone, the one reading that is false here): it gets a
            // resolved UNKNOWN, which says just as much.
            u.kind = if abi_minor >= 2 { abi::UPDATE_UNRESOLVED } else { abi::UPDATE_UNKNOWN };
            u.client_order_id = client_order_id.clone();
            u.reason = reason.clone();
        }
    }
    u
}

/// A stream report of one of its orders, as an order update with request 0.
pub(super) fn report(r: &OrderReport) -> UpdateMsg {
    let o = &r.order;
    UpdateMsg {
        request: 0,
        order_id: o.order_id,
        code: 0,
        symbol: o.symbol.clone(),
        client_order_id: o.client_order_id.clone(),
        price: o.price.to_string(),
        qty: o.orig_qty.to_string(),
        status: r.status.clone(),
        reason: format!("{}; executed {} of {}", r.execution, o.executed_qty, o.orig_qty),
        kind: abi::UPDATE_REPORT,
        side: if o.side == Side::Sell { abi::SIDE_SELL } else { abi::SIDE_BUY },
        resolved: false,
    }
}
