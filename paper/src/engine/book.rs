//! The paper market's public order book: what `GET /api/v3/depth`, `@depth`, `@depth@100ms` and
//! `@bookTicker` show, kept consistent with the matching engine.
//!
//! A level's quantity is the sum of two parts: the account's resting orders at that price (the
//! remaining quantity of every open GTC limit order, kept as an aggregate that
//! `Market::put_order` updates on every change of an order) and the synthetic liquidity of the
//! other traders the paper market stands for, a ladder of [`SYNTH_LEVELS`] levels each side from
//! the market's bid and ask, whose quantities are a seeded function of the price (and of the
//! market step for a third of the levels, so that a standing book still changes).
//!
//! Changes are collected per engine operation and committed once ([`Engine::commit_books`]):
//! each commit that changes any level takes the next update id and hands its levels to the
//! hub, which sends them as diff events at each stream's cadence and `@bookTicker` at once when
//! the best level moved. Binance.US "WebSocket Market Streams" and "Order Book":
//! <https://docs.binance.us/#websocket-market-streams>, <https://docs.binance.us/#order-book>.

use super::{fmt8, Engine, Order, TimeInForce};
use crate::feed::Commit;
use crate::order::{OrderType, Side};
use binance_syncd_plugin::Decimal;
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Levels of synthetic liquidity on each side.
pub const SYNTH_LEVELS: i64 = 20;
/// Past states kept for the `stale_depth` fault.
const HISTORY: usize = 64;
/// Levels a side a past state keeps.
const HISTORY_LEVELS: usize = 100;
/// The most levels `GET /api/v3/depth` returns ("limit ... max 5000").
const MAX_LIMIT: usize = 5000;

type Level = (Decimal, Decimal);

#[derive(Debug, Default)]
pub(super) struct PublicBook {
    /// The published levels, price → quantity.
    bids: BTreeMap<Reverse<Decimal>, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
    synth_bids: BTreeMap<Decimal, Decimal>,
    synth_asks: BTreeMap<Decimal, Decimal>,
    /// Remaining quantity of open resting orders per price.
    rest_bids: BTreeMap<Decimal, Decimal>,
    rest_asks: BTreeMap<Decimal, Decimal>,
    /// Prices whose level may differ from the published one: (is bid, price).
    dirty: BTreeSet<(bool, Decimal)>,
    pub(super) update_id: u64,
    /// Past published states, oldest first: (update id, bids, asks), best first.
    history: VecDeque<(u64, Vec<Level>, Vec<Level>)>,
    /// The best levels last sent on `@bookTicker`.
    pub(super) top: (Option<Level>, Option<Level>),
}

/// FNV-1a over the parts, for quantities that are the same on every run with the same seed.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The remaining quantity an order shows on the book: open GTC limit orders only (a MARKET,
/// IOC or FOK order never rests).
pub(super) fn resting(o: &Order) -> Decimal {
    let rests = o.status.is_open() && o.order_type != OrderType::Market && o.tif == TimeInForce::Gtc;
    if !rests {
        return Decimal::ZERO;
    }
    o.orig_qty.checked_sub(o.executed_qty).filter(|q| !q.is_negative()).unwrap_or(Decimal::ZERO)
}

impl PublicBook {
    fn synthetic_qty(seed: u64, symbol: &str, step: Decimal, price: Decimal, generation: u64) -> Decimal {
        let p = price.normalized().to_string();
        let churn = hash(&[&seed.to_le_bytes(), p.as_bytes(), &generation.to_le_bytes()]).is_multiple_of(3);
        let g = if churn { generation } else { 0 };
        let h = hash(&[&seed.to_le_bytes(), symbol.as_bytes(), p.as_bytes(), &g.to_le_bytes()]);
        step.checked_mul(Decimal::from_int(1 + (h % 5000) as i64)).unwrap_or(step)
    }

    /// Moves the synthetic ladder to the market's bid and ask (market step `generation`).
    pub(super) fn set_synthetic(&mut self, m: &MarketSnapshot<'_>, seed: u64, generation: u64) {
        let mut bids = BTreeMap::new();
        let mut asks = BTreeMap::new();
        for i in 0..SYNTH_LEVELS {
            let off = m.tick.checked_mul(Decimal::from_int(i)).unwrap_or(Decimal::ZERO);
            if let Some(b) = m.bid.checked_sub(off).filter(|b| *b > Decimal::ZERO) {
                bids.insert(b, Self::synthetic_qty(seed, m.symbol, m.step, b, generation));
            }
            if let Some(a) = m.ask.checked_add(off) {
                asks.insert(a, Self::synthetic_qty(seed, m.symbol, m.step, a, generation));
            }
        }
        for p in self.synth_bids.keys().chain(bids.keys()) {
            self.dirty.insert((true, *p));
        }
        for p in self.synth_asks.keys().chain(asks.keys()) {
            self.dirty.insert((false, *p));
        }
        self.synth_bids = bids;
        self.synth_asks = asks;
    }

    /// Adds `delta` (negative: less) to the resting quantity at `price`.
    pub(super) fn rest_delta(&mut self, side: Side, price: Decimal, delta: Decimal) {
        if delta.is_zero() {
            return;
        }
        let map = if side == Side::Buy { &mut self.rest_bids } else { &mut self.rest_asks };
        let now = map.get(&price).copied().unwrap_or(Decimal::ZERO).checked_add(delta).unwrap_or(Decimal::ZERO);
        if now.is_zero() || now.is_negative() {
            map.remove(&price);
        } else {
            map.insert(price, now);
        }
        self.dirty.insert((side == Side::Buy, price));
    }

