//! The fill log: append-only JSON Lines, one line per fill, each line written whole.
//!
//! `tail -f`, `jq` and scripts read it while it grows. Each fill is formatted into one buffer
//! and written with a single `write` to an `O_APPEND` file, so the file only ever ends in a
//! fragment while a write is in progress, after a crash mid-write (such a torn tail is cut on
//! the next open: only the torn bytes, never more), or for the moment a write that failed
//! part-way (disk full) takes to be rolled back to the last whole line, so that a retry never
//! glues a fill onto a fragment. A reader takes a line once its newline is there, as `tail`
//! and [`Reader`] do.
//!
//! # Rotation
//! The log is rotated by renaming it and sending `SIGHUP` (the writer then appends to a new file
//! at the path; see [`FillLog::reopen`]). Renamed files keep the log's name as a prefix
//! (`fills.jsonl.1`, `fills.jsonl-20261201`: what logrotate makes), and the daemon reads them
//! back where it needs lines they hold: at start, for the dedupe and the numbering, and in a
//! [`Reader`] that is behind. A compressed one cannot be read back; [`Reader`] reports the lines
//! only such a file holds as a gap.
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

use crate::error::Error;
use crate::lock::LockAnyway;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// When the fill log is flushed to disk (`SYNCD_FSYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every line: a line that was logged survives a power cut.
    Always,
    /// Leave it to the OS: survives a crash of the daemon, not of the machine.
    Never,
}

/// The line's type lives with the other domain types (the stream's and REST's parsers build
/// it without depending on the log).
pub use crate::model::FillRecord;

mod dedupe;
mod files;
mod reader;
mod tap;

pub use dedupe::Dedupe;
use dedupe::*;
pub use files::last_rotated_seq;
use files::*;
pub use reader::{Reader, GAP_CONFIRM};
pub use tap::FillTap;

/// Per-symbol ids kept exactly by the log's dedupe; see [`Dedupe`].
pub const DEDUPE_CAPACITY: usize = 10_000;
/// The fill log's mode unless `SYNCD_FILL_LOG_MODE` says otherwise: the daemon's user writes,
/// its group reads (`tail -f`, `jq`), others nothing. Set on every open, whatever the umask.
pub const DEFAULT_MODE: u32 = 0o640;

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
    /// A cut from outside found by a rollback, `(from, to)` bytes, not yet reported.
    cut: Option<(u64, u64)>,
    /// Lines written since the last commit (their dedupe entries, to take back), and where
    /// the first of them began.
    staged: Vec<Undo>,
    staged_from: u64,
    /// Permission bits every file this log opens or creates gets.
    mode: u32,
}

