//! Every decision reconciliation makes, as plain data in and decisions out: no sockets, no files,
//! no clock of its own (the caller passes `now_ms`), so each rule is a unit test.
//!
//! - [`Cursors`]: per symbol, where the next `myTrades` read starts: a trade id (`fromId`) once
//!   one is known, before that (a first start) a server time. [`Cursors::parse`] refuses a file
//!   it cannot trust and [`Cursors::rebuild`] starts over from the fill log.
//! - [`plan`] and [`after_page`]: which page to ask for next, and what a page that came back
//!   allows: how far the cursor may move and whether to read on.
//! - [`Ledger`]: the writer's side. It dedupes fills by `(symbol, trade_id)`, keeps the ones the
//!   log could not take (disk full) in memory, in order, and lets a cursor move only while none
//!   is held: the cursor never passes a fill that is not durable.
//!
//! Reading by time relies only on `myTrades` results being ascending, in windows of under 24 h
//! (Binance.US API docs, "Account Trade List": `startTime`/`endTime` may be at most 24 hours
//! apart; `fromId` returns trades with id >= `fromId`, oldest first).

use crate::error::Error;
use crate::filllog::FillRecord;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Rows per `myTrades` page: Binance's maximum.
pub const PAGE: usize = 1000;
/// Longest `startTime`..`endTime` window of one `myTrades` request (Binance caps it at 24 h).
pub const WINDOW_MS: i64 = 23 * 3_600_000;
const _: () = assert!(WINDOW_MS < 24 * 3_600_000, "Binance refuses a window of 24 h or more (-1127)");
/// How far back from the daemon's start a first start reads, so fills made while it was
/// starting are kept without importing the account's history; also the margin left behind
/// `now` for trades still landing.
pub const MARGIN_MS: i64 = 60_000;

/// The saved per-symbol cursors: the `fromId` the next reconciliation starts at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursors {
    pub version: u32,
    pub next_from_id: BTreeMap<String, u64>,
    /// Symbols with no trade id yet (first start): read by time from here (server ms).
    #[serde(default)]
    pub since_ms: BTreeMap<String, i64>,
}

impl Cursors {
    /// The cursors in `text`, or `None` if it is not a cursor file this version can trust (then
    /// they are rebuilt from the log: re-reading costs pages, trusting garbage costs fills).
    pub fn parse(text: &str) -> Option<Cursors> {
        serde_json::from_str::<Cursors>(text).ok().filter(|c| c.version == 1)
    }

    /// The cursors to start with. Lost or corrupt (`loaded` is `None`): from the log,
    /// conservatively, the oldest fill it still knows exactly. The stream logs fills ahead of
    /// the cursor, so the newest may sit after a gap REST has yet to fill; re-reading from the
    /// oldest costs a few pages and the dedupe skips what is there. A symbol added since the
    /// cursors were saved gets the same treatment: its logged fills still count.
    pub fn rebuild(loaded: Option<Cursors>, logged_first: &HashMap<String, u64>, symbols: &[String]) -> Cursors {
        let mut cursors = loaded.unwrap_or_else(|| Cursors {
            version: 1,
            next_from_id: logged_first.iter().map(|(s, id)| (s.clone(), *id)).collect(),
            since_ms: BTreeMap::new(),
        });
        for symbol in symbols {
            if let (None, Some(id)) = (cursors.next_from_id.get(symbol), logged_first.get(symbol)) {
                cursors.next_from_id.insert(symbol.clone(), *id);
            }
        }
        cursors
    }

    /// Where `symbol`'s fills stop being read by REST for good: its next `fromId`, or 0 while
    /// it still reads by time (nothing is behind it yet). The fill log's dedupe keeps every id
    /// from here on exactly ([`crate::filllog::Dedupe::keep_from`]).
    pub fn keep_from(&self, symbol: &str) -> u64 {
        self.next_from_id.get(symbol).copied().unwrap_or(0)
    }

    /// [`keep_from`](Self::keep_from) for each of `symbols` (the tracked ones).
    pub fn keep_from_all(&self, symbols: &[String]) -> HashMap<String, u64> {
        symbols.iter().map(|s| (s.clone(), self.keep_from(s))).collect()
    }

