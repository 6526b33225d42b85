//! A local order book kept exactly as Binance documents it (issue 22); pure, no I/O.
//!
//! The documented procedure for `<symbol>@depth` / `<symbol>@depth@100ms`: buffer the diff
//! events, fetch `GET /api/v3/depth`, drop buffered events with `u <= lastUpdateId`, check that
//! the first event applied brackets `lastUpdateId + 1` (`U <= lastUpdateId + 1 <= u`), then
//! require every next event's `U` to be the previous `u + 1`. Quantities are absolute; a zero
//! quantity (in any number of decimals: compared as a decimal) removes the level. Any break
//! (a gap in the ids, a reconnect) discards the book and starts again from a new snapshot; a
//! snapshot older than the first buffered event cannot be joined to it and is asked for again.
//!
//! [`BookSync`] is that procedure as a state machine: the caller feeds it events and snapshots
//! and it answers what it needs next. Pacing re-snapshots (never a snapshot storm) is the
//! caller's, with its `Backoff`: this type only says *that* a snapshot is needed.
//!
//! Binance.US WebSocket streams, "How to manage a local order book correctly":
//! <https://docs.binance.us/#websocket-market-streams>.

use crate::decimal::Decimal;
use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

/// One price level, `(price, quantity)`.
pub type Level = (Decimal, Decimal);

/// One `depthUpdate` event: update ids `first..=last` (`U`, `u`), absolute quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthUpdate {
    pub first_id: u64,
    pub last_id: u64,
    /// The exchange's event time (`E`), ms.
    pub event_time: i64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// A `GET /api/v3/depth` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub last_update_id: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// Price levels of one symbol: bids best (highest) first, asks best (lowest) first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderBook {
    bids: BTreeMap<Reverse<Decimal>, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
    /// The update id the book reflects.
    last_update_id: u64,
}

impl OrderBook {
    fn from_snapshot(s: &Snapshot) -> OrderBook {
        let mut book = OrderBook { last_update_id: s.last_update_id, ..OrderBook::default() };
        book.apply_levels(&s.bids, &s.asks);
        book
    }

    fn apply_levels(&mut self, bids: &[Level], asks: &[Level]) {
        for &(price, qty) in bids {
            if qty.is_zero() {
                self.bids.remove(&Reverse(price));
            } else {
                self.bids.insert(Reverse(price), qty);
            }
        }
        for &(price, qty) in asks {
            if qty.is_zero() {
                self.asks.remove(&price);
            } else {
                self.asks.insert(price, qty);
            }
        }
    }

    pub fn last_update_id(&self) -> u64 {
        self.last_update_id
    }

    /// The best bid, `(price, qty)`.
    pub fn best_bid(&self) -> Option<Level> {
        self.bids.iter().next().map(|(p, q)| (p.0, *q))
    }

    /// The best ask, `(price, qty)`.
    pub fn best_ask(&self) -> Option<Level> {
        self.asks.iter().next().map(|(p, q)| (*p, *q))
    }

    /// The best `n` levels of each side, best first.
    pub fn top(&self, n: usize) -> (Vec<Level>, Vec<Level>) {
        (
            self.bids.iter().take(n).map(|(p, q)| (p.0, *q)).collect(),
            self.asks.iter().take(n).map(|(p, q)| (*p, *q)).collect(),
        )
    }

    /// Number of levels, bids and asks.
    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }
}

/// What [`BookSync`] needs from its caller next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: keep feeding events.
    Events,
    /// A new `GET /api/v3/depth` snapshot (after the caller's backoff).
    Snapshot,
}

/// Why a book was discarded, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// An event did not follow the previous one (`U != previous u + 1`).
    Gap { expected: u64, got: u64 },
    /// The snapshot is older than the first buffered event: the two cannot be joined.
    StaleSnapshot { snapshot: u64, first_buffered: u64 },
    /// The buffer outgrew its bound while waiting for a snapshot.
    Overflow,
}

#[derive(Debug, Clone)]
enum State {
    /// Waiting for a snapshot; events buffered, oldest first.
    Buffering(VecDeque<DepthUpdate>),
    Live(OrderBook),
}

/// The documented synchronisation procedure for one symbol's book.
#[derive(Debug, Clone)]
pub struct BookSync {
    state: State,
    max_buffer: usize,
    /// Live from a snapshot no buffered event reached past: the first event to apply only has
    /// to bracket `lastUpdateId + 1` (`U <= lastUpdateId + 1 <= u`), as the documented
    /// procedure says; an exchange's snapshot may be newer than the next diff's start.
    unjoined: bool,
    /// Books discarded since start, by cause (for `/metrics`).
    pub resyncs: u64,
    pub gaps: u64,
}

impl BookSync {
    /// A book that starts by buffering; at most `max_buffer` events wait for a snapshot.
    pub fn new(max_buffer: usize) -> BookSync {
        BookSync {
            state: State::Buffering(VecDeque::new()),
            max_buffer: max_buffer.max(1),
            unjoined: false,
            resyncs: 0,
            gaps: 0,
        }
    }

