//! Exchange rules: `exchangeInfo` symbols and filters, and pure check/round functions.
//!
//! One implementation of each rule serves both sides: the executor rounds and pre-checks every
//! order with it so that `-1013`/`-1111` never reach the exchange, and the paper exchange rejects
//! with it. Rules follow "Filters" in the Binance.US API docs, <https://docs.binance.us/> (e.g. `price % tickSize == 0`, the
//! post-2022 formula; a zero parameter disables its rule).
//!
//! Binance adds filter types over time. An unknown type is kept as [`Filter::Unknown`], logged
//! once per type, and does not stop the symbol from trading. A *known* type whose fields do not
//! parse is kept as [`Filter::Malformed`] and blocks orders on that symbol: we would rather not
//! trade than trade against a rule we misread.

use crate::decimal::Decimal;
use crate::lock::LockAnyway;
use crate::model::{OrderType, Side};
use crate::ratelimit::{LimitKind, RateLimit};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Price {
        min_price: Decimal,
        max_price: Decimal,
        tick_size: Decimal,
    },
    PercentPrice {
        multiplier_up: Decimal,
        multiplier_down: Decimal,
        avg_price_mins: u64,
    },
    PercentPriceBySide {
        bid_multiplier_up: Decimal,
        bid_multiplier_down: Decimal,
        ask_multiplier_up: Decimal,
        ask_multiplier_down: Decimal,
        avg_price_mins: u64,
    },
    LotSize {
        min_qty: Decimal,
        max_qty: Decimal,
        step_size: Decimal,
    },
    MarketLotSize {
        min_qty: Decimal,
        max_qty: Decimal,
        step_size: Decimal,
    },
    MinNotional {
        min_notional: Decimal,
        apply_to_market: bool,
        avg_price_mins: u64,
    },
    Notional {
        min_notional: Decimal,
        apply_min_to_market: bool,
        max_notional: Decimal,
        apply_max_to_market: bool,
        avg_price_mins: u64,
    },
    IcebergParts {
        limit: u64,
    },
    TrailingDelta {
        min_above: u64,
        max_above: u64,
        min_below: u64,
        max_below: u64,
    },
    MaxNumOrders {
        max: u64,
    },
    MaxNumAlgoOrders {
        max: u64,
    },
    MaxNumIcebergOrders {
        max: u64,
    },
    MaxNumOrderLists {
        max: u64,
    },
    MaxNumOrderAmends {
        max: u64,
    },
    MaxPosition {
        max_position: Decimal,
    },
    ExchangeMaxNumOrders {
        max: u64,
    },
    ExchangeMaxNumAlgoOrders {
        max: u64,
    },
    ExchangeMaxNumIcebergOrders {
        max: u64,
    },
    ExchangeMaxNumOrderLists {
        max: u64,
    },
    MaxAsset {
        asset: String,
        limit: Decimal,
    },
    /// A type this build does not know. Kept so the paper exchange can serve it back.
    Unknown {
        filter_type: String,
        raw: Value,
    },
    /// A known type whose fields did not parse.
    Malformed {
        filter_type: String,
        reason: String,
    },
}

