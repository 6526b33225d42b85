//! The paper exchange's engine: symbols, a seeded market, one account, orders, trades, listen
//! keys and the user-data events they produce.
//!
//! Everything sits behind one mutex: requests are short, and one lock makes every response and
//! event consistent with every other (an order's `NEW` event is published before the response
//! that acknowledges it, as on Binance). Prices never touch `f64`: the market moves in whole
//! ticks chosen by a seeded xorshift generator, so a run with the same seed and the same
//! requests produces the same trades.
//!
//! Filters and precision are checked with the crate's own `filters` module, the same code the
//! daemon uses to pre-check, so there is one implementation of each rule. The JSON this module
//! emits is built here, field by field, from `../shared/binance-api.md`, not from the daemon's
//! types: a misreading of the API must not be able to pass on both sides.

use super::hub::StreamHub;
use crate::decimal::Decimal;
use crate::filters::{ExchangeRules, Filter, MarketContext, OrderSpec, Rejection, SymbolRules};
use crate::model::{OrderType, Side};
use crate::secret::Secret;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// An error the exchange answers with: HTTP status and Binance's `{code, msg}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: i64,
    pub msg: String,
}

impl ApiError {
    pub fn new(status: u16, code: i64, msg: impl Into<String>) -> ApiError {
        ApiError { status, code, msg: msg.into() }
    }

    pub fn bad(code: i64, msg: impl Into<String>) -> ApiError {
        ApiError::new(400, code, msg)
    }

    pub fn mandatory(param: &str) -> ApiError {
        ApiError::bad(-1102, format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."))
    }

    pub fn not_required(param: &str) -> ApiError {
        ApiError::bad(-1106, format!("Parameter '{param}' sent when not required."))
    }

    pub fn rejected(msg: &str) -> ApiError {
        ApiError::bad(-2010, msg)
    }
}

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
        }
    }

    /// The `exchangeInfo` entry, shaped like the documented Binance.US BTCUSD sample (§6.5),
    /// including filters a client may not know.
    fn exchange_info(&self, max_num_orders: u64) -> Value {
        let p8 = |d: Decimal| fmt8(d);
        json!({
            "symbol": self.symbol, "status": "TRADING",
            "baseAsset": self.base, "baseAssetPrecision": 8,
            "quoteAsset": self.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": true, "ocoAllowed": true, "otoAllowed": true, "opoAllowed": true,
            "quoteOrderQtyMarketAllowed": true, "allowTrailingStop": true, "cancelReplaceAllowed": true,
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
                // A filter type no client knows yet: clients must keep working (§6.1).
                {"filterType": "PAPER_FUTURE_FILTER", "futureLimit": 3}
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT", "TRANSFER"]
        })
    }
}

/// Decimals in responses are written with 8 places, as Binance.US writes them.
pub fn fmt8(d: Decimal) -> String {
    match d.with_scale(8) {
        Some(v) => v.to_string(),
        None => d.to_string(),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Expired,
    Rejected,
}

impl OrderStatus {
    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "NEW",
            OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
            OrderStatus::Filled => "FILLED",
            OrderStatus::Canceled => "CANCELED",
            OrderStatus::Expired => "EXPIRED",
            OrderStatus::Rejected => "REJECTED",
        }
    }

    fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInForce {
    Gtc,
    Ioc,
    Fok,
}