    /// The live book, if there is one.
    pub fn book(&self) -> Option<&OrderBook> {
        match &self.state {
            State::Live(b) => Some(b),
            State::Buffering(_) => None,
        }
    }

    /// What the caller should do now.
    pub fn need(&self) -> Need {
        match self.state {
            State::Live(_) => Need::Events,
            State::Buffering(_) => Need::Snapshot,
        }
    }

    /// The stream was reconnected (or the book judged stale): everything starts again.
    pub fn reset(&mut self) {
        if matches!(self.state, State::Live(_)) {
            self.resyncs += 1;
        }
        self.state = State::Buffering(VecDeque::new());
    }

    /// One diff event from the stream. `Err` when it broke the book (which is then discarded
    /// and this event kept as the first of the new buffer).
    pub fn on_event(&mut self, ev: DepthUpdate) -> Result<Need, Broken> {
        match &mut self.state {
            State::Buffering(buf) => {
                if buf.len() >= self.max_buffer {
                    // The oldest events can no longer be joined to anything newer than them
                    // alone; keep the newest, ask again.
                    buf.pop_front();
                    buf.push_back(ev);
                    return Err(Broken::Overflow);
                }
                buf.push_back(ev);
                Ok(Need::Snapshot)
            }
            State::Live(book) => {
                if ev.last_id <= book.last_update_id {
                    // A repeat of what the book already holds.
                    return Ok(Need::Events);
                }
                let expected = book.last_update_id + 1;
                let joins = if self.unjoined { ev.first_id <= expected } else { ev.first_id == expected };
                if !joins {
                    self.gaps += 1;
                    self.resyncs += 1;
                    let got = ev.first_id;
                    self.state = State::Buffering(VecDeque::from([ev]));
                    return Err(Broken::Gap { expected, got });
                }
                book.apply_levels(&ev.bids, &ev.asks);
                book.last_update_id = ev.last_id;
                self.unjoined = false;
                Ok(Need::Events)
            }
        }
    }

