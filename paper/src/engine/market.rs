//! The market simulator: listed symbols, a seeded mid price that moves in whole ticks, the
//! prints behind `avgPrice` and `ticker/24hr`, the market-data endpoints, and the external
//! trader who stands for someone using the web UI on the same account.

use super::book::{resting, MarketSnapshot, PublicBook, PublicTrade};
use super::rules::SymbolRules;
use super::{floor8, fmt8, ApiError, Engine, NewOrder, Order, Origin, RespType, SCALE};
use crate::order::{OrderType, Side};
use binance_syncd_plugin::Decimal;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};

/// A symbol as the paper exchange lists it.
#[derive(Debug, Clone)]
pub struct SymbolSpec {
    pub symbol: String,
    pub base: String,
    pub quote: String,
    pub tick: Decimal,
    pub step: Decimal,
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    pub min_notional: Decimal,
    pub start_price: Decimal,
    /// Largest move of the mid price per market tick, in ticks.
    pub volatility_ticks: i64,
    /// `cancelReplaceAllowed`: when false, `order/cancelReplace` is refused on this symbol.
    pub cancel_replace_allowed: bool,
}

impl SymbolSpec {
    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or(Decimal::ZERO)
    }

    pub fn btcusd() -> SymbolSpec {
        SymbolSpec {
            symbol: "BTCUSD".into(),
            base: "BTC".into(),
            quote: "USD".into(),
            tick: Self::d("0.01"),
            step: Self::d("0.00001"),
            min_qty: Self::d("0.00001"),
            max_qty: Self::d("9000"),
            min_notional: Self::d("1"),
            start_price: Self::d("60000.00"),
            volatility_ticks: 1500,
            cancel_replace_allowed: true,
        }
    }

    pub fn ethusd() -> SymbolSpec {
        SymbolSpec {
            symbol: "ETHUSD".into(),
            base: "ETH".into(),
            quote: "USD".into(),
            tick: Self::d("0.01"),
            step: Self::d("0.0001"),
            min_qty: Self::d("0.0001"),
            max_qty: Self::d("9000"),
            min_notional: Self::d("1"),
            start_price: Self::d("3000.00"),
            volatility_ticks: 150,
            cancel_replace_allowed: true,
        }
    }

    /// The `exchangeInfo` entry, shaped like the Binance.US BTCUSD sample pinned in
    /// `tests/fixtures/exchange_info_btcusd.json`,
    /// including filters a client may not know.
    pub(super) fn exchange_info(&self, max_num_orders: u64) -> Value {
        let p8 = |d: Decimal| fmt8(d);
        json!({
            "symbol": self.symbol, "status": "TRADING",
            "baseAsset": self.base, "baseAssetPrecision": 8,
            "quoteAsset": self.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": true, "ocoAllowed": true, "otoAllowed": true, "opoAllowed": true,
            "quoteOrderQtyMarketAllowed": true, "allowTrailingStop": true, "cancelReplaceAllowed": self.cancel_replace_allowed,
            "amendAllowed": true, "pegInstructionsAllowed": true,
            "isSpotTradingAllowed": true, "isMarginTradingAllowed": false,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": p8(self.tick), "maxPrice": "1000000.00000000", "tickSize": p8(self.tick)},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "5", "multiplierDown": "0.2", "avgPriceMins": 5},
                {"filterType": "LOT_SIZE", "minQty": p8(self.min_qty), "maxQty": p8(self.max_qty), "stepSize": p8(self.step)},
                {"filterType": "MIN_NOTIONAL", "minNotional": p8(self.min_notional), "applyToMarket": true, "avgPriceMins": 5},
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": p8(self.max_qty), "stepSize": "0.00000000"},
                {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000, "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
                {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2", "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": max_num_orders},
                {"filterType": "MAX_NUM_ORDER_LISTS", "maxNumOrderLists": 20},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
                {"filterType": "MAX_NUM_ORDER_AMENDS", "maxNumOrderAmends": 10},
                // A filter type no client knows yet: clients must keep working ("Filters").
                {"filterType": "PAPER_FUTURE_FILTER", "futureLimit": 3}
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT", "TRANSFER"]
        })
    }
}

/// Deterministic pseudo-random numbers (xorshift64*): the same seed gives the same market.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }

    /// True with probability `pct`/100.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }
}

#[derive(Debug)]
pub(super) struct Market {
    pub(super) spec: SymbolSpec,
    pub(super) rules: SymbolRules,
    pub(super) bid: Decimal,
    pub(super) ask: Decimal,
    pub(super) next_order_id: u64,
    pub(super) next_trade_id: u64,
    /// Market prints `(time, price, qty)` for `avgPrice`, oldest first.
    pub(super) prints: VecDeque<(i64, Decimal, Decimal)>,
    pub(super) orders: BTreeMap<u64, Order>,
    /// The public book: resting orders and synthetic liquidity, with its update id.
    pub(super) book: PublicBook,
}

