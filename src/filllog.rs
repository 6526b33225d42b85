//! The fill log: append-only JSON Lines, one line per fill, each line written whole.
//!
//! `tail -f`, `jq` and scripts read it while it grows. Each fill is formatted into one buffer
//! and written with a single `write` to an `O_APPEND` file, so a reader never sees half a line
//! except after a crash mid-write; such a torn tail is cut on the next open (only the torn
//! bytes, never more). A write that fails part-way (disk full) is rolled back to the last whole
//! line before the error is returned, so a retry never glues a fill onto a fragment.
//!
//! # Line format
//! Fields may be added in later versions but are never renamed or removed:
//!
//! | Field | JSON type | Meaning |
//! |---|---|---|
//! | `symbol` | string | e.g. `"BTCUSD"` |
//! | `trade_id` | integer | the exchange's trade id (per symbol) |
//! | `order_id` | integer | the exchange's order id |
//! | `client_order_id` | string | the order's client id (`""` if the exchange did not say) |
//! | `side` | string | `"BUY"` or `"SELL"` |
//! | `price` | string | fill price, the exchange's exact decimal string |
//! | `qty` | string | filled base quantity, exact decimal string |
//! | `quote_qty` | string | price × qty as the exchange reported it |
//! | `commission` | string | commission charged, exact decimal string |
//! | `commission_asset` | string | asset the commission was charged in (`""` if none) |
//! | `maker` | bool | whether this side was the maker |
//! | `time` | integer | trade time, ms since the epoch |
//! | `seq` | integer | the line's sequence number: 1, 2, 3, ... with no gap (a line written before this field existed counts by its position) |
//!
//! A fill's identity is `(symbol, trade_id)`: the log never holds the same pair twice.

use crate::config::FsyncPolicy;
use crate::decimal::Decimal;
use crate::error::Error;
use crate::model::Side;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// One fill, as a line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FillRecord {
    pub symbol: String,
    pub trade_id: u64,
    pub order_id: u64,
    pub client_order_id: String,
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    pub quote_qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: String,
    pub maker: bool,
    pub time: i64,
    /// Assigned by [`FillLog::append`]; 0 until then (and in lines older than the field).
    #[serde(default)]
    pub seq: u64,
}

/// Remembers which trade ids were logged, per symbol, in bounded memory.
///
/// The newest `capacity` ids of each symbol are kept exactly. Older ones are summarised by a
/// floor: an id at or below it counts as seen. Trade ids only grow, so this is exact as long as
/// no fill arrives more than `capacity` fills late, which the reconciler's paging guarantees.
#[derive(Debug, Clone)]
pub struct Dedupe {
    capacity: usize,
    symbols: HashMap<String, SymbolIds>,
}

#[derive(Debug, Clone, Default)]
struct SymbolIds {
    recent: BTreeSet<u64>,
    floor: Option<u64>,
}

impl Dedupe {
    pub fn new(capacity: usize) -> Dedupe {
        Dedupe { capacity: capacity.max(1), symbols: HashMap::new() }
    }

    pub fn contains(&self, symbol: &str, trade_id: u64) -> bool {
        self.symbols.get(symbol).is_some_and(|s| s.recent.contains(&trade_id) || s.floor.is_some_and(|f| trade_id <= f))
    }

    /// Records an id; returns false if it was already seen.
    pub fn insert(&mut self, symbol: &str, trade_id: u64) -> bool {
        if self.contains(symbol, trade_id) {
            return false;
        }
        let ids = match self.symbols.get_mut(symbol) {
            Some(ids) => ids,
            None => self.symbols.entry(symbol.to_string()).or_default(),
        };
        ids.recent.insert(trade_id);
        if ids.recent.len() > self.capacity {
            if let Some(oldest) = ids.recent.pop_first() {
                ids.floor = Some(ids.floor.map_or(oldest, |f| f.max(oldest)));
            }
        }
        true
    }

    /// Every symbol's floor and exact ids, for a [`Carry`].
    pub fn export(&self) -> std::collections::BTreeMap<String, CarriedIds> {
        self.symbols
            .iter()
            .map(|(s, ids)| (s.clone(), CarriedIds { floor: ids.floor, recent: ids.recent.iter().copied().collect() }))
            .collect()
    }

