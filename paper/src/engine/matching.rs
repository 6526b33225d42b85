//! Orders against the paper market: the checks a new order passes in Binance's order, what it
//! locks, how it fills (taker at the touch, or maker when the market crosses it), cancels, and
//! the order and trade queries.
//!
//! The paper book is deep at the touch and holds only this account's orders, which never trade
//! with each other: a crossing order takes the market's touch, and a resting order fills when
//! the market moves through its price, oldest first.

use super::book::PublicTrade;
use super::events::{order_json, order_response, trade_json};
use super::rules::{self, Failure, SymbolRules};
use super::{floor8, fmt8, ApiError, Engine, NewOrder, Order, OrderStatus, Origin, TimeInForce, TradeRecord, SCALE};
use crate::order::{OrderType, Side};
use binance_syncd_plugin::Decimal;
use serde_json::{json, Value};
use std::collections::HashMap;

impl Engine {
    pub(super) fn next_client_id(&mut self, prefix: &str) -> String {
        self.generated_ids += 1;
        let r = self.rng.next_u64();
        format!("{prefix}{:010x}{:06}", r & 0xff_ffff_ffff, self.generated_ids % 1_000_000)
    }

    pub(super) fn open_count(&self) -> (u64, HashMap<String, u64>) {
        let mut per = HashMap::new();
        let mut total = 0;
        for (s, m) in &self.markets {
            let n = m.orders.values().filter(|o| o.status.is_open()).count() as u64;
            per.insert(s.clone(), n);
            total += n;
        }
        (total, per)
    }

    /// Places an order: parameter rules, precision, filters, then the matching engine, in
    /// Binance's order (`-1102/-1106` → `-1111` → `-1013` → `-2010`).
    pub fn new_order(&mut self, req: NewOrder, now_ms: i64, origin: Origin) -> Result<Value, ApiError> {
        let rules = self.market(&req.symbol)?.rules.clone();
        check_parameters(&req)?;
        self.check_filters(&req, &rules, now_ms)?;
        self.check_duplicate(&req)?;
        let crossing = self.crossing(&req)?;
        if req.order_type == OrderType::LimitMaker && crossing.crosses {
            return Err(ApiError::rejected("Order would immediately match and take."));
        }
        let needed = self.funds_needed(&req, &crossing)?;
        if self.balance(&crossing.asset).0 < needed {
            return Err(ApiError::rejected("Account has insufficient balance for requested action."));
        }
        if req.test {
            return Ok(json!({}));
        }
        let mut order = self.accept(&req, &crossing, now_ms, origin)?;
        let (fills, expired) = if crossing.crosses {
            (vec![self.take(&mut order, needed, &crossing, now_ms)], false)
        } else {
            (Vec::new(), self.rest_or_expire(&mut order, needed, &crossing.asset, now_ms))
        };
        let response = order_response(&order, now_ms, req.resp_type, &fills, expired);
        if let Some(m) = self.markets.get_mut(&req.symbol) {
            m.put_order(order);
        }
        self.commit_books();
        Ok(response)
    }

    /// `-1111` for too many decimals, `-1013` for a failed filter (price, lot, notional,
    /// percent price, order count), with the exchange's own reading of its filters (`rules`).
    fn check_filters(&self, req: &NewOrder, rules: &SymbolRules, now_ms: i64) -> Result<(), ApiError> {
        let refused = |failure| match failure {
            Failure::Precision => ApiError::bad(-1111, "Precision is over the maximum defined for this asset."),
            Failure::Filter(name) => ApiError::bad(-1013, format!("Filter failure: {name}")),
        };
        rules.check_precision(req).map_err(refused)?;
        let (_, per) = self.open_count();
        let market = rules::Market {
            avg_price: self.avg_price_value(&req.symbol, now_ms)?,
            open_orders: per.get(&req.symbol).copied().unwrap_or(0),
        };
        rules.check(req, &market).map_err(refused)
    }

    /// A client order id is unique among the account's open orders.
    fn check_duplicate(&self, req: &NewOrder) -> Result<(), ApiError> {
        let Some(id) = &req.new_client_order_id else { return Ok(()) };
        let dup = self
            .markets
            .values()
            .flat_map(|m| m.orders.values())
            .any(|o| o.status.is_open() && &o.client_order_id == id);
        if dup {
            return Err(ApiError::rejected("Duplicate order sent."));
        }
        Ok(())
    }

    /// Where the order meets the market: whether it crosses the touch, at what price it would
    /// take, and which asset it spends.
    fn crossing(&self, req: &NewOrder) -> Result<Crossing, ApiError> {
        let m = self.market(&req.symbol)?;
        let crosses = match (req.side, req.price) {
            (Side::Buy, Some(p)) => p >= m.ask,
            (Side::Sell, Some(p)) => p <= m.bid,
            (_, None) => true,
        };
        let (touch, asset) = match req.side {
            Side::Buy => (m.ask, m.spec.quote.clone()),
            Side::Sell => (m.bid, m.spec.base.clone()),
        };
        Ok(Crossing { crosses, touch, asset, step: m.spec.step })
    }

