//! The JSON the engine emits, built field by field from the Binance.US API documentation
//! (<https://docs.binance.us/>, "User Data Streams" and "Trade Endpoints"), not from the daemon's
//! types: user-data events (`executionReport`, `outboundAccountPosition`, `balanceUpdate`) and
//! the bodies of order and trade queries.

use super::{Engine, NewOrder, Order, OrderStatus, Origin, RespType, TimeInForce, TradeRecord};
use crate::order::{OrderType, Side};
use binance_syncd_plugin::Decimal;
use serde_json::{json, Map, Value};

/// Decimals in responses are written with 8 places, as Binance.US writes them.
pub fn fmt8(d: Decimal) -> String {
    match d.with_scale(8) {
        Some(v) => v.to_string(),
        None => d.to_string(),
    }
}

impl Engine {
    /// Publishes an event to the account's live key. Returns whether any connection got it.
    pub(super) fn publish(&mut self, event: &Value) -> bool {
        if self.faults.drop_events > 0 {
            self.faults.drop_events -= 1;
            return false;
        }
        let Some(key) = self.listen_key.as_ref().map(|k| k.key.clone()) else { return false };
        let text = event.to_string();
        self.hub.publish(&key, &text) > 0
    }

    pub(super) fn publish_positions(&mut self, assets: &[&str], now_ms: i64) {
        let mut list = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for a in assets {
            if seen.contains(a) {
                continue;
            }
            seen.push(a);
            let (f, l) = self.balance(a);
            list.push(json!({"a": a, "f": fmt8(f), "l": fmt8(l)}));
        }
        let ev = json!({"e": "outboundAccountPosition", "E": now_ms, "u": now_ms, "B": list});
        self.publish(&ev);
    }

    /// One `executionReport` with exactly the documented fields ("Order Update").
    #[allow(clippy::too_many_arguments)]
    pub(super) fn execution_report(
        o: &Order,
        now_ms: i64,
        exec: &str,
        event_client_id: &str,
        orig_client_id: &str,
        fill: Option<(&TradeRecord, Decimal)>,
        expiry_reason: Option<&str>,
    ) -> Value {
        let (l, lp, n, na, t, m, y) = match fill {
            Some((tr, _)) => (
                fmt8(tr.qty),
                fmt8(tr.price),
                fmt8(tr.commission),
                Value::String(tr.commission_asset.clone()),
                tr.id as i64,
                tr.maker,
                fmt8(tr.quote_qty),
            ),
            None => ("0.00000000".into(), "0.00000000".into(), "0".into(), Value::Null, -1, false, "0.00000000".into()),
        };
        let mut ev = Map::new();
        ev.insert("e".into(), json!("executionReport"));
        ev.insert("E".into(), json!(now_ms));
        ev.insert("s".into(), json!(o.symbol));
        ev.insert("c".into(), json!(event_client_id));
        ev.insert("S".into(), json!(o.side.as_str()));
        ev.insert("o".into(), json!(o.order_type.as_str()));
        ev.insert("f".into(), json!(o.tif.as_str()));
        ev.insert("q".into(), json!(fmt8(o.orig_qty)));
        ev.insert("p".into(), json!(fmt8(o.price)));
        ev.insert("P".into(), json!("0.00000000"));
        ev.insert("F".into(), json!("0.00000000"));
        ev.insert("g".into(), json!(-1));
        ev.insert("C".into(), json!(orig_client_id));
        ev.insert("x".into(), json!(exec));
        ev.insert("X".into(), json!(o.status.as_str()));
        ev.insert("r".into(), json!("NONE"));
        ev.insert("i".into(), json!(o.order_id));
        ev.insert("l".into(), json!(l));
        ev.insert("z".into(), json!(fmt8(o.executed_qty)));
        ev.insert("L".into(), json!(lp));
        ev.insert("n".into(), json!(n));
        ev.insert("N".into(), na);
        ev.insert("T".into(), json!(fill.map(|(tr, _)| tr.time).unwrap_or(now_ms)));
        ev.insert("t".into(), json!(t));
        ev.insert("I".into(), json!(o.order_id * 2 + now_ms as u64 % 2));
        ev.insert("w".into(), json!(o.status.is_open() && o.working_time.is_some()));
        ev.insert("m".into(), json!(m));
        ev.insert("M".into(), json!(false));
        ev.insert("O".into(), json!(o.time));
        ev.insert("Z".into(), json!(fmt8(o.cum_quote)));
        ev.insert("Y".into(), json!(y));
        ev.insert("Q".into(), json!(fmt8(o.orig_quote_qty)));
        if let Some(w) = o.working_time {
            ev.insert("W".into(), json!(w));
        }
        ev.insert("V".into(), json!(o.stp_mode));
        if let Some(reason) = expiry_reason {
            ev.insert("eR".into(), json!(reason));
        }
        Value::Object(ev)
    }