impl Engine {
    pub fn exchange_info(
        &self,
        now_ms: i64,
        symbols: Option<&[String]>,
        rate_limits: Value,
    ) -> Result<Value, ApiError> {
        let mut list = Vec::new();
        match symbols {
            Some(wanted) => {
                for s in wanted {
                    let m = self.markets.get(s).ok_or_else(|| ApiError::bad(-1121, "Invalid symbol."))?;
                    list.push(m.spec.exchange_info(self.settings.max_num_orders));
                }
            }
            None => list = self.markets.values().map(|m| m.spec.exchange_info(self.settings.max_num_orders)).collect(),
        }
        Ok(json!({
            "timezone": "UTC",
            "serverTime": now_ms,
            "rateLimits": rate_limits,
            "exchangeFilters": [],
            "symbols": list,
        }))
    }

    pub(super) fn market(&self, symbol: &str) -> Result<&Market, ApiError> {
        self.markets.get(symbol).ok_or_else(|| ApiError::bad(-1121, "Invalid symbol."))
    }

    /// Whether `symbol` takes `order/cancelReplace` (false for an unknown symbol).
    pub fn cancel_replace_allowed(&self, symbol: &str) -> bool {
        self.market(symbol).is_ok_and(|m| m.spec.cancel_replace_allowed)
    }

    pub fn has_symbol(&self, symbol: &str) -> bool {
        self.markets.contains_key(symbol)
    }

    pub fn book_ticker(&self, symbol: &str) -> Result<Value, ApiError> {
        let ((bid, bid_qty), (ask, ask_qty)) = self.market(symbol)?.book.touch();
        Ok(json!({
            "symbol": symbol,
            "bidPrice": fmt8(bid), "bidQty": fmt8(bid_qty),
            "askPrice": fmt8(ask), "askQty": fmt8(ask_qty),
        }))
    }

    pub fn book_tickers(&self) -> Value {
        Value::Array(self.markets.keys().filter_map(|s| self.book_ticker(s).ok()).collect())
    }

    pub fn ticker_price(&self, symbol: &str) -> Result<Value, ApiError> {
        let m = self.market(symbol)?;
        Ok(json!({"symbol": symbol, "price": fmt8(mid(m))}))
    }

    pub fn ticker_prices(&self) -> Value {
        Value::Array(self.markets.keys().filter_map(|s| self.ticker_price(s).ok()).collect())
    }

    /// `ticker/24hr` (FULL): statistics from the prints the paper market keeps.
    pub fn ticker_24hr(&self, symbol: &str, now_ms: i64) -> Result<Value, ApiError> {
        let m = self.market(symbol)?;
        let last = m.prints.back().map(|(_, p, q)| (*p, *q)).unwrap_or((mid(m), Decimal::ZERO));
        let open = m.prints.front().map(|(_, p, _)| *p).unwrap_or(last.0);
        let (mut high, mut low, mut volume, mut quote) = (last.0, last.0, Decimal::ZERO, Decimal::ZERO);
        for (_, p, q) in &m.prints {
            high = high.max(*p);
            low = low.min(*p);
            volume = volume.checked_add(*q).unwrap_or(volume);
            quote = quote.checked_add(p.checked_mul(*q).unwrap_or(Decimal::ZERO)).unwrap_or(quote);
        }
        let change = last.0.checked_sub(open).unwrap_or(Decimal::ZERO);
        let pct =
            change.checked_mul(Decimal::from_int(100)).and_then(|c| c.checked_div(open, 3)).unwrap_or(Decimal::ZERO);
        let wavg = quote.checked_div(volume, 8).unwrap_or(last.0);
        let ((bid, bid_qty), (ask, ask_qty)) = m.book.touch();
        Ok(json!({
            "symbol": symbol, "priceChange": fmt8(change), "priceChangePercent": pct.to_string(),
            "weightedAvgPrice": fmt8(wavg), "prevClosePrice": fmt8(open), "lastPrice": fmt8(last.0),
            "lastQty": fmt8(last.1), "bidPrice": fmt8(bid), "bidQty": fmt8(bid_qty),
            "askPrice": fmt8(ask), "askQty": fmt8(ask_qty), "openPrice": fmt8(open),
            "highPrice": fmt8(high), "lowPrice": fmt8(low), "volume": fmt8(volume),
            "quoteVolume": fmt8(floor8(quote)), "openTime": now_ms - 86_400_000, "closeTime": now_ms,
            "firstId": m.next_trade_id.saturating_sub(m.prints.len() as u64), "lastId": m.next_trade_id,
            "count": m.prints.len(),
        }))
    }