    /// What the order needs to lock (or, for MARKET, to spend).
    fn funds_needed(&self, req: &NewOrder, at: &Crossing) -> Result<Decimal, ApiError> {
        match (req.side, req.order_type) {
            (Side::Buy, OrderType::Market) => match (req.quantity, req.quote_order_qty) {
                (Some(q), _) => at.touch.checked_mul(q),
                (None, Some(qq)) => Some(qq),
                _ => None,
            },
            (Side::Buy, _) => req.price.and_then(|p| p.checked_mul(req.quantity?)),
            (Side::Sell, OrderType::Market) => match (req.quantity, req.quote_order_qty) {
                (Some(q), _) => Some(q),
                (None, Some(qq)) => qq.checked_div(at.touch, SCALE).and_then(|q| q.floor_to(at.step)),
                _ => None,
            },
            (Side::Sell, _) => req.quantity,
        }
        .ok_or_else(|| ApiError::bad(-1013, "Filter failure: NOTIONAL"))
    }

    /// Accepted: the order gets its ids, not yet on the book.
    fn accept(&mut self, req: &NewOrder, at: &Crossing, now_ms: i64, origin: Origin) -> Result<Order, ApiError> {
        let client_order_id = match req.new_client_order_id.clone() {
            Some(id) => id,
            None => self.next_client_id(if origin == Origin::External { "web_" } else { "" }),
        };
        let m = self.markets.get_mut(&req.symbol).ok_or_else(|| ApiError::bad(-1121, "Invalid symbol."))?;
        m.next_order_id += 1;
        let qty = match (req.quantity, req.quote_order_qty) {
            (Some(q), _) => q,
            (None, Some(qq)) => {
                qq.checked_div(at.touch, SCALE).and_then(|q| q.floor_to(at.step)).unwrap_or(Decimal::ZERO)
            }
            _ => Decimal::ZERO,
        };
        Ok(Order {
            symbol: req.symbol.clone(),
            order_id: m.next_order_id,
            client_order_id,
            side: req.side,
            order_type: req.order_type,
            tif: req.time_in_force.unwrap_or(TimeInForce::Gtc),
            price: req.price.unwrap_or(Decimal::ZERO),
            orig_qty: qty,
            executed_qty: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            orig_quote_qty: req.quote_order_qty.unwrap_or(Decimal::ZERO),
            status: OrderStatus::New,
            time: now_ms,
            update_time: now_ms,
            working_time: None,
            stp_mode: req.stp_mode.clone().unwrap_or_else(|| "EXPIRE_MAKER".into()),
            origin,
            locked: Decimal::ZERO,
        })
    }

    /// Taker at the touch, whole quantity (the paper book is deep at the touch).
    fn take(&mut self, order: &mut Order, needed: Decimal, at: &Crossing, now_ms: i64) -> TradeRecord {
        if order.order_type != OrderType::Market {
            // A limit BUY at p locks p×q and gets the difference back on the fill.
            order.locked = needed;
            self.adjust(&at.asset, -needed, needed);
        }
        let report = Engine::execution_report(order, now_ms, "NEW", &order.client_order_id, "", None, None);
        self.publish(&report);
        let qty = order.orig_qty;
        self.fill(order, qty, at.touch, false, now_ms)
    }

    /// A GTC order rests on the book, locking what it needs; an IOC/FOK that cannot fill is
    /// accepted, then expired at once. Returns whether it expired.
    fn rest_or_expire(&mut self, order: &mut Order, needed: Decimal, asset: &str, now_ms: i64) -> bool {
        order.locked = needed;
        self.adjust(asset, -needed, needed);
        if order.tif == TimeInForce::Gtc {
            order.working_time = Some(now_ms);
        }
        let report = Engine::execution_report(order, now_ms, "NEW", &order.client_order_id, "", None, None);
        self.publish(&report);
        if order.tif == TimeInForce::Gtc {
            self.publish_positions(&[asset], now_ms);
            return false;
        }
        self.release(order);
        order.status = OrderStatus::Expired;
        let reason =
            if order.tif == TimeInForce::Fok { "UNFILLED_FOK_ORDER_EXPIRED" } else { "UNFILLED_IOC_QUANTITY_EXPIRED" };
        let report = Engine::execution_report(order, now_ms, "EXPIRED", &order.client_order_id, "", None, Some(reason));
        self.publish(&report);
        self.publish_positions(&[asset], now_ms);
        true
    }

    /// Gives back what an order still has locked.
    pub(super) fn release(&mut self, order: &mut Order) {
        if order.locked.is_zero() {
            return;
        }
        let Some(m) = self.markets.get(&order.symbol) else { return };
        let asset = if order.side == Side::Buy { m.spec.quote.clone() } else { m.spec.base.clone() };
        let amount = order.locked;
        order.locked = Decimal::ZERO;
        self.adjust(&asset, amount, -amount);
    }

