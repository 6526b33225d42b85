//! The symbol filters the exchange enforces on a new order, read from the `exchangeInfo` entry
//! it publishes and applied in the order listed, the first failure named as Binance names it
//! (`-1013 Filter failure: LOT_SIZE`). Written from Binance's filter documentation
//! (<https://docs.binance.us/#filters>), not shared with the daemon's `filters` module, so a
//! misreading of a rule in either shows up as a disagreement between the two.
//!
//! Enforced: `PRICE_FILTER`, `PERCENT_PRICE`, `PERCENT_PRICE_BY_SIDE`, `LOT_SIZE`,
//! `MARKET_LOT_SIZE`, `MIN_NOTIONAL`, `NOTIONAL`, `MAX_NUM_ORDERS`. The others concern orders
//! the exchange does not take (icebergs, trailing stops, order lists, algo orders, amends).

use super::NewOrder;
use crate::order::{OrderType, Side};
use binance_syncd_plugin::Decimal;
use serde_json::Value;

#[derive(Debug, Clone)]
enum Rule {
    /// A zero `minPrice`/`maxPrice`/`tickSize` disables that part.
    Price { min: Decimal, max: Decimal, tick: Decimal },
    /// Price within `[avg × down, avg × up]`, `avg` over `avgPriceMins`.
    Band { bid: (Decimal, Decimal), ask: (Decimal, Decimal) },
    /// `LOT_SIZE` (non-MARKET orders) or `MARKET_LOT_SIZE` (MARKET orders).
    Lot { market: bool, min: Decimal, max: Decimal, step: Decimal },
    /// price × quantity at least `min` (and, if non-zero, at most `max`); a MARKET order's
    /// notional (from the average price, or its quoteOrderQty) only where `…ToMarket` says so.
    Notional { min: Decimal, min_to_market: bool, max: Decimal, max_to_market: bool },
    /// Open orders on the symbol, this one included.
    MaxNumOrders(u64),
}

/// One symbol's precision and filters.
#[derive(Debug, Clone)]
pub(super) struct SymbolRules {
    base_precision: u8,
    quote_precision: u8,
    /// `(filterType, rule)` in the listed order.
    rules: Vec<(String, Rule)>,
}

/// Why an order fails the rules: `-1111` or `-1013 Filter failure: <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    Precision,
    Filter(String),
}

/// What the rules need beyond the order: the average price and the symbol's open orders.
pub(super) struct Market {
    pub avg_price: Decimal,
    pub open_orders: u64,
}

fn dec(raw: &Value, key: &str) -> Option<Decimal> {
    raw.get(key)?.as_str()?.parse().ok()
}