    /// Takes in what an earlier file knew (its ids count as seen).
    pub fn absorb(&mut self, carry: &Carry) {
        for (symbol, carried) in &carry.ids {
            if let Some(floor) = carried.floor {
                let ids = self.symbols.entry(symbol.clone()).or_default();
                ids.floor = Some(ids.floor.map_or(floor, |f| f.max(floor)));
                // Exact ids under the new floor are covered by it.
                ids.recent.retain(|id| *id > floor);
            }
            for id in &carried.recent {
                self.insert(symbol, *id);
            }
        }
    }

    /// The lowest id still known exactly per symbol (the floor + 1 once ids were evicted).
    pub fn first_ids(&self) -> HashMap<String, u64> {
        self.symbols
            .iter()
            .filter_map(|(s, ids)| {
                let exact = ids.recent.first().copied();
                let id = match (ids.floor, exact) {
                    (Some(f), Some(e)) => Some(e.min(f + 1)),
                    (Some(f), None) => Some(f + 1),
                    (None, e) => e,
                };
                id.map(|id| (s.clone(), id))
            })
            .collect()
    }
}

/// Per-symbol ids kept exactly by the log's dedupe; see [`Dedupe`].
pub const DEDUPE_CAPACITY: usize = 10_000;

pub struct FillLog {
    file: File,
    path: PathBuf,
    /// Bytes of whole lines in the file: where the next line starts.
    len: u64,
    fsync: FsyncPolicy,
    seen: Dedupe,
    buf: Vec<u8>,
    /// A failed write could not be rolled back: the file may end in a fragment.
    dirty: bool,
    /// The sequence number of the next line.
    next_seq: u64,
}

/// What `open` found in an existing file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub lines: u64,
    /// Bytes cut from a torn last line.
    pub torn_bytes: u64,
    /// Whole lines that were not fill records (left in place, skipped).
    pub bad_lines: u64,
}

impl FillLog {
    /// Opens (or creates) the log, reads back every fill's identity, and cuts a torn tail.
    pub fn open(path: &Path, fsync: FsyncPolicy) -> Result<(FillLog, OpenReport), Error> {
        FillLog::open_after(path, fsync, None)
    }

    /// As [`FillLog::open`], continuing from what an earlier file left (`carry`, saved at a
    /// rotation or a shutdown): its ids count as logged and numbering goes on after its last
    /// `seq`, even when the file at `path` is new and empty.
    pub fn open_after(path: &Path, fsync: FsyncPolicy, carry: Option<&Carry>) -> Result<(FillLog, OpenReport), Error> {
        let mut seen = Dedupe::new(DEDUPE_CAPACITY);
        if let Some(carry) = carry {
            seen.absorb(carry);
        }
        let (file, scan) = open_file(path, &mut seen)?;
        let last_seq = scan.last_seq.max(carry.map_or(0, |c| c.last_seq));
        let log = FillLog {
            file,
            path: path.to_path_buf(),
            len: scan.good_len,
            fsync,
            seen,
            buf: Vec::with_capacity(512),
            dirty: false,
            next_seq: last_seq + 1,
        };
        Ok((log, scan.report))
    }

    /// After the file was renamed away (log rotation): makes sure the old file is complete on
    /// disk, then appends to whatever `path` names now (created if missing), keeping the
    /// dedupe and the numbering. `Ok(false)`: `path` still names the file being written.
    pub fn reopen(&mut self) -> Result<bool, Error> {
        use std::os::unix::fs::MetadataExt;
        if self.dirty && self.file.set_len(self.len).is_ok() {
            self.dirty = false;
        }
        self.file.sync_all().map_err(Error::io(&self.path))?;
        let current = self.file.metadata().map_err(Error::io(&self.path))?;
        if let Ok(named) = std::fs::metadata(&self.path) {
            if (named.dev(), named.ino()) == (current.dev(), current.ino()) {
                return Ok(false);
            }
        }
        let (file, scan) = open_file(&self.path, &mut self.seen)?;
        self.file = file;
        self.len = scan.good_len;
        self.dirty = false;
        self.next_seq = self.next_seq.max(scan.last_seq + 1);
        Ok(true)
    }

    /// What the next file needs to go on where this one stops (see [`FillLog::open_after`]).
    pub fn carry(&self) -> Carry {
        Carry { last_seq: self.last_seq(), ids: self.seen.export() }
    }