    /// Moves `symbol`'s cursor; true if it changed.
    pub fn apply(&mut self, symbol: &str, advance: Advance) -> bool {
        match advance {
            Advance::Stay => false,
            Advance::FromId(id) => {
                let moved = self.next_from_id.get(symbol) != Some(&id);
                self.next_from_id.insert(symbol.to_string(), id);
                moved | self.since_ms.remove(symbol).is_some()
            }
            Advance::Since(ms) => {
                if self.next_from_id.contains_key(symbol) || self.since_ms.get(symbol) == Some(&ms) {
                    return false;
                }
                self.since_ms.insert(symbol.to_string(), ms);
                true
            }
        }
    }
}

/// How a symbol's cursor may move once the fills a page brought are durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    Stay,
    /// Read from this trade id next.
    FromId(u64),
    /// No trade id yet: read by time from here next.
    Since(i64),
}

/// The next `myTrades` read of one symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    FromId(u64),
    /// `startTime`, `endTime` (server ms), at most [`WINDOW_MS`] apart.
    Window(i64, i64),
}

/// What to do for one symbol before and while reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub read: Read,
    /// A first start's time cursor, to be saved before the read: a restart before the first
    /// trade must not move it forward past fills made meanwhile.
    pub init: Option<i64>,
}

/// The next read for `symbol`. `started_ms`: server time when the daemon started.
pub fn plan(cursors: &Cursors, symbol: &str, started_ms: i64, now_ms: i64) -> Plan {
    if let Some(from) = cursors.next_from_id.get(symbol) {
        return Plan { read: Read::FromId(*from), init: None };
    }
    let (since, init) = match cursors.since_ms.get(symbol) {
        Some(s) => (*s, None),
        None => (started_ms - MARGIN_MS, Some(started_ms - MARGIN_MS)),
    };
    Plan { read: Read::Window(since, now_ms.min(since + WINDOW_MS)), init }
}

/// What one page allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub advance: Advance,
    /// Read another page (after this one's fills are durable and the cursor moved).
    pub more: bool,
}

/// The step after `read` returned `rows` rows, of which `ids` could be read and passed every
/// check. The cursor goes past the highest id, not the last: the order of a page is the
/// exchange's business, and an id missing in between belongs to someone else (trade ids are
/// per symbol, not per account).
///
/// `refused`: ids of rows of this symbol, in range, refused for what they say (a zero quantity,
/// say). They move the cursor only when a full page holds nothing else: then re-reading it
/// would refuse the same rows forever and no later fill of the symbol would be read. Otherwise
/// a later fill moves it past them, and until one comes they are read again, so a row with an
/// absurd id cannot carry the cursor past real fills. Rows whose symbol or id is wrong never
/// reach here.
pub fn after_page(read: Read, ids: &[u64], refused: &[u64], rows: usize, now_ms: i64) -> Step {
    let full = rows >= PAGE;
    let passed = match ids.iter().max() {
        Some(max) => Some(max),
        None if full => refused.iter().max(),
        None => None,
    };
    if let Some(max) = passed {
        // Checked: ids are validated below `i64::MAX`, but `u64::MAX + 1` must never wrap to 0.
        return match max.checked_add(1) {
            Some(next) => Step { advance: Advance::FromId(next), more: full },
            None => Step { advance: Advance::Stay, more: false },
        };
    }
    match read {
        // Nothing new; a full page of unreadable rows cannot move us either, so stop rather
        // than read it again.
        Read::FromId(_) => Step { advance: Advance::Stay, more: false },
        Read::Window(since, end) if end < now_ms => {
            // An empty window that ended before now: move on to the next one at once.
            Step { advance: Advance::Since(end.max(since)), more: end > since }
        }
        Read::Window(since, _) => {
            // Empty up to now: keep a margin for trades still landing.
            let next = now_ms - MARGIN_MS;
            Step { advance: if next > since { Advance::Since(next) } else { Advance::Stay }, more: false }
        }
    }
}