    /// Executes `qty` of `order` at `price`, moves balances, records and publishes the trade.
    pub(super) fn fill(
        &mut self,
        order: &mut Order,
        qty: Decimal,
        price: Decimal,
        maker: bool,
        now_ms: i64,
    ) -> TradeRecord {
        let (base, quote) = match self.markets.get(&order.symbol) {
            Some(m) => (m.spec.base.clone(), m.spec.quote.clone()),
            None => (String::new(), String::new()),
        };
        let quote_qty = price.checked_mul(qty).map(floor8).unwrap_or(Decimal::ZERO);
        let rate = if maker { self.settings.maker_commission } else { self.settings.taker_commission };
        let (commission, commission_asset) = match order.side {
            Side::Buy => (qty.checked_mul(rate).map(floor8).unwrap_or(Decimal::ZERO), base.clone()),
            Side::Sell => (quote_qty.checked_mul(rate).map(floor8).unwrap_or(Decimal::ZERO), quote.clone()),
        };
        match order.side {
            Side::Buy => {
                // Locked at the order price; spent at the fill price.
                let reserved = if order.order_type == OrderType::Market {
                    Decimal::ZERO
                } else {
                    order.price.checked_mul(qty).unwrap_or(quote_qty).min(order.locked)
                };
                order.locked = order.locked.checked_sub(reserved).unwrap_or(Decimal::ZERO);
                self.adjust(&quote, reserved.checked_sub(quote_qty).unwrap_or(Decimal::ZERO), -reserved);
                self.adjust(&base, qty.checked_sub(commission).unwrap_or(qty), Decimal::ZERO);
            }
            Side::Sell => {
                let reserved =
                    if order.order_type == OrderType::Market { Decimal::ZERO } else { qty.min(order.locked) };
                order.locked = order.locked.checked_sub(reserved).unwrap_or(Decimal::ZERO);
                self.adjust(&base, reserved.checked_sub(qty).unwrap_or(Decimal::ZERO), -reserved);
                self.adjust(&quote, quote_qty.checked_sub(commission).unwrap_or(quote_qty), Decimal::ZERO);
            }
        }
        let trade_id = match self.markets.get_mut(&order.symbol) {
            Some(m) => {
                m.next_trade_id += 1;
                m.prints.push_back((now_ms, price, qty));
                while m.prints.len() > 4096 {
                    m.prints.pop_front();
                }
                m.next_trade_id
            }
            None => 0,
        };
        order.executed_qty = order.executed_qty.checked_add(qty).unwrap_or(order.executed_qty);
        order.cum_quote = order.cum_quote.checked_add(quote_qty).unwrap_or(order.cum_quote);
        order.update_time = now_ms;
        order.status =
            if order.executed_qty >= order.orig_qty { OrderStatus::Filled } else { OrderStatus::PartiallyFilled };
        if order.status == OrderStatus::Filled {
            // Rounding of the lock (price × qty per fill) can leave dust: give it back.
            let rest = order.locked;
            if !rest.is_zero() {
                let asset = if order.side == Side::Buy { &quote } else { &base };
                self.adjust(asset, rest, -rest);
                order.locked = Decimal::ZERO;
            }
        }
        let mut trade = TradeRecord {
            symbol: order.symbol.clone(),
            id: trade_id,
            order_id: order.order_id,
            client_order_id: order.client_order_id.clone(),
            side: order.side,
            price,
            qty,
            quote_qty,
            commission,
            commission_asset: commission_asset.clone(),
            time: now_ms,
            maker,
            origin: order.origin,
            streamed: false,
        };
        let public = PublicTrade {
            id: trade_id,
            price,
            qty,
            time: now_ms,
            order_id: order.order_id,
            buyer_side: order.side == Side::Buy,
            buyer_maker: (order.side == Side::Buy) == maker,
        };
        self.publish_trade(&order.symbol, public);
        let report =
            Engine::execution_report(order, now_ms, "TRADE", &order.client_order_id, "", Some((&trade, qty)), None);
        trade.streamed = self.publish(&report);
        if self.faults.duplicate_trades > 0 {
            self.faults.duplicate_trades -= 1;
            self.publish(&report);
        }
        self.publish_positions(&[base.as_str(), quote.as_str(), commission_asset.as_str()], now_ms);
        self.trades.push(trade.clone());
        trade
    }

    pub(super) fn find_order(
        &self,
        symbol: &str,
        order_id: Option<u64>,
        orig_client_id: Option<&str>,
    ) -> Result<u64, ApiError> {
        let m = self.market(symbol)?;
        let found = match (order_id, orig_client_id) {
            (Some(id), _) => m.orders.get(&id).map(|o| o.order_id),
            // Client ids are unique among open orders only: prefer the open one, else the latest.
            (None, Some(cid)) => m
                .orders
                .values()
                .filter(|o| o.client_order_id == cid)
                .max_by_key(|o| (o.status.is_open(), o.order_id))
                .map(|o| o.order_id),
            (None, None) => None,
        };
        found.ok_or_else(|| ApiError::bad(-2013, "Order does not exist."))
    }

    pub fn query_order(
        &self,
        symbol: &str,
        order_id: Option<u64>,
        orig_client_id: Option<&str>,
    ) -> Result<Value, ApiError> {
        let id = self.find_order(symbol, order_id, orig_client_id)?;
        let o = &self.market(symbol)?.orders[&id];
        if let (Some(_), Some(cid)) = (order_id, orig_client_id) {
            if o.client_order_id != cid {
                return Err(ApiError::bad(-2013, "Order does not exist."));
            }
        }
        Ok(order_json(o))
    }