// Field sets as Binance spells them; private, so the rest of the crate sees only `Filter`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceWire {
    min_price: Decimal,
    max_price: Decimal,
    tick_size: Decimal,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PercentWire {
    multiplier_up: Decimal,
    multiplier_down: Decimal,
    #[serde(default)]
    avg_price_mins: u64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BySideWire {
    bid_multiplier_up: Decimal,
    bid_multiplier_down: Decimal,
    ask_multiplier_up: Decimal,
    ask_multiplier_down: Decimal,
    #[serde(default)]
    avg_price_mins: u64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LotWire {
    min_qty: Decimal,
    max_qty: Decimal,
    step_size: Decimal,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MinNotionalWire {
    min_notional: Decimal,
    #[serde(default)]
    apply_to_market: bool,
    #[serde(default)]
    avg_price_mins: u64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotionalWire {
    min_notional: Decimal,
    #[serde(default)]
    apply_min_to_market: bool,
    max_notional: Decimal,
    #[serde(default)]
    apply_max_to_market: bool,
    #[serde(default)]
    avg_price_mins: u64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrailingWire {
    min_trailing_above_delta: u64,
    max_trailing_above_delta: u64,
    min_trailing_below_delta: u64,
    max_trailing_below_delta: u64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MaxAssetWire {
    asset: String,
    limit: Decimal,
}

/// Filter types already reported as unknown, so each is logged once per process.
fn note_unknown(filter_type: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(HashSet::new()));
    let mut seen = seen.lock_anyway();
    if seen.insert(filter_type.to_string()) {
        log::warn!("exchangeInfo: unknown filter type {filter_type}; ignoring it");
    }
}

fn field<T: for<'de> Deserialize<'de>>(raw: &Value) -> Result<T, String> {
    T::deserialize(raw).map_err(|e| e.to_string())
}

fn count(raw: &Value, name: &str) -> Result<u64, String> {
    raw.get(name).and_then(Value::as_u64).ok_or_else(|| format!("missing or non-integer {name}"))
}

impl Filter {
    /// Parses one element of a `filters` array. Never fails: see the module doc.
    pub fn from_json(raw: &Value) -> Filter {
        let Some(filter_type) = raw.get("filterType").and_then(Value::as_str) else {
            return Filter::Malformed { filter_type: String::new(), reason: "no filterType".into() };
        };
        let parsed: Result<Filter, String> = (|| {
            Ok(match filter_type {
                "PRICE_FILTER" => {
                    let w: PriceWire = field(raw)?;
                    Filter::Price { min_price: w.min_price, max_price: w.max_price, tick_size: w.tick_size }
                }
                "PERCENT_PRICE" => {
                    let w: PercentWire = field(raw)?;
                    Filter::PercentPrice {
                        multiplier_up: w.multiplier_up,
                        multiplier_down: w.multiplier_down,
                        avg_price_mins: w.avg_price_mins,
                    }
                }
                "PERCENT_PRICE_BY_SIDE" => {
                    let w: BySideWire = field(raw)?;
                    Filter::PercentPriceBySide {
                        bid_multiplier_up: w.bid_multiplier_up,
                        bid_multiplier_down: w.bid_multiplier_down,
                        ask_multiplier_up: w.ask_multiplier_up,
                        ask_multiplier_down: w.ask_multiplier_down,
                        avg_price_mins: w.avg_price_mins,
                    }
                }
                "LOT_SIZE" => {
                    let w: LotWire = field(raw)?;
                    Filter::LotSize { min_qty: w.min_qty, max_qty: w.max_qty, step_size: w.step_size }
                }
                "MARKET_LOT_SIZE" => {
                    let w: LotWire = field(raw)?;
                    Filter::MarketLotSize { min_qty: w.min_qty, max_qty: w.max_qty, step_size: w.step_size }
                }
                "MIN_NOTIONAL" => {
                    let w: MinNotionalWire = field(raw)?;
                    Filter::MinNotional {
                        min_notional: w.min_notional,
                        apply_to_market: w.apply_to_market,
                        avg_price_mins: w.avg_price_mins,
                    }
                }
                "NOTIONAL" => {
                    let w: NotionalWire = field(raw)?;
                    Filter::Notional {
                        min_notional: w.min_notional,
                        apply_min_to_market: w.apply_min_to_market,
                        max_notional: w.max_notional,
                        apply_max_to_market: w.apply_max_to_market,
                        avg_price_mins: w.avg_price_mins,
                    }
                }
                "ICEBERG_PARTS" => Filter::IcebergParts { limit: count(raw, "limit")? },
                "TRAILING_DELTA" => {
                    let w: TrailingWire = field(raw)?;
                    Filter::TrailingDelta {
                        min_above: w.min_trailing_above_delta,
                        max_above: w.max_trailing_above_delta,
                        min_below: w.min_trailing_below_delta,
                        max_below: w.max_trailing_below_delta,
                    }
                }
                "MAX_NUM_ORDERS" => Filter::MaxNumOrders { max: count(raw, "maxNumOrders")? },
                "MAX_NUM_ALGO_ORDERS" => Filter::MaxNumAlgoOrders { max: count(raw, "maxNumAlgoOrders")? },
                "MAX_NUM_ICEBERG_ORDERS" => Filter::MaxNumIcebergOrders { max: count(raw, "maxNumIcebergOrders")? },
                "MAX_NUM_ORDER_LISTS" => Filter::MaxNumOrderLists { max: count(raw, "maxNumOrderLists")? },
                "MAX_NUM_ORDER_AMENDS" => Filter::MaxNumOrderAmends { max: count(raw, "maxNumOrderAmends")? },
                "MAX_POSITION" => {
                    #[derive(Deserialize)]
                    #[serde(rename_all = "camelCase")]
                    struct W {
                        max_position: Decimal,
                    }
                    Filter::MaxPosition { max_position: field::<W>(raw)?.max_position }
                }
                "EXCHANGE_MAX_NUM_ORDERS" => Filter::ExchangeMaxNumOrders { max: count(raw, "maxNumOrders")? },
                "EXCHANGE_MAX_NUM_ALGO_ORDERS" => {
                    Filter::ExchangeMaxNumAlgoOrders { max: count(raw, "maxNumAlgoOrders")? }
                }
                "EXCHANGE_MAX_NUM_ICEBERG_ORDERS" => {
                    Filter::ExchangeMaxNumIcebergOrders { max: count(raw, "maxNumIcebergOrders")? }
                }
                "EXCHANGE_MAX_NUM_ORDER_LISTS" => {
                    Filter::ExchangeMaxNumOrderLists { max: count(raw, "maxNumOrderLists")? }
                }
                "MAX_ASSET" => {
                    let w: MaxAssetWire = field(raw)?;
                    Filter::MaxAsset { asset: w.asset, limit: w.limit }
                }
                other => {
                    note_unknown(other);
                    Filter::Unknown { filter_type: other.to_string(), raw: raw.clone() }
                }
            })
        })();
        parsed.unwrap_or_else(|reason| Filter::Malformed { filter_type: filter_type.to_string(), reason })
    }

    /// The name Binance uses in `Filter failure: <NAME>`.
    pub fn name(&self) -> &str {
        match self {
            Filter::Price { .. } => "PRICE_FILTER",
            Filter::PercentPrice { .. } => "PERCENT_PRICE",
            Filter::PercentPriceBySide { .. } => "PERCENT_PRICE_BY_SIDE",
            Filter::LotSize { .. } => "LOT_SIZE",
            Filter::MarketLotSize { .. } => "MARKET_LOT_SIZE",
            Filter::MinNotional { .. } => "MIN_NOTIONAL",
            Filter::Notional { .. } => "NOTIONAL",
            Filter::IcebergParts { .. } => "ICEBERG_PARTS",
            Filter::TrailingDelta { .. } => "TRAILING_DELTA",
            Filter::MaxNumOrders { .. } => "MAX_NUM_ORDERS",
            Filter::MaxNumAlgoOrders { .. } => "MAX_NUM_ALGO_ORDERS",
            Filter::MaxNumIcebergOrders { .. } => "MAX_NUM_ICEBERG_ORDERS",
            Filter::MaxNumOrderLists { .. } => "MAX_NUM_ORDER_LISTS",
            Filter::MaxNumOrderAmends { .. } => "MAX_NUM_ORDER_AMENDS",
            Filter::MaxPosition { .. } => "MAX_POSITION",
            Filter::ExchangeMaxNumOrders { .. } => "EXCHANGE_MAX_NUM_ORDERS",
            Filter::ExchangeMaxNumAlgoOrders { .. } => "EXCHANGE_MAX_NUM_ALGO_ORDERS",
            Filter::ExchangeMaxNumIcebergOrders { .. } => "EXCHANGE_MAX_NUM_ICEBERG_ORDERS",
            Filter::ExchangeMaxNumOrderLists { .. } => "EXCHANGE_MAX_NUM_ORDER_LISTS",
            Filter::MaxAsset { .. } => "MAX_ASSET",
            Filter::Unknown { filter_type, .. } | Filter::Malformed { filter_type, .. } => filter_type,
        }
    }
}

/// One symbol's trading rules from `exchangeInfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolRules {
    pub symbol: String,
    pub status: String,
    pub base_asset: String,
    pub quote_asset: String,
    /// Most decimals allowed in a quantity (`baseAssetPrecision`).
    pub base_precision: u8,
    /// Most decimals allowed in a price (`quoteAssetPrecision`).
    pub quote_precision: u8,
    pub order_types: Vec<String>,
    /// `cancelReplaceAllowed`; absent counts as false, so a replace is then a cancel and a
    /// new order, which every symbol takes.
    pub cancel_replace_allowed: bool,
    pub filters: Vec<Filter>,
}

/// The whole `exchangeInfo` as the daemon needs it.
#[derive(Debug, Clone, Default)]
pub struct ExchangeRules {
    pub rate_limits: Vec<RateLimit>,
    pub exchange_filters: Vec<Filter>,
    pub symbols: HashMap<String, SymbolRules>,
    /// Each symbol's object exactly as `exchangeInfo` sent it, for strategies (as JSON).
    pub raw_symbols: HashMap<String, Value>,
}

impl ExchangeRules {
    /// Parses an `exchangeInfo` body. Fails only when the top level is not an object or
    /// `symbols` is missing; everything else degrades per symbol or per filter.
    pub fn from_json(body: &Value) -> Result<ExchangeRules, String> {
        let obj = body.as_object().ok_or("exchangeInfo is not a JSON object")?;
        let mut rate_limits = Vec::new();
        for rl in obj.get("rateLimits").and_then(Value::as_array).into_iter().flatten() {
            let kind = match rl.get("rateLimitType").and_then(Value::as_str) {
                Some("REQUEST_WEIGHT") => LimitKind::Weight,
                Some("ORDERS") => LimitKind::Orders,
                Some("RAW_REQUESTS") => LimitKind::Raw,
                _ => continue,
            };
            let interval = rl.get("interval").and_then(Value::as_str).unwrap_or("");
            let num = rl.get("intervalNum").and_then(Value::as_u64).unwrap_or(1);
            let (Some(interval_ms), Some(limit)) =
                (RateLimit::interval_ms(interval, num), rl.get("limit").and_then(Value::as_u64))
            else {
                continue;
            };
            rate_limits.push(RateLimit { kind, interval_ms, limit });
        }
        let exchange_filters = obj
            .get("exchangeFilters")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Filter::from_json).collect())
            .unwrap_or_default();
        let list = obj.get("symbols").and_then(Value::as_array).ok_or("exchangeInfo has no symbols array")?;
        let mut symbols = HashMap::new();
        let mut raw_symbols = HashMap::new();
        for s in list {
            let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let precision = |k: &str, fallback: &str| {
                s.get(k).or_else(|| s.get(fallback)).and_then(Value::as_u64).map(|p| p.min(38) as u8).unwrap_or(8)
            };
            let rules = SymbolRules {
                symbol: text("symbol"),
                status: text("status"),
                base_asset: text("baseAsset"),
                quote_asset: text("quoteAsset"),
                base_precision: precision("baseAssetPrecision", "baseAssetPrecision"),
                quote_precision: precision("quoteAssetPrecision", "quotePrecision"),
                order_types: s
                    .get("orderTypes")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
                    .unwrap_or_default(),
                cancel_replace_allowed: s.get("cancelReplaceAllowed").and_then(Value::as_bool).unwrap_or(false),
                filters: s
                    .get("filters")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(Filter::from_json).collect())
                    .unwrap_or_default(),
            };
            if !rules.symbol.is_empty() {
                raw_symbols.insert(rules.symbol.clone(), s.clone());
                symbols.insert(rules.symbol.clone(), rules);
            }
        }
        Ok(ExchangeRules { rate_limits, exchange_filters, symbols, raw_symbols })
    }
}

/// What an order check needs to know about the market and the account beyond the order itself.
/// `None` means "not known": the rules that need it are skipped, so the caller decides how
/// strict to be by filling it in (the executor always fetches `avg_price`).
#[derive(Debug, Clone, Default)]
pub struct MarketContext {
    /// The `avgPrice` of the symbol over the filter's window.
    pub avg_price: Option<Decimal>,
    /// Open orders on this symbol before this one.
    pub open_orders_symbol: u64,
    /// Open orders on the account before this one.
    pub open_orders_total: u64,
    /// For MAX_POSITION: base free + locked + open BUY quantity, before this order.
    pub base_position: Option<Decimal>,
}

/// An order as the filters see it.
#[derive(Debug, Clone, Copy)]
pub struct OrderSpec {
    pub side: Side,
    pub order_type: OrderType,
    /// Limit price; `None` for MARKET.
    pub price: Option<Decimal>,
    /// Base quantity; `None` for a MARKET order by `quoteOrderQty`.
    pub quantity: Option<Decimal>,
    pub quote_order_qty: Option<Decimal>,
}

/// Why an order is not valid, in Binance's terms where there are some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Too many decimals for the asset: Binance's `-1111`.
    Precision { param: &'static str },
    /// A filter failed: Binance's `-1013 Filter failure: <filter>`.
    Filter { filter: String, reason: String },
    /// The symbol cannot take this order at all (status, order type, malformed rules).
    Symbol { reason: String },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Precision { param } => write!(f, "{param} has more decimals than the asset allows"),
            Rejection::Filter { filter, reason } => write!(f, "filter {filter}: {reason}"),
            Rejection::Symbol { reason } => f.write_str(reason),
        }
    }
}