/// What [`FillLog::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCheck {
    /// The path names the file being written.
    Same,
    /// The path names another file, or none: renamed (a rotation whose `SIGHUP` has not come).
    Renamed,
    /// The file was deleted while open: what is written to it is in no file anyone can read.
    Deleted,
    /// Cut shorter from outside (`copytruncate`, `: > fills.jsonl`): lines are gone from it.
    Truncated { from: u64, to: u64 },
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
        FillLog::open_bounded(path, fsync, carry, &HashMap::new(), DEFAULT_MODE)
    }

    /// As [`FillLog::open_after`], with the saved reconciliation cursors (`keep_from`, per
    /// symbol: see [`Dedupe::keep_from`]) known before the files are read, so that no id at or
    /// above a cursor goes into the dedupe's floor while they are; the file gets exactly
    /// `mode` (`SYNCD_FILL_LOG_MODE`), and so does every file opened after it.
    pub fn open_bounded(
        path: &Path,
        fsync: FsyncPolicy,
        carry: Option<&Carry>,
        keep_from: &HashMap<String, u64>,
        mode: u32,
    ) -> Result<(FillLog, OpenReport), Error> {
        let mut seen = Dedupe::new(DEDUPE_CAPACITY);
        for (symbol, cursor) in keep_from {
            seen.bind(symbol, *cursor);
        }
        if let Some(carry) = carry {
            seen.absorb(carry);
        }
        // The rotated files too: after a rename that no SIGHUP followed (a crash in between),
        // the lines written since the carry was saved are only there.
        let carried = carry.map_or(0, |c| c.last_seq);
        let mut last_seq = carried;
        let live = std::fs::metadata(path).ok().map(|m| file_id(&m));
        let (mut files, mut lines) = (0, 0);
        for part in rotated_files(path).into_iter().filter(|p| Some(p.id) != live) {
            // A file that ended before the carry was saved is in it already.
            if part.first.is_some() && last_line_seq(&part.file).is_some_and(|last| last <= carried) {
                continue;
            }
            let mut reader = BufReader::new(&part.file);
            let scan = scan_lines(&mut reader, &part.path, &mut seen).map_err(Error::io(&part.path))?;
            if part.first.is_some() {
                last_seq = last_seq.max(scan.last_seq);
            }
            files += 1;
            lines += scan.report.lines;
        }
        if files > 0 {
            log::info!("{}: read {files} rotated file(s) of it back ({lines} lines)", path.display());
        }
        let (file, scan) = open_file(path, &mut seen, mode)?;
        let last_seq = scan.last_seq.max(last_seq);
        let log = FillLog {
            file,
            path: path.to_path_buf(),
            len: scan.good_len,
            fsync,
            seen,
            buf: Vec::with_capacity(512),
            dirty: false,
            next_seq: last_seq + 1,
            cut: None,
            staged: Vec::new(),
            staged_from: 0,
            mode,
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
        let (file, scan) = open_file(&self.path, &mut self.seen, self.mode)?;
        self.file = file;
        self.len = scan.good_len;
        self.dirty = false;
        self.cut = None;
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

    /// `symbol`'s reconciliation cursor moved to `cursor` (see [`Dedupe::keep_from`]). With
    /// lines staged, the ids it frees go into the floor at the next commit (a take-back must
    /// find the dedupe as the stage left it).
    pub fn keep_from(&mut self, symbol: &str, cursor: u64) {
        if self.staged.is_empty() {
            self.seen.keep_from(symbol, cursor);
        } else {
            self.seen.bind(symbol, cursor);
        }
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
        let written = self.stage(fill)?;
        self.commit()?;
        Ok(written)
    }

    /// Writes one fill as one line, numbered, without waiting for it to be durable: any
    /// number of staged lines are made durable together by one [`commit`](Self::commit) (one
    /// `fdatasync` for a whole page of fills), or taken back together if it fails. Nothing
    /// may read a staged line as logged before the commit. `Ok(false)`: already logged.
    pub fn stage(&mut self, fill: &mut FillRecord) -> Result<bool, Error> {
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
        let mut done = 0;
        while done < self.buf.len() {
            match self.file.write(&self.buf[done..]) {
                Ok(0) => {
                    self.roll_back(done);
                    return Err(Error::io(&self.path)(std::io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Part of the line may be on disk: cut back to the last whole line so that
                    // the retry starts clean (lines staged before it stay staged).
                    self.roll_back(done);
                    return Err(Error::io(&self.path)(e));
                }
            }
        }
        if self.staged.is_empty() {
            self.staged_from = self.len;
        }
        self.len += self.buf.len() as u64;
        if let Some(undo) = self.seen.insert_undoable(&fill.symbol, fill.trade_id) {
            self.staged.push(undo);
        }
        self.next_seq += 1;
        Ok(true)
    }

    /// Makes every staged line durable (per the fsync policy). On failure they are all taken
    /// back, file, numbers and dedupe alike, so the caller stages them again, whole.
    pub fn commit(&mut self) -> Result<(), Error> {
        if self.staged.is_empty() {
            return Ok(());
        }
        if self.fsync == FsyncPolicy::Always {
            if let Err(e) = self.file.sync_data() {
                self.take_back_staged();
                return Err(Error::io(&self.path)(e));
            }
        }
        self.staged.clear();
        self.seen.trim_all();
        Ok(())
    }

    /// Undoes every staged line: not known to be durable.
    fn take_back_staged(&mut self) {
        let mut bytes = self.len - self.staged_from;
        if self.dirty {
            // A failed stage's fragment that could not be cut is still after them.
            if let Ok(meta) = self.file.metadata() {
                bytes += meta.len().saturating_sub(self.len);
            }
        }
        self.next_seq -= self.staged.len() as u64;
        while let Some(undo) = self.staged.pop() {
            self.seen.undo(undo);
        }
        self.len = self.staged_from;
        self.roll_back(bytes as usize);
    }

    /// Cuts the `written` bytes of a line that failed. Where the line began is read from the
    /// file itself, not from `self.len`: the file may have been cut shorter from outside, and
    /// cutting to a length it no longer has would pad it with zeros. If even the cut fails, the
    /// next append (or open) cuts it.
    fn roll_back(&mut self, written: usize) {
        if let Ok(meta) = self.file.metadata() {
            // Shorter than what was written: cut from outside during the write; whatever is
            // there is left alone.
            let start = meta.len().checked_sub(written as u64).unwrap_or(meta.len());
            if start < self.len {
                self.cut = Some((self.len, start)); // for the next check to report
            }
            self.len = start;
        }
        self.dirty = self.file.set_len(self.len).is_err();
    }

    /// Looks at the file behind the log, for [`FileCheck`]'s cases. A file cut shorter from
    /// outside is taken as it is now: the next line goes after what is left.
    pub fn check(&mut self) -> Result<FileCheck, Error> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().map_err(Error::io(&self.path))?;
        if meta.nlink() == 0 {
            return Ok(FileCheck::Deleted);
        }
        if let Some((from, to)) = self.cut.take() {
            return Ok(FileCheck::Truncated { from, to });
        }
        if meta.len() < self.len && !self.dirty {
            let from = self.len;
            self.len = meta.len();
            return Ok(FileCheck::Truncated { from, to: meta.len() });
        }
        Ok(match std::fs::metadata(&self.path) {
            Ok(named) if file_id(&named) == file_id(&meta) => FileCheck::Same,
            _ => FileCheck::Renamed,
        })
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

/// The umask may have taken bits away from a new file, or an old one have more: the setting
/// decides. A file we may not chmod (another owner's) is used as it is, with a warning.
fn set_mode_of(file: &File, path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let current = file.metadata().map(|m| m.permissions().mode() & 0o7777).ok();
    if current == Some(mode) {
        return;
    }
    if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(mode)) {
        log::warn!(
            "{}: cannot set its mode to {mode:04o} ({e}); it stays {:04o}",
            path.display(),
            current.unwrap_or(0)
        );
    }
}

/// Opens (or creates) the file at `path` for appending, records every fill's identity in
/// `seen`, and cuts a torn tail.
fn open_file(path: &Path, seen: &mut Dedupe, mode: u32) -> Result<(File, Scan), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::statedir::create_private_dir(dir)?;
    }
    let existed = path.exists();
    let file = open_trusted(path, OpenOptions::new().read(true).append(true).create(true).mode(mode), Some(mode))
        .map_err(|e| match e {
            Untrusted::Io(e) => Error::io(path)(e),
            Untrusted::Because(why) => Error::io(path)(std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)),
        })?;
    // One writer per file, whatever the state directories: two daemons with different
    // SYNCD_STATE_DIR but one SYNCD_FILL_LOG would log every fill twice. Readers never lock.
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::Config(format!(
                "SYNCD_FILL_LOG: {} is being written by another binance-syncd (another state directory); two writers would log every fill twice",
                path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path)(e)),
    }
    if !existed {
        // The new directory entry must survive a power cut too, or the first fills could
        // vanish with the file.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }
    let mut scan = scan_lines(&mut BufReader::new(&file), path, seen).map_err(Error::io(path))?;
    let file_len = file.metadata().map_err(Error::io(path))?.len();
    if file_len > scan.good_len {
        scan.report.torn_bytes = file_len - scan.good_len;
        log::warn!(
            "{}: cutting a torn last line of {} bytes at byte {}",
            path.display(),
            scan.report.torn_bytes,
            scan.good_len
        );
        file.set_len(scan.good_len).map_err(Error::io(path))?;
        file.sync_all().map_err(Error::io(path))?;
    }
    Ok((file, scan))
}

