//! Books and public trades handed from the `market` thread to the plugins that asked for them
//! (ABI 1.5 `on_book`, `on_trade`), conflated per plugin.
//!
//! The market thread never waits on a plugin: it writes each new book into every subscriber's
//! inbox, one slot per symbol that a newer book overwrites (the plugin then gets the newest,
//! never a backlog, and the overwritten one is counted as skipped), appends each trade to a
//! bounded queue (the oldest goes, counted, when it is full), and wakes the plugin's thread
//! through a channel of capacity one (a wake-up already pending is enough). The plugin thread
//! takes everything in its inbox at once when woken, in the order it was published. A plugin
//! that exports neither callback never subscribes: the market thread then only checks a
//! counter.

use super::book::Level;
use crate::decimal::Decimal;
use crate::lock::LockAnyway;
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Most levels a side a plugin can ask for (`book_depth`): what the view keeps.
pub const MAX_DEPTH: usize = 20;
/// Trades a plugin's inbox holds before the oldest is dropped.
pub const TRADE_QUEUE: usize = 1024;

/// One symbol's book as a plugin gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookUpdate {
    pub symbol: String,
    /// The local book's last update id (`u` of the last diff applied).
    pub update_id: u64,
    /// The exchange's event time (`E`, ms) of that diff; 0 when unknown.
    pub event_time_ms: i64,
    /// When its frame was read off the socket (ms since the epoch).
    pub received_ms: i64,
    /// Best first, at most [`MAX_DEPTH`] a side.
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// One public trade (`<symbol>@trade`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeUpdate {
    pub symbol: String,
    pub trade_id: u64,
    pub price: Decimal,
    pub qty: Decimal,
    /// Trade time (`T`) and event time (`E`), ms; 0 when the frame had none.
    pub time_ms: i64,
    pub event_time_ms: i64,
    pub received_ms: i64,
    /// The buyer was the maker (`m`): the taker sold.
    pub buyer_maker: bool,
}

/// What a plugin thread takes from its inbox, in publication order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketItem {
    /// `skipped`: books of this symbol overwritten unread since the last one it took.
    Book { book: BookUpdate, skipped: u64 },
    /// `dropped`: trades (of any symbol) dropped from a full queue before this one.
    Trade { trade: TradeUpdate, dropped: u64 },
}

#[derive(Default)]
struct Slots {
    /// Per symbol: the newest book not yet taken, its publication number, and books skipped.
    books: BTreeMap<String, (u64, BookUpdate, u64)>,
    trades: VecDeque<(u64, TradeUpdate)>,
    /// Trades dropped since the last one taken.
    dropped_pending: u64,
    /// The update id of the last book taken per symbol: never one at or below it again (a
    /// subscriber's first book, copied from the last published, may come twice otherwise).
    taken: BTreeMap<String, u64>,
    /// Totals, for the status and `/metrics`.
    skipped_total: u64,
    dropped_total: u64,
}

struct Inbox {
    books: bool,
    trades: bool,
    depth: usize,
    slots: Mutex<Slots>,
    wake: Sender<()>,
}

impl Inbox {
    fn wake(&self) {
        // Full means a wake-up is already pending: the thread takes everything when it runs.
        let _ = self.wake.try_send(());
    }
}

#[derive(Default)]
struct Wants {
    books: AtomicUsize,
    trades: AtomicUsize,
}

/// A plugin's subscription; dropping it unsubscribes.
pub struct Subscription {
    inbox: Arc<Inbox>,
    wants: Arc<Wants>,
    /// Ready when something is in the inbox.
    pub wake: Receiver<()>,
}

/// Totals of what a subscription lost to conflation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Losses {
    pub books_skipped: u64,
    pub trades_dropped: u64,
}

impl Subscription {
    /// Everything waiting, oldest first; a book's levels cut to the plugin's depth.
    pub fn take(&self) -> Vec<MarketItem> {
        let mut s = self.inbox.slots.lock_anyway();
        let mut items: Vec<(u64, MarketItem)> = Vec::new();
        for (n, book, skipped) in std::mem::take(&mut s.books).into_values() {
            if s.taken.get(&book.symbol).is_some_and(|&id| book.update_id <= id) {
                continue;
            }
            s.taken.insert(book.symbol.clone(), book.update_id);
            items.push((n, MarketItem::Book { book, skipped }));
        }
        let mut dropped = std::mem::take(&mut s.dropped_pending);
        for (n, trade) in s.trades.drain(..) {
            items.push((n, MarketItem::Trade { trade, dropped: std::mem::take(&mut dropped) }));
        }
        drop(s);
        items.sort_by_key(|(n, _)| *n);
        items.into_iter().map(|(_, i)| i).collect()
    }