impl TimeInForce {
    pub fn parse(s: &str) -> Option<TimeInForce> {
        match s {
            "GTC" => Some(TimeInForce::Gtc),
            "IOC" => Some(TimeInForce::Ioc),
            "FOK" => Some(TimeInForce::Fok),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "GTC",
            TimeInForce::Ioc => "IOC",
            TimeInForce::Fok => "FOK",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespType {
    Ack,
    Result,
    Full,
}

impl RespType {
    pub fn parse(s: &str) -> Option<RespType> {
        match s {
            "ACK" => Some(RespType::Ack),
            "RESULT" => Some(RespType::Result),
            "FULL" => Some(RespType::Full),
            _ => None,
        }
    }
}

/// A validated new-order request, as the HTTP layer hands it over.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub time_in_force: Option<TimeInForce>,
    pub quantity: Option<Decimal>,
    pub quote_order_qty: Option<Decimal>,
    pub price: Option<Decimal>,
    pub new_client_order_id: Option<String>,
    pub resp_type: Option<RespType>,
    pub stp_mode: Option<String>,
    /// `order/test`: validate only.
    pub test: bool,
}

/// Who placed an order, for the report (the external trader stands for a web UI user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Api,
    External,
}

#[derive(Debug, Clone)]
struct Order {
    symbol: String,
    order_id: u64,
    client_order_id: String,
    side: Side,
    order_type: OrderType,
    tif: TimeInForce,
    price: Decimal,
    orig_qty: Decimal,
    executed_qty: Decimal,
    cum_quote: Decimal,
    orig_quote_qty: Decimal,
    status: OrderStatus,
    time: i64,
    update_time: i64,
    working_time: Option<i64>,
    stp_mode: String,
    origin: Origin,
    /// Quote (BUY) or base (SELL) still locked for the unfilled part.
    locked: Decimal,
}

/// One fill on the account: the ground truth a client's fill log is graded against.
#[derive(Debug, Clone, Serialize)]
pub struct TradeRecord {
    pub symbol: String,
    pub id: u64,
    pub order_id: u64,
    pub client_order_id: String,
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    pub quote_qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: String,
    pub time: i64,
    pub maker: bool,
    pub origin: Origin,
    /// Whether the TRADE event reached at least one stream connection.
    pub streamed: bool,
}

#[derive(Debug)]
struct Market {
    spec: SymbolSpec,
    rules: SymbolRules,
    bid: Decimal,
    ask: Decimal,
    next_order_id: u64,
    next_trade_id: u64,
    /// Market prints `(time, price, qty)` for `avgPrice`, oldest first.
    prints: VecDeque<(i64, Decimal, Decimal)>,
    orders: BTreeMap<u64, Order>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenKeyEvent {
    pub time_ms: i64,
    /// Fingerprint of the key.
    pub key: String,
    pub what: String,
}

#[derive(Debug, Clone)]
struct ListenKey {
    key: String,
    expires_ms: i64,
}

/// Settings of the engine (the HTTP and WS layers have their own).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub symbols: Vec<SymbolSpec>,
    pub balances: Vec<(String, Decimal)>,
    pub seed: u64,
    pub maker_commission: Decimal,
    pub taker_commission: Decimal,
    pub listen_key_ttl: Duration,
    pub max_num_orders: u64,
    /// Percent chance per market tick that the external trader acts (0 = off).
    pub external_trader_pct: u64,
}

impl Default for EngineSettings {
    fn default() -> EngineSettings {
        EngineSettings {
            symbols: vec![SymbolSpec::btcusd(), SymbolSpec::ethusd()],
            balances: vec![
                ("USD".into(), Decimal::from_int(1_000_000)),
                ("BTC".into(), Decimal::from_int(10)),
                ("ETH".into(), Decimal::from_int(100)),
            ],
            seed: 1,
            maker_commission: Decimal::new(1, 3),
            taker_commission: Decimal::new(1, 3),
            listen_key_ttl: Duration::from_secs(3600),
            max_num_orders: 200,
            external_trader_pct: 0,
        }
    }
}

/// Faults the engine acts out itself (stream and HTTP faults live in their layers).
#[derive(Debug, Default, Clone)]
pub struct EngineFaults {
    /// Send the next N TRADE events twice.
    pub duplicate_trades: u64,
    /// Do not deliver the next N events to any stream.
    pub drop_events: u64,
    /// The market neither moves nor fills while set.
    pub quiesced: bool,
}

/// The engine's whole mutable state.
pub struct Engine {
    settings: EngineSettings,
    markets: BTreeMap<String, Market>,
    balances: BTreeMap<String, (Decimal, Decimal)>,
    rng: Rng,
    trades: Vec<TradeRecord>,
    listen_key: Option<ListenKey>,
    key_counter: u64,
    pub key_history: Vec<ListenKeyEvent>,
    pub faults: EngineFaults,
    hub: StreamHub,
    external_seq: u64,
    generated_ids: u64,
    exchange_filters: Vec<Filter>,
}

const SCALE: u8 = 8;

fn floor8(d: Decimal) -> Decimal {
    d.floor_to(Decimal::new(1, SCALE)).unwrap_or(d)
}

/// Listen keys look like Binance's: 60 opaque alphanumerics.
fn make_key(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..60).map(|_| ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize] as char).collect()
}

