//! The daemon's records as the plugin's messages: a fill, an executor reply, a stream report,
//! each for the ABI minor the plugin declared: what a minor added reaches only plugins that
//! declare it (an older one gets what its header documents instead).

use super::proto::{BookMsg, Call, FillMsg, TradeMsg, UpdateMsg};
use crate::executor::{OrderReport, Outcome, Reply};
use crate::filllog::FillRecord;
use crate::market::MarketItem;
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

/// The minor that added `UPDATE_REPORT`.
const MINOR_REPORT: u32 = 1;
/// The minor that added `UPDATE_UNRESOLVED`.
const MINOR_UNRESOLVED: u32 = 2;
/// The minor that added `reason_code` on updates and `own` on fills.
const MINOR_REASON_AND_OWN: u32 = 4;

/// The minor that added `on_book` and `on_trade`.
const MINOR_MARKET: u32 = 5;

/// What of the market a plugin is sent: the callbacks it exports, if its declared minor has
/// them (a table of an older minor that reaches into their place is not believed).
pub(super) fn market_wants(exports: (bool, bool), abi_minor: u32) -> (bool, bool) {
    let known = abi_minor >= MINOR_MARKET;
    (exports.0 && known, exports.1 && known)
}

/// A book or trade from the plugin's inbox as its callback.
pub(super) fn market(item: &MarketItem) -> Call {
    let side = |levels: &[(crate::decimal::Decimal, crate::decimal::Decimal)]| -> Vec<(String, String)> {
        levels.iter().map(|(p, q)| (p.to_string(), q.to_string())).collect()
    };
    match item {
        MarketItem::Book { book, skipped } => Call::Book(BookMsg {
            symbol: book.symbol.clone(),
            update_id: book.update_id,
            event_time_ms: book.event_time_ms,
            received_ms: book.received_ms,
            skipped: *skipped,
            bids: side(&book.bids),
            asks: side(&book.asks),
        }),
        MarketItem::Trade { trade, dropped } => Call::Trade(TradeMsg {
            symbol: trade.symbol.clone(),
            trade_id: trade.trade_id,
            price: trade.price.to_string(),
            qty: trade.qty.to_string(),
            time_ms: trade.time_ms,
            event_time_ms: trade.event_time_ms,
            received_ms: trade.received_ms,
            buyer_maker: trade.buyer_maker,
            dropped: *dropped,
        }),
    }
}

/// A fill-log line as `on_fill` gets it; `replayed`: it may have reached the plugin before;
/// `own`: this daemon placed the order (sent only to a plugin that knows the field).
pub(super) fn fill(fill: &FillRecord, replayed: bool, own: bool, abi_minor: u32) -> FillMsg {
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
        own: own && abi_minor >= MINOR_REASON_AND_OWN,
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
        Outcome::Refused { rule, reason, code } => {
            u.kind = abi::UPDATE_REFUSED;
            u.reason_code = code.code();
            u.status = rule.clone();
            u.reason = reason.clone();
        }
        Outcome::Rejected { code, msg, taker, .. } => {
            u.kind = abi::UPDATE_REJECTED;
            u.reason_code = match code {
                _ if *taker => abi::REASON_CROSSES_BOOK,
                -1013 | -1111 => abi::REASON_FILTER,
                _ => abi::REASON_REJECTED,
            };
            u.code = *code;
            u.reason = msg.clone();
        }
        Outcome::Unknown { client_order_id } => {
            u.kind = abi::UPDATE_UNKNOWN;
            u.client_order_id = client_order_id.clone();
        }
        Outcome::NotDone { client_order_id, reason } => {
            u.kind = abi::UPDATE_NOT_DONE;
            u.reason_code = abi::REASON_NOT_SENT;
            u.client_order_id = client_order_id.clone();
            u.reason = reason.clone();
        }
        Outcome::Unresolved { client_order_id, reason } => {
            // A plugin built before ABI 1.2 does not know the kind (the SDK then read any
            // unknown kind as NotDone, the one reading that is false here): it gets a
            // resolved UNKNOWN, which says just as much.
            u.kind = if abi_minor >= MINOR_UNRESOLVED { abi::UPDATE_UNRESOLVED } else { abi::UPDATE_UNKNOWN };
            u.reason_code = abi::REASON_UNRESOLVED;
            u.client_order_id = client_order_id.clone();
            u.reason = reason.clone();
        }
    }
    if abi_minor < MINOR_REASON_AND_OWN {
        u.reason_code = abi::REASON_NONE; // a reserved byte to it
    }
    u
}