    pub fn tickers_24hr(&self, now_ms: i64) -> Value {
        Value::Array(self.markets.keys().filter_map(|s| self.ticker_24hr(s, now_ms).ok()).collect())
    }

    /// `GET /api/v3/depth`: the public book's best `limit` levels a side, or (`back` > 0, the
    /// `stale_depth` fault) the book as it was `back` updates ago.
    pub fn depth(&self, symbol: &str, limit: usize, back: usize) -> Result<Value, ApiError> {
        Ok(self.market(symbol)?.book.depth_json(limit, back))
    }

    /// Each symbol's public book update id, for the report.
    pub fn book_update_ids(&self) -> BTreeMap<String, u64> {
        self.markets.iter().map(|(s, m)| (s.clone(), m.book.update_id)).collect()
    }

    /// The listed symbols.
    pub fn symbols(&self) -> Vec<String> {
        self.markets.keys().cloned().collect()
    }

    /// Volume-weighted price of the last 5 minutes of prints; the mid when there were none.
    pub fn avg_price_value(&self, symbol: &str, now_ms: i64) -> Result<Decimal, ApiError> {
        let m = self.market(symbol)?;
        let since = now_ms - 5 * 60_000;
        let (mut pq, mut q) = (Decimal::ZERO, Decimal::ZERO);
        for (t, p, qty) in &m.prints {
            if *t >= since {
                pq = pq.checked_add(p.checked_mul(*qty).unwrap_or(Decimal::ZERO)).unwrap_or(pq);
                q = q.checked_add(*qty).unwrap_or(q);
            }
        }
        if q.is_zero() {
            return Ok(mid(m));
        }
        Ok(pq.checked_div(q, SCALE).unwrap_or_else(|| mid(m)))
    }

    pub fn avg_price(&self, symbol: &str, now_ms: i64) -> Result<Value, ApiError> {
        let avg = self.avg_price_value(symbol, now_ms)?;
        Ok(json!({"mins": 5, "price": fmt8(avg), "closeTime": now_ms}))
    }

    /// One market step: the mid moves a seeded number of ticks, other traders print (trade ids
    /// advance with gaps), resting orders the price crossed fill as maker, often partially,
    /// and the external trader may act.
    pub fn tick(&mut self, now_ms: i64) {
        self.expire_key(now_ms, false);
        if self.faults.quiesced {
            return;
        }
        self.steps += 1;
        let (seed, steps) = (self.settings.seed, self.steps);
        let symbols: Vec<String> = self.markets.keys().cloned().collect();
        for symbol in &symbols {
            let Some(m) = self.markets.get_mut(symbol) else { continue };
            let vol = m.spec.volatility_ticks.max(1);
            let moved = self.rng.range(-vol, vol);
            let delta = m.spec.tick.checked_mul(Decimal::from_int(moved)).unwrap_or(Decimal::ZERO);
            let spread = m.spec.tick.checked_mul(Decimal::from_int(2)).unwrap_or(m.spec.tick);
            let floor = m.spec.tick.checked_mul(Decimal::from_int(10)).unwrap_or(m.spec.tick);
            let new_bid = m.bid.checked_add(delta).filter(|b| *b > floor).unwrap_or(m.bid);
            m.bid = new_bid;
            m.ask = new_bid.checked_add(spread).unwrap_or(new_bid);
            m.move_ladder(seed, steps);
            let first_trade = m.next_trade_id + 1;
            m.next_trade_id += self.rng.range(1, 3) as u64;
            let print_qty = m.spec.step.checked_mul(Decimal::from_int(self.rng.range(1, 1000))).unwrap_or(m.spec.step);
            let print_price = m.bid;
            m.prints.push_back((now_ms, print_price, print_qty));
            while m.prints.len() > 4096 {
                m.prints.pop_front();
            }
            // Other traders' trades, at the bid: a seller took the bid, so the buyer made it.
            for id in first_trade..=m.next_trade_id {
                let t = PublicTrade {
                    id,
                    price: print_price,
                    qty: print_qty,
                    time: now_ms,
                    order_id: 0,
                    buyer_side: true,
                    buyer_maker: true,
                };
                self.publish_trade(symbol, t);
            }
            self.fill_crossed(symbol, now_ms, None);
        }
        self.commit_books();
        if self.settings.external_trader_pct > 0 && self.rng.chance(self.settings.external_trader_pct) {
            self.external_trader(now_ms);
        }
    }