/// Records every whole line's fill identity in `seen` (a last line without its newline is not
/// counted: `good_len` ends before it).
fn scan_lines(reader: &mut impl BufRead, path: &Path, seen: &mut Dedupe) -> std::io::Result<Scan> {
    let mut report = OpenReport::default();
    let mut good_len = 0u64;
    let mut last_seq = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
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
    Ok(Scan { report, good_len, last_seq })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;

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

    /// Lines as written before the `seq` field existed.
    fn legacy_lines(symbol: &str, ids: impl IntoIterator<Item = u64>) -> String {
        ids.into_iter()
            .map(|id| serde_json::to_string(&fill(symbol, id)).unwrap().replace(",\"seq\":0", "") + "\n")
            .collect()
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
        let old = legacy_lines("BTCUSD", [1, 2]);
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
        assert_eq!(
            seqs(Reader::new(&path).read_after(0, u64::MAX, 10).unwrap()),
            [1, 2, 3, 4],
            "a new reader finds the older lines in the rotated file"
        );
        assert_eq!(seqs(Reader::new(&path).read_after(3, u64::MAX, 10).unwrap()), [4], "and only where it must");
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
        // One writer per file: a second one is refused while the first is open.
        let refused = FillLog::open(&path, FsyncPolicy::Never).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("being written by another binance-syncd"), "{refused}");
        drop(log);
        let (log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(log.last_seq(), 5, "the file's own numbers win once it has lines");
    }

    fn seqs(r: Vec<FillRecord>) -> Vec<u64> {
        r.iter().map(|f| f.seq).collect()
    }

    fn append_ids(log: &mut FillLog, ids: std::ops::RangeInclusive<u64>) {
        for id in ids {
            assert!(log.append(&mut fill("BTCUSD", id)).unwrap());
        }
    }

    #[test]
    fn a_reader_crosses_every_rotated_file_in_order_and_skips_compressed_and_foreign_ones() {
        let path = tmp("chain");
        let name = |suffix: &str| path.with_file_name(format!("fills.jsonl{suffix}"));
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        append_ids(&mut log, 1..=3);
        std::fs::rename(&path, name("-20261101")).unwrap();
        log.reopen().unwrap();
        append_ids(&mut log, 4..=5);
        std::fs::rename(&path, name(".1")).unwrap();
        log.reopen().unwrap();
        append_ids(&mut log, 6..=6);
        // Names that are not rotations of this log, or cannot be read back.
        std::fs::write(name(".2.gz"), b"\x1f\x8b\x08\x00binary").unwrap();
        std::fs::write(path.with_file_name("fills.jsonlx"), serde_json::to_string(&fill("BTCUSD", 99)).unwrap() + "\n")
            .unwrap();
        std::fs::write(path.with_file_name("other.jsonl"), serde_json::to_string(&fill("BTCUSD", 98)).unwrap() + "\n")
            .unwrap();
        let mut reader = Reader::new(&path);
        assert_eq!(seqs(reader.read_after(0, u64::MAX, 100).unwrap()), [1, 2, 3, 4, 5, 6]);
        assert!(reader.take_gaps().is_empty());
        // A small `max` crosses the files over several calls, never repeating a line.
        let mut reader = Reader::new(&path);
        let mut got = Vec::new();
        for _ in 0..10 {
            let after = got.last().copied().unwrap_or(0);
            got.extend(seqs(reader.read_after(after, u64::MAX, 2).unwrap()));
        }
        assert_eq!(got, [1, 2, 3, 4, 5, 6]);
        assert_eq!(last_rotated_seq(&path), 5);
        std::fs::rename(&path, name(".0")).unwrap();
        log.reopen().unwrap();
        assert_eq!(last_rotated_seq(&path), 6, "the last line is in the newest rotated file");
    }

    #[test]
    fn a_stale_copy_or_a_file_from_before_seq_never_takes_a_reader_off_the_log() {
        let path = tmp("copies");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        append_ids(&mut log, 1..=2);
        // A copy of the live file, taken early, and a rotated file from before the `seq` field.
        std::fs::copy(&path, path.with_extension("jsonl.bak")).unwrap();
        let legacy = legacy_lines("ETHUSD", 100..103);
        std::fs::write(path.with_extension("jsonl.old"), legacy).unwrap();
        append_ids(&mut log, 3..=4);
        assert_eq!(seqs(Reader::new(&path).read_after(0, 4, 10).unwrap()), [1, 2, 3, 4], "the live file, not the copy");
        assert_eq!(seqs(Reader::new(&path).read_after(2, 4, 10).unwrap()), [3, 4]);
        // A restart: the legacy file's ids are known, its positions are not taken for seq.
        drop(log);
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(log.last_seq(), 4);
        assert!(!log.append(&mut fill("ETHUSD", 101)).unwrap());
        // Rotated, with the copy beside it: the reader moves to the file that goes on.
        let mut reader = Reader::new(&path);
        assert_eq!(seqs(reader.read_after(0, 4, 10).unwrap()), [1, 2, 3, 4]);
        std::fs::rename(&path, path.with_extension("jsonl.1")).unwrap();
        log.reopen().unwrap();
        append_ids(&mut log, 5..=5);
        assert_eq!(seqs(reader.read_after(4, 5, 10).unwrap()), [5]);
        assert!(reader.take_gaps().is_empty());
    }

    #[test]
    fn a_rotated_file_that_began_before_seq_is_read_from_its_numbered_lines() {
        let path = tmp("upgraded");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let old = legacy_lines("BTCUSD", [1, 2]);
        std::fs::write(&path, old).unwrap();
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        append_ids(&mut log, 3..=4); // numbered 3 and 4 in the same file
        std::fs::rename(&path, path.with_extension("jsonl.1")).unwrap();
        log.reopen().unwrap();
        assert_eq!(last_rotated_seq(&path), 4);
        append_ids(&mut log, 5..=5);
        let mut reader = Reader::new(&path);
        assert_eq!(seqs(reader.read_after(3, 5, 10).unwrap()), [4, 5]);
        assert!(reader.take_gaps().is_empty());
        drop(log);
        let (log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        assert_eq!(log.last_seq(), 5);
    }

    #[test]
    fn a_reader_parked_in_a_file_cut_from_outside_reads_it_again_from_the_start() {
        let path = tmp("parked");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        append_ids(&mut log, 1..=4);
        let mut reader = Reader::new(&path);
        assert_eq!(seqs(reader.read_after(0, 4, 10).unwrap()), [1, 2, 3, 4]);
        // `: > fills.jsonl`, then more lines than were there: the file grows past the reader.
        OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        append_ids(&mut log, 5..=10);
        assert_eq!(seqs(reader.read_after(4, 10, 10).unwrap()), [5, 6, 7, 8, 9, 10]);
        assert!(reader.take_gaps().is_empty());
    }

    #[test]
    fn a_jump_in_the_numbering_inside_a_file_is_reported_as_a_gap() {
        let path = tmp("jump");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let line = |id: u64, seq: u64| {
            let mut f = fill("BTCUSD", id);
            f.seq = seq;
            serde_json::to_string(&f).unwrap() + "\n"
        };
        std::fs::write(&path, [line(1, 1), line(2, 2), line(3, 7)].concat()).unwrap();
        let mut reader = Reader::new(&path);
        assert_eq!(seqs(reader.read_after(0, 7, 10).unwrap()), [1, 2, 7]);
        assert_eq!(reader.take_gaps(), [(3, 6)]);
    }

    #[test]
    fn a_rollback_after_an_outside_truncation_cuts_to_where_the_line_began() {
        let path = tmp("rollback");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        append_ids(&mut log, 1..=3);
        let one_line = std::fs::metadata(&path).unwrap().len() / 3;
        // Cut from outside to one line, then 40 bytes of a failed write after it.
        OpenOptions::new().write(true).open(&path).unwrap().set_len(one_line).unwrap();
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&[b'{'; 40]).unwrap();
        log.roll_back(40);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, one_line, "cut to the end of the line that is left");
        assert!(!bytes.contains(&0));
        assert_eq!(log.check().unwrap(), FileCheck::Truncated { from: one_line * 3, to: one_line });
        assert_eq!(log.check().unwrap(), FileCheck::Same, "reported once");
        let mut f = fill("BTCUSD", 4);
        assert!(log.append(&mut f).unwrap());
        assert_eq!((f.seq, Reader::new(&path).read_after(0, 4, 10).unwrap().len()), (4, 2));
        // Deleted, renamed: each seen.
        std::fs::rename(&path, path.with_extension("jsonl.1")).unwrap();
        assert_eq!(log.check().unwrap(), FileCheck::Renamed);
        std::fs::remove_file(path.with_extension("jsonl.1")).unwrap();
        assert_eq!(log.check().unwrap(), FileCheck::Deleted);
    }

    #[test]
    fn a_reader_waits_in_a_renamed_file_the_writer_still_appends_to() {
        // logrotate with `create`: a new empty file at the path before the SIGHUP.
        let path = tmp("create");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        append_ids(&mut log, 1..=2);
        let mut reader = Reader::new(&path);
        assert_eq!(seqs(reader.read_after(0, 2, 10).unwrap()), [1, 2]);
        std::fs::rename(&path, path.with_extension("jsonl.1")).unwrap();
        std::fs::write(&path, b"").unwrap();
        append_ids(&mut log, 3..=3); // still into the renamed file
        assert_eq!(seqs(reader.read_after(2, 3, 10).unwrap()), [3]);
        assert_eq!(seqs(reader.read_after(3, 3, 10).unwrap()), Vec::<u64>::new());
        append_ids(&mut log, 4..=4);
        assert!(log.reopen().unwrap());
        append_ids(&mut log, 5..=5);
        assert_eq!(seqs(reader.read_after(3, 5, 10).unwrap()), [4, 5], "the old file's last line, then the new file");
        // A fresh reader at the very end of the renamed file moves on as well.
        let mut fresh = Reader::new(&path);
        assert_eq!(seqs(fresh.read_after(4, 5, 10).unwrap()), [5]);
    }

    #[test]
    fn lines_in_no_readable_file_are_skipped_only_once_confirmed_and_reported() {
        let path = tmp("gap");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        append_ids(&mut log, 1..=3);
        // Rotated, then compressed away.
        std::fs::rename(&path, path.with_extension("jsonl.1")).unwrap();
        log.reopen().unwrap();
        append_ids(&mut log, 4..=5);
        std::fs::remove_file(path.with_extension("jsonl.1")).unwrap();
        std::fs::write(path.with_extension("jsonl.1.gz"), b"\x1f\x8bcompressed").unwrap();
        let wait = std::time::Duration::from_millis(30);
        let mut reader = Reader::new(&path).confirming_gaps_after(wait);
        assert!(reader.read_after(1, 5, 10).unwrap().is_empty(), "a gap is not skipped at first sight");
        assert!(reader.take_gaps().is_empty());
        std::thread::sleep(wait);
        assert_eq!(seqs(reader.read_after(1, 5, 10).unwrap()), [4, 5]);
        assert_eq!(reader.take_gaps(), [(2, 3)]);
        assert!(reader.take_gaps().is_empty(), "reported once");
        // A reader that had the old file open finishes it; the gap is behind a deleted file
        // it never had open.
        let path = tmp("gap-open");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        append_ids(&mut log, 1..=2);
        let mut reader = Reader::new(&path).confirming_gaps_after(wait);
        assert_eq!(seqs(reader.read_after(0, 1, 10).unwrap()), [1]);
        std::fs::rename(&path, path.with_extension("jsonl.1")).unwrap();
        log.reopen().unwrap();
        append_ids(&mut log, 3..=3);
        std::fs::remove_file(path.with_extension("jsonl.1")).unwrap();
        assert_eq!(seqs(reader.read_after(1, 3, 10).unwrap()), [2, 3], "the open file is still readable");
        assert!(reader.take_gaps().is_empty());
    }

    #[test]
    fn a_restart_after_a_rename_without_reopen_numbers_on_and_knows_every_fill() {
        // Renamed, then the daemon died before its SIGHUP: the carry (saved at the last
        // reopen) knows none of the lines written to the renamed file since.
        let path = tmp("crash-rename");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        append_ids(&mut log, 1..=2);
        let carry = log.carry();
        std::fs::rename(&path, path.with_extension("jsonl.1")).unwrap();
        append_ids(&mut log, 3..=4);
        drop(log);
        let (mut log, report) = FillLog::open_after(&path, FsyncPolicy::Never, Some(&carry)).unwrap();
        assert_eq!((report.lines, log.last_seq()), (0, 4));
        assert!(!log.append(&mut fill("BTCUSD", 4)).unwrap(), "a fill of the renamed file is known");
        let mut f = fill("BTCUSD", 5);
        assert!(log.append(&mut f).unwrap());
        assert_eq!(f.seq, 5);
        assert_eq!(log.first_ids().get("BTCUSD"), Some(&1), "a cursor rebuild starts before every file");
    }

    /// An install upgraded from before the cursor bound: its saved carry has a floor far past
    /// the cursor (forged rotated files raised it). Opening with the cursors must cut it, or
    /// every real fill of the symbol stays "already logged" for ever.
    #[test]
    fn a_carried_floor_past_the_cursor_is_cut_to_the_cursor() {
        let path = tmp("carried-floor");
        let mut ids = std::collections::BTreeMap::new();
        ids.insert("BTCUSD".to_string(), CarriedIds { floor: Some(1 << 60), recent: vec![] });
        let carry = Carry { last_seq: 0, ids };
        let cursors = HashMap::from([("BTCUSD".to_string(), 100u64)]);
        let (log, _) = FillLog::open_bounded(&path, FsyncPolicy::Never, Some(&carry), &cursors, DEFAULT_MODE).unwrap();
        assert!(!log.contains("BTCUSD", 150), "an id past the cursor counts as logged");
        assert!(log.contains("BTCUSD", 99), "ids under the cursor stay known");
        assert_eq!(log.carry().ids["BTCUSD"].floor, Some(99));
    }

    /// Issue 19: the stream dropped trade 100, then logged 10,001 later fills of the symbol while
    /// REST was banned. The dedupe must still call 100 unknown when REST reads it, before and
    /// after a restart, and fold the ids into its floor only once the cursor passed them.
    #[test]
    fn a_dropped_stream_fill_followed_by_10_001_others_is_still_logged_once_rest_runs() {
        use crate::reconcile::cursor::{after_page, Cursors, Ledger, Read};
        let path = tmp("dropped-10001");
        let symbols = ["BTCUSD".to_string()];
        let cursors =
            Cursors { version: 1, next_from_id: [("BTCUSD".to_string(), 100)].into(), since_ms: Default::default() };
        let (log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        let mut ledger = Ledger::new(log, cursors.clone());
        ledger.bind(&symbols);
        let later = 101..=100 + DEDUPE_CAPACITY as u64 + 1;
        for id in later.clone() {
            assert!(ledger.offer(fill("BTCUSD", id)));
        }
        assert!(ledger.flush().failed.is_none());
        assert_eq!(ledger.unknown("BTCUSD", &[100, 101]), [100], "the dropped fill counts as logged");
        // A restart (its carry, the saved cursors) knows no more than that.
        let carry = ledger.journal().carry();
        drop(ledger);
        let keep = cursors.keep_from_all(&symbols);
        let (log, _) = FillLog::open_bounded(&path, FsyncPolicy::Never, Some(&carry), &keep, DEFAULT_MODE).unwrap();
        assert!(!log.contains("BTCUSD", 100) && log.contains("BTCUSD", 101) && log.contains("BTCUSD", *later.end()));
        let mut ledger = Ledger::new(log, cursors);
        ledger.bind(&symbols);
        // REST is back: the first page from the cursor brings 100 and the first 999 others.
        let page: Vec<u64> = (100..1100).collect();
        let step = after_page(Read::FromId(100), &page, &[], page.len(), 0);
        for id in ledger.unknown("BTCUSD", &page) {
            ledger.offer(fill("BTCUSD", id));
        }
        let written = ledger.flush().written;
        assert_eq!(written.iter().map(|f| f.trade_id).collect::<Vec<_>>(), [100]);
        assert!(ledger.advance("BTCUSD", step.advance));
        let ids = &ledger.journal().seen.symbols["BTCUSD"];
        // 10,002 ids, the two oldest under the cursor: into the floor, which stays under it.
        assert_eq!(ids.floor, Some(101));
        assert_eq!(ids.recent.len(), DEDUPE_CAPACITY, "memory back to capacity once the cursor passed them");
        let lines = std::fs::read_to_string(&path).unwrap();
        assert_eq!(lines.lines().filter(|l| l.contains("\"trade_id\":100,")).count(), 1, "logged once");
    }

    #[test]
    fn a_symbol_read_by_time_keeps_every_id_and_one_without_a_cursor_keeps_capacity() {
        let mut d = Dedupe::new(2);
        d.keep_from("BTCUSD", 0);
        for id in [5, 6, 7, 8] {
            d.insert("BTCUSD", id);
            d.insert("ETHUSD", id);
        }
        assert!(!d.contains("BTCUSD", 4), "no floor before a cursor by id");
        assert_eq!(d.symbols["BTCUSD"].recent.len(), 4);
        assert!(d.contains("ETHUSD", 4), "an untracked symbol keeps the count rule");
        d.keep_from("BTCUSD", 7);
        assert_eq!((d.symbols["BTCUSD"].floor, d.symbols["BTCUSD"].recent.len()), (Some(6), 2));
        assert!(!d.contains("BTCUSD", 9));
    }

    /// Lines a forger would write: 10,001 fills with huge trade ids, numbered from 1.
    fn forged_lines() -> String {
        (0..=DEDUPE_CAPACITY as u64)
            .map(|i| {
                let mut f = fill("BTCUSD", (1 << 60) + i);
                f.seq = i + 1;
                serde_json::to_string(&f).unwrap() + "\n"
            })
            .collect()
    }

    /// Issue 19: a rotated file anyone could have written cannot make a real fill vanish: it is
    /// ignored (by the writer's start and by readers), as are a symlink and a FIFO named like one.
    #[test]
    fn a_forged_rotated_file_cannot_make_a_real_fill_vanish() {
        use std::os::unix::fs::PermissionsExt;
        let path = tmp("forged");
        let dir = path.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        let forged = path.with_extension("jsonl.1");
        std::fs::write(&forged, forged_lines()).unwrap();
        std::fs::set_permissions(&forged, std::fs::Permissions::from_mode(0o666)).unwrap();
        // A symlink to a log of the same lines elsewhere, and a FIFO that would block a reader.
        let elsewhere = dir.join("elsewhere.jsonl");
        std::fs::write(&elsewhere, forged_lines()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, path.with_extension("jsonl.2")).unwrap();
        let fifo = std::process::Command::new("mkfifo").arg(path.with_extension("jsonl.3")).status();
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        assert!(!log.contains("BTCUSD", 1 << 60), "a forged line counts as logged");
        assert!(log.append(&mut fill("BTCUSD", 5)).unwrap(), "a real fill vanished");
        assert_eq!(log.last_seq(), 1, "the forged numbering was taken up");
        let read = Reader::new(&path).read_after(0, u64::MAX, 100).unwrap();
        assert_eq!(read.iter().map(|f| f.trade_id).collect::<Vec<_>>(), [5], "a reader took a forged line");
        if !fifo.is_ok_and(|s| s.success()) {
            println!("SKIPPED the FIFO case: no mkfifo");
        }

        // Owned by another user, though not writable by anyone else: only root can make one.
        std::fs::set_permissions(&forged, std::fs::Permissions::from_mode(0o644)).unwrap();
        if crate::sys::euid() == 0 {
            std::os::unix::fs::chown(&forged, Some(65534), Some(65534)).unwrap();
            drop(log);
            let _ = std::fs::remove_file(&path);
            let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
            assert!(!log.contains("BTCUSD", 1 << 60), "a line of another user's file counts as logged");
            assert!(log.append(&mut fill("BTCUSD", 6)).unwrap());
        } else {
            println!("SKIPPED the other-owner case: needs root to chown a file to uid 65534");
        }
    }

    #[test]
    fn a_live_log_others_may_write_or_a_symlink_is_refused_with_the_reason() {
        use std::os::unix::fs::PermissionsExt;
        let path = tmp("live-untrusted");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        log.append(&mut fill("BTCUSD", 1)).unwrap();
        drop(log);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        // Our own log, left group-writable by an old umask, is narrowed to its mode, not refused.
        let (log, _) = FillLog::open(&path, FsyncPolicy::Never).unwrap();
        drop(log);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), DEFAULT_MODE);
        // Another user's is judged only (as root the test can make one).
        if crate::sys::euid() == 0 {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
            let err = FillLog::open(&path, FsyncPolicy::Never).err().expect("a group-writable log was opened");
            // The owner is said first (the one verdict of `crate::trust`), and the mode is left alone.
            assert!(err.to_string().contains("is owned by uid 65534, not by root"), "{err}");
            assert_eq!(mode(&path), 0o664, "another user's log was narrowed");
            std::os::unix::fs::chown(&path, Some(0), None).unwrap();
        } else {
            println!("not root: another user's group-writable live log was not tried");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let target = path.with_extension("real");
        std::fs::rename(&path, &target).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = FillLog::open(&path, FsyncPolicy::Never).err().expect("a symlinked log was followed");
        assert!(err.to_string().contains("symbolic link"), "{err}");
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

    #[test]
    fn a_dedupe_insertion_is_taken_back_exactly_even_when_it_evicted_or_was_evicted() {
        let mut d = Dedupe::new(2);
        d.insert("S", 5);
        d.insert("S", 6);
        let before = (d.symbols["S"].recent.clone(), d.symbols["S"].floor);
        let u = d.insert_undoable("S", 7).expect("new");
        assert!(d.contains("S", 5), "5 went to the floor");
        d.undo(u);
        assert_eq!((d.symbols["S"].recent.clone(), d.symbols["S"].floor), before);
        assert!(!d.contains("S", 7));
        // Older than every kept id: it goes straight to the floor, and back out of it.
        let u = d.insert_undoable("S", 1).expect("new");
        assert!(d.contains("S", 1));
        d.undo(u);
        assert!(!d.contains("S", 1));
        assert_eq!((d.symbols["S"].recent.clone(), d.symbols["S"].floor), before);
        assert!(d.insert_undoable("S", 6).is_none(), "a known id is not inserted");
    }

    #[test]
    fn staged_lines_become_durable_together_or_are_all_taken_back() {
        let path = tmp("staged");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Always).unwrap();
        append_ids(&mut log, 1..=2);
        let two = std::fs::metadata(&path).unwrap().len();
        let mut page: Vec<FillRecord> = (3..=5).map(|id| fill("BTCUSD", id)).collect();
        for f in &mut page {
            assert!(log.stage(f).unwrap());
        }
        assert!(!log.stage(&mut fill("BTCUSD", 4)).unwrap(), "a staged id is known");
        // The commit's fdatasync failed: the page is gone, numbers and dedupe included.
        log.take_back_staged();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), two);
        assert_eq!(log.last_seq(), 2);
        assert!(!log.contains("BTCUSD", 3) && log.contains("BTCUSD", 2));
        assert_eq!(log.check().unwrap(), FileCheck::Same, "not an outside cut");
        for f in &mut page {
            assert!(log.stage(f).unwrap());
        }
        log.commit().unwrap();
        assert_eq!(page.iter().map(|f| f.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(seqs(Reader::new(&path).read_after(0, 5, 10).unwrap()), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_take_back_also_cuts_the_fragment_a_failed_stage_could_not() {
        let path = tmp("staged-fragment");
        let (mut log, _) = FillLog::open(&path, FsyncPolicy::Always).unwrap();
        append_ids(&mut log, 1..=1);
        let one = std::fs::metadata(&path).unwrap().len();
        assert!(log.stage(&mut fill("BTCUSD", 2)).unwrap());
        // The next line's write failed part-way and so did its cut: a fragment is left.
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"symbol\":\"BTC").unwrap();
        log.dirty = true;
        log.take_back_staged();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), one, "back to the last committed line");
        assert!(!log.dirty);
        let mut f = fill("BTCUSD", 2);
        assert!(log.append(&mut f).unwrap());
        assert_eq!(f.seq, 2);
        assert_eq!(seqs(Reader::new(&path).read_after(0, 2, 10).unwrap()), [1, 2]);
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