fn fail(filter: &Filter, reason: String) -> Rejection {
    Rejection::Filter { filter: filter.name().to_string(), reason }
}

/// An order whose price and quantity were rounded onto the grid and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedOrder {
    pub price: Decimal,
    pub quantity: Decimal,
}

impl SymbolRules {
    fn filter<'a, T>(&'a self, pick: impl Fn(&'a Filter) -> Option<T>) -> Option<T> {
        self.filters.iter().find_map(pick)
    }

    /// `-1111`: a price or quantity with more decimals than its asset allows.
    pub fn check_precision(&self, order: &OrderSpec) -> Result<(), Rejection> {
        if order.price.is_some_and(|p| p.significant_scale() > self.quote_precision) {
            return Err(Rejection::Precision { param: "price" });
        }
        if order.quantity.is_some_and(|q| q.significant_scale() > self.base_precision) {
            return Err(Rejection::Precision { param: "quantity" });
        }
        if order.quote_order_qty.is_some_and(|q| q.significant_scale() > self.quote_precision) {
            return Err(Rejection::Precision { param: "quoteOrderQty" });
        }
        Ok(())
    }

    /// Every filter that applies to `order`, in the order Binance documents them. The first
    /// failure is returned, named as Binance names it.
    pub fn check(&self, order: &OrderSpec, ctx: &MarketContext, exchange_filters: &[Filter]) -> Result<(), Rejection> {
        let is_market = order.order_type == OrderType::Market;
        for f in self.filters.iter().chain(exchange_filters) {
            match f {
                Filter::Price { min_price, max_price, tick_size } => {
                    let Some(price) = order.price else { continue };
                    if !min_price.is_zero() && price < *min_price {
                        return Err(fail(f, format!("price {price} is below minPrice {min_price}")));
                    }
                    if !max_price.is_zero() && price > *max_price {
                        return Err(fail(f, format!("price {price} is above maxPrice {max_price}")));
                    }
                    if !price.is_multiple_of(*tick_size) {
                        return Err(fail(f, format!("price {price} is not a multiple of tickSize {tick_size}")));
                    }
                }
                Filter::PercentPrice { multiplier_up, multiplier_down, .. } => {
                    let (Some(price), Some(avg)) = (order.price, ctx.avg_price) else { continue };
                    band(f, price, avg, *multiplier_down, *multiplier_up)?;
                }
                Filter::PercentPriceBySide {
                    bid_multiplier_up,
                    bid_multiplier_down,
                    ask_multiplier_up,
                    ask_multiplier_down,
                    ..
                } => {
                    let (Some(price), Some(avg)) = (order.price, ctx.avg_price) else { continue };
                    match order.side {
                        Side::Buy => band(f, price, avg, *bid_multiplier_down, *bid_multiplier_up)?,
                        Side::Sell => band(f, price, avg, *ask_multiplier_down, *ask_multiplier_up)?,
                    }
                }
                Filter::LotSize { min_qty, max_qty, step_size } => {
                    if is_market {
                        continue;
                    }
                    let Some(qty) = order.quantity else { continue };
                    lot(f, qty, *min_qty, *max_qty, *step_size)?;
                }
                Filter::MarketLotSize { min_qty, max_qty, step_size } => {
                    if !is_market {
                        continue;
                    }
                    let Some(qty) = order.quantity else { continue };
                    lot(f, qty, *min_qty, *max_qty, *step_size)?;
                }
                Filter::MinNotional { min_notional, apply_to_market, .. } => {
                    let Some(notional) = notional(order, ctx, is_market, *apply_to_market) else { continue };
                    if notional < *min_notional {
                        return Err(fail(f, format!("notional {notional} is below minNotional {min_notional}")));
                    }
                }
                Filter::Notional { min_notional, apply_min_to_market, max_notional, apply_max_to_market, .. } => {
                    if let Some(n) = notional(order, ctx, is_market, *apply_min_to_market) {
                        if n < *min_notional {
                            return Err(fail(f, format!("notional {n} is below minNotional {min_notional}")));
                        }
                    }
                    if let Some(n) = notional(order, ctx, is_market, *apply_max_to_market) {
                        if !max_notional.is_zero() && n > *max_notional {
                            return Err(fail(f, format!("notional {n} is above maxNotional {max_notional}")));
                        }
                    }
                }
                Filter::MaxNumOrders { max } => {
                    if ctx.open_orders_symbol + 1 > *max {
                        return Err(fail(
                            f,
                            format!("{} open orders on the symbol; the limit is {max}", ctx.open_orders_symbol),
                        ));
                    }
                }
                Filter::ExchangeMaxNumOrders { max } => {
                    if ctx.open_orders_total + 1 > *max {
                        return Err(fail(
                            f,
                            format!("{} open orders on the account; the limit is {max}", ctx.open_orders_total),
                        ));
                    }
                }
                Filter::MaxPosition { max_position } => {
                    let (Side::Buy, Some(pos), Some(qty)) = (order.side, ctx.base_position, order.quantity) else {
                        continue;
                    };
                    let after = pos.checked_add(qty).ok_or_else(|| fail(f, "position overflows".into()))?;
                    if after > *max_position {
                        return Err(fail(f, format!("position would be {after}; maxPosition is {max_position}")));
                    }
                }
                Filter::MaxAsset { asset, limit } => {
                    let amount = if *asset == self.base_asset {
                        order.quantity
                    } else if *asset == self.quote_asset {
                        notional(order, ctx, is_market, true)
                    } else {
                        None
                    };
                    if let Some(amount) = amount {
                        if amount > *limit {
                            return Err(fail(f, format!("{amount} {asset} is over the MAX_ASSET limit {limit}")));
                        }
                    }
                }
                Filter::Malformed { filter_type, reason } => {
                    return Err(Rejection::Symbol {
                        reason: format!("{}: filter {filter_type} could not be read ({reason})", self.symbol),
                    });
                }
                // Iceberg, trailing-stop, algo, list and amend rules only concern orders we never
                // place (icebergQty, stops, OCO, amends).
                Filter::IcebergParts { .. }
                | Filter::TrailingDelta { .. }
                | Filter::MaxNumAlgoOrders { .. }
                | Filter::MaxNumIcebergOrders { .. }
                | Filter::MaxNumOrderLists { .. }
                | Filter::MaxNumOrderAmends { .. }
                | Filter::ExchangeMaxNumAlgoOrders { .. }
                | Filter::ExchangeMaxNumIcebergOrders { .. }
                | Filter::ExchangeMaxNumOrderLists { .. }
                | Filter::Unknown { .. } => {}
            }
        }
        Ok(())
    }