    /// Someone using the web UI on the same account: places resting and market orders and
    /// cancels some, so a client sees fills of orders it did not place.
    pub(super) fn external_trader(&mut self, now_ms: i64) {
        let symbols: Vec<String> = self.markets.keys().cloned().collect();
        let Some(symbol) = symbols.get(self.rng.range(0, symbols.len() as i64 - 1) as usize).cloned() else { return };
        let Some(m) = self.markets.get(&symbol) else { return };
        let (bid, ask, tick, step, min_notional) = (m.bid, m.ask, m.spec.tick, m.spec.step, m.spec.min_notional);
        let open: Vec<u64> = m
            .orders
            .values()
            .filter(|o| o.status.is_open() && o.origin == Origin::External)
            .map(|o| o.order_id)
            .collect();
        let roll = self.rng.range(0, 99);
        if roll < 20 && !open.is_empty() {
            let id = open[self.rng.range(0, open.len() as i64 - 1) as usize];
            let _ = self.cancel_order(&symbol, Some(id), None, None, now_ms);
            return;
        }
        let side = if self.rng.chance(50) { Side::Buy } else { Side::Sell };
        // Enough quantity to clear the minimum notional at the current price, a few steps more.
        let px = if side == Side::Buy { bid } else { ask };
        let min_qty = min_notional
            .checked_mul(Decimal::from_int(3))
            .and_then(|n| n.checked_div(px, 8))
            .and_then(|q| q.ceil_to(step))
            .unwrap_or(step);
        let qty = min_qty
            .checked_add(step.checked_mul(Decimal::from_int(self.rng.range(0, 50))).unwrap_or(step))
            .unwrap_or(min_qty);
        self.external_seq += 1;
        let (order_type, price) = if roll < 30 {
            (OrderType::Market, None)
        } else {
            let away = tick.checked_mul(Decimal::from_int(self.rng.range(0, 200))).unwrap_or(tick);
            let p = match side {
                Side::Buy => bid.checked_sub(away),
                Side::Sell => ask.checked_add(away),
            };
            (OrderType::LimitMaker, p.filter(|p| *p > Decimal::ZERO))
        };
        if order_type == OrderType::LimitMaker && price.is_none() {
            return;
        }
        let req = NewOrder {
            symbol,
            side,
            order_type,
            time_in_force: None,
            quantity: Some(qty),
            quote_order_qty: None,
            price,
            new_client_order_id: Some(format!("web_{}", self.external_seq)),
            resp_type: Some(RespType::Ack),
            stp_mode: None,
            test: false,
        };
        if let Err(e) = self.new_order(req, now_ms, Origin::External) {
            log::debug!("paper external trader: order refused: {}", e.msg);
        }
    }

    /// Moves the market so the given price is crossed (tests use it to cause fills precisely).
    pub fn set_touch(&mut self, symbol: &str, bid: Decimal) -> Result<(), ApiError> {
        let m = self.markets.get_mut(symbol).ok_or_else(|| ApiError::bad(-1121, "Invalid symbol."))?;
        m.bid = bid;
        m.ask = bid.checked_add(m.spec.tick.checked_mul(Decimal::from_int(2)).unwrap_or(m.spec.tick)).unwrap_or(bid);
        self.steps += 1;
        let (seed, steps) = (self.settings.seed, self.steps);
        if let Some(m) = self.markets.get_mut(symbol) {
            m.move_ladder(seed, steps);
        }
        Ok(())
    }

    pub fn touch(&self, symbol: &str) -> Option<(Decimal, Decimal)> {
        self.markets.get(symbol).map(|m| (m.bid, m.ask))
    }
}

impl Market {
    /// Stores `order`, moving the book's resting quantities by what changed.
    pub(super) fn put_order(&mut self, order: Order) {
        let before = self.orders.get(&order.order_id).map(resting).unwrap_or(Decimal::ZERO);
        let after = resting(&order);
        if let Some(delta) = after.checked_sub(before) {
            self.book.rest_delta(order.side, order.price, delta);
        }
        self.orders.insert(order.order_id, order);
    }

    /// The book at start, before anyone can subscribe: committed without an event.
    pub(super) fn open_book(&mut self, seed: u64) {
        // Binance's update ids are large; any start will do as long as it only grows.
        self.book.update_id = 1_000_000;
        self.move_ladder(seed, 0);
        let _ = self.book.commit();
        self.book.top = self.book.best();
    }

    /// Moves the synthetic ladder to the current bid and ask.
    pub(super) fn move_ladder(&mut self, seed: u64, generation: u64) {
        let snap = MarketSnapshot {
            symbol: &self.spec.symbol,
            bid: self.bid,
            ask: self.ask,
            tick: self.spec.tick,
            step: self.spec.step,
        };
        self.book.set_synthetic(&snap, seed, generation);
    }
}

pub(super) fn mid(m: &Market) -> Decimal {
    m.bid.checked_add(m.ask).and_then(|s| s.checked_div(Decimal::from_int(2), 8)).unwrap_or(m.bid)
}