impl Engine {
    pub fn new(settings: EngineSettings, hub: StreamHub) -> Engine {
        let mut rng = Rng::new(settings.seed);
        let mut markets = BTreeMap::new();
        for spec in &settings.symbols {
            let mut info = spec.exchange_info(settings.max_num_orders);
            // The deliberately unknown filter is for clients; parsing it here would only log noise.
            if let Some(filters) = info.get_mut("filters").and_then(Value::as_array_mut) {
                filters.retain(|f| f.get("filterType").and_then(Value::as_str) != Some("PAPER_FUTURE_FILTER"));
            }
            let rules = ExchangeRules::from_json(&json!({ "symbols": [info] }))
                .ok()
                .and_then(|r| r.symbols.get(&spec.symbol).cloned());
            let Some(rules) = rules else { continue };
            let half = spec.tick;
            markets.insert(
                spec.symbol.clone(),
                Market {
                    spec: spec.clone(),
                    rules,
                    bid: spec.start_price.checked_sub(half).unwrap_or(spec.start_price),
                    ask: spec.start_price.checked_add(half).unwrap_or(spec.start_price),
                    next_order_id: 1000 + rng.range(0, 999) as u64,
                    next_trade_id: 5000 + rng.range(0, 999) as u64,
                    prints: VecDeque::new(),
                    orders: BTreeMap::new(),
                },
            );
        }
        let balances = settings.balances.iter().map(|(a, v)| (a.clone(), (*v, Decimal::ZERO))).collect();
        Engine {
            settings,
            markets,
            balances,
            rng,
            trades: Vec::new(),
            listen_key: None,
            key_counter: 0,
            key_history: Vec::new(),
            faults: EngineFaults::default(),
            hub,
            external_seq: 0,
            generated_ids: 0,
            exchange_filters: Vec::new(),
        }
    }

    pub fn set_external_pct(&mut self, pct: u64) {
        self.settings.external_trader_pct = pct;
    }

    pub fn trades(&self) -> &[TradeRecord] {
        &self.trades
    }

    // ---- market data -------------------------------------------------------------------

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

    fn market(&self, symbol: &str) -> Result<&Market, ApiError> {
        self.markets.get(symbol).ok_or_else(|| ApiError::bad(-1121, "Invalid symbol."))
    }

    pub fn has_symbol(&self, symbol: &str) -> bool {
        self.markets.contains_key(symbol)
    }