    /// An `executionReport` with `x=REJECTED` for a cancel-replace whose new order failed.
    pub fn publish_rejected(&mut self, req: &NewOrder, reason: &str, now_ms: i64) {
        let reject = match reason {
            "Order would immediately match and take." => "WOULD_MATCH_IMMEDIATELY",
            "Account has insufficient balance for requested action." => "INSUFFICIENT_BALANCES",
            _ => "UNKNOWN",
        };
        let order = Order {
            symbol: req.symbol.clone(),
            order_id: 0,
            client_order_id: req.new_client_order_id.clone().unwrap_or_default(),
            side: req.side,
            order_type: req.order_type,
            tif: req.time_in_force.unwrap_or(TimeInForce::Gtc),
            price: req.price.unwrap_or(Decimal::ZERO),
            orig_qty: req.quantity.unwrap_or(Decimal::ZERO),
            executed_qty: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            orig_quote_qty: req.quote_order_qty.unwrap_or(Decimal::ZERO),
            status: OrderStatus::Rejected,
            time: now_ms,
            update_time: now_ms,
            working_time: None,
            stp_mode: req.stp_mode.clone().unwrap_or_else(|| "EXPIRE_MAKER".into()),
            origin: Origin::Api,
            locked: Decimal::ZERO,
        };
        let mut report = Engine::execution_report(&order, now_ms, "REJECTED", &order.client_order_id, "", None, None);
        if let Some(obj) = report.as_object_mut() {
            obj.insert("r".into(), json!(reject));
        }
        self.publish(&report);
    }
}

pub(super) fn order_json(o: &Order) -> Value {
    let mut v = json!({
        "symbol": o.symbol, "orderId": o.order_id, "orderListId": -1, "clientOrderId": o.client_order_id,
        "price": fmt8(o.price), "origQty": fmt8(o.orig_qty), "executedQty": fmt8(o.executed_qty),
        "cummulativeQuoteQty": fmt8(o.cum_quote), "status": o.status.as_str(), "timeInForce": o.tif.as_str(),
        "type": o.order_type.as_str(), "side": o.side.as_str(), "stopPrice": "0.00000000",
        "icebergQty": "0.00000000", "time": o.time, "updateTime": o.update_time,
        "isWorking": o.working_time.is_some(), "origQuoteOrderQty": fmt8(o.orig_quote_qty),
        "selfTradePreventionMode": o.stp_mode,
    });
    if let (Some(w), Some(obj)) = (o.working_time, v.as_object_mut()) {
        obj.insert("workingTime".into(), json!(w));
    }
    v
}

pub(super) fn trade_json(t: &TradeRecord) -> Value {
    json!({
        "symbol": t.symbol, "id": t.id, "orderId": t.order_id, "orderListId": -1,
        "price": fmt8(t.price), "qty": fmt8(t.qty), "quoteQty": fmt8(t.quote_qty),
        "commission": fmt8(t.commission), "commissionAsset": t.commission_asset, "time": t.time,
        "isBuyer": t.side == Side::Buy, "isMaker": t.maker, "isBestMatch": true,
    })
}

/// The `POST /api/v3/order` body for the requested response type. LIMIT_MAKER (and every type
/// but LIMIT and MARKET) defaults to ACK ("New Order", `newOrderRespType`).
pub(super) fn order_response(
    o: &Order,
    now_ms: i64,
    resp: Option<RespType>,
    fills: &[TradeRecord],
    expired: bool,
) -> Value {
    let resp = resp.unwrap_or(match o.order_type {
        OrderType::Limit | OrderType::Market => RespType::Full,
        OrderType::LimitMaker => RespType::Ack,
    });
    let mut v = json!({
        "symbol": o.symbol, "orderId": o.order_id, "orderListId": -1,
        "clientOrderId": o.client_order_id, "transactTime": now_ms,
    });
    if resp == RespType::Ack {
        return v;
    }
    if let Some(obj) = v.as_object_mut() {
        obj.insert("price".into(), json!(fmt8(o.price)));
        obj.insert("origQty".into(), json!(fmt8(o.orig_qty)));
        obj.insert("executedQty".into(), json!(fmt8(o.executed_qty)));
        obj.insert("origQuoteOrderQty".into(), json!(fmt8(o.orig_quote_qty)));
        obj.insert("cummulativeQuoteQty".into(), json!(fmt8(o.cum_quote)));
        obj.insert("status".into(), json!(o.status.as_str()));
        obj.insert("timeInForce".into(), json!(o.tif.as_str()));
        obj.insert("type".into(), json!(o.order_type.as_str()));
        obj.insert("side".into(), json!(o.side.as_str()));
        if let Some(w) = o.working_time {
            obj.insert("workingTime".into(), json!(w));
        }
        obj.insert("selfTradePreventionMode".into(), json!(o.stp_mode));
        if expired {
            obj.insert("expiryReason".into(), json!("UNFILLED_IOC_QUANTITY_EXPIRED"));
        }
        if resp == RespType::Full {
            let list: Vec<Value> = fills
                .iter()
                .map(|t| {
                    json!({"price": fmt8(t.price), "qty": fmt8(t.qty), "commission": fmt8(t.commission),
                           "commissionAsset": t.commission_asset, "tradeId": t.id})
                })
                .collect();
            obj.insert("fills".into(), Value::Array(list));
        }
    }
    v
}