    /// Rounds a maker order onto the exchange's grid so that it stays passive, then checks it.
    ///
    /// Price goes to the tick *away* from the book (BUY down, SELL up), so rounding can never
    /// turn a maker order into a taker; quantity goes down to the step, so rounding never buys
    /// or sells more than asked. Both are written with the step's decimals. An order that is
    /// still invalid after rounding is refused with the reason; nothing is bumped up silently.
    pub fn prepare_maker(
        &self,
        side: Side,
        price: Decimal,
        quantity: Decimal,
        ctx: &MarketContext,
        exchange_filters: &[Filter],
    ) -> Result<PreparedOrder, Rejection> {
        if self.status != "TRADING" {
            return Err(Rejection::Symbol { reason: format!("{} is {}, not TRADING", self.symbol, self.status) });
        }
        if !self.order_types.is_empty() && !self.order_types.iter().any(|t| t == "LIMIT_MAKER") {
            return Err(Rejection::Symbol { reason: format!("{} does not accept LIMIT_MAKER orders", self.symbol) });
        }
        if price <= Decimal::ZERO || quantity <= Decimal::ZERO {
            return Err(Rejection::Symbol { reason: "price and quantity must be positive".into() });
        }
        let tick = self.filter(|f| match f {
            Filter::Price { tick_size, .. } => Some(*tick_size),
            _ => None,
        });
        let step = self.filter(|f| match f {
            Filter::LotSize { step_size, .. } => Some(*step_size),
            _ => None,
        });
        // With no tick (or a zero one) the asset precision is the grid.
        let price_grid = tick.filter(|t| !t.is_zero()).unwrap_or(Decimal::new(1, self.quote_precision));
        let qty_grid = step.filter(|s| !s.is_zero()).unwrap_or(Decimal::new(1, self.base_precision));
        let overflow = || Rejection::Symbol { reason: "price or quantity out of range".into() };
        let price = match side {
            Side::Buy => price.floor_to(price_grid),
            Side::Sell => price.ceil_to(price_grid),
        }
        .ok_or_else(overflow)?;
        let quantity = quantity.floor_to(qty_grid).ok_or_else(overflow)?;
        if price.is_zero() {
            return Err(Rejection::Symbol { reason: format!("price rounds to zero on tick {price_grid}") });
        }
        if quantity.is_zero() {
            return Err(Rejection::Symbol { reason: format!("quantity rounds to zero on step {qty_grid}") });
        }
        let spec = OrderSpec {
            side,
            order_type: OrderType::LimitMaker,
            price: Some(price),
            quantity: Some(quantity),
            quote_order_qty: None,
        };
        self.check_precision(&spec)?;
        self.check(&spec, ctx, exchange_filters)?;
        Ok(PreparedOrder { price, quantity })
    }
}