    pub fn cancel_order(
        &mut self,
        symbol: &str,
        order_id: Option<u64>,
        orig_client_id: Option<&str>,
        new_client_id: Option<String>,
        now_ms: i64,
    ) -> Result<Value, ApiError> {
        if order_id.is_none() && orig_client_id.is_none() {
            return Err(ApiError::bad(
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            ));
        }
        let unknown = || ApiError::bad(-2011, "Unknown order sent.");
        let id = self.find_order(symbol, order_id, orig_client_id).map_err(|_| unknown())?;
        let mut order = self.markets.get(symbol).and_then(|m| m.orders.get(&id)).cloned().ok_or_else(unknown)?;
        if !order.status.is_open() {
            return Err(unknown());
        }
        let cancel_id = new_client_id.unwrap_or_else(|| self.next_client_id(""));
        self.release(&mut order);
        order.status = OrderStatus::Canceled;
        order.update_time = now_ms;
        let report =
            Engine::execution_report(&order, now_ms, "CANCELED", &cancel_id, &order.client_order_id, None, None);
        self.publish(&report);
        let asset = self
            .markets
            .get(symbol)
            .map(|m| if order.side == Side::Buy { m.spec.quote.clone() } else { m.spec.base.clone() })
            .unwrap_or_default();
        self.publish_positions(&[asset.as_str()], now_ms);
        let resp = json!({
            "symbol": symbol, "origClientOrderId": order.client_order_id, "orderId": order.order_id,
            "orderListId": -1, "clientOrderId": cancel_id, "transactTime": now_ms,
            "price": fmt8(order.price), "origQty": fmt8(order.orig_qty), "executedQty": fmt8(order.executed_qty),
            "cummulativeQuoteQty": fmt8(order.cum_quote), "status": "CANCELED",
            "timeInForce": order.tif.as_str(), "type": order.order_type.as_str(), "side": order.side.as_str(),
            "selfTradePreventionMode": order.stp_mode,
        });
        if let Some(m) = self.markets.get_mut(symbol) {
            m.put_order(order);
        }
        self.commit_books();
        Ok(resp)
    }

    pub fn cancel_all(&mut self, symbol: &str, now_ms: i64) -> Result<Value, ApiError> {
        let ids: Vec<u64> =
            self.market(symbol)?.orders.values().filter(|o| o.status.is_open()).map(|o| o.order_id).collect();
        if ids.is_empty() {
            return Err(ApiError::bad(-2011, "Unknown order sent."));
        }
        let mut out = Vec::new();
        for id in ids {
            out.push(self.cancel_order(symbol, Some(id), None, None, now_ms)?);
        }
        Ok(Value::Array(out))
    }

    pub fn open_orders(&self, symbol: Option<&str>) -> Result<Value, ApiError> {
        if let Some(s) = symbol {
            self.market(s)?;
        }
        let list = self
            .markets
            .values()
            .filter(|m| symbol.is_none_or(|s| m.spec.symbol == s))
            .flat_map(|m| m.orders.values())
            .filter(|o| o.status.is_open())
            .map(order_json)
            .collect();
        Ok(Value::Array(list))
    }

    pub fn all_orders(
        &self,
        symbol: &str,
        from_order_id: Option<u64>,
        start: Option<i64>,
        end: Option<i64>,
        limit: usize,
    ) -> Result<Value, ApiError> {
        let m = self.market(symbol)?;
        let mut list: Vec<&Order> = m
            .orders
            .values()
            .filter(|o| from_order_id.is_none_or(|id| o.order_id >= id))
            .filter(|o| start.is_none_or(|s| o.time >= s) && end.is_none_or(|e| o.time <= e))
            .collect();
        if from_order_id.is_none() && start.is_none() && list.len() > limit {
            // Without a starting point Binance returns the most recent orders.
            list = list.split_off(list.len() - limit);
        }
        Ok(Value::Array(list.into_iter().take(limit).map(order_json).collect()))
    }

    pub fn my_trades(
        &self,
        symbol: &str,
        order_id: Option<u64>,
        from_id: Option<u64>,
        start: Option<i64>,
        end: Option<i64>,
        limit: usize,
    ) -> Result<Value, ApiError> {
        self.market(symbol)?;
        let mut list: Vec<&TradeRecord> = self
            .trades
            .iter()
            .filter(|t| t.symbol == symbol)
            .filter(|t| order_id.is_none_or(|id| t.order_id == id))
            .filter(|t| from_id.is_none_or(|id| t.id >= id))
            .filter(|t| start.is_none_or(|s| t.time >= s) && end.is_none_or(|e| t.time <= e))
            .collect();
        list.sort_by_key(|t| t.id);
        if from_id.is_none() && start.is_none() && order_id.is_none() && list.len() > limit {
            list = list.split_off(list.len() - limit);
        }
        Ok(Value::Array(list.into_iter().take(limit).map(trade_json).collect()))
    }

    /// Fills resting orders on `symbol` that the market has crossed (or, with `force`, the
    /// given order or all open orders, as a fault). Fills are partial about half the time.
    pub fn fill_crossed(&mut self, symbol: &str, now_ms: i64, force: Option<Option<u64>>) -> usize {
        self.fill_orders(symbol, now_ms, force, false)
    }