    pub fn losses(&self) -> Losses {
        let s = self.inbox.slots.lock_anyway();
        Losses { books_skipped: s.skipped_total, trades_dropped: s.dropped_total }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.wants.books.fetch_sub(usize::from(self.inbox.books), Ordering::Relaxed);
        self.wants.trades.fetch_sub(usize::from(self.inbox.trades), Ordering::Relaxed);
    }
}

/// The hub, inside [`MarketView`](super::MarketView).
#[derive(Default)]
pub struct Feed {
    subscribers: Mutex<Vec<Weak<Inbox>>>,
    /// Live subscriptions wanting books, trades: the market thread's only cost without any.
    wants: Arc<Wants>,
    /// Publication counter and the last book of each symbol (a new subscriber starts from it).
    last: Mutex<(u64, BTreeMap<String, BookUpdate>)>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("want_books", &self.wants.books.load(Ordering::Relaxed))
            .field("want_trades", &self.wants.trades.load(Ordering::Relaxed))
            .finish()
    }
}

impl Feed {
    /// A subscription for books (`depth` levels a side, 1..=[`MAX_DEPTH`]) and/or trades;
    /// `None` when it wants neither. It starts with the last book of every symbol.
    pub fn subscribe(&self, books: bool, trades: bool, depth: usize) -> Option<Subscription> {
        if !books && !trades {
            return None;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let inbox =
            Arc::new(Inbox { books, trades, depth: depth.clamp(1, MAX_DEPTH), slots: Mutex::default(), wake: tx });
        let mut subs = self.subscribers.lock_anyway();
        subs.retain(|w| w.strong_count() > 0);
        subs.push(Arc::downgrade(&inbox));
        self.wants.books.fetch_add(usize::from(books), Ordering::Relaxed);
        self.wants.trades.fetch_add(usize::from(trades), Ordering::Relaxed);
        if books {
            let last = self.last.lock_anyway();
            let mut slots = inbox.slots.lock_anyway();
            for (symbol, book) in &last.1 {
                slots.books.entry(symbol.clone()).or_insert_with(|| (0, cut(book, inbox.depth), 0));
            }
            if !slots.books.is_empty() {
                inbox.wake();
            }
        }
        drop(subs);
        Some(Subscription { inbox, wants: self.wants.clone(), wake: rx })
    }

    /// Whether any subscriber wants books: the market thread builds none otherwise.
    pub fn wants_books(&self) -> bool {
        self.wants.books.load(Ordering::Relaxed) > 0
    }

    pub fn wants_trades(&self) -> bool {
        self.wants.trades.load(Ordering::Relaxed) > 0
    }

    /// A new book of its symbol; the same update id as the last one is no news (a ticker or a
    /// snapshot answer that left the book as it was).
    pub fn book(&self, book: BookUpdate) {
        let n = {
            let mut last = self.last.lock_anyway();
            if last.1.get(&book.symbol).is_some_and(|b| b.update_id == book.update_id) {
                return;
            }
            last.0 += 1;
            last.1.insert(book.symbol.clone(), book.clone());
            last.0
        };
        for inbox in self.live() {
            if !inbox.books {
                continue;
            }
            let mut s = inbox.slots.lock_anyway();
            let skipped = match s.books.remove(&book.symbol) {
                Some((_, _, before)) => {
                    s.skipped_total += 1;
                    before + 1
                }
                None => 0,
            };
            s.books.insert(book.symbol.clone(), (n, cut(&book, inbox.depth), skipped));
            drop(s);
            inbox.wake();
        }
    }

    /// The book of `symbol` is gone (the stream is down, or the book broke): a subscriber
    /// starting now gets none, rather than one that is no longer true.
    pub fn forget(&self, symbol: &str) {
        self.last.lock_anyway().1.remove(symbol);
    }

    pub fn trade(&self, trade: TradeUpdate) {
        let n = {
            let mut last = self.last.lock_anyway();
            last.0 += 1;
            last.0
        };
        for inbox in self.live() {
            if !inbox.trades {
                continue;
            }
            let mut s = inbox.slots.lock_anyway();
            if s.trades.len() >= TRADE_QUEUE {
                s.trades.pop_front();
                s.dropped_pending += 1;
                s.dropped_total += 1;
            }
            s.trades.push_back((n, trade.clone()));
            drop(s);
            inbox.wake();
        }
    }

    fn live(&self) -> Vec<Arc<Inbox>> {
        self.subscribers.lock_anyway().iter().filter_map(Weak::upgrade).collect()
    }
}

/// `book` with at most `depth` levels a side.
fn cut(book: &BookUpdate, depth: usize) -> BookUpdate {
    BookUpdate {
        bids: book.bids.iter().take(depth).copied().collect(),
        asks: book.asks.iter().take(depth).copied().collect(),
        ..book.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(symbol: &str, id: u64, levels: usize) -> BookUpdate {
        let level = |i: usize| (Decimal::from_int(100 + i as i64), Decimal::ONE);
        BookUpdate {
            symbol: symbol.into(),
            update_id: id,
            event_time_ms: id as i64,
            received_ms: 0,
            bids: (0..levels).map(level).collect(),
            asks: (0..levels).map(level).collect(),
        }
    }

    fn trade(id: u64) -> TradeUpdate {
        TradeUpdate {
            symbol: "BTCUSD".into(),
            trade_id: id,
            price: Decimal::ONE,
            qty: Decimal::ONE,
            time_ms: 0,
            event_time_ms: 0,
            received_ms: 0,
            buyer_maker: false,
        }
    }

    fn ids(items: &[MarketItem]) -> Vec<(String, u64, u64)> {
        items
            .iter()
            .map(|i| match i {
                MarketItem::Book { book, skipped } => (book.symbol.clone(), book.update_id, *skipped),
                MarketItem::Trade { trade, dropped } => ("trade".into(), trade.trade_id, *dropped),
            })
            .collect()
    }

    #[test]
    fn a_slow_reader_gets_the_newest_book_of_each_symbol_and_a_count_of_the_rest() {
        let feed = Feed::default();
        assert!(!feed.wants_books(), "nobody asked");
        let sub = feed.subscribe(true, false, 3).unwrap();
        assert!(feed.wants_books() && !feed.wants_trades());
        for id in 1..=5 {
            feed.book(book("BTCUSD", id, 20));
        }
        feed.book(book("ETHUSD", 9, 2));
        feed.book(book("ETHUSD", 9, 2)); // the same update id: no news
        feed.book(book("BTCUSD", 6, 20));
        assert!(sub.wake.try_recv().is_ok());
        assert!(sub.wake.try_recv().is_err(), "one wake-up however many books");
        let items = sub.take();
        // Publication order: ETHUSD's came before BTCUSD's newest.
        assert_eq!(ids(&items), vec![("ETHUSD".into(), 9, 0), ("BTCUSD".into(), 6, 5)]);
        let MarketItem::Book { book: b, .. } = &items[1] else { unreachable!() };
        assert_eq!((b.bids.len(), b.asks.len()), (3, 3), "cut to its depth");
        assert_eq!(sub.losses().books_skipped, 5);
        assert!(sub.take().is_empty());
        feed.book(book("BTCUSD", 7, 1));
        assert_eq!(ids(&sub.take()), vec![("BTCUSD".into(), 7, 0)], "the skip count starts again");
        // Never backwards, whatever is published.
        feed.book(book("BTCUSD", 6, 1));
        assert!(sub.take().is_empty());
    }

    #[test]
    fn a_new_subscriber_starts_from_the_last_books_and_a_dropped_one_costs_nothing() {
        let feed = Feed::default();
        feed.book(book("BTCUSD", 4, 5));
        feed.book(book("ETHUSD", 8, 5));
        feed.forget("ETHUSD");
        let sub = feed.subscribe(true, true, 20).unwrap();
        assert!(sub.wake.try_recv().is_ok());
        assert_eq!(ids(&sub.take()), vec![("BTCUSD".into(), 4, 0)]);
        assert!(feed.subscribe(false, false, 5).is_none());
        drop(sub);
        assert!(!feed.wants_books() && !feed.wants_trades());
        feed.book(book("BTCUSD", 5, 5));
        assert_eq!(feed.live().len(), 0);
    }

    #[test]
    fn trades_queue_in_order_and_a_full_queue_drops_the_oldest_counted() {
        let feed = Feed::default();
        let books_only = feed.subscribe(true, false, 5).unwrap();
        let sub = feed.subscribe(false, true, 5).unwrap();
        feed.trade(trade(1));
        feed.book(book("BTCUSD", 3, 1));
        feed.trade(trade(2));
        assert_eq!(ids(&sub.take()), vec![("trade".into(), 1, 0), ("trade".into(), 2, 0)]);
        assert_eq!(ids(&books_only.take()), vec![("BTCUSD".into(), 3, 0)]);
        for id in 0..(TRADE_QUEUE as u64 + 10) {
            feed.trade(trade(100 + id));
        }
        let items = sub.take();
        assert_eq!(items.len(), TRADE_QUEUE);
        assert_eq!(ids(&items)[0], ("trade".into(), 110, 10), "the oldest ten went");
        assert_eq!(ids(&items)[1].2, 0);
        assert_eq!(sub.losses().trades_dropped, 10);
    }
}