/// Where fills are made durable: the fill log, or a test's stand-in.
pub trait Journal {
    fn contains(&self, symbol: &str, trade_id: u64) -> bool;
    /// Writes one fill that [`commit`](Self::commit) makes durable (per the log's fsync
    /// policy) together with every other one staged since the last commit, numbering it
    /// (`fill.seq`) as it writes it. `Ok(false)`: already there.
    fn stage(&mut self, fill: &mut FillRecord) -> Result<bool, Error>;
    /// Makes every staged fill durable; on failure none of them counts as written.
    fn commit(&mut self) -> Result<(), Error>;
    /// `symbol`'s cursor is now `cursor` ([`Cursors::keep_from`]): ids below it may be
    /// summarised, ids at or above it must stay known exactly.
    fn keep_from(&mut self, _symbol: &str, _cursor: u64) {}
}

/// What [`Ledger::flush`] did.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Fills written now, in order.
    pub written: Vec<FillRecord>,
    /// Why writing stopped, with fills still held.
    pub failed: Option<Error>,
}

/// The writer's bookkeeping: the journal, the fills it could not take yet, and the cursors.
pub struct Ledger<J> {
    journal: J,
    held: VecDeque<FillRecord>,
    cursors: Cursors,
}

impl<J: Journal> Ledger<J> {
    pub fn new(journal: J, cursors: Cursors) -> Ledger<J> {
        Ledger { journal, held: VecDeque::new(), cursors }
    }

    /// Tells the journal where each tracked symbol's cursor stands (at start).
    pub fn bind(&mut self, symbols: &[String]) {
        for symbol in symbols {
            self.journal.keep_from(symbol, self.cursors.keep_from(symbol));
        }
    }

    pub fn journal(&self) -> &J {
        &self.journal
    }

    pub fn journal_mut(&mut self) -> &mut J {
        &mut self.journal
    }

    pub fn cursors(&self) -> &Cursors {
        &self.cursors
    }

    /// Fills waiting in memory for the journal.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Logged or held: either way, not to be logged again.
    pub fn knows(&self, symbol: &str, trade_id: u64) -> bool {
        self.journal.contains(symbol, trade_id)
            || self.held.iter().any(|f| f.symbol == symbol && f.trade_id == trade_id)
    }

    /// The trade ids of a page this ledger does not know yet.
    pub fn unknown(&self, symbol: &str, ids: &[u64]) -> Vec<u64> {
        ids.iter().copied().filter(|id| !self.knows(symbol, *id)).collect()
    }

    /// Queues a fill for the journal unless it is known; false for a duplicate. Call
    /// [`flush`](Self::flush) to write it.
    pub fn offer(&mut self, fill: FillRecord) -> bool {
        if self.knows(&fill.symbol, fill.trade_id) {
            return false;
        }
        self.held.push_back(fill);
        true
    }

    /// Writes held fills in order, durable together (one commit for all); stops at the first
    /// failure, so order is kept. A failed commit leaves every one of them held.
    pub fn flush(&mut self) -> Flushed {
        let mut out = Flushed::default();
        let mut staged = Vec::new();
        for fill in self.held.iter_mut() {
            match self.journal.stage(fill) {
                Ok(written) => staged.push(written),
                Err(e) => {
                    out.failed = Some(e);
                    break;
                }
            }
        }
        if let Err(e) = self.journal.commit() {
            // The first cause is the one worth reporting (a full disk before a failed sync).
            out.failed.get_or_insert(e);
            return out;
        }
        for written in staged {
            let Some(fill) = self.held.pop_front() else { break };
            if written {
                out.written.push(fill);
            }
        }
        out
    }