fn band(f: &Filter, price: Decimal, avg: Decimal, down: Decimal, up: Decimal) -> Result<(), Rejection> {
    let low = avg.checked_mul(down);
    let high = avg.checked_mul(up);
    if low.is_some_and(|low| price < low) {
        return Err(fail(f, format!("price {price} is below {down} x average {avg}")));
    }
    if high.is_some_and(|high| price > high) {
        return Err(fail(f, format!("price {price} is above {up} x average {avg}")));
    }
    Ok(())
}

fn lot(f: &Filter, qty: Decimal, min: Decimal, max: Decimal, step: Decimal) -> Result<(), Rejection> {
    if !min.is_zero() && qty < min {
        return Err(fail(f, format!("quantity {qty} is below minQty {min}")));
    }
    if !max.is_zero() && qty > max {
        return Err(fail(f, format!("quantity {qty} is above maxQty {max}")));
    }
    if !qty.is_multiple_of(step) {
        return Err(fail(f, format!("quantity {qty} is not a multiple of stepSize {step}")));
    }
    Ok(())
}

/// price × quantity for a limit order; for MARKET only when `applies`, from the average price
/// (or the quote quantity itself).
fn notional(order: &OrderSpec, ctx: &MarketContext, is_market: bool, applies: bool) -> Option<Decimal> {
    if is_market {
        if !applies {
            return None;
        }
        if let Some(q) = order.quote_order_qty {
            return Some(q);
        }
        return ctx.avg_price?.checked_mul(order.quantity?);
    }
    order.price?.checked_mul(order.quantity?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// The Binance.US BTCUSD exchangeInfo (pinned in `tests/fixtures/`), plus a NOTIONAL filter, an
    /// exchange filter and a filter type nobody has heard of.
    fn rules() -> ExchangeRules {
        let mut body: Value =
            serde_json::from_str(include_str!("../tests/fixtures/exchange_info_btcusd.json")).unwrap();
        body["exchangeFilters"] = serde_json::json!([{"filterType": "EXCHANGE_MAX_NUM_ORDERS", "maxNumOrders": 1000}]);
        let filters = body["symbols"][0]["filters"].as_array_mut().unwrap();
        filters.push(serde_json::json!({"filterType": "MAX_NUM_FUTURE_THINGS", "maxFutureThings": 3}));
        ExchangeRules::from_json(&body).unwrap()
    }

    fn btc() -> SymbolRules {
        rules().symbols["BTCUSD"].clone()
    }

    fn ctx() -> MarketContext {
        MarketContext { avg_price: Some(d("60000")), ..MarketContext::default() }
    }

    fn maker(side: Side, price: &str, qty: &str) -> OrderSpec {
        OrderSpec {
            side,
            order_type: OrderType::LimitMaker,
            price: Some(d(price)),
            quantity: Some(d(qty)),
            quote_order_qty: None,
        }
    }

    fn failed(r: Result<(), Rejection>) -> String {
        match r {
            Err(Rejection::Filter { filter, .. }) => filter,
            other => panic!("expected a filter failure, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_documented_sample() {
        let r = rules();
        assert_eq!(r.rate_limits.len(), 4);
        assert!(r.rate_limits.contains(&RateLimit { kind: LimitKind::Weight, interval_ms: 60_000, limit: 6000 }));
        let s = &r.symbols["BTCUSD"];
        assert_eq!((s.base_precision, s.quote_precision), (8, 8));
        assert!(s.filters.contains(&Filter::Price {
            min_price: d("0.01"),
            max_price: d("1000000"),
            tick_size: d("0.01")
        }));
        assert!(s.filters.iter().any(|f| matches!(f, Filter::MaxNumOrderAmends { max: 10 })));
        assert!(s.cancel_replace_allowed);
        // Absent or false: no cancelReplace (a replace becomes a cancel and a new order).
        for flag in [serde_json::json!(null), serde_json::json!(false)] {
            let mut body: Value =
                serde_json::from_str(include_str!("../tests/fixtures/exchange_info_btcusd.json")).unwrap();
            body["symbols"][0]["cancelReplaceAllowed"] = flag.clone();
            let parsed = ExchangeRules::from_json(&body).unwrap();
            assert!(!parsed.symbols["BTCUSD"].cancel_replace_allowed, "{flag}");
        }
    }

    #[test]
    fn unknown_filter_type_is_kept_and_harmless() {
        let s = btc();
        let unknown = s.filters.iter().find(|f| matches!(f, Filter::Unknown { .. })).unwrap();
        assert_eq!(unknown.name(), "MAX_NUM_FUTURE_THINGS");
        assert!(s.check(&maker(Side::Buy, "60000.00", "0.001"), &ctx(), &[]).is_ok());
    }

    #[test]
    fn malformed_known_filter_blocks_the_symbol() {
        let f = Filter::from_json(&serde_json::json!({"filterType": "LOT_SIZE", "minQty": "x"}));
        assert!(matches!(f, Filter::Malformed { .. }));
        let mut s = btc();
        s.filters.push(f);
        assert!(matches!(s.check(&maker(Side::Buy, "60000.00", "0.001"), &ctx(), &[]), Err(Rejection::Symbol { .. })));
    }

    #[test]
    fn price_filter_edges() {
        let s = btc();
        let c = ctx();
        assert!(
            s.check(&maker(Side::Buy, "0.01", "200"), &MarketContext::default(), &[]).is_ok(),
            "minPrice itself passes"
        );
        assert_eq!(failed(s.check(&maker(Side::Buy, "0.009", "2000"), &MarketContext::default(), &[])), "PRICE_FILTER");
        assert!(s.check(&maker(Side::Sell, "1000000", "0.001"), &MarketContext::default(), &[]).is_ok());
        assert_eq!(
            failed(s.check(&maker(Side::Sell, "1000000.01", "0.001"), &MarketContext::default(), &[])),
            "PRICE_FILTER"
        );
        assert_eq!(failed(s.check(&maker(Side::Buy, "60000.005", "0.001"), &c, &[])), "PRICE_FILTER");
    }

    #[test]
    fn lot_size_edges() {
        let s = btc();
        let c = ctx();
        assert!(s.check(&maker(Side::Buy, "60000", "0.0001"), &c, &[]).is_ok());
        assert_eq!(failed(s.check(&maker(Side::Buy, "60000", "0.000009"), &c, &[])), "LOT_SIZE");
        assert_eq!(failed(s.check(&maker(Side::Buy, "60000", "0.000015"), &c, &[])), "LOT_SIZE");
        assert!(s.check(&maker(Side::Sell, "0.01", "9000"), &MarketContext::default(), &[]).is_ok());
        assert_eq!(
            failed(s.check(&maker(Side::Sell, "0.01", "9000.00001"), &MarketContext::default(), &[])),
            "LOT_SIZE"
        );
    }

    #[test]
    fn min_notional_edges() {
        let s = btc();
        let c = MarketContext { avg_price: Some(d("10")), ..MarketContext::default() };
        assert!(s.check(&maker(Side::Buy, "10", "0.1"), &c, &[]).is_ok(), "exactly 1 USD passes");
        assert_eq!(failed(s.check(&maker(Side::Buy, "10", "0.09999"), &c, &[])), "MIN_NOTIONAL");
    }

    #[test]
    fn notional_edges() {
        let mut s = btc();
        s.filters.retain(|f| !matches!(f, Filter::MinNotional { .. }));
        s.filters.push(Filter::from_json(&serde_json::json!({"filterType":"NOTIONAL","minNotional":"10.00000000",
            "applyMinToMarket":false,"maxNotional":"10000.00000000","applyMaxToMarket":false,"avgPriceMins":5})));
        let c = ctx();
        assert!(s.check(&maker(Side::Buy, "60000", "0.00017"), &c, &[]).is_ok()); // 10.2
        assert_eq!(failed(s.check(&maker(Side::Buy, "60000", "0.00016"), &c, &[])), "NOTIONAL"); // 9.6
        assert!(s
            .check(&maker(Side::Buy, "50000", "0.2"), &MarketContext { avg_price: Some(d("50000")), ..ctx() }, &[])
            .is_ok());
        assert_eq!(
            failed(s.check(
                &maker(Side::Buy, "50000", "0.20001"),
                &MarketContext { avg_price: Some(d("50000")), ..ctx() },
                &[]
            )),
            "NOTIONAL"
        );
        // A MARKET order is exempt when applyMinToMarket is false.
        let market = OrderSpec { order_type: OrderType::Market, price: None, ..maker(Side::Buy, "1", "0.00001") };
        assert!(s.check(&market, &c, &[]).is_ok());
    }

    #[test]
    fn percent_price_edges() {
        let mut s = btc();
        s.filters.retain(|f| !matches!(f, Filter::PercentPriceBySide { .. }));
        let c = ctx(); // avg 60000, up 5, down 0.2 → [12000, 300000]
        assert!(s.check(&maker(Side::Buy, "12000", "0.001"), &c, &[]).is_ok());
        assert_eq!(failed(s.check(&maker(Side::Buy, "11999.99", "0.001"), &c, &[])), "PERCENT_PRICE");
        assert!(s.check(&maker(Side::Sell, "300000", "0.001"), &c, &[]).is_ok());
        assert_eq!(failed(s.check(&maker(Side::Sell, "300000.01", "0.001"), &c, &[])), "PERCENT_PRICE");
    }

    #[test]
    fn percent_price_by_side_edges() {
        let mut s = btc();
        s.filters.retain(|f| !matches!(f, Filter::PercentPrice { .. } | Filter::PercentPriceBySide { .. }));
        s.filters.push(Filter::from_json(&serde_json::json!({"filterType":"PERCENT_PRICE_BY_SIDE",
            "bidMultiplierUp":"1.2","bidMultiplierDown":"0.2","askMultiplierUp":"5","askMultiplierDown":"0.8","avgPriceMins":1})));
        let c = MarketContext { avg_price: Some(d("100")), ..MarketContext::default() };
        assert!(s.check(&maker(Side::Buy, "120", "1"), &c, &[]).is_ok());
        assert_eq!(failed(s.check(&maker(Side::Buy, "120.01", "1"), &c, &[])), "PERCENT_PRICE_BY_SIDE");
        assert!(s.check(&maker(Side::Buy, "20", "1"), &c, &[]).is_ok());
        assert_eq!(failed(s.check(&maker(Side::Buy, "19.99", "1"), &c, &[])), "PERCENT_PRICE_BY_SIDE");
        assert!(s.check(&maker(Side::Sell, "80", "1"), &c, &[]).is_ok());
        assert_eq!(failed(s.check(&maker(Side::Sell, "79.99", "1"), &c, &[])), "PERCENT_PRICE_BY_SIDE");
        assert!(s.check(&maker(Side::Sell, "500", "1"), &c, &[]).is_ok());
        assert_eq!(failed(s.check(&maker(Side::Sell, "500.01", "1"), &c, &[])), "PERCENT_PRICE_BY_SIDE");
    }

    #[test]
    fn order_count_and_position_limits() {
        let s = btc(); // MAX_NUM_ORDERS 200
        let order = maker(Side::Buy, "60000", "0.001");
        assert!(s.check(&order, &MarketContext { open_orders_symbol: 199, ..ctx() }, &[]).is_ok());
        assert_eq!(failed(s.check(&order, &MarketContext { open_orders_symbol: 200, ..ctx() }, &[])), "MAX_NUM_ORDERS");
        let r = rules(); // EXCHANGE_MAX_NUM_ORDERS 1000 in the fixture
        assert!(s.check(&order, &MarketContext { open_orders_total: 999, ..ctx() }, &r.exchange_filters).is_ok());
        assert_eq!(
            failed(s.check(&order, &MarketContext { open_orders_total: 1000, ..ctx() }, &r.exchange_filters)),
            "EXCHANGE_MAX_NUM_ORDERS"
        );
        let mut s = s;
        s.filters.push(Filter::MaxPosition { max_position: d("1") });
        assert!(s
            .check(&maker(Side::Buy, "60000", "0.5"), &MarketContext { base_position: Some(d("0.5")), ..ctx() }, &[])
            .is_ok());
        assert_eq!(
            failed(s.check(
                &maker(Side::Buy, "60000", "0.50001"),
                &MarketContext { base_position: Some(d("0.5")), ..ctx() },
                &[]
            )),
            "MAX_POSITION"
        );
        assert!(
            s.check(&maker(Side::Sell, "60000", "5"), &MarketContext { base_position: Some(d("0.5")), ..ctx() }, &[])
                .is_ok(),
            "SELL is exempt"
        );
    }

    #[test]
    fn market_lot_size_applies_to_market_only_and_zero_step_disables() {
        let s = btc(); // MARKET_LOT_SIZE min 0, max 10.64771804, step 0
        let market = |q: &str| OrderSpec { order_type: OrderType::Market, price: None, ..maker(Side::Buy, "1", q) };
        assert!(s.check(&market("10.64771804"), &ctx(), &[]).is_ok());
        assert_eq!(failed(s.check(&market("10.64771805"), &ctx(), &[])), "MARKET_LOT_SIZE");
        // LOT_SIZE's step does not apply to MARKET: 0.000011 is off the LOT_SIZE step.
        assert!(s.check(&market("0.000011"), &MarketContext { avg_price: Some(d("100000")), ..ctx() }, &[]).is_ok());
    }

    #[test]
    fn precision_is_checked() {
        let mut s = btc();
        s.quote_precision = 2;
        assert!(s.check_precision(&maker(Side::Buy, "60000.10000000", "0.001")).is_ok(), "trailing zeros are fine");
        assert_eq!(
            s.check_precision(&maker(Side::Buy, "60000.001", "0.001")),
            Err(Rejection::Precision { param: "price" })
        );
        s.base_precision = 2;
        assert_eq!(s.check_precision(&maker(Side::Buy, "1", "0.001")), Err(Rejection::Precision { param: "quantity" }));
    }

    #[test]
    fn maker_rounding_stays_passive_on_both_sides() {
        let s = btc();
        let buy = s.prepare_maker(Side::Buy, d("60000.019"), d("0.0123456"), &ctx(), &[]).unwrap();
        assert_eq!((buy.price.to_string(), buy.quantity.to_string()), ("60000.01".into(), "0.01234".into()));
        let sell = s.prepare_maker(Side::Sell, d("60000.011"), d("0.0123456"), &ctx(), &[]).unwrap();
        assert_eq!((sell.price.to_string(), sell.quantity.to_string()), ("60000.02".into(), "0.01234".into()));
        // Already on the grid: unchanged value, written with the tick's decimals.
        let exact = s.prepare_maker(Side::Sell, d("60000.10000000"), d("0.01000000"), &ctx(), &[]).unwrap();
        assert_eq!((exact.price.to_string(), exact.quantity.to_string()), ("60000.10".into(), "0.01000".into()));
    }

    #[test]
    fn maker_rounding_refuses_with_a_reason() {
        let s = btc();
        // Rounds down to zero quantity.
        let e = s.prepare_maker(Side::Buy, d("60000"), d("0.000009"), &ctx(), &[]).unwrap_err();
        assert!(e.to_string().contains("rounds to zero"), "{e}");
        // Notional of 0.00001 BTC at 60000 is 0.6 USD < 1.
        let e = s.prepare_maker(Side::Buy, d("60000"), d("0.00001"), &ctx(), &[]).unwrap_err();
        assert_eq!(
            e,
            Rejection::Filter {
                filter: "MIN_NOTIONAL".into(),
                reason: "notional 0.60000 is below minNotional 1.00000000".into()
            }
        );
        let mut halted = s.clone();
        halted.status = "HALT".into();
        assert!(matches!(
            halted.prepare_maker(Side::Buy, d("60000"), d("1"), &ctx(), &[]),
            Err(Rejection::Symbol { .. })
        ));
    }

    /// Properties (issue 12): for any filter set shaped like `exchangeInfo` and any maker
    /// intent, `prepare_maker` either returns an order every filter accepts, rounded only in
    /// the passive direction and never to more decimals than the asset allows, or refuses it
    /// with a reason.
    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A tick or step: powers of ten and the other grids exchanges use (0.05, 0.25, 5, ...).
        fn grid() -> impl Strategy<Value = Decimal> {
            (prop_oneof![Just(1i128), Just(5), Just(25), Just(2), Just(10)], 0u8..=6)
                .prop_map(|(m, s)| Decimal::new(m, s))
        }

        fn rules_for(
            tick: Decimal,
            step: Decimal,
            min_qty_steps: i64,
            min_notional: Decimal,
            (down, up): (Decimal, Decimal),
            precision: (u8, u8),
        ) -> SymbolRules {
            let min_qty = step.checked_mul(Decimal::from_int(min_qty_steps)).unwrap_or(step);
            SymbolRules {
                symbol: "TESTUSD".into(),
                status: "TRADING".into(),
                base_asset: "TEST".into(),
                quote_asset: "USD".into(),
                base_precision: precision.0,
                quote_precision: precision.1,
                order_types: vec!["LIMIT_MAKER".into()],
                cancel_replace_allowed: true,
                filters: vec![
                    Filter::Price { min_price: tick, max_price: Decimal::from_int(1_000_000), tick_size: tick },
                    Filter::LotSize { min_qty, max_qty: Decimal::from_int(100_000), step_size: step },
                    Filter::Notional {
                        min_notional,
                        apply_min_to_market: true,
                        max_notional: Decimal::from_int(5_000_000),
                        apply_max_to_market: false,
                        avg_price_mins: 5,
                    },
                    Filter::PercentPriceBySide {
                        bid_multiplier_up: up,
                        bid_multiplier_down: down,
                        ask_multiplier_up: up,
                        ask_multiplier_down: down,
                        avg_price_mins: 1,
                    },
                ],
            }
        }

        proptest! {
            #![proptest_config(crate::proptest_config(2000))]

            #[test]
            fn prepare_maker_accepts_only_what_check_accepts_and_rounds_passively(
                tick in grid(),
                step in grid(),
                min_qty_steps in 1i64..20,
                min_notional in (0i128..5000).prop_map(|m| Decimal::new(m, 2)),
                band in (1i128..99, 101i128..500).prop_map(|(d, u)| (Decimal::new(d, 2), Decimal::new(u, 2))),
                precision in (4u8..=8, 2u8..=8),
                buy in any::<bool>(),
                price in (1i128..10_000_000_000).prop_map(|m| Decimal::new(m, 5)),
                qty in (1i128..10_000_000_000).prop_map(|m| Decimal::new(m, 6)),
                avg in (1i128..10_000_000).prop_map(|m| Decimal::new(m, 2)),
                open in 0u64..300,
            ) {
                let sym = rules_for(tick, step, min_qty_steps, min_notional, band, precision);
                let side = if buy { Side::Buy } else { Side::Sell };
                let ctx = MarketContext { avg_price: Some(avg), open_orders_symbol: open, ..MarketContext::default() };
                match sym.prepare_maker(side, price, qty, &ctx, &[]) {
                    Ok(p) => {
                        let spec = OrderSpec {
                            side,
                            order_type: OrderType::LimitMaker,
                            price: Some(p.price),
                            quantity: Some(p.quantity),
                            quote_order_qty: None,
                        };
                        prop_assert_eq!(sym.check(&spec, &ctx, &[]), Ok(()));
                        prop_assert_eq!(sym.check_precision(&spec), Ok(()));
                        match side {
                            Side::Buy => prop_assert!(p.price <= price, "a BUY rounded up: {} -> {}", price, p.price),
                            Side::Sell => prop_assert!(p.price >= price, "a SELL rounded down: {} -> {}", price, p.price),
                        }
                        prop_assert!(p.quantity <= qty, "quantity rounded up: {} -> {}", qty, p.quantity);
                        // Rounding moves less than one grid step.
                        let moved = p.price.checked_sub(price).map(Decimal::abs);
                        prop_assert!(moved.is_some_and(|m| m < tick), "price moved {:?} on tick {}", moved, tick);
                    }
                    Err(why) => prop_assert!(!why.to_string().is_empty()),
                }
            }
        }
    }
}