fn flag(raw: &Value, key: &str) -> bool {
    raw.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn rule(raw: &Value) -> Option<Rule> {
    let d = |key| dec(raw, key);
    Some(match raw.get("filterType")?.as_str()? {
        "PRICE_FILTER" => Rule::Price { min: d("minPrice")?, max: d("maxPrice")?, tick: d("tickSize")? },
        "PERCENT_PRICE" => {
            let band = (d("multiplierDown")?, d("multiplierUp")?);
            Rule::Band { bid: band, ask: band }
        }
        "PERCENT_PRICE_BY_SIDE" => Rule::Band {
            bid: (d("bidMultiplierDown")?, d("bidMultiplierUp")?),
            ask: (d("askMultiplierDown")?, d("askMultiplierUp")?),
        },
        kind @ ("LOT_SIZE" | "MARKET_LOT_SIZE") => {
            Rule::Lot { market: kind == "MARKET_LOT_SIZE", min: d("minQty")?, max: d("maxQty")?, step: d("stepSize")? }
        }
        "MIN_NOTIONAL" => Rule::Notional {
            min: d("minNotional")?,
            min_to_market: flag(raw, "applyToMarket"),
            max: Decimal::ZERO,
            max_to_market: false,
        },
        "NOTIONAL" => Rule::Notional {
            min: d("minNotional")?,
            min_to_market: flag(raw, "applyMinToMarket"),
            max: d("maxNotional")?,
            max_to_market: flag(raw, "applyMaxToMarket"),
        },
        "MAX_NUM_ORDERS" => Rule::MaxNumOrders(raw.get("maxNumOrders")?.as_u64()?),
        _ => return None,
    })
}

impl SymbolRules {
    /// The rules of one `exchangeInfo` symbol entry; filters it does not enforce are skipped.
    pub(super) fn from_info(info: &Value) -> SymbolRules {
        let precision = |key: &str, or: &str| {
            info.get(key).or_else(|| info.get(or)).and_then(Value::as_u64).map_or(8, |p| p.min(38) as u8)
        };
        let rules = info
            .get("filters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|raw| Some((raw.get("filterType")?.as_str()?.to_string(), rule(raw)?)))
            .collect();
        SymbolRules {
            base_precision: precision("baseAssetPrecision", "baseAssetPrecision"),
            quote_precision: precision("quoteAssetPrecision", "quotePrecision"),
            rules,
        }
    }

    /// `-1111`: more decimals than the asset has (trailing zeros do not count).
    pub(super) fn check_precision(&self, req: &NewOrder) -> Result<(), Failure> {
        let over = |v: Option<Decimal>, max: u8| v.is_some_and(|v| v.significant_scale() > max);
        if over(req.price, self.quote_precision)
            || over(req.quantity, self.base_precision)
            || over(req.quote_order_qty, self.quote_precision)
        {
            return Err(Failure::Precision);
        }
        Ok(())
    }

    /// Every filter in the listed order; the first that fails is named.
    pub(super) fn check(&self, req: &NewOrder, market: &Market) -> Result<(), Failure> {
        let is_market = req.order_type == OrderType::Market;
        for (name, rule) in &self.rules {
            if !passes(rule, req, market, is_market) {
                return Err(Failure::Filter(name.clone()));
            }
        }
        Ok(())
    }
}

/// Within `[min, max]` where each bound is set (non-zero).
fn within(v: Decimal, min: Decimal, max: Decimal) -> bool {
    (min.is_zero() || v >= min) && (max.is_zero() || v <= max)
}

fn passes(rule: &Rule, req: &NewOrder, market: &Market, is_market: bool) -> bool {
    match *rule {
        Rule::Price { min, max, tick } => req.price.is_none_or(|p| within(p, min, max) && p.is_multiple_of(tick)),
        Rule::Band { bid, ask } => {
            let Some(price) = req.price else { return true };
            let (down, up) = if req.side == Side::Buy { bid } else { ask };
            let avg = market.avg_price;
            avg.checked_mul(down).is_none_or(|low| price >= low) && avg.checked_mul(up).is_none_or(|high| price <= high)
        }
        Rule::Lot { market: for_market, min, max, step } => {
            if for_market != is_market {
                return true;
            }
            req.quantity.is_none_or(|q| within(q, min, max) && q.is_multiple_of(step))
        }
        Rule::Notional { min, min_to_market, max, max_to_market } => {
            let above_min = notional(req, market, is_market, min_to_market).is_none_or(|n| n >= min);
            let below_max = max.is_zero() || notional(req, market, is_market, max_to_market).is_none_or(|n| n <= max);
            above_min && below_max
        }
        Rule::MaxNumOrders(max) => market.open_orders < max,
    }
}

/// price × quantity; for a MARKET order only where the filter applies to MARKET orders, from
/// its quoteOrderQty or else the average price.
fn notional(req: &NewOrder, market: &Market, is_market: bool, applies: bool) -> Option<Decimal> {
    if !is_market {
        return req.price?.checked_mul(req.quantity?);
    }
    if !applies {
        return None;
    }
    req.quote_order_qty.or_else(|| market.avg_price.checked_mul(req.quantity?))
}