    pub fn contains(&self, symbol: &str, trade_id: u64) -> bool {
        self.seen.contains(symbol, trade_id)
    }

    /// The lowest trade id the log still knows exactly, per symbol: where a conservative
    /// rebuild of the cursors starts.
    pub fn first_ids(&self) -> HashMap<String, u64> {
        self.seen.first_ids()
    }

    /// The sequence number of the last line written (0 for an empty log).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Appends one fill as one line, numbering it (`fill.seq`); durable (per the fsync policy)
    /// before it returns. `Ok(false)`: this fill was already logged, nothing written.
    pub fn append(&mut self, fill: &mut FillRecord) -> Result<bool, Error> {
        if self.seen.contains(&fill.symbol, fill.trade_id) {
            return Ok(false);
        }
        if self.dirty {
            // Cut the fragment a failed write left before anything follows it.
            self.file.set_len(self.len).map_err(Error::io(&self.path))?;
            self.dirty = false;
        }
        self.buf.clear();
        fill.seq = self.next_seq;
        serde_json::to_writer(&mut self.buf, fill)
            .map_err(|e| Error::Io { path: self.path.clone(), source: e.into() })?;
        self.buf.push(b'\n');
        if let Err(e) = self.file.write_all(&self.buf) {
            // Part of the line may be on disk. Cut back to the last whole line so that the
            // retry starts clean; if even that fails, the next open cuts it.
            self.dirty = self.file.set_len(self.len).is_err();
            return Err(Error::io(&self.path)(e));
        }
        if self.fsync == FsyncPolicy::Always {
            if let Err(e) = self.file.sync_data() {
                // Not known to be durable: take it back so the caller retries it whole.
                self.dirty = self.file.set_len(self.len).is_err();
                return Err(Error::io(&self.path)(e));
            }
        }
        self.len += self.buf.len() as u64;
        self.seen.insert(&fill.symbol, fill.trade_id);
        self.next_seq += 1;
        Ok(true)
    }

    /// Forces everything written so far to disk (for `FsyncPolicy::Never` at shutdown).
    pub fn sync(&mut self) -> Result<(), Error> {
        self.file.sync_data().map_err(Error::io(&self.path))
    }
}

/// What [`open_file`] read.
struct Scan {
    report: OpenReport,
    /// Bytes of whole lines.
    good_len: u64,
    last_seq: u64,
}

/// Opens (or creates) the file at `path` for appending, records every fill's identity in
/// `seen`, and cuts a torn tail.
fn open_file(path: &Path, seen: &mut Dedupe) -> Result<(File, Scan), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let existed = path.exists();
    let file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(Error::io(path))?;
    if !existed {
        // The new directory entry must survive a power cut too, or the first fills could
        // vanish with the file.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }
    let mut report = OpenReport::default();
    let mut good_len = 0u64;
    let mut last_seq = 0u64;
    let mut line = Vec::new();
    let mut reader = BufReader::new(&file);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(Error::io(path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // end of file, or a last line that a crash cut short
        }
        good_len += n as u64;
        report.lines += 1;
        match serde_json::from_slice::<FillRecord>(&line) {
            Ok(rec) => {
                seen.insert(&rec.symbol, rec.trade_id);
                last_seq = last_seq.max(if rec.seq == 0 { report.lines } else { rec.seq });
            }
            Err(e) => {
                report.bad_lines += 1;
                log::error!("{}: line {} is not a fill record ({e}); skipping it", path.display(), report.lines);
            }
        }
    }
    let file_len = file.metadata().map_err(Error::io(path))?.len();
    if file_len > good_len {
        report.torn_bytes = file_len - good_len;
        log::warn!("{}: cutting a torn last line of {} bytes at byte {good_len}", path.display(), report.torn_bytes);
        file.set_len(good_len).map_err(Error::io(path))?;
        file.sync_all().map_err(Error::io(path))?;
    }
    Ok((file, Scan { report, good_len, last_seq }))
}

/// What a fill log hands to the next file at a rotation: the last `seq` written and the
/// dedupe's ids, so numbering and dedupe go on across files and restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carry {
    pub last_seq: u64,
    pub ids: std::collections::BTreeMap<String, CarriedIds>,
}

/// One symbol's part of a [`Carry`]: see [`Dedupe`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedIds {
    pub floor: Option<u64>,
    pub recent: Vec<u64>,
}