    pub fn book_ticker(&self, symbol: &str) -> Result<Value, ApiError> {
        let m = self.market(symbol)?;
        Ok(json!({
            "symbol": symbol,
            "bidPrice": fmt8(m.bid), "bidQty": "1.00000000",
            "askPrice": fmt8(m.ask), "askQty": "1.00000000",
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
        Ok(json!({
            "symbol": symbol, "priceChange": fmt8(change), "priceChangePercent": pct.to_string(),
            "weightedAvgPrice": fmt8(wavg), "prevClosePrice": fmt8(open), "lastPrice": fmt8(last.0),
            "lastQty": fmt8(last.1), "bidPrice": fmt8(m.bid), "bidQty": "1.00000000",
            "askPrice": fmt8(m.ask), "askQty": "1.00000000", "openPrice": fmt8(open),
            "highPrice": fmt8(high), "lowPrice": fmt8(low), "volume": fmt8(volume),
            "quoteVolume": fmt8(floor8(quote)), "openTime": now_ms - 86_400_000, "closeTime": now_ms,
            "firstId": m.next_trade_id.saturating_sub(m.prints.len() as u64), "lastId": m.next_trade_id,
            "count": m.prints.len(),
        }))
    }

    pub fn tickers_24hr(&self, now_ms: i64) -> Value {
        Value::Array(self.markets.keys().filter_map(|s| self.ticker_24hr(s, now_ms).ok()).collect())
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

    pub fn depth(&self, symbol: &str, limit: usize) -> Result<Value, ApiError> {
        let m = self.market(symbol)?;
        let levels = limit.clamp(1, 5000).min(20);
        let mut bids = Vec::new();
        let mut asks = Vec::new();
        for i in 0..levels as i64 {
            let off = m.spec.tick.checked_mul(Decimal::from_int(i)).unwrap_or(Decimal::ZERO);
            if let Some(b) = m.bid.checked_sub(off).filter(|b| *b > Decimal::ZERO) {
                bids.push(json!([fmt8(b), "1.00000000"]));
            }
            if let Some(a) = m.ask.checked_add(off) {
                asks.push(json!([fmt8(a), "1.00000000"]));
            }
        }
        Ok(json!({"lastUpdateId": m.next_trade_id, "bids": bids, "asks": asks}))
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

    // ---- account -----------------------------------------------------------------------

    pub fn account(&self, now_ms: i64) -> Value {
        let balances: Vec<Value> = self
            .balances
            .iter()
            .map(|(a, (free, locked))| json!({"asset": a, "free": fmt8(*free), "locked": fmt8(*locked)}))
            .collect();
        let bps = |d: Decimal| d.checked_mul(Decimal::from_int(10_000)).and_then(|v| v.to_fixed_i64(0)).unwrap_or(0);
        json!({
            "makerCommission": bps(self.settings.maker_commission),
            "takerCommission": bps(self.settings.taker_commission),
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt8(self.settings.maker_commission), "taker": fmt8(self.settings.taker_commission),
                "buyer": "0.00000000", "seller": "0.00000000"
            },
            "canTrade": true, "canWithdraw": true, "canDeposit": true, "brokered": false,
            "requireSelfTradePrevention": false, "updateTime": now_ms, "accountType": "SPOT",
            "balances": balances, "permissions": ["SPOT"], "tradeGroupId": -1
        })
    }

    pub fn balance(&self, asset: &str) -> (Decimal, Decimal) {
        self.balances.get(asset).copied().unwrap_or((Decimal::ZERO, Decimal::ZERO))
    }

    fn adjust(&mut self, asset: &str, free: Decimal, locked: Decimal) {
        let entry = self.balances.entry(asset.to_string()).or_insert((Decimal::ZERO, Decimal::ZERO));
        entry.0 = entry.0.checked_add(free).unwrap_or(entry.0);
        entry.1 = entry.1.checked_add(locked).unwrap_or(entry.1);
    }

    /// A deposit: `balanceUpdate` then `outboundAccountPosition`, as Binance sends them.
    pub fn deposit(&mut self, asset: &str, amount: Decimal, now_ms: i64) {
        self.adjust(asset, amount, Decimal::ZERO);
        let ev = json!({"e": "balanceUpdate", "E": now_ms, "a": asset, "d": fmt8(amount), "T": now_ms});
        self.publish(&ev);
        self.publish_positions(&[asset], now_ms);
    }

    // ---- listen keys -------------------------------------------------------------------

    pub fn listen_key_create(&mut self, now_ms: i64) -> String {
        let ttl = self.settings.listen_key_ttl.as_millis() as i64;
        if let Some(k) = &mut self.listen_key {
            if k.expires_ms > now_ms {
                k.expires_ms = now_ms + ttl;
                let key = k.key.clone();
                self.note_key(&key, "returned live key (extended)", now_ms);
                return key;
            }
        }
        self.key_counter += 1;
        let key = make_key(&mut self.rng);
        self.listen_key = Some(ListenKey { key: key.clone(), expires_ms: now_ms + ttl });
        self.note_key(&key, "created", now_ms);
        key
    }

    pub fn listen_key_keepalive(&mut self, key: &str, now_ms: i64) -> Result<(), ApiError> {
        let ttl = self.settings.listen_key_ttl.as_millis() as i64;
        match &mut self.listen_key {
            Some(k) if k.key == key && k.expires_ms > now_ms => {
                k.expires_ms = now_ms + ttl;
                self.note_key(key, "extended", now_ms);
                Ok(())
            }
            _ => {
                self.note_key(key, "keepalive of unknown key", now_ms);
                Err(ApiError::bad(-1125, "This listenKey does not exist."))
            }
        }
    }

    pub fn listen_key_close(&mut self, key: &str, now_ms: i64) -> Result<(), ApiError> {
        match &self.listen_key {
            Some(k) if k.key == key && k.expires_ms > now_ms => {
                self.listen_key = None;
                self.note_key(key, "closed", now_ms);
                self.hub.control(
                    Some(key),
                    super::hub::StreamItem::Close { code: 1000, reason: "listen key closed".into() },
                );
                Ok(())
            }
            _ => Err(ApiError::bad(-1125, "This listenKey does not exist.")),
        }
    }

    /// Whether `key` is the live key; the WS layer asks this at connect time.
    pub fn live_key(&self, key: &str, now_ms: i64) -> bool {
        self.listen_key.as_ref().is_some_and(|k| k.key == key && k.expires_ms > now_ms)
    }

    /// Expires the live key now (fault) or when its time has come: `listenKeyExpired`, then
    /// nothing more on that key.
    pub fn expire_key(&mut self, now_ms: i64, force: bool) {
        let Some(k) = self.listen_key.clone() else { return };
        if !force && k.expires_ms > now_ms {
            return;
        }
        let ev = json!({"e": "listenKeyExpired", "E": now_ms, "listenKey": k.key});
        self.publish(&ev);
        self.listen_key = None;
        self.note_key(&k.key, "expired", now_ms);
    }

    /// The key stops existing without a word (§3.7: "a key that silently stops delivering").
    pub fn forget_key(&mut self, now_ms: i64) {
        if let Some(k) = self.listen_key.take() {
            self.note_key(&k.key, "forgotten", now_ms);
        }
    }

    fn note_key(&mut self, key: &str, what: &str, now_ms: i64) {
        self.key_history.push(ListenKeyEvent {
            time_ms: now_ms,
            key: Secret::new(key).fingerprint(),
            what: what.to_string(),
        });
    }

    /// The live key, for faults aimed at "the stream".
    pub fn current_key(&self) -> Option<String> {
        self.listen_key.as_ref().map(|k| k.key.clone())
    }

    // ---- events ------------------------------------------------------------------------

    /// Publishes an event to the account's live key. Returns whether any connection got it.
    fn publish(&mut self, event: &Value) -> bool {
        if self.faults.drop_events > 0 {
            self.faults.drop_events -= 1;
            return false;
        }
        let Some(key) = self.listen_key.as_ref().map(|k| k.key.clone()) else { return false };
        let text = event.to_string();
        self.hub.publish(&key, &text) > 0
    }

    fn publish_positions(&mut self, assets: &[&str], now_ms: i64) {
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

    /// One `executionReport` with exactly the documented fields (§4.3).
    #[allow(clippy::too_many_arguments)]
    fn execution_report(
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

    // ---- orders ------------------------------------------------------------------------

    fn next_client_id(&mut self, prefix: &str) -> String {
        self.generated_ids += 1;
        let r = self.rng.next_u64();
        format!("{prefix}{:010x}{:06}", r & 0xff_ffff_ffff, self.generated_ids % 1_000_000)
    }

    fn open_count(&self) -> (u64, HashMap<String, u64>) {
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
        let m = self.market(&req.symbol)?;
        let rules = m.rules.clone();
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
            if !["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT", "TRANSFER", "NONE"]
                .contains(&mode.as_str())
            {
                return Err(ApiError::bad(-1130, "Data sent for parameter 'selfTradePreventionMode' is not valid."));
            }
        }
        let spec = OrderSpec {
            side: req.side,
            order_type: req.order_type,
            price: req.price,
            quantity: req.quantity,
            quote_order_qty: req.quote_order_qty,
        };
        if rules.check_precision(&spec).is_err() {
            return Err(ApiError::bad(-1111, "Precision is over the maximum defined for this asset."));
        }
        let (total, per) = self.open_count();
        let ctx = MarketContext {
            avg_price: Some(self.avg_price_value(&req.symbol, now_ms)?),
            open_orders_symbol: per.get(&req.symbol).copied().unwrap_or(0),
            open_orders_total: total,
            base_position: None,
        };
        match rules.check(&spec, &ctx, &self.exchange_filters) {
            Ok(()) => {}
            Err(Rejection::Filter { filter, .. }) => {
                return Err(ApiError::bad(-1013, format!("Filter failure: {filter}")));
            }
            Err(Rejection::Precision { .. }) => {
                return Err(ApiError::bad(-1111, "Precision is over the maximum defined for this asset."))
            }
            Err(Rejection::Symbol { .. }) => return Err(ApiError::rejected("Market is closed.")),
        }
        if let Some(id) = &req.new_client_order_id {
            let dup = self
                .markets
                .values()
                .flat_map(|m| m.orders.values())
                .any(|o| o.status.is_open() && &o.client_order_id == id);
            if dup {
                return Err(ApiError::rejected("Duplicate order sent."));
            }
        }
        let m = self.market(&req.symbol)?;
        let (bid, ask) = (m.bid, m.ask);
        let crosses = match (req.side, req.price) {
            (Side::Buy, Some(p)) => p >= ask,
            (Side::Sell, Some(p)) => p <= bid,
            (_, None) => true,
        };
        if req.order_type == OrderType::LimitMaker && crosses {
            return Err(ApiError::rejected("Order would immediately match and take."));
        }
        // What the order needs to lock (or, for MARKET, to spend).
        let base = m.spec.base.clone();
        let quote = m.spec.quote.clone();
        let touch = if req.side == Side::Buy { ask } else { bid };
        let needed = match (req.side, req.order_type) {
            (Side::Buy, OrderType::Market) => match (req.quantity, req.quote_order_qty) {
                (Some(q), _) => touch.checked_mul(q),
                (None, Some(qq)) => Some(qq),
                _ => None,
            },
            (Side::Buy, _) => req.price.and_then(|p| p.checked_mul(req.quantity?)),
            (Side::Sell, OrderType::Market) => match (req.quantity, req.quote_order_qty) {
                (Some(q), _) => Some(q),
                (None, Some(qq)) => qq.checked_div(touch, SCALE).and_then(|q| q.floor_to(m.spec.step)),
                _ => None,
            },
            (Side::Sell, _) => req.quantity,
        }
        .ok_or_else(|| ApiError::bad(-1013, "Filter failure: NOTIONAL"))?;
        let asset = if req.side == Side::Buy { &quote } else { &base };
        if self.balance(asset).0 < needed {
            return Err(ApiError::rejected("Account has insufficient balance for requested action."));
        }
        if req.test {
            return Ok(json!({}));
        }
        // Accepted: give it an id and put it on the book (or fill it).
        let client_order_id = match req.new_client_order_id.clone() {
            Some(id) => id,
            None => self.next_client_id(if origin == Origin::External { "web_" } else { "" }),
        };
        let m = self.markets.get_mut(&req.symbol).ok_or_else(|| ApiError::bad(-1121, "Invalid symbol."))?;
        m.next_order_id += 1;
        let order_id = m.next_order_id;
        let step = m.spec.step;
        let qty = match (req.quantity, req.quote_order_qty) {
            (Some(q), _) => q,
            (None, Some(qq)) => qq.checked_div(touch, SCALE).and_then(|q| q.floor_to(step)).unwrap_or(Decimal::ZERO),
            _ => Decimal::ZERO,
        };
        let mut order = Order {
            symbol: req.symbol.clone(),
            order_id,
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
        };
        let mut fills = Vec::new();
        let mut expired = false;
        if crosses {
            // Taker at the touch, whole quantity (the paper book is deep at the touch).
            if order.order_type != OrderType::Market {
                // A limit BUY at p locks p×q and gets the difference back on the fill.
                order.locked = needed;
                self.adjust(asset, -needed, needed);
            }
            let report = Engine::execution_report(&order, now_ms, "NEW", &order.client_order_id, "", None, None);
            self.publish(&report);
            fills.push(self.fill(&mut order, qty, touch, false, now_ms));
        } else {
            order.locked = needed;
            self.adjust(asset, -needed, needed);
            if order.tif == TimeInForce::Gtc {
                order.working_time = Some(now_ms);
                let report = Engine::execution_report(&order, now_ms, "NEW", &order.client_order_id, "", None, None);
                self.publish(&report);
                self.publish_positions(&[asset], now_ms);
            } else {
                // IOC/FOK that cannot fill: accepted, then expired at once.
                let report = Engine::execution_report(&order, now_ms, "NEW", &order.client_order_id, "", None, None);
                self.publish(&report);
                self.release(&mut order);
                order.status = OrderStatus::Expired;
                expired = true;
                let reason = if order.tif == TimeInForce::Fok {
                    "UNFILLED_FOK_ORDER_EXPIRED"
                } else {
                    "UNFILLED_IOC_QUANTITY_EXPIRED"
                };
                let report =
                    Engine::execution_report(&order, now_ms, "EXPIRED", &order.client_order_id, "", None, Some(reason));
                self.publish(&report);
                self.publish_positions(&[asset], now_ms);
            }
        }
        let response = order_response(&order, now_ms, req.resp_type, &fills, expired);
        if let Some(m) = self.markets.get_mut(&req.symbol) {
            m.orders.insert(order_id, order);
        }
        Ok(response)
    }

    /// Gives back what an order still has locked.
    fn release(&mut self, order: &mut Order) {
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
    fn fill(&mut self, order: &mut Order, qty: Decimal, price: Decimal, maker: bool, now_ms: i64) -> TradeRecord {
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

    fn find_order(&self, symbol: &str, order_id: Option<u64>, orig_client_id: Option<&str>) -> Result<u64, ApiError> {
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
            m.orders.insert(id, order);
        }
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

    // ---- market movement ----------------------------------------------------------------

    /// One market step: the mid moves a seeded number of ticks, other traders print (trade ids
    /// advance with gaps), resting orders the price crossed fill as maker, often partially,
    /// and the external trader may act.
    pub fn tick(&mut self, now_ms: i64) {
        self.expire_key(now_ms, false);
        if self.faults.quiesced {
            return;
        }
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
            m.next_trade_id += self.rng.range(1, 3) as u64;
            let print_qty = m.spec.step.checked_mul(Decimal::from_int(self.rng.range(1, 1000))).unwrap_or(m.spec.step);
            let print_price = m.bid;
            m.prints.push_back((now_ms, print_price, print_qty));
            while m.prints.len() > 4096 {
                m.prints.pop_front();
            }
            self.fill_crossed(symbol, now_ms, None);
        }
        if self.settings.external_trader_pct > 0 && self.rng.chance(self.settings.external_trader_pct) {
            self.external_trader(now_ms);
        }
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
        let candidates: Vec<u64> = m
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
            .map(|o| o.order_id)
            .collect();
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
                m.orders.insert(id, order);
            }
            filled += 1;
        }
        filled
    }

    /// Someone using the web UI on the same account: places resting and market orders and
    /// cancels some, so a client sees fills of orders it did not place.
    fn external_trader(&mut self, now_ms: i64) {
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
        Ok(())
    }

    pub fn touch(&self, symbol: &str) -> Option<(Decimal, Decimal)> {
        self.markets.get(symbol).map(|m| (m.bid, m.ask))
    }
}

fn mid(m: &Market) -> Decimal {
    m.bid.checked_add(m.ask).and_then(|s| s.checked_div(Decimal::from_int(2), 8)).unwrap_or(m.bid)
}

fn order_json(o: &Order) -> Value {
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

fn trade_json(t: &TradeRecord) -> Value {
    json!({
        "symbol": t.symbol, "id": t.id, "orderId": t.order_id, "orderListId": -1,
        "price": fmt8(t.price), "qty": fmt8(t.qty), "quoteQty": fmt8(t.quote_qty),
        "commission": fmt8(t.commission), "commissionAsset": t.commission_asset, "time": t.time,
        "isBuyer": t.side == Side::Buy, "isMaker": t.maker, "isBestMatch": true,
    })
}

/// The `POST /api/v3/order` body for the requested response type. LIMIT_MAKER (and every type
/// but LIMIT and MARKET) defaults to ACK (§5.5).
fn order_response(o: &Order, now_ms: i64, resp: Option<RespType>, fills: &[TradeRecord], expired: bool) -> Value {
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
