//! The market as the `market` thread last saw it, shared with the executor and `/metrics`.
//!
//! One `Mutex` over everything, taken for a few field copies at a time: by the `market` thread
//! after each frame it applies, by the executor at its price timer and before an order's
//! crossing check, by a scrape. Nobody does I/O or waits on a channel while holding it, so a
//! reader never waits behind the market thread's socket or its snapshot requests.
//!
//! A symbol's top of book is *confirmed* while the stream is connected and has delivered a
//! frame within the reader's limit: a connected combined stream sends every change of every
//! symbol it carries (`@bookTicker` in real time, `@depth@100ms` every 100 ms), so a quiet
//! symbol on a live connection has simply not moved. Its age is the time since that last frame.

use super::book::Level;
use super::feed::Feed;
use crate::decimal::Decimal;
use crate::lock::LockAnyway;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Best bid and ask of one symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Top {
    pub bid: Decimal,
    pub ask: Decimal,
    /// The book update id it reflects (`u` of `@bookTicker`, or of the last `depthUpdate`).
    pub update_id: u64,
    /// The exchange's event time (`E`, ms) of the depth event it came from; `@bookTicker`
    /// carries none.
    pub event_time_ms: Option<i64>,
    /// When its frame was read off the socket.
    pub received: Instant,
}

/// A symbol's part of the view.
#[derive(Debug, Clone, Default)]
pub struct SymbolMarket {
    /// This session's best bid and ask (cleared when the stream goes down).
    pub top: Option<Top>,
    /// The local book is live (synchronised from a snapshot and the diff stream).
    pub synced: bool,
    /// The book's best levels, best first (bids, asks), and its update id, while synced.
    pub levels: (Vec<Level>, Vec<Level>),
    pub book_id: Option<u64>,
    /// Books discarded (gap, reconnect) and gaps seen in the update ids.
    pub resyncs: u64,
    pub gaps: u64,
    /// `GET /api/v3/depth` requests, and those that failed or could not be joined.
    pub snapshots: u64,
    pub snapshot_failures: u64,
    /// Public trades seen, and the last one (price, quantity, trade time ms).
    pub trades: u64,
    pub last_trade: Option<(Decimal, Decimal, i64)>,
}

/// Everything behind the lock.
#[derive(Debug, Clone, Default)]
pub struct MarketState {
    /// The thread runs (the market stream is on).
    pub enabled: bool,
    pub up: bool,
    pub last_frame: Option<Instant>,
    pub sessions: u64,
    pub connect_failures: u64,
    /// Connections lost, by cause.
    pub reconnects: BTreeMap<&'static str, u64>,
    /// Text frames skipped as unreadable.
    pub skipped_frames: u64,
    /// `ticker/bookTicker` REST reads the executor made because the stream could not serve.
    pub rest_quotes: u64,
    pub symbols: BTreeMap<String, SymbolMarket>,
}

impl MarketState {
    /// How long since the stream last confirmed the book of `symbol` (see the module's doc);
    /// `None` while it cannot (down, or no top of book this session).
    pub fn age(&self, symbol: &str, now: Instant) -> Option<Duration> {
        if !self.up {
            return None;
        }
        self.symbols.get(symbol)?.top?;
        self.last_frame.map(|t| now.saturating_duration_since(t))
    }
}

/// The shared view; cheap to clone. It carries the [`Feed`] of books and trades to plugins.
#[derive(Debug, Clone, Default)]
pub struct MarketView(Arc<Mutex<MarketState>>, Arc<Feed>);

impl MarketView {
    pub fn new(symbols: &[String], enabled: bool) -> MarketView {
        let state = MarketState {
            enabled,
            symbols: symbols.iter().map(|s| (s.clone(), SymbolMarket::default())).collect(),
            ..MarketState::default()
        };
        MarketView(Arc::new(Mutex::new(state)), Arc::default())
    }

    /// Books and trades for the plugins that asked for them.
    pub fn feed(&self) -> &Feed {
        &self.1
    }

    /// A copy, for `/metrics` and tests.
    pub fn state(&self) -> MarketState {
        self.0.lock_anyway().clone()
    }

    /// The top of `symbol` if the stream confirmed it within `max_age`.
    pub fn fresh_top(&self, symbol: &str, max_age: Duration) -> Option<Top> {
        let s = self.0.lock_anyway();
        let age = s.age(symbol, Instant::now())?;
        if age > max_age {
            return None;
        }
        s.symbols.get(symbol)?.top
    }

    /// The executor read `ticker/bookTicker` by REST.
    pub fn count_rest_quote(&self) {
        self.0.lock_anyway().rest_quotes += 1;
    }

    /// Changes under the lock, for the `market` thread.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut MarketState) -> R) -> R {
        f(&mut self.0.lock_anyway())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_is_fresh_only_while_up_and_heard_from_within_the_limit() {
        let view = MarketView::new(&["BTCUSD".to_string()], true);
        let now = Instant::now();
        let top =
            Top { bid: Decimal::ONE, ask: Decimal::from_int(2), update_id: 7, event_time_ms: None, received: now };
        view.with(|s| {
            s.symbols.get_mut("BTCUSD").unwrap().top = Some(top);
            s.last_frame = Some(now);
        });
        assert_eq!(view.fresh_top("BTCUSD", Duration::from_secs(60)), None, "down");
        view.with(|s| s.up = true);
        assert_eq!(view.fresh_top("BTCUSD", Duration::from_secs(60)), Some(top));
        assert_eq!(view.fresh_top("ETHUSD", Duration::from_secs(60)), None, "not a symbol of ours");
        view.with(|s| s.last_frame = now.checked_sub(Duration::from_secs(10)));
        assert_eq!(view.fresh_top("BTCUSD", Duration::from_secs(5)), None, "no frame for 10 s");
        assert!(view.state().age("BTCUSD", Instant::now()).is_some_and(|a| a >= Duration::from_secs(10)));
    }
}