    /// Publishes what changed since the last commit as one update: `None` if no level did.
    pub(super) fn commit(&mut self) -> Option<Commit> {
        let mut bids = Vec::new();
        let mut asks = Vec::new();
        for (is_bid, price) in std::mem::take(&mut self.dirty) {
            let (synth, rest) =
                if is_bid { (&self.synth_bids, &self.rest_bids) } else { (&self.synth_asks, &self.rest_asks) };
            let part = |m: &BTreeMap<Decimal, Decimal>| m.get(&price).copied().unwrap_or(Decimal::ZERO);
            let qty = part(synth).checked_add(part(rest)).unwrap_or(Decimal::ZERO);
            let old = if is_bid { self.bids.get(&Reverse(price)) } else { self.asks.get(&price) };
            if old.copied().unwrap_or(Decimal::ZERO) == qty {
                continue;
            }
            match (is_bid, qty.is_zero()) {
                (true, true) => drop(self.bids.remove(&Reverse(price))),
                (true, false) => drop(self.bids.insert(Reverse(price), qty)),
                (false, true) => drop(self.asks.remove(&price)),
                (false, false) => drop(self.asks.insert(price, qty)),
            }
            if is_bid {
                bids.push((price, qty));
            } else {
                asks.push((price, qty));
            }
        }
        if bids.is_empty() && asks.is_empty() {
            return None;
        }
        self.update_id += 1;
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        let (hb, ha) = self.levels(HISTORY_LEVELS);
        self.history.push_back((self.update_id, hb, ha));
        Some(Commit { update_id: self.update_id, bids, asks })
    }

    /// The best `n` levels of each side, best first.
    fn levels(&self, n: usize) -> (Vec<Level>, Vec<Level>) {
        (
            self.bids.iter().take(n).map(|(p, q)| (p.0, *q)).collect(),
            self.asks.iter().take(n).map(|(p, q)| (*p, *q)).collect(),
        )
    }

    pub(super) fn best(&self) -> (Option<Level>, Option<Level>) {
        (self.bids.iter().next().map(|(p, q)| (p.0, *q)), self.asks.iter().next().map(|(p, q)| (*p, *q)))
    }

    /// `GET /api/v3/depth`: the current book, or (`back` > 0) the one `back` updates ago, as
    /// far back as the kept history goes.
    pub(super) fn depth_json(&self, limit: usize, back: usize) -> Value {
        let limit = limit.clamp(1, MAX_LIMIT);
        let (id, bids, asks) = if back == 0 {
            let (b, a) = self.levels(limit);
            (self.update_id, b, a)
        } else {
            let i = self.history.len().saturating_sub(back + 1);
            match self.history.get(i) {
                Some((id, b, a)) => {
                    (*id, b.iter().take(limit).copied().collect(), a.iter().take(limit).copied().collect())
                }
                None => {
                    let (b, a) = self.levels(limit);
                    (self.update_id, b, a)
                }
            }
        };
        let pairs = |v: Vec<Level>| v.into_iter().map(|(p, q)| json!([fmt8(p), fmt8(q)])).collect::<Vec<_>>();
        json!({"lastUpdateId": id, "bids": pairs(bids), "asks": pairs(asks)})
    }

    /// The best bid and ask with their quantities, zero when a side is empty.
    pub(super) fn touch(&self) -> (Level, Level) {
        let (b, a) = self.best();
        (b.unwrap_or((Decimal::ZERO, Decimal::ZERO)), a.unwrap_or((Decimal::ZERO, Decimal::ZERO)))
    }
}

/// What the synthetic ladder needs to know of its market.
pub(super) struct MarketSnapshot<'a> {
    pub(super) symbol: &'a str,
    pub(super) bid: Decimal,
    pub(super) ask: Decimal,
    pub(super) tick: Decimal,
    pub(super) step: Decimal,
}

impl Engine {
    /// Commits every market's book changes: each changed book takes the next update id, its
    /// diff goes to the depth streams and, if its best level moved, `@bookTicker` gets it.
    pub(super) fn commit_books(&mut self) {
        for (symbol, m) in self.markets.iter_mut() {
            let Some(commit) = m.book.commit() else { continue };
            self.hub.depth_changed(symbol, &commit);
            let best = m.book.best();
            if best != m.book.top {
                m.book.top = best;
                let ((b, bq), (a, aq)) = m.book.touch();
                let ticker = json!({"u": m.book.update_id, "s": symbol, "b": fmt8(b), "B": fmt8(bq), "a": fmt8(a), "A": fmt8(aq)});
                self.hub.publish_market(&format!("{}@bookTicker", symbol.to_ascii_lowercase()), &ticker.to_string());
            }
        }
    }

    /// A public trade on `<symbol>@trade` ("Trade Streams"): `m` is whether the buyer was the
    /// maker; `b`/`a` the buyer's and seller's order ids (0 for the paper market's own traders).
    pub(super) fn publish_trade(&self, symbol: &str, t: PublicTrade) {
        let (b, a) = if t.buyer_side { (t.order_id, 0) } else { (0, t.order_id) };
        let ev = json!({
            "e": "trade", "E": t.time, "s": symbol, "t": t.id, "p": fmt8(t.price), "q": fmt8(t.qty),
            "b": b, "a": a, "T": t.time, "m": t.buyer_maker, "M": true,
        });
        self.hub.publish_market(&format!("{}@trade", symbol.to_ascii_lowercase()), &ev.to_string());
    }
}

/// One public trade, as the trade stream shows it.
pub(super) struct PublicTrade {
    pub(super) id: u64,
    pub(super) price: Decimal,
    pub(super) qty: Decimal,
    pub(super) time: i64,
    /// The account's order id on its side of the trade (0: none of the account's).
    pub(super) order_id: u64,
    /// The account's order was the buyer.
    pub(super) buyer_side: bool,
    pub(super) buyer_maker: bool,
}
