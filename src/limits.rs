//! Per-strategy limits: how much of the account one strategy may use. The executor checks
//! them; they are a leaf of their own because `config` reads them from the environment, below
//! the executor.
//!
//! The account's own limits (open orders per symbol and account, orders per 10 s and per day)
//! are shared by everything that trades on it. A strategy that floods intents must not starve
//! the others or spend the account's order budget, so each strategy gets its own ceilings,
//! checked before anything is sent; an intent over one is refused with the limit named.

use crate::decimal::Decimal;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Ceilings for one strategy. `None` disables a notional ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyLimits {
    /// Open orders at once, over all symbols (`SYNCD_STRATEGY_MAX_OPEN`).
    pub max_open: u64,
    /// New orders (placements and replacements) in any 10 s (`SYNCD_STRATEGY_MAX_ORDERS_10S`).
    pub max_orders_10s: u64,
    /// price × quantity of one order, in the quote asset (`SYNCD_STRATEGY_MAX_ORDER_NOTIONAL`).
    pub max_order_notional: Option<Decimal>,
    /// Sum of price × remaining quantity of its open orders on one symbol, this one included
    /// (`SYNCD_STRATEGY_MAX_SYMBOL_NOTIONAL`).
    pub max_symbol_notional: Option<Decimal>,
}

impl Default for StrategyLimits {
    fn default() -> StrategyLimits {
        StrategyLimits {
            max_open: 20,
            max_orders_10s: 10,
            max_order_notional: Some(Decimal::from_int(1_000)),
            max_symbol_notional: Some(Decimal::from_int(10_000)),
        }
    }
}

/// What a strategy has now, as the limits see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub open_orders: u64,
    /// Its open notional on the order's symbol, before this order.
    pub symbol_notional: Decimal,
}

/// A refusal: the limit's name and the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    pub kind: Limit,
    pub limit: &'static str,
    pub reason: String,
}

/// Which ceiling an order is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    OpenOrders,
    OrderRate,
    OrderNotional,
    SymbolNotional,
}

const WINDOW: Duration = Duration::from_secs(10);

/// The sliding 10 s window of each strategy's new orders.
#[derive(Debug, Default)]
pub struct OrderRate {
    sent: HashMap<String, VecDeque<Instant>>,
}

impl OrderRate {
    fn trim(q: &mut VecDeque<Instant>, now: Instant) {
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
    }

    pub fn count(&mut self, tag: &str, now: Instant) -> u64 {
        let q = self.sent.entry(tag.to_string()).or_default();
        OrderRate::trim(q, now);
        q.len() as u64
    }

    pub fn record(&mut self, tag: &str, now: Instant) {
        self.sent.entry(tag.to_string()).or_default().push_back(now);
    }
}

impl StrategyLimits {
    /// Checks one new order of `notional` against every ceiling. `replacing`: the order it
    /// replaces (its count and notional are freed by the same request).
    pub fn check(
        &self,
        tag: &str,
        notional: Decimal,
        usage: Usage,
        recent_orders: u64,
        replacing: Option<Decimal>,
    ) -> Result<(), OverLimit> {
        let open_after = usage.open_orders + u64::from(replacing.is_none());
        if open_after > self.max_open {
            return Err(OverLimit {
                kind: Limit::OpenOrders,
                limit: "max open orders",
                reason: format!("strategy {tag} has {} open orders; its limit is {}", usage.open_orders, self.max_open),
            });
        }
        if recent_orders + 1 > self.max_orders_10s {
            return Err(OverLimit {
                kind: Limit::OrderRate,
                limit: "max orders per 10 s",
                reason: format!(
                    "strategy {tag} sent {recent_orders} orders in the last 10 s; its limit is {}",
                    self.max_orders_10s
                ),
            });
        }
        if let Some(max) = self.max_order_notional {
            if notional > max {
                return Err(OverLimit {
                    kind: Limit::OrderNotional,
                    limit: "max order notional",
                    reason: format!("order notional {notional} is over strategy {tag}'s limit of {max}"),
                });
            }
        }
        if let Some(max) = self.max_symbol_notional {
            let freed = replacing.unwrap_or(Decimal::ZERO);
            let after =
                usage.symbol_notional.checked_sub(freed).and_then(|n| n.checked_add(notional)).unwrap_or(notional);
            if after > max {
                return Err(OverLimit {
                    kind: Limit::SymbolNotional,
                    limit: "max symbol notional",
                    reason: format!("open notional on the symbol would be {after}; strategy {tag}'s limit is {max}"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn each_ceiling_refuses_at_its_edge() {
        let l = StrategyLimits {
            max_open: 2,
            max_orders_10s: 3,
            max_order_notional: Some(d("100")),
            max_symbol_notional: Some(d("150")),
        };
        let none = Usage::default();
        assert!(l.check("a", d("100"), none, 2, None).is_ok());
        assert_eq!(l.check("a", d("100.01"), none, 0, None).unwrap_err().limit, "max order notional");
        assert_eq!(l.check("a", d("1"), none, 3, None).unwrap_err().limit, "max orders per 10 s");
        let two_open = Usage { open_orders: 2, symbol_notional: d("100") };
        assert_eq!(l.check("a", d("1"), two_open, 0, None).unwrap_err().limit, "max open orders");
        // A replacement frees its own slot and notional.
        assert!(l.check("a", d("100"), two_open, 0, Some(d("50"))).is_ok());
        let one_open = Usage { open_orders: 1, symbol_notional: d("100") };
        assert!(l.check("a", d("50"), one_open, 0, None).is_ok());
        assert_eq!(l.check("a", d("50.01"), one_open, 0, None).unwrap_err().limit, "max symbol notional");
    }

    #[test]
    fn the_order_window_slides() {
        let mut r = OrderRate::default();
        let t0 = Instant::now();
        r.record("a", t0);
        r.record("a", t0 + Duration::from_secs(5));
        assert_eq!(r.count("a", t0 + Duration::from_secs(9)), 2);
        assert_eq!(r.count("a", t0 + Duration::from_secs(10)), 1);
        assert_eq!(r.count("b", t0), 0);
    }
}