    /// Moves `symbol`'s cursor as a page allows, but only while no fill is held: a held fill
    /// may be one the move would pass. True if it moved.
    pub fn advance(&mut self, symbol: &str, advance: Advance) -> bool {
        let moved = self.held.is_empty() && self.cursors.apply(symbol, advance);
        if moved {
            self.journal.keep_from(symbol, self.cursors.keep_from(symbol));
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;
    use std::collections::BTreeSet;

    /// A journal in memory that can be made to fail, like a full disk.
    #[derive(Default)]
    struct Disk {
        lines: Vec<(String, u64)>,
        ids: BTreeSet<(String, u64)>,
        full: bool,
        /// Written since the last commit, and whether the next commit fails (an fsync error).
        staged: Vec<(String, u64)>,
        sync_fails: bool,
        commits: usize,
    }

    impl Journal for Disk {
        fn contains(&self, symbol: &str, trade_id: u64) -> bool {
            self.ids.contains(&(symbol.to_string(), trade_id))
        }

        fn stage(&mut self, fill: &mut FillRecord) -> Result<bool, Error> {
            if self.full {
                return Err(Error::Transport("no space left on device".into()));
            }
            let key = (fill.symbol.clone(), fill.trade_id);
            if !self.ids.insert(key.clone()) {
                return Ok(false);
            }
            self.staged.push(key);
            Ok(true)
        }

        fn commit(&mut self) -> Result<(), Error> {
            self.commits += 1;
            if self.sync_fails {
                for key in self.staged.drain(..) {
                    self.ids.remove(&key);
                }
                return Err(Error::Transport("fdatasync: input/output error".into()));
            }
            self.lines.append(&mut self.staged);
            Ok(())
        }
    }

    fn fill(symbol: &str, trade_id: u64) -> FillRecord {
        FillRecord {
            symbol: symbol.into(),
            trade_id,
            order_id: 7,
            client_order_id: "c-7".into(),
            side: Side::Buy,
            price: "60000.00".parse().unwrap(),
            qty: "0.001".parse().unwrap(),
            quote_qty: "60.00".parse().unwrap(),
            commission: "0".parse().unwrap(),
            commission_asset: "BTC".into(),
            maker: true,
            time: 1788540400100,
            seq: 0,
        }
    }

    fn from_id(symbol: &str, id: u64) -> Cursors {
        Cursors { version: 1, next_from_id: [(symbol.to_string(), id)].into(), since_ms: BTreeMap::new() }
    }

    /// What the writer does with one page: offer its fills, flush, move only if all durable.
    fn commit(ledger: &mut Ledger<Disk>, symbol: &str, ids: &[u64], rows: usize) -> Step {
        let read = plan(ledger.cursors(), symbol, 0, 0).read;
        let step = after_page(read, ids, &[], rows, 0);
        for id in ledger.unknown(symbol, ids) {
            ledger.offer(fill(symbol, id));
        }
        ledger.flush();
        ledger.advance(symbol, step.advance);
        step
    }

    #[test]
    fn a_page_is_made_durable_by_one_commit_and_a_failed_one_keeps_it_all_held() {
        let mut ledger = Ledger::new(Disk::default(), from_id("BTCUSD", 5));
        ledger.journal_mut().sync_fails = true;
        commit(&mut ledger, "BTCUSD", &[5, 6, 7], 3);
        assert_eq!(ledger.held(), 3, "none of the page counts as written");
        assert_eq!(ledger.cursors().next_from_id["BTCUSD"], 5);
        assert!(ledger.journal_mut().lines.is_empty());
        ledger.journal_mut().sync_fails = false;
        let commits = ledger.journal_mut().commits;
        let flushed = ledger.flush();
        assert_eq!(flushed.written.iter().map(|f| f.trade_id).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(ledger.journal_mut().commits, commits + 1, "one commit for the page");
        assert_eq!(ledger.held(), 0);
    }

    #[test]
    fn the_cursor_never_passes_a_fill_that_is_not_durable() {
        let mut ledger = Ledger::new(Disk::default(), from_id("BTCUSD", 5));
        ledger.journal_mut().full = true;
        commit(&mut ledger, "BTCUSD", &[5, 6, 7], 3);
        assert_eq!(ledger.held(), 3, "held in memory, in order");
        assert_eq!(ledger.cursors().next_from_id["BTCUSD"], 5, "the cursor stays behind held fills");
        // A fill held for another symbol blocks the move too: it is not durable either.
        ledger.journal_mut().full = false;
        ledger.flush();
        ledger.journal_mut().full = true;
        ledger.offer(fill("ETHUSD", 1));
        ledger.flush();
        assert!(!ledger.advance("BTCUSD", Advance::FromId(8)));
        // The disk recovers: the held fill goes out first, then the next pass may move.
        ledger.journal_mut().full = false;
        let flushed = ledger.flush();
        assert_eq!(flushed.written.len(), 1);
        assert!(flushed.failed.is_none());
        commit(&mut ledger, "BTCUSD", &[5, 6, 7], 3);
        assert_eq!(ledger.cursors().next_from_id["BTCUSD"], 8);
        let ids: Vec<u64> = ledger.journal_mut().lines.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids, [5, 6, 7, 1], "every fill once, in the order offered");
    }

    #[test]
    fn a_stream_fill_past_a_missed_one_does_not_move_the_cursor() {
        let mut ledger = Ledger::new(Disk::default(), from_id("BTCUSD", 10));
        // The stream delivered 10 and 13; 11 and 12 were lost.
        for id in [10, 13] {
            ledger.offer(fill("BTCUSD", id));
        }
        ledger.flush();
        assert_eq!(ledger.cursors().next_from_id["BTCUSD"], 10, "only REST pages move the cursor");
        assert_eq!(ledger.unknown("BTCUSD", &[10, 11, 12, 13]), [11, 12], "the page brings only the missed ones");
        commit(&mut ledger, "BTCUSD", &[10, 11, 12, 13], 4);
        assert_eq!(ledger.cursors().next_from_id["BTCUSD"], 14);
        assert_eq!(ledger.journal_mut().lines.len(), 4);
    }

    #[test]
    fn a_page_with_a_gap_moves_past_its_highest_id() {
        // 11 and 12 are other accounts' trades: ids are per symbol.
        let step = after_page(Read::FromId(10), &[10, 13], &[], 2, 0);
        assert_eq!(step, Step { advance: Advance::FromId(14), more: false });
    }

    #[test]
    fn an_out_of_order_page_moves_past_its_highest_id_not_its_last() {
        let mut ledger = Ledger::new(Disk::default(), from_id("BTCUSD", 10));
        commit(&mut ledger, "BTCUSD", &[12, 13, 10, 11], 4);
        assert_eq!(ledger.cursors().next_from_id["BTCUSD"], 14);
        assert_eq!(ledger.journal_mut().lines.len(), 4);
    }

    #[test]
    fn a_full_page_reads_on_and_a_short_one_stops() {
        let ids: Vec<u64> = (100..1100).collect();
        assert_eq!(
            after_page(Read::FromId(100), &ids, &[], PAGE, 0),
            Step { advance: Advance::FromId(1100), more: true }
        );
        assert!(!after_page(Read::FromId(100), &ids[..999], &[], 999, 0).more);
        // A full page of rows none of which could be read: stop instead of reading it again.
        assert_eq!(after_page(Read::FromId(100), &[], &[], PAGE, 0), Step { advance: Advance::Stay, more: false });
    }

    #[test]
    fn refused_rows_move_the_cursor_only_when_a_full_page_holds_nothing_else() {
        // A later fill passes a refused row; a refused row alone, even with an absurd id, does not.
        assert_eq!(after_page(Read::FromId(10), &[12], &[11], 2, 0).advance, Advance::FromId(13));
        assert_eq!(after_page(Read::FromId(10), &[12], &[1 << 40], 2, 0).advance, Advance::FromId(13));
        assert_eq!(after_page(Read::FromId(10), &[], &[1 << 40], 1, 0).advance, Advance::Stay);
        // A full page of refused rows: read on past them, or the symbol stops for good.
        let refused: Vec<u64> = (10..10 + PAGE as u64).collect();
        assert_eq!(
            after_page(Read::FromId(10), &[], &refused, PAGE, 0),
            Step { advance: Advance::FromId(10 + PAGE as u64), more: true }
        );
        // Never a wrap to 0.
        assert_eq!(after_page(Read::FromId(10), &[u64::MAX], &[], 1, 0).advance, Advance::Stay);
    }

    #[test]
    fn an_empty_page_by_id_stays_and_by_time_walks_forward() {
        let mut ledger = Ledger::new(Disk::default(), from_id("BTCUSD", 10));
        let step = commit(&mut ledger, "BTCUSD", &[], 0);
        assert_eq!(step, Step { advance: Advance::Stay, more: false });
        assert_eq!(ledger.cursors().next_from_id["BTCUSD"], 10);

        let now = 10 * WINDOW_MS;
        let since = now - 2 * WINDOW_MS - 5;
        // A window that ended before now: the next one starts where it ended, at once.
        let first = Read::Window(since, since + WINDOW_MS);
        assert_eq!(
            after_page(first, &[], &[], 0, now),
            Step { advance: Advance::Since(since + WINDOW_MS), more: true }
        );
        // The window that reaches now: a minute's margin for trades still landing.
        let last = Read::Window(now - 5 * MARGIN_MS, now);
        assert_eq!(after_page(last, &[], &[], 0, now), Step { advance: Advance::Since(now - MARGIN_MS), more: false });
        // Never backwards.
        let fresh = Read::Window(now - 10, now);
        assert_eq!(after_page(fresh, &[], &[], 0, now), Step { advance: Advance::Stay, more: false });
        // A trade in a window switches the symbol to ids for good.
        let mut c = Cursors { version: 1, ..Cursors::default() };
        assert!(c.apply("BTCUSD", Advance::Since(since)));
        assert!(c.apply("BTCUSD", after_page(first, &[42], &[], 1, now).advance));
        assert_eq!((c.next_from_id.get("BTCUSD"), c.since_ms.get("BTCUSD")), (Some(&43), None));
        assert!(!c.apply("BTCUSD", Advance::Since(now)), "a time never replaces an id");
    }

    #[test]
    fn a_first_start_reads_from_a_minute_before_start_in_windows_under_24_h() {
        let c = Cursors { version: 1, ..Cursors::default() };
        let started = 5 * WINDOW_MS;
        let p = plan(&c, "BTCUSD", started, started + 1000);
        assert_eq!(
            p,
            Plan { read: Read::Window(started - MARGIN_MS, started + 1000), init: Some(started - MARGIN_MS) }
        );
        // Days behind: one window at a time, each under 24 h.
        let old = Cursors { since_ms: [("BTCUSD".to_string(), started - 3 * WINDOW_MS)].into(), ..c };
        let p = plan(&old, "BTCUSD", started, started);
        assert_eq!(p.init, None, "a saved time is kept");
        let Read::Window(from, to) = p.read else { panic!("by time: {p:?}") };
        assert_eq!((from, to - from), (started - 3 * WINDOW_MS, WINDOW_MS));
    }

    #[test]
    fn a_lost_cursor_is_rebuilt_from_the_oldest_fill_the_log_knows() {
        let logged: HashMap<String, u64> = [("BTCUSD".to_string(), 10)].into();
        let symbols = ["BTCUSD".to_string(), "ETHUSD".to_string()];
        let c = Cursors::rebuild(None, &logged, &symbols);
        assert_eq!(c.next_from_id, [("BTCUSD".to_string(), 10)].into());
        // ETHUSD has no fill logged: it starts by time, like a first start.
        assert!(matches!(plan(&c, "ETHUSD", 1_000_000, 1_000_000).read, Read::Window(..)));
        // Saved cursors win; a symbol they lack but the log knows is added from the log.
        let saved = from_id("ETHUSD", 77);
        let c = Cursors::rebuild(Some(saved), &logged, &symbols);
        assert_eq!(c.next_from_id, [("BTCUSD".to_string(), 10), ("ETHUSD".to_string(), 77)].into());
    }

    #[test]
    fn a_corrupt_cursor_file_is_refused_and_rebuilt() {
        let good = serde_json::to_string(&from_id("BTCUSD", 5)).unwrap();
        assert_eq!(Cursors::parse(&good), Some(from_id("BTCUSD", 5)));
        for bad in
            ["", "{\"version\":1,\"next_from_id\":{\"BTCUSD\":", "[]", &good.replace("\"version\":1", "\"version\":2")]
        {
            assert_eq!(Cursors::parse(bad), None, "{bad:?}");
        }
        let logged: HashMap<String, u64> = [("BTCUSD".to_string(), 3)].into();
        let c = Cursors::rebuild(Cursors::parse("garbage"), &logged, &["BTCUSD".to_string()]);
        assert_eq!(c.next_from_id["BTCUSD"], 3);
    }
}