    /// A snapshot arrived. `Ok(Need::Events)`: the book is live from it; `Err`: it could not
    /// be used (stale, or the buffered events have a gap) and another one is needed.
    pub fn on_snapshot(&mut self, snap: &Snapshot) -> Result<Need, Broken> {
        let State::Buffering(buf) = &mut self.state else {
            // A late answer to an earlier request: the live book is newer than any snapshot
            // asked for before it went live.
            return Ok(Need::Events);
        };
        while buf.front().is_some_and(|e| e.last_id <= snap.last_update_id) {
            buf.pop_front();
        }
        if let Some(first) = buf.front() {
            if first.first_id > snap.last_update_id + 1 {
                return Err(Broken::StaleSnapshot { snapshot: snap.last_update_id, first_buffered: first.first_id });
            }
        }
        let mut book = OrderBook::from_snapshot(snap);
        let events: Vec<DepthUpdate> = buf.drain(..).collect();
        self.unjoined = events.is_empty();
        for ev in events {
            let expected = book.last_update_id + 1;
            // The first event brackets lastUpdateId + 1 (checked above); every later one must
            // start right after its predecessor.
            if ev.first_id > expected {
                self.gaps += 1;
                let got = ev.first_id;
                self.state = State::Buffering(VecDeque::from([ev]));
                return Err(Broken::Gap { expected, got });
            }
            book.apply_levels(&ev.bids, &ev.asks);
            book.last_update_id = ev.last_id;
        }
        self.state = State::Live(book);
        Ok(Need::Events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_ahead_of_the_stream_joins_the_next_event_that_brackets_it() {
        // The snapshot (7) was taken after the exchange applied 6..=7, before it sent them.
        let mut sync = BookSync::new(16);
        assert_eq!(sync.on_event(ev(1, 5, &[], &[])), Ok(Need::Snapshot));
        let snap = Snapshot { last_update_id: 7, bids: vec![(d("10"), d("1"))], asks: vec![] };
        assert_eq!(sync.on_snapshot(&snap), Ok(Need::Events));
        assert_eq!(sync.on_event(ev(6, 8, &[("10", "2")], &[])), Ok(Need::Events), "6..=8 brackets 8");
        assert_eq!(sync.book().unwrap().last_update_id(), 8);
        // From then on, strictly U == previous u + 1.
        assert!(sync.on_event(ev(8, 9, &[], &[])).is_err());
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn ev(first: u64, last: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> DepthUpdate {
        DepthUpdate {
            first_id: first,
            last_id: last,
            event_time: 0,
            bids: bids.iter().map(|(p, q)| (d(p), d(q))).collect(),
            asks: asks.iter().map(|(p, q)| (d(p), d(q))).collect(),
        }
    }

    #[test]
    fn the_documented_example_goes_live_drops_old_events_and_removes_zero_levels() {
        let mut s = BookSync::new(100);
        assert_eq!(s.need(), Need::Snapshot);
        s.on_event(ev(150, 155, &[("4.00", "1")], &[])).unwrap();
        s.on_event(ev(156, 160, &[("4.00", "0.00000000")], &[("4.10", "7")])).unwrap();
        s.on_event(ev(161, 161, &[("3.90", "2")], &[])).unwrap();
        let snap = Snapshot { last_update_id: 157, bids: vec![(d("4.00"), d("9"))], asks: vec![(d("4.20"), d("1"))] };
        assert_eq!(s.on_snapshot(&snap), Ok(Need::Events));
        let book = s.book().unwrap();
        assert_eq!(book.last_update_id(), 161);
        // 150..155 dropped (u <= 157), 156..160 applied (brackets 158): 4.00 removed by "0.00000000".
        assert_eq!(book.best_bid(), Some((d("3.90"), d("2"))));
        assert_eq!(book.best_ask(), Some((d("4.10"), d("7"))));
        assert_eq!(s.on_event(ev(163, 164, &[], &[])), Err(Broken::Gap { expected: 162, got: 163 }));
        assert_eq!((s.need(), s.gaps), (Need::Snapshot, 1));
    }

    #[test]
    fn a_snapshot_older_than_the_buffer_is_asked_for_again() {
        let mut s = BookSync::new(100);
        s.on_event(ev(200, 210, &[], &[])).unwrap();
        let old = Snapshot { last_update_id: 150, bids: vec![], asks: vec![] };
        assert_eq!(s.on_snapshot(&old), Err(Broken::StaleSnapshot { snapshot: 150, first_buffered: 200 }));
        assert_eq!(s.need(), Need::Snapshot);
        let fresh = Snapshot { last_update_id: 205, bids: vec![], asks: vec![] };
        assert_eq!(s.on_snapshot(&fresh), Ok(Need::Events));
        assert_eq!(s.book().unwrap().last_update_id(), 210);
    }

    /// The reference: the exchange's true book after every update id, and the events it sent.
    mod props {
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Debug, Clone)]
        enum Step {
            /// The exchange changes levels `(bid?, price, qty)` in one event; `false`: the event
            /// is lost on the way (a gap).
            Event(Vec<(bool, u8, u8)>, bool),
            /// The caller gets a snapshot taken `age` events ago (0: now).
            Snapshot(u8),
            Reconnect,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                9 => (prop::collection::vec((any::<bool>(), 0u8..12, 0u8..4), 1..5), prop::bool::weighted(0.9))
                    .prop_map(|(c, delivered)| Step::Event(c, delivered)),
                2 => (0u8..3).prop_map(Step::Snapshot),
                1 => Just(Step::Reconnect),
            ]
        }

        type Side = BTreeMap<u8, u8>;

        fn snapshot_of(id: u64, bids: &Side, asks: &Side) -> Snapshot {
            let lv = |s: &Side| {
                s.iter().map(|(p, q)| (Decimal::from_int(*p as i64), Decimal::from_int(*q as i64))).collect()
            };
            Snapshot { last_update_id: id, bids: lv(bids), asks: lv(asks) }
        }

        proptest! {
            #![proptest_config(crate::proptest_config(256))]
            #[test]
            fn a_live_book_always_equals_the_exchanges_book_at_its_update_id(steps in prop::collection::vec(step(), 1..80)) {
                let mut sync = BookSync::new(1000);
                // The exchange: its book after each update id, and the id counter.
                let (mut bids, mut asks) = (Side::new(), Side::new());
                let mut history = vec![(0u64, bids.clone(), asks.clone())];
                let mut next_id = 1u64;
                for st in steps {
                    match st {
                        Step::Event(changes, delivered) => {
                            let first = next_id;
                            let mut ev = DepthUpdate { first_id: first, last_id: first, event_time: 0, bids: vec![], asks: vec![] };
                            for (i, (bid, price, qty)) in changes.iter().enumerate() {
                                let side = if *bid { &mut bids } else { &mut asks };
                                if *qty == 0 { side.remove(price); } else { side.insert(*price, *qty); }
                                let level = (Decimal::from_int(*price as i64), Decimal::from_int(*qty as i64));
                                if *bid { ev.bids.push(level) } else { ev.asks.push(level) }
                                ev.last_id = first + i as u64;
                            }
                            next_id = ev.last_id + 1;
                            history.push((ev.last_id, bids.clone(), asks.clone()));
                            if delivered {
                                let _ = sync.on_event(ev);
                            }
                        }
                        Step::Snapshot(age) => {
                            if sync.need() == Need::Snapshot {
                                let (id, b, a) = &history[history.len().saturating_sub(1 + age as usize)];
                                let _ = sync.on_snapshot(&snapshot_of(*id, b, a));
                            }
                        }
                        Step::Reconnect => sync.reset(),
                    }
                    if let Some(book) = sync.book() {
                        let id = book.last_update_id();
                        let (_, b, a) = history.iter().rev().find(|(h, _, _)| *h <= id).expect("history from 0");
                        let want = OrderBook::from_snapshot(&snapshot_of(id, b, a));
                        prop_assert_eq!(book.top(usize::MAX), want.top(usize::MAX), "at update id {}", id);
                    }
                }
            }
        }
    }
}