/// The fill log's followers (plugins): every line the writer makes durable is offered to each
/// with `try_send`, and [`durable`](Self::durable) says how far the log is. A follower whose
/// channel was full sees a gap in the sequence numbers (or `durable` ahead of it) and reads
/// what it missed with a [`Reader`]: the writer never waits for a follower, and no follower
/// misses a line.
#[derive(Debug, Clone, Default)]
pub struct FillTap {
    followers: std::sync::Arc<std::sync::Mutex<Vec<crossbeam_channel::Sender<FillRecord>>>>,
    /// Woken as a fill is about to be written, so a follower is on a CPU when it lands.
    heads_up: std::sync::Arc<std::sync::Mutex<Vec<crossbeam_channel::Sender<()>>>>,
    durable: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// When the last lines became durable (bounded), for latency figures and the status line.
    published: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<(u64, std::time::SystemTime)>>>,
}

/// Publish times kept by a [`FillTap`].
const PUBLISHED_KEPT: usize = 4096;

impl FillTap {
    /// A new follower with room for `capacity` lines before it must read the file.
    pub fn follow(&self, capacity: usize) -> crossbeam_channel::Receiver<FillRecord> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        self.followers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// A signal, sent before a fill is written, that a line is on its way: a follower that
    /// waits for it spinning instead of asleep does not pay the wake-up (tens to hundreds of
    /// µs on a small VM) after the line is durable, only while it is being written.
    pub fn heads_up(&self) -> crossbeam_channel::Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.heads_up.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// Called when a fill is on its way to the writer (the stream, on a trade report; it may
    /// still turn out to be a duplicate: a follower's wait for it is bounded).
    pub fn expect(&self) {
        let mut heads_up = self.heads_up.lock().unwrap_or_else(|p| p.into_inner());
        heads_up.retain(|h| !matches!(h.try_send(()), Err(crossbeam_channel::TrySendError::Disconnected(_))));
    }

    /// The sequence number of the last durable line.
    pub fn durable(&self) -> u64 {
        self.durable.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called by the writer once `fill` (numbered) is durable.
    pub fn publish(&self, fill: &FillRecord) {
        {
            let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            if published.len() >= PUBLISHED_KEPT {
                published.pop_front();
            }
            published.push_back((fill.seq, std::time::SystemTime::now()));
        }
        // Followers first, the durable mark after: a follower that wakes in between must find
        // the line in its channel, not take the slow road through the file for it.
        let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        followers
            .retain(|f| !matches!(f.try_send(fill.clone()), Err(crossbeam_channel::TrySendError::Disconnected(_))));
        drop(followers);
        self.durable.fetch_max(fill.seq, std::sync::atomic::Ordering::Release);
    }

    /// When line `seq` became durable, if it was one of the last few thousand.
    pub fn published_at(&self, seq: u64) -> Option<std::time::SystemTime> {
        let published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        published.iter().rev().find(|(s, _)| *s == seq).map(|(_, t)| *t)
    }

    /// Where the log stood when it was opened.
    pub fn set_durable(&self, seq: u64) {
        self.durable.fetch_max(seq, std::sync::atomic::Ordering::Release);
    }
}

/// Reads the fill log from a given sequence number on, while the writer appends (a plugin that
/// fell behind catches up here). Only whole lines are read; a line still being written is left
/// for the next call.
///
/// The file stays open between calls, as `tail -F` does: when the log is rotated (renamed, and
/// the writer reopens a new file at the path), the lines still unread in the old file are read
/// to its end first, then the reader moves on to the new file. A reader that starts after a
/// rotation sees only the new file. (An idle reader keeps the old file open, and so its disk
/// space in use once logrotate deletes it, until its next read.)
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
    file: Option<File>,
    /// Byte offset of the next unread line and the number of lines before it.
    offset: u64,
    lines: u64,
    /// The highest sequence number read so far.
    passed: u64,
}

impl Reader {
    pub fn new(path: &Path) -> Reader {
        Reader { path: path.to_path_buf(), file: None, offset: 0, lines: 0, passed: 0 }
    }

