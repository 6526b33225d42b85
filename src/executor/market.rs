//! The executor's view of the market: best bid/ask (from the `market` thread's view, or the
//! poller's `ticker/bookTicker` while that is stale or off) and `avgPrice`, and the
//! [`MarketContext`] each order is checked against (the crossing check, passive rounding,
//! PERCENT_PRICE bands).

use super::*;

impl Executor {
    /// Every symbol's best bid/ask the market stream confirms (the others come from the
    /// poller's `ticker/bookTicker`).
    pub(super) fn stream_quotes(&mut self) {
        for symbol in self.settings.symbols.clone() {
            self.stream_quote(&symbol);
        }
    }

    /// Takes `symbol`'s best bid/ask from the market thread's view if the stream confirmed it
    /// within `market_stale`; false if it did not (the last quote stays).
    pub(super) fn stream_quote(&mut self, symbol: &str) -> bool {
        let Some(top) = self.settings.market.as_ref().and_then(|m| m.fresh_top(symbol, self.settings.market_stale))
        else {
            return false;
        };
        self.set_quote(symbol.to_string(), Quote { bid: top.bid, ask: top.ask });
        true
    }

    pub(super) fn set_quote(&mut self, symbol: String, q: Quote) {
        let changed = self.quotes.get(&symbol).is_none_or(|old| old.bid != q.bid || old.ask != q.ask);
        self.quotes.insert(symbol, q);
        self.dirty |= changed;
    }

    /// `avgPrice` for an order waiting on it: on the order lane, waiting in the gate like the
    /// order would (the periodic reads are the poller's).
    pub(super) fn read_avg(&mut self, symbol: &str) {
        match self.desk.read::<super::poll::AvgPrice>(&AVG_PRICE, &[("symbol", symbol)]) {
            Ok(a) => {
                self.avg.insert(symbol.to_string(), (a.price, Instant::now()));
            }
            Err(e) => log::debug!("executor: avgPrice {symbol}: {e}"),
        }
    }

    pub(super) fn context(&self, sym: &SymbolRules, symbol: &str, replacing: Option<&OpenOrder>) -> MarketContext {
        let unresolved: u64 = self.pending.iter().map(|p| p.extra_open(&self.book).0).sum();
        let unresolved_here: u64 =
            self.pending.iter().filter(|p| p.symbol == symbol).map(|p| p.extra_open(&self.book).0).sum();
        let freed = u64::from(replacing.is_some());
        let mut position = self.balances.total(&sym.base_asset).checked_add(self.book.open_buy_qty(symbol));
        if let (Some(p), Some(o)) = (position, replacing.filter(|o| o.side == Side::Buy)) {
            position = p.checked_sub(o.remaining());
        }
        MarketContext {
            avg_price: self.avg.get(symbol).map(|(p, _)| *p),
            open_orders_symbol: (self.book.count_symbol(symbol) + unresolved_here).saturating_sub(freed),
            open_orders_total: (self.book.count_total() + unresolved).saturating_sub(freed),
            base_position: if self.balances.known() { position } else { None },
        }
    }

    /// True if the order passes with our average but fails with one 1 % away.
    pub(super) fn near_band_edge(
        &self,
        sym: &SymbolRules,
        side: Side,
        price: Decimal,
        qty: Decimal,
        ctx: &MarketContext,
        exchange_filters: &[crate::filters::Filter],
    ) -> bool {
        let Some(avg) = ctx.avg_price else { return false };
        [Decimal::new(99, 2), Decimal::new(101, 2)].iter().any(|k| {
            let moved = MarketContext { avg_price: avg.checked_mul(*k), ..ctx.clone() };
            sym.prepare_maker(side, price, qty, &moved, exchange_filters).is_err()
        })
    }
}