    /// [`fill_crossed`](Self::fill_crossed), with `whole` filling each order in one trade.
    pub fn fill_orders(&mut self, symbol: &str, now_ms: i64, force: Option<Option<u64>>, whole: bool) -> usize {
        let Some(m) = self.markets.get(symbol) else { return 0 };
        let (bid, ask, step) = (m.bid, m.ask, m.spec.step);
        let mut crossed: Vec<(Side, Decimal, u64)> = m
            .orders
            .values()
            .filter(|o| o.status.is_open())
            .filter(|o| match force {
                Some(Some(id)) => o.order_id == id,
                Some(None) => true,
                None => match o.side {
                    Side::Buy => o.price >= ask,
                    Side::Sell => o.price <= bid,
                },
            })
            .map(|o| (o.side, o.price, o.order_id))
            .collect();
        // Price-time priority: the best bid (highest) and the best ask (lowest) trade first,
        // then the older order at the same price.
        crossed.sort_by(|a, b| {
            let by_price = match a.0 {
                Side::Buy => b.1.cmp(&a.1),
                Side::Sell => a.1.cmp(&b.1),
            };
            (a.0 == Side::Sell).cmp(&(b.0 == Side::Sell)).then(by_price).then(a.2.cmp(&b.2))
        });
        let candidates: Vec<u64> = crossed.into_iter().map(|(_, _, id)| id).collect();
        let mut filled = 0;
        for id in candidates {
            let Some(mut order) = self.markets.get(symbol).and_then(|m| m.orders.get(&id)).cloned() else { continue };
            let remaining = order.orig_qty.checked_sub(order.executed_qty).unwrap_or(Decimal::ZERO);
            if remaining <= Decimal::ZERO {
                continue;
            }
            let qty = if whole || self.rng.chance(50) {
                remaining
            } else {
                let pct = self.rng.range(20, 80);
                remaining
                    .checked_mul(Decimal::new(pct as i128, 2))
                    .and_then(|q| q.floor_to(step))
                    .filter(|q| !q.is_zero())
                    .unwrap_or(remaining)
            };
            let price = order.price;
            self.fill(&mut order, qty, price, true, now_ms);
            if let Some(m) = self.markets.get_mut(symbol) {
                m.put_order(order);
            }
            filled += 1;
        }
        self.commit_books();
        filled
    }
}

/// How a new order meets the market, decided once for the checks and the fill.
struct Crossing {
    crosses: bool,
    /// The price a crossing order takes: the ask for a BUY, the bid for a SELL.
    touch: Decimal,
    /// What the order spends: the quote asset for a BUY, the base asset for a SELL.
    asset: String,
    step: Decimal,
}