    /// Fills with `after < seq <= until`, in order, up to `max` of them. The reader stops in
    /// front of the first line past `until`, so a line the writer appends meanwhile is read by
    /// the next call, never skipped; asking for lines it already passed starts it over.
    pub fn read_after(&mut self, after: u64, until: u64, max: usize) -> Result<Vec<FillRecord>, Error> {
        let mut out = Vec::new();
        // At most one move to a newer file per call: the writer renames rarely.
        for _ in 0..2 {
            let file = match self.file.take() {
                Some(f) => f,
                None => File::open(&self.path).map_err(Error::io(&self.path))?,
            };
            let at_end = self.read_from(&file, after, until, max, &mut out)?;
            let moved = at_end && out.len() < max && self.path_moved(&file);
            if !moved {
                self.file = Some(file);
                break;
            }
            // Everything of the old file is read: go on in the one the path names now.
            self.offset = 0;
            self.lines = 0;
        }
        Ok(out)
    }

    /// Whether the log's path now names another file than `file` (a rotation).
    fn path_moved(&self, file: &File) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(open), Ok(named)) => (open.dev(), open.ino()) != (named.dev(), named.ino()),
            // Renamed and not yet replaced: stay on the open file until the writer reopens.
            _ => false,
        }
    }

    /// Reads whole lines from `file` into `out`; true if it stopped at the end of the file
    /// (not at `max` or `until`).
    fn read_from(
        &mut self,
        mut file: &File,
        after: u64,
        until: u64,
        max: usize,
        out: &mut Vec<FillRecord>,
    ) -> Result<bool, Error> {
        use std::io::{Seek, SeekFrom};
        let len = file.metadata().map_err(Error::io(&self.path))?.len();
        if len < self.offset || after < self.passed {
            // Shorter than where we were (a torn tail cut), or asked for lines behind us:
            // start over.
            self.offset = 0;
            self.lines = 0;
            self.passed = 0;
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(Error::io(&self.path))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        while out.len() < max {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(Error::io(&self.path))?;
            if n == 0 || line.last() != Some(&b'\n') {
                return Ok(true);
            }
            let parsed = serde_json::from_slice::<FillRecord>(&line).ok().map(|mut rec| {
                if rec.seq == 0 {
                    rec.seq = self.lines + 1;
                }
                rec
            });
            if parsed.as_ref().is_some_and(|rec| rec.seq > until) {
                return Ok(false); // not consumed: the next call starts here
            }
            self.lines += 1;
            self.offset += n as u64;
            if let Some(rec) = parsed {
                self.passed = self.passed.max(rec.seq);
                if rec.seq > after {
                    out.push(rec);
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fill(symbol: &str, trade_id: u64) -> FillRecord {
        FillRecord {
            symbol: symbol.into(),
            trade_id,
            order_id: 123456789,
            client_order_id: "syncd-7f3a-000041".into(),
            side: Side::Buy,
            price: "60000.00000000".parse().unwrap(),
            qty: "0.00400000".parse().unwrap(),
            quote_qty: "240.00000000".parse().unwrap(),
            commission: "0.00000400".parse().unwrap(),
            commission_asset: "BTC".into(),
            maker: true,
            time: 1788540400100,
            seq: 0,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("syncd-filllog-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("fills.jsonl")
    }

    #[test]
    fn lines_are_numbered_without_gaps_across_reopen_and_old_lines_count_by_position() {
        let path = tmp("seq");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Two lines from before the field existed.
        let old: String = [1, 2]
            .iter()
            .map(|id| serde_json::to_string(&fill("BTCUSD", *id)).unwrap().replace(",\"seq\":0", "") + "\n")
            .collect();
        std::fs::write(&path, old).unwrap();
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(log.last_seq(), 2);
        let mut f = fill("BTCUSD", 3);
        assert!(log.append(&mut f).unwrap());
        assert_eq!(f.seq, 3);
        assert!(!log.append(&mut fill("BTCUSD", 3)).unwrap(), "a duplicate takes no number");
        drop(log);
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        let mut g = fill("ETHUSD", 1);
        log.append(&mut g).unwrap();
        assert_eq!(g.seq, 4);
        let mut reader = Reader::new(&path);
        let seqs: Vec<u64> = reader.read_after(1, u64::MAX, 10).unwrap().iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        assert!(reader.read_after(4, u64::MAX, 10).unwrap().is_empty());
        let mut h = fill("ETHUSD", 2);
        log.append(&mut h).unwrap();
        // A reader picks up where it was.
        assert_eq!(reader.read_after(4, u64::MAX, 10).unwrap().iter().map(|f| f.seq).collect::<Vec<_>>(), [5]);
        assert_eq!(Reader::new(&path).read_after(0, u64::MAX, 2).unwrap().len(), 2, "max is honoured");
        // A line past `until` stays for the next call: nothing the writer adds is skipped.
        let mut bounded = Reader::new(&path);
        assert_eq!(bounded.read_after(0, 3, 10).unwrap().iter().map(|f| f.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(bounded.read_after(3, 5, 10).unwrap().iter().map(|f| f.seq).collect::<Vec<_>>(), [4, 5]);
        // Asking again for lines already passed starts over.
        assert_eq!(bounded.read_after(1, 2, 10).unwrap().iter().map(|f| f.seq).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_heads_up_never_blocks_the_sender_and_a_gone_follower_is_dropped() {
        let tap = FillTap::default();
        let (kept, gone) = (tap.heads_up(), tap.heads_up());
        drop(gone);
        // Many trades before the follower looks: one signal waits, the sender never blocks.
        for _ in 0..5 {
            tap.expect();
        }
        assert_eq!(kept.try_recv(), Ok(()));
        assert!(kept.try_recv().is_err(), "one pending heads-up, not a queue of them");
        assert_eq!(tap.heads_up.lock().unwrap().len(), 1, "the dropped follower is forgotten");
        // The line itself still comes through the fill channel.
        let lines = tap.follow(4);
        let mut f = fill("BTCUSD", 1);
        f.seq = 1;
        tap.publish(&f);
        assert_eq!(lines.try_recv().map(|l| l.seq), Ok(1));
        assert_eq!(tap.durable(), 1);
    }

    #[test]
    fn rotation_keeps_dedupe_and_numbering_and_a_reader_finishes_the_old_file_first() {
        let path = tmp("rotate");
        let rotated = path.with_extension("jsonl.1");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        for id in 1..=3 {
            log.append(&mut fill("BTCUSD", id)).unwrap();
        }
        let mut reader = Reader::new(&path);
        assert_eq!(reader.read_after(0, 1, 10).unwrap().len(), 1, "the reader holds the file open");
        assert!(!log.reopen().unwrap(), "nothing was renamed: same file");
        std::fs::rename(&path, &rotated).unwrap();
        assert!(log.reopen().unwrap());
        assert!(!log.append(&mut fill("BTCUSD", 2)).unwrap(), "the dedupe spans the rotation");
        let mut f = fill("BTCUSD", 4);
        assert!(log.append(&mut f).unwrap());
        assert_eq!(f.seq, 4, "numbering goes on in the new file");
        let seqs = |r: Vec<FillRecord>| r.iter().map(|f| f.seq).collect::<Vec<_>>();
        assert_eq!(seqs(reader.read_after(1, u64::MAX, 10).unwrap()), [2, 3, 4], "old file to its end, then the new");
        assert_eq!(seqs(Reader::new(&path).read_after(0, u64::MAX, 10).unwrap()), [4], "a new reader: new file only");
        // A restart on a new, empty file continues from the carry.
        let carry = log.carry();
        drop(log);
        std::fs::rename(&path, &rotated).unwrap();
        let carry: Carry = serde_json::from_str(&serde_json::to_string(&carry).unwrap()).unwrap();
        let (mut log, report) = FillLog::open_after(&path, FsyncPolicy::Never, Some(&carry)).unwrap();
        assert_eq!((report.lines, log.last_seq()), (0, 4));
        assert!(!log.append(&mut fill("BTCUSD", 4)).unwrap(), "the carried ids are known");
        let mut g = fill("BTCUSD", 5);
        assert!(log.append(&mut g).unwrap());
        assert_eq!(g.seq, 5);
        let (log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(log.last_seq(), 5, "the file's own numbers win once it has lines");
    }

    #[test]
    fn a_carry_keeps_the_dedupe_floor() {
        let mut d = Dedupe::new(2);
        for id in [1, 2, 3, 4] {
            d.insert("BTCUSD", id);
        }
        let carry = Carry { last_seq: 4, ids: d.export() };
        let mut e = Dedupe::new(2);
        e.absorb(&carry);
        assert!(e.contains("BTCUSD", 1) && e.contains("BTCUSD", 4) && !e.contains("BTCUSD", 5));
        assert_eq!(e.first_ids(), d.first_ids());
    }

    #[test]
    fn line_format_is_stable() {
        let path = tmp("format");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Always).unwrap();
        assert!(log.append(&mut fill("BTCUSD", 555001)).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"symbol\":\"BTCUSD\",\"trade_id\":555001,\"order_id\":123456789,\"client_order_id\":\"syncd-7f3a-000041\",\
             \"side\":\"BUY\",\"price\":\"60000.00000000\",\"qty\":\"0.00400000\",\"quote_qty\":\"240.00000000\",\
             \"commission\":\"0.00000400\",\"commission_asset\":\"BTC\",\"maker\":true,\"time\":1788540400100,\"seq\":1}\n"
        );
    }

    #[test]
    fn duplicates_are_refused_across_reopen() {
        let path = tmp("dupes");
        {
            let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
            assert!(log.append(&mut fill("BTCUSD", 1)).unwrap());
            assert!(!log.append(&mut fill("BTCUSD", 1)).unwrap());
            assert!(log.append(&mut fill("ETHUSD", 1)).unwrap(), "identity includes the symbol");
        }
        let (mut log, report) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(report.lines, 2);
        assert!(!log.append(&mut fill("BTCUSD", 1)).unwrap());
        assert!(log.contains("BTCUSD", 1) && !log.contains("BTCUSD", 2));
    }

    #[test]
    fn torn_tail_is_cut_and_nothing_else() {
        let path = tmp("torn");
        {
            let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
            log.append(&mut fill("BTCUSD", 1)).unwrap();
            log.append(&mut fill("BTCUSD", 2)).unwrap();
        }
        let whole = std::fs::read(&path).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let torn = b"{\"symbol\":\"BTCUSD\",\"trade_id\":3,\"pri";
        f.write_all(torn).unwrap();
        drop(f);
        let (mut log, report) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(report.torn_bytes, torn.len() as u64);
        assert_eq!(report.lines, 2);
        assert_eq!(std::fs::read(&path).unwrap(), whole, "only the torn bytes were cut");
        assert!(log.append(&mut fill("BTCUSD", 3)).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<u64> = text.lines().map(|l| serde_json::from_str::<FillRecord>(l).unwrap().trade_id).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn a_foreign_line_is_skipped_not_fatal() {
        let path = tmp("foreign");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let good = serde_json::to_string(&fill("BTCUSD", 7)).unwrap();
        std::fs::write(&path, format!("not json\n{good}\n")).unwrap();
        let (log, report) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!((report.lines, report.bad_lines), (2, 1));
        assert!(log.contains("BTCUSD", 7));
    }

    #[test]
    fn dedupe_memory_is_bounded_and_stays_exact_for_late_fills_within_capacity() {
        let mut d = Dedupe::new(3);
        for id in [10, 12, 11, 15] {
            assert!(d.insert("S", id));
        }
        // 10 was evicted into the floor; still counts as seen.
        assert!(d.contains("S", 10));
        assert!(!d.insert("S", 9), "below the floor counts as seen");
        assert!(d.insert("S", 13), "a gap inside the window is still fillable");
        assert_eq!(d.symbols["S"].recent.len(), 3);
        assert_eq!(d.symbols["S"].recent.last(), Some(&15));
    }

    /// Crash repair against every cut (issue 12): a torn tail loses only its own bytes.
    mod props {
        use super::*;
        use proptest::prelude::*;

        fn record(symbol: usize, trade_id: u64) -> FillRecord {
            fill(["BTCUSD", "ETHUSD", "SOLUSD"][symbol % 3], trade_id)
        }

        /// Distinct fills (a symbol and trade id each).
        fn fills(max: usize) -> impl Strategy<Value = Vec<FillRecord>> {
            prop::collection::btree_set((0usize..3, 1u64..1_000_000), 1..max)
                .prop_map(|ids| ids.into_iter().collect::<Vec<_>>())
                .prop_shuffle()
                .prop_map(|ids| ids.into_iter().map(|(s, t)| record(s, t)).collect())
        }

        fn line(f: &FillRecord, seq: u64) -> Vec<u8> {
            let mut f = f.clone();
            f.seq = seq;
            let mut l = serde_json::to_vec(&f).unwrap();
            l.push(b'\n');
            l
        }

        /// Opens `bytes` as a log and checks it holds exactly `kept` (numbered 1..), and that
        /// the next append is one whole line with the next number.
        fn reopen_and_append(
            path: &Path,
            bytes: &[u8],
            kept: &[FillRecord],
            lost: &[FillRecord],
            next: &FillRecord,
        ) -> Result<(), TestCaseError> {
            std::fs::write(path, bytes).unwrap();
            let whole: Vec<u8> = kept.iter().enumerate().flat_map(|(i, f)| line(f, i as u64 + 1)).collect();
            let (mut log, report) = FillLog::open(path, FsyncPolicy::Never).unwrap();
            prop_assert_eq!(report.torn_bytes, (bytes.len() - whole.len()) as u64);
            prop_assert_eq!(report.lines, kept.len() as u64);
            prop_assert_eq!(std::fs::read(path).unwrap(), whole.clone(), "more than the torn bytes were cut");
            prop_assert_eq!(log.last_seq(), kept.len() as u64);
            for f in kept {
                prop_assert!(log.contains(&f.symbol, f.trade_id));
            }
            for f in lost {
                prop_assert!(!log.contains(&f.symbol, f.trade_id), "a torn line counts as logged");
            }
            let mut n = next.clone();
            prop_assert!(log.append(&mut n).unwrap());
            prop_assert_eq!(n.seq, kept.len() as u64 + 1);
            drop(log);
            let mut expected = whole;
            expected.extend(line(next, kept.len() as u64 + 1));
            prop_assert_eq!(std::fs::read(path).unwrap(), expected);
            // The dedupe after a second reopen is the one before it.
            let (log, _) = FillLog::open(path, FsyncPolicy::Never).unwrap();
            for f in kept.iter().chain([next]) {
                prop_assert!(log.contains(&f.symbol, f.trade_id));
            }
            for f in lost.iter().filter(|l| (l.symbol.as_str(), l.trade_id) != (next.symbol.as_str(), next.trade_id)) {
                prop_assert!(!log.contains(&f.symbol, f.trade_id));
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(crate::proptest_config(6))]

            /// Cut at every byte offset of the last line: every whole line before it stays, the
            /// torn bytes go, and the next append gets the next number.
            #[test]
            fn a_cut_anywhere_in_the_last_line_loses_only_that_line(fs in fills(5), next in (0usize..3, 1_000_000u64..2_000_000)) {
                let path = tmp("prop-cut");
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let (kept, last) = fs.split_at(fs.len() - 1);
                let mut bytes: Vec<u8> = fs.iter().enumerate().flat_map(|(i, f)| line(f, i as u64 + 1)).collect();
                let start = bytes.len() - line(&last[0], fs.len() as u64).len();
                let next = record(next.0, next.1);
                let full = bytes.clone();
                for cut in start..full.len() {
                    bytes.truncate(cut);
                    reopen_and_append(&path, &bytes, kept, last, &next)?;
                    bytes = full.clone();
                }
            }
        }

        proptest! {
            #![proptest_config(crate::proptest_config(24))]

            /// Appends with crashes mid-write at random points (a partial line, then a reopen):
            /// the log ends up with exactly the fills whose lines were written whole, numbered
            /// without a gap.
            #[test]
            fn partial_writes_at_random_points_are_repaired(fs in fills(12), crashes in prop::collection::vec(any::<Option<usize>>(), 12)) {
                let path = tmp("prop-partial");
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let _ = std::fs::remove_file(&path);
                let mut logged: Vec<FillRecord> = Vec::new();
                let mut lost: Vec<FillRecord> = Vec::new();
                let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
                for (f, crash) in fs.iter().zip(crashes) {
                    match crash {
                        Some(at) => {
                            // The crash leaves `at` bytes of this fill's line, short of its end.
                            drop(log);
                            let l = line(f, logged.len() as u64 + 1);
                            let mut bytes = std::fs::read(&path).unwrap();
                            bytes.extend_from_slice(&l[..at % l.len()]);
                            lost.push(f.clone());
                            let probe = record(0, 3_000_000 + logged.len() as u64);
                            reopen_and_append(&path, &bytes, &logged, &lost, &probe)?;
                            logged.push(probe);
                            log = FillLog::open(&path, FsyncPolicy::Never).unwrap().0;
                        }
                        None => {
                            let mut f = f.clone();
                            prop_assert!(log.append(&mut f).unwrap());
                            prop_assert_eq!(f.seq, logged.len() as u64 + 1);
                            logged.push(f);
                        }
                    }
                }
            }
        }
    }
}