/// A stream report of one of its orders, as an order update with request 0; `None` for a
/// plugin that declared minor 0, which does not know the kind (the 1.0 SDK reads an unknown
/// kind as `NotDone`: "the exchange never got it", false of an order the stream reports).
pub(super) fn report(r: &OrderReport, abi_minor: u32) -> Option<UpdateMsg> {
    if abi_minor < MINOR_REPORT {
        return None;
    }
    let o = &r.order;
    Some(UpdateMsg {
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
        reason_code: abi::REASON_NONE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{OpenOrder, RefusalCode};
    use std::time::Duration;

    fn reply(outcome: Outcome) -> Reply {
        Reply { request: 7, outcome, waited: Duration::ZERO, resolved: true }
    }

    fn a_report() -> OrderReport {
        let order = OpenOrder {
            symbol: "BTCUSD".into(),
            order_id: 9,
            client_order_id: "sd-t-abcd-1-1".into(),
            side: Side::Buy,
            price: "100".parse().unwrap(),
            orig_qty: "1".parse().unwrap(),
            executed_qty: "0".parse().unwrap(),
            changed_at: 0,
        };
        OrderReport { order, status: "NEW".into(), execution: "NEW".into() }
    }

    #[test]
    fn what_a_minor_added_reaches_only_plugins_that_declare_it() {
        // UPDATE_REPORT (1.1): a 1.0 plugin gets none.
        assert_eq!(report(&a_report(), 0), None);
        assert_eq!(report(&a_report(), 1).map(|u| u.kind), Some(abi::UPDATE_REPORT));
        // UPDATE_UNRESOLVED (1.2): older plugins get a resolved UNKNOWN.
        let unresolved = reply(Outcome::Unresolved { client_order_id: "x".into(), reason: "gave up".into() });
        assert_eq!(update(&unresolved, 1).kind, abi::UPDATE_UNKNOWN);
        assert_eq!(update(&unresolved, 2).kind, abi::UPDATE_UNRESOLVED);
        // reason_code (1.4): a reserved byte, zero, below it.
        let refused = reply(Outcome::Refused {
            rule: "max orders per 10 s".into(),
            reason: "too many".into(),
            code: RefusalCode::OrderRate,
        });
        for minor in 0..4 {
            assert_eq!(update(&refused, minor).reason_code, abi::REASON_NONE, "minor {minor}");
            assert_eq!(update(&unresolved, minor).reason_code, abi::REASON_NONE, "minor {minor}");
        }
        assert_eq!(update(&refused, 4).reason_code, abi::REASON_ORDER_RATE);
        assert_eq!(update(&unresolved, 4).reason_code, abi::REASON_UNRESOLVED);
        let taker = reply(Outcome::Rejected { code: -2010, msg: "would take".into(), taker: true, canceled: None });
        assert_eq!(update(&taker, 4).reason_code, abi::REASON_CROSSES_BOOK);
        // own (1.4): a reserved byte, zero, below it.
        let zero = crate::decimal::Decimal::ZERO;
        let line = FillRecord {
            symbol: "BTCUSD".into(),
            trade_id: 1,
            order_id: 2,
            client_order_id: "web-1".into(),
            side: Side::Buy,
            price: zero,
            qty: zero,
            quote_qty: zero,
            commission: zero,
            commission_asset: "USD".into(),
            maker: true,
            time: 0,
            seq: 1,
        };
        assert!(!fill(&line, false, true, 3).own);
        assert!(fill(&line, false, true, 4).own);
        assert!(!fill(&line, false, false, 4).own);
        // on_book, on_trade (1.5): not believed of a table that declares less.
        assert_eq!(market_wants((true, true), 4), (false, false));
        assert_eq!(market_wants((true, false), 5), (true, false));
    }

    #[test]
    fn a_book_keeps_its_exact_decimals_and_order() {
        let d = |s: &str| s.parse::<crate::decimal::Decimal>().unwrap();
        let book = crate::market::BookUpdate {
            symbol: "BTCUSD".into(),
            update_id: 9,
            event_time_ms: 5,
            received_ms: 6,
            bids: vec![(d("100.10"), d("0.00000001")), (d("99.9"), d("3"))],
            asks: vec![(d("100.2"), d("1.5"))],
        };
        let Call::Book(b) = market(&MarketItem::Book { book, skipped: 4 }) else { panic!("not a book") };
        assert_eq!((b.update_id, b.event_time_ms, b.received_ms, b.skipped), (9, 5, 6, 4));
        assert_eq!(b.bids, vec![("100.10".into(), "0.00000001".into()), ("99.9".into(), "3".into())]);
        assert_eq!(b.asks, vec![("100.2".to_string(), "1.5".to_string())]);
    }
}