/// Which parameters each order type needs and refuses (`-1102`, `-1106`), and a known
/// self-trade prevention mode (`-1130`).
fn check_parameters(req: &NewOrder) -> Result<(), ApiError> {
    match req.order_type {
        OrderType::LimitMaker => {
            if req.time_in_force.is_some() {
                return Err(ApiError::not_required("timeInForce"));
            }
            if req.quote_order_qty.is_some() {
                return Err(ApiError::not_required("quoteOrderQty"));
            }
            req.quantity.ok_or_else(|| ApiError::mandatory("quantity"))?;
            req.price.ok_or_else(|| ApiError::mandatory("price"))?;
        }
        OrderType::Limit => {
            req.time_in_force.ok_or_else(|| ApiError::mandatory("timeInForce"))?;
            if req.quote_order_qty.is_some() {
                return Err(ApiError::not_required("quoteOrderQty"));
            }
            req.quantity.ok_or_else(|| ApiError::mandatory("quantity"))?;
            req.price.ok_or_else(|| ApiError::mandatory("price"))?;
        }
        OrderType::Market => {
            if req.price.is_some() {
                return Err(ApiError::not_required("price"));
            }
            if req.time_in_force.is_some() {
                return Err(ApiError::not_required("timeInForce"));
            }
            match (req.quantity, req.quote_order_qty) {
                (None, None) => {
                    return Err(ApiError::bad(
                        -1102,
                        "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
                    ))
                }
                (Some(_), Some(_)) => return Err(ApiError::not_required("quoteOrderQty")),
                _ => {}
            }
        }
    }
    if let Some(mode) = &req.stp_mode {
        if !["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT", "TRANSFER", "NONE"].contains(&mode.as_str()) {
            return Err(ApiError::bad(-1130, "Data sent for parameter 'selfTradePreventionMode' is not valid."));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The matching rules the daemon's correctness rests on, against the engine alone (no
    //! sockets): what crosses, what rests, in which order resting orders fill, what is locked
    //! and what comes back.

    use super::super::{EngineSettings, RespType};
    use super::*;
    use crate::hub::StreamHub;

    const NOW: i64 = 1_700_000_000_000;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// BTCUSD at bid 59999.99 / ask 60000.01; USD 1,000,000, BTC 10; fees 0.1 %.
    fn engine() -> Engine {
        Engine::new(EngineSettings::default(), StreamHub::new())
    }

    fn req(side: Side, order_type: OrderType, tif: Option<TimeInForce>, qty: &str, price: &str) -> NewOrder {
        NewOrder {
            symbol: "BTCUSD".into(),
            side,
            order_type,
            time_in_force: tif,
            quantity: Some(d(qty)),
            quote_order_qty: None,
            price: Some(d(price)),
            new_client_order_id: None,
            resp_type: Some(RespType::Full),
            stp_mode: None,
            test: false,
        }
    }

    fn maker(side: Side, qty: &str, price: &str) -> NewOrder {
        req(side, OrderType::LimitMaker, None, qty, price)
    }

    fn place(e: &mut Engine, r: NewOrder) -> u64 {
        let v = e.new_order(r, NOW, Origin::Api).expect("accepted");
        v["orderId"].as_u64().unwrap()
    }

    fn order(e: &Engine, id: u64) -> &Order {
        &e.markets["BTCUSD"].orders[&id]
    }

    fn trades_of(e: &Engine, id: u64) -> Vec<&TradeRecord> {
        e.trades().iter().filter(|t| t.order_id == id).collect()
    }

    #[test]
    fn a_crossing_limit_maker_is_rejected_and_locks_nothing() {
        let mut e = engine();
        for r in [maker(Side::Buy, "0.01", "60000.01"), maker(Side::Sell, "0.01", "59999.99")] {
            let err = e.new_order(r, NOW, Origin::Api).unwrap_err();
            assert_eq!((err.status, err.code), (400, -2010));
            assert_eq!(err.msg, "Order would immediately match and take.");
        }
        assert_eq!(e.balance("USD"), (d("1000000"), Decimal::ZERO));
        assert_eq!(e.balance("BTC"), (d("10"), Decimal::ZERO));
        assert!(e.trades().is_empty());
        // One tick inside the spread rests.
        let id = place(&mut e, maker(Side::Buy, "0.01", "60000.00"));
        assert_eq!(order(&e, id).status, OrderStatus::New);
    }

    #[test]
    fn a_resting_order_locks_what_it_may_spend_and_a_cancel_frees_it() {
        let mut e = engine();
        let buy = place(&mut e, maker(Side::Buy, "0.01", "59000"));
        assert_eq!(e.balance("USD"), (d("999410"), d("590")));
        let sell = place(&mut e, maker(Side::Sell, "0.5", "61000"));
        assert_eq!(e.balance("BTC"), (d("9.5"), d("0.5")));
        e.cancel_order("BTCUSD", Some(buy), None, None, NOW).unwrap();
        e.cancel_order("BTCUSD", None, Some(&order(&e, sell).client_order_id.clone()), None, NOW).unwrap();
        assert_eq!(e.balance("USD"), (d("1000000"), Decimal::ZERO));
        assert_eq!(e.balance("BTC"), (d("10"), Decimal::ZERO));
        assert_eq!(order(&e, buy).status, OrderStatus::Canceled);
        // More than the free balance is refused before anything is locked.
        let err = e.new_order(maker(Side::Buy, "100", "59000"), NOW, Origin::Api).unwrap_err();
        assert_eq!((err.code, err.msg.as_str()), (-2010, "Account has insufficient balance for requested action."));
        assert_eq!(e.balance("USD"), (d("1000000"), Decimal::ZERO));
    }

    #[test]
    fn a_partial_fill_keeps_the_rest_open_and_locked() {
        let mut e = engine();
        let id = place(&mut e, maker(Side::Buy, "0.01", "59000"));
        let mut o = order(&e, id).clone();
        e.fill(&mut o, d("0.004"), d("59000"), true, NOW);
        e.markets.get_mut("BTCUSD").unwrap().orders.insert(id, o);
        let o = order(&e, id);
        assert_eq!((o.status, o.executed_qty, o.locked), (OrderStatus::PartiallyFilled, d("0.004"), d("354")));
        // 236 spent from the lock; the BTC bought less the 0.1 % maker fee.
        assert_eq!(e.balance("USD"), (d("999410"), d("354")));
        assert_eq!(e.balance("BTC"), (d("10.003996"), Decimal::ZERO));
        assert_eq!(e.fill_orders("BTCUSD", NOW, Some(Some(id)), true), 1);
        let o = order(&e, id);
        assert_eq!((o.status, o.executed_qty, o.locked), (OrderStatus::Filled, d("0.01"), Decimal::ZERO));
        assert_eq!(e.balance("USD"), (d("999410"), Decimal::ZERO));
        let fills = trades_of(&e, id);
        assert_eq!(fills.len(), 2);
        assert!(fills.iter().all(|t| t.maker));
        assert!(fills[0].id < fills[1].id, "trade ids grow");
    }

    #[test]
    fn resting_orders_fill_by_price_then_time_when_the_market_crosses_them() {
        let mut e = engine();
        let low = place(&mut e, maker(Side::Buy, "0.01", "59000"));
        let first = place(&mut e, maker(Side::Buy, "0.01", "59500"));
        let second = place(&mut e, maker(Side::Buy, "0.01", "59500"));
        // The ask falls to 59500: the better-priced bids fill, the lower one waits.
        e.set_touch("BTCUSD", d("59499.98")).unwrap();
        assert_eq!(e.fill_orders("BTCUSD", NOW, None, true), 2);
        assert_eq!(order(&e, low).status, OrderStatus::New);
        assert_eq!(order(&e, first).status, OrderStatus::Filled);
        assert_eq!(order(&e, second).status, OrderStatus::Filled);
        // Same price: the earlier order trades first.
        let ids: Vec<u64> = e.trades().iter().map(|t| t.order_id).collect();
        assert_eq!(ids, vec![first, second]);
        // A maker fills at its own price, not the market's.
        assert!(e.trades().iter().all(|t| t.price == d("59500") && t.maker));
        e.set_touch("BTCUSD", d("58999.98")).unwrap();
        assert_eq!(e.fill_orders("BTCUSD", NOW, None, true), 1);
        assert_eq!(order(&e, low).status, OrderStatus::Filled);
    }

    #[test]
    fn a_better_price_placed_later_trades_before_an_older_worse_one() {
        let mut e = engine();
        let worse = place(&mut e, maker(Side::Buy, "0.01", "59200"));
        let better = place(&mut e, maker(Side::Buy, "0.01", "59500"));
        // The ask drops through both at once: the best bid trades first.
        e.set_touch("BTCUSD", d("59000")).unwrap();
        assert_eq!(e.fill_orders("BTCUSD", NOW, None, true), 2);
        let ids: Vec<u64> = e.trades().iter().map(|t| t.order_id).collect();
        assert_eq!(ids, vec![better, worse]);
    }

    #[test]
    fn ioc_and_fok_that_cannot_fill_expire_at_once_and_give_the_lock_back() {
        let mut e = engine();
        for tif in [TimeInForce::Ioc, TimeInForce::Fok] {
            let r = req(Side::Buy, OrderType::Limit, Some(tif), "0.01", "59000");
            let v = e.new_order(r, NOW, Origin::Api).unwrap();
            assert_eq!(v["status"], "EXPIRED", "{tif:?}");
            let id = v["orderId"].as_u64().unwrap();
            assert_eq!((order(&e, id).status, order(&e, id).locked), (OrderStatus::Expired, Decimal::ZERO));
            assert!(trades_of(&e, id).is_empty());
            assert!(e.fill_orders("BTCUSD", NOW, Some(Some(id)), true) == 0, "an expired order never fills");
        }
        assert_eq!(e.balance("USD"), (d("1000000"), Decimal::ZERO));
    }

    #[test]
    fn a_crossing_ioc_takes_the_touch_whole_and_refunds_the_price_difference() {
        let mut e = engine();
        let r = req(Side::Buy, OrderType::Limit, Some(TimeInForce::Ioc), "0.01", "60100");
        let v = e.new_order(r, NOW, Origin::Api).unwrap();
        assert_eq!(v["status"], "FILLED");
        let id = v["orderId"].as_u64().unwrap();
        let fills = trades_of(&e, id);
        assert_eq!(fills.len(), 1);
        assert_eq!((fills[0].price, fills[0].qty, fills[0].maker), (d("60000.01"), d("0.01"), false));
        // Locked at 60100 × 0.01 = 601, spent 600.0001: the rest is free again.
        assert_eq!(e.balance("USD"), (d("999399.9999"), Decimal::ZERO));
    }

    #[test]
    fn own_orders_never_trade_with_each_other() {
        let mut e = engine();
        // Both inside the spread at the same price: each rests, neither fills the other.
        let sell = place(&mut e, maker(Side::Sell, "0.01", "60000.00"));
        let buy = place(&mut e, maker(Side::Buy, "0.01", "60000.00"));
        // A taker that crosses the market takes the market's touch, not the account's own ask.
        let taker = place(&mut e, req(Side::Buy, OrderType::Limit, Some(TimeInForce::Gtc), "0.01", "60000.01"));
        assert_eq!(order(&e, sell).status, OrderStatus::New);
        assert_eq!(order(&e, buy).status, OrderStatus::New);
        assert_eq!(order(&e, sell).executed_qty, Decimal::ZERO);
        assert!(trades_of(&e, sell).is_empty() && trades_of(&e, buy).is_empty());
        assert_eq!(trades_of(&e, taker).len(), 1);
        assert!(!trades_of(&e, taker)[0].maker);
        // Only the documented self-trade prevention modes are accepted.
        let mut bad = maker(Side::Buy, "0.01", "59000");
        bad.stp_mode = Some("SOMETIMES".into());
        assert_eq!(e.new_order(bad, NOW, Origin::Api).unwrap_err().code, -1130);
    }

    /// Model-based (issue 12): random flows of maker orders, cancels and market moves against a
    /// small reference model of the rules the daemon relies on: a crossing LIMIT_MAKER is
    /// rejected, an order the free balance cannot pay is rejected, resting orders crossed by
    /// the market fill at their own price best price first then oldest first, and balances are
    /// conserved with fees accounted.
    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Place { buy: bool, ticks_off: i64, qty_milli: i64 },
            Cancel { pick: usize },
            Move { ticks: i64 },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (any::<bool>(), -5i64..40, prop_oneof![9 => 1i64..50, 1 => 5_000i64..20_000])
                    .prop_map(|(buy, ticks_off, qty_milli)| Op::Place { buy, ticks_off, qty_milli }),
                1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
                2 => (-60i64..60).prop_map(|ticks| Op::Move { ticks }),
            ]
        }

        #[derive(Debug, Clone)]
        struct Resting {
            id: u64,
            buy: bool,
            price: Decimal,
            qty: Decimal,
        }

        /// The reference: what the engine should hold.
        struct Model {
            bid: Decimal,
            ask: Decimal,
            usd: (Decimal, Decimal),
            btc: (Decimal, Decimal),
            open: Vec<Resting>,
        }

        fn floor8(x: Decimal) -> Decimal {
            x.floor_to(Decimal::new(1, 8)).unwrap_or(x)
        }

        fn add(a: Decimal, b: Decimal) -> Decimal {
            a.checked_add(b).unwrap()
        }

        fn sub(a: Decimal, b: Decimal) -> Decimal {
            a.checked_sub(b).unwrap()
        }

        proptest! {
            #![proptest_config(crate::proptest_config(64))]

            #[test]
            fn the_engine_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
                let mut e = engine();
                let tick = d("0.01");
                let rate = d("0.001");
                let mut m = Model {
                    bid: d("59999.99"),
                    ask: d("60000.01"),
                    usd: (d("1000000"), Decimal::ZERO),
                    btc: (d("10"), Decimal::ZERO),
                    open: Vec::new(),
                };
                for op in ops {
                    match op {
                        Op::Place { buy, ticks_off, qty_milli } => {
                            let off = tick.checked_mul(Decimal::from_int(ticks_off)).unwrap();
                            let price = if buy { sub(m.bid, off) } else { add(m.ask, off) };
                            let qty = Decimal::new(qty_milli as i128, 3);
                            let side = if buy { Side::Buy } else { Side::Sell };
                            let got = e.new_order(maker(side, &qty.to_string(), &price.to_string()), NOW, Origin::Api);
                            let crosses = if buy { price >= m.ask } else { price <= m.bid };
                            let cost = if buy { price.checked_mul(qty).unwrap() } else { qty };
                            let free = if buy { m.usd.0 } else { m.btc.0 };
                            if crosses {
                                let err = got.expect_err("a crossing LIMIT_MAKER must be rejected");
                                prop_assert_eq!((err.code, err.msg.as_str()), (-2010, "Order would immediately match and take."));
                            } else if cost > free {
                                let err = got.expect_err("an order the balance cannot pay must be rejected");
                                prop_assert_eq!(err.code, -2010);
                            } else {
                                let v = got.map_err(|e| TestCaseError::fail(format!("refused: {} {}", e.code, e.msg)))?;
                                let id = v["orderId"].as_u64().unwrap();
                                let bal = if buy { &mut m.usd } else { &mut m.btc };
                                *bal = (sub(bal.0, cost), add(bal.1, cost));
                                m.open.push(Resting { id, buy, price, qty });
                            }
                        }
                        Op::Cancel { pick } => {
                            if m.open.is_empty() {
                                continue;
                            }
                            let r = m.open.remove(pick % m.open.len());
                            e.cancel_order("BTCUSD", Some(r.id), None, None, NOW).unwrap();
                            let cost = if r.buy { r.price.checked_mul(r.qty).unwrap() } else { r.qty };
                            let bal = if r.buy { &mut m.usd } else { &mut m.btc };
                            *bal = (add(bal.0, cost), sub(bal.1, cost));
                        }
                        Op::Move { ticks } => {
                            let bid = add(m.bid, tick.checked_mul(Decimal::from_int(ticks)).unwrap());
                            e.set_touch("BTCUSD", bid).unwrap();
                            m.bid = bid;
                            m.ask = add(bid, d("0.02"));
                            let before = e.trades().len();
                            let filled = e.fill_orders("BTCUSD", NOW, None, true);
                            // Crossed: best bid first, best ask first, then the older order.
                            let mut crossed: Vec<Resting> = m
                                .open
                                .iter()
                                .filter(|r| if r.buy { r.price >= m.ask } else { r.price <= m.bid })
                                .cloned()
                                .collect();
                            crossed.sort_by(|a, b| {
                                (!a.buy).cmp(&!b.buy).then(if a.buy { b.price.cmp(&a.price) } else { a.price.cmp(&b.price) }).then(a.id.cmp(&b.id))
                            });
                            prop_assert_eq!(filled, crossed.len());
                            let traded: Vec<u64> = e.trades()[before..].iter().map(|t| t.order_id).collect();
                            prop_assert_eq!(traded, crossed.iter().map(|r| r.id).collect::<Vec<_>>());
                            for r in &crossed {
                                let quote = floor8(r.price.checked_mul(r.qty).unwrap());
                                if r.buy {
                                    let fee = floor8(r.qty.checked_mul(rate).unwrap());
                                    m.usd.1 = sub(m.usd.1, r.price.checked_mul(r.qty).unwrap());
                                    m.usd.0 = add(m.usd.0, sub(r.price.checked_mul(r.qty).unwrap(), quote));
                                    m.btc.0 = add(m.btc.0, sub(r.qty, fee));
                                } else {
                                    let fee = floor8(quote.checked_mul(rate).unwrap());
                                    m.btc.1 = sub(m.btc.1, r.qty);
                                    m.usd.0 = add(m.usd.0, sub(quote, fee));
                                }
                            }
                            m.open.retain(|r| !crossed.iter().any(|c| c.id == r.id));
                        }
                    }
                    prop_assert_eq!(e.balance("USD"), m.usd, "USD");
                    prop_assert_eq!(e.balance("BTC"), m.btc, "BTC");
                    let mut open: Vec<u64> = e.markets["BTCUSD"].orders.values().filter(|o| o.status.is_open()).map(|o| o.order_id).collect();
                    open.sort_unstable();
                    let mut expected: Vec<u64> = m.open.iter().map(|r| r.id).collect();
                    expected.sort_unstable();
                    prop_assert_eq!(open, expected);
                }
            }
        }
    }
}
