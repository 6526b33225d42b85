//! [`Reader`]: catch up from a `seq` across the live and the rotated files.

use super::*;

/// Reads the fill log from a given sequence number on, while the writer appends (a plugin that
/// fell behind catches up here). Only whole lines are read; a line still being written is left
/// for the next call.
///
/// The reader follows the lines, not a file name. It starts in the file that holds the first
/// line asked for: the live one, or a rotated one when that line is older than the live file's
/// first (see [Rotation](super#rotation)). A file stays open between calls, as with `tail -F`:
/// at the end of a file that the path no longer names, it moves on to a newer file once that
/// holds the next line (until then the writer may still be appending to the renamed file).
/// Lines that no readable file holds (rotated away compressed, or deleted) are skipped once
/// they were found missing twice at least [`GAP_CONFIRM`] apart (a directory read while
/// logrotate renames may miss a file once), and reported by [`take_gaps`](Self::take_gaps), as
/// is a jump in the numbering inside one file. An idle reader keeps its file open, and so its
/// disk space in use once logrotate deletes it, until its next read.
#[derive(Debug)]
pub struct Reader {
    pub(super) path: PathBuf,
    pub(super) file: Option<Part>,
    /// Byte offset of the next unread line and the number of lines before it.
    pub(super) offset: u64,
    pub(super) lines: u64,
    /// The highest sequence number handed out so far.
    pub(super) passed: u64,
    /// A gap seen once, `(first, last, when)`, waiting to be seen again.
    pub(super) suspect: Option<(u64, u64, std::time::Instant)>,
    /// Lines skipped and not yet reported to the caller.
    pub(super) gaps: Vec<(u64, u64)>,
    pub(super) confirm: std::time::Duration,
    /// The path's (file, size) when the last look for a newer file found none: until it
    /// changes, no newer file can have the next line, and the directory is not read again.
    pub(super) looked: Option<(Look, std::time::Instant)>,
}

/// What the log's path named at a look: the file's identity and size, or nothing.
pub(super) type Look = Option<((u64, u64), u64)>;

/// How long a [`Reader`] trusts an unchanged path to mean "no newer file" (a rotated file
/// the writer still appends to can gain the next line without the path changing).
pub(super) const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a gap must stay before a [`Reader`] skips it.
pub const GAP_CONFIRM: std::time::Duration = std::time::Duration::from_secs(1);

/// Where the next line is, as a [`Reader`] finds it.
pub(super) enum Found {
    /// The newest file whose first line is at or before the line, and the file after it if
    /// that has a line (then the line, if not in `part`, is in no file).
    In { part: Part, next: Option<Part> },
    /// Every file with a line starts after it: the lines before the oldest one are gone.
    Before { oldest: Part },
    /// No file has a line yet.
    Nothing,
}

impl Reader {
    pub fn new(path: &Path) -> Reader {
        Reader {
            path: path.to_path_buf(),
            file: None,
            offset: 0,
            lines: 0,
            passed: 0,
            suspect: None,
            gaps: Vec::new(),
            confirm: GAP_CONFIRM,
            looked: None,
        }
    }

    /// How long a gap must stay before it is skipped (default [`GAP_CONFIRM`]).
    pub fn confirming_gaps_after(mut self, wait: std::time::Duration) -> Reader {
        self.confirm = wait;
        self
    }

    /// Fills with `after < seq <= until`, in order, up to `max` of them. The reader stops in
    /// front of the first line past `until`, so a line the writer appends meanwhile is read by
    /// the next call, never skipped; asking for lines it already passed starts it over.
    pub fn read_after(&mut self, after: u64, until: u64, max: usize) -> Result<Vec<FillRecord>, Error> {
        let mut out = Vec::new();
        if after < self.passed {
            self.file = None;
            self.passed = 0;
        }
        // Whether this file was read to its end again after a newer file was seen to hold
        // lines: the writer may have added to it before it moved on.
        let mut reread = false;
        // A few moves at most per call (a rotation is rare; a reader far behind may cross a
        // few files, the rest on the next call).
        for _ in 0..8 {
            let want = after.max(self.passed) + 1;
            let part = match self.file.take() {
                Some(p) => p,
                None => match self.find(want)? {
                    Found::In { part, .. } => self.start_in(part),
                    Found::Before { oldest } => match oldest.first {
                        Some(first) if self.confirm_gap(want, first - 1) => self.start_in(oldest),
                        _ => break,
                    },
                    Found::Nothing => break,
                },
            };
            let at_end = self.read_from(&part, after, until, max, &mut out)?;
            let want = after.max(self.passed) + 1;
            if !at_end || out.len() >= max || want > until {
                self.file = Some(part); // more to read here
                break;
            }
            let look = std::fs::metadata(&self.path).ok().map(|m| (file_id(&m), m.len()));
            let unchanged = self.looked.as_ref().is_some_and(|(l, at)| *l == look && at.elapsed() < LOOK_AGAIN);
            if look.is_some_and(|(id, _)| id == part.id) || unchanged {
                // The writer's own file, where the next line comes; or nothing changed since the
                // last look found no newer file.
                self.file = Some(part);
                break;
            }
            // The end of a renamed file, and line `want` is durable: it may be in a newer file.
            let next = match self.find(want)? {
                Found::In { part: found, .. }
                    if found.id != part.id && found.first.is_some() && found.first >= part.first =>
                {
                    Some(found)
                }
                Found::In { next: Some(next), .. } => {
                    // A newer file starts after `want`, and this one (or the one before it,
                    // ours having left the directory) ends before it.
                    if !reread {
                        reread = true;
                        self.file = Some(part);
                        continue;
                    }
                    next.first.filter(|f| self.confirm_gap(want, f - 1)).map(|_| next)
                }
                Found::Before { oldest } => oldest.first.filter(|f| self.confirm_gap(want, f - 1)).map(|_| oldest),
                // No newer file holds line `want`: the writer may yet append it here (renamed,
                // no reopen yet), or in a file the path names later.
                Found::In { next: None, .. } | Found::Nothing => {
                    self.looked = Some((look, std::time::Instant::now()));
                    None
                }
            };
            match next {
                Some(next) => self.file = Some(self.start_in(next)),
                None => {
                    self.file = Some(part);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Lines skipped because no readable file holds them, `(first, last)`, each gap once.
    pub fn take_gaps(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.gaps)
    }

    pub(super) fn start_in(&mut self, part: Part) -> Part {
        self.offset = 0;
        self.lines = 0;
        self.looked = None;
        part
    }

    /// A gap is skipped only when it is found again after the confirmation wait.
    pub(super) fn confirm_gap(&mut self, first: u64, last: u64) -> bool {
        match self.suspect {
            Some((f, l, since)) if (f, l) == (first, last) => {
                if since.elapsed() < self.confirm {
                    return false;
                }
                self.suspect = None;
                true
            }
            _ => {
                self.suspect = Some((first, last, std::time::Instant::now()));
                false
            }
        }
    }

    /// The file holding line `want`, if any does: the newest whose first line is at or before
    /// it (the live file on a tie, else the longest copy).
    pub(super) fn find(&self, want: u64) -> Result<Found, Error> {
        let mut parts = rotated_files(&self.path);
        parts.retain(|p| p.first.is_some());
        match Part::open(&self.path, true) {
            Ok(Some(live)) => {
                parts.retain(|p| p.id != live.id);
                parts.push(live);
            }
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&self.path)(e)),
        }
        if let Some(at) = parts.iter().rposition(|p| p.first.is_some_and(|f| f <= want)) {
            let start = parts[at].first;
            let next = parts.iter().enumerate().filter(|(_, p)| p.first > start).min_by_key(|(_, p)| p.first);
            let next = next.map(|(i, _)| i);
            // Take the higher index out first, so the other stays where it is.
            return Ok(match next {
                Some(i) if i > at => {
                    let next = parts.swap_remove(i);
                    Found::In { part: parts.swap_remove(at), next: Some(next) }
                }
                Some(i) => {
                    let part = parts.swap_remove(at);
                    Found::In { part, next: Some(parts.swap_remove(i)) }
                }
                None => Found::In { part: parts.swap_remove(at), next: None },
            });
        }
        let oldest = parts.iter().enumerate().filter_map(|(i, p)| p.first.map(|f| (f, i))).min().map(|(_, i)| i);
        Ok(match oldest {
            Some(i) => Found::Before { oldest: parts.swap_remove(i) },
            // Only files without a whole line yet: the live one (last) is where it begins.
            None => match parts.pop() {
                Some(live) => Found::In { part: live, next: None },
                None => Found::Nothing,
            },
        })
    }

    /// Reads whole lines from `file` into `out`; true if it stopped at the end of the file
    /// (not at `max` or `until`).
    pub(super) fn read_from(
        &mut self,
        part: &Part,
        after: u64,
        until: u64,
        max: usize,
        out: &mut Vec<FillRecord>,
    ) -> Result<bool, Error> {
        use std::io::{Seek, SeekFrom};
        let mut file = &part.file;
        let len = file.metadata().map_err(Error::io(&self.path))?.len();
        if len < self.offset {
            // Shorter than where we were (a torn tail cut): start this file over.
            self.offset = 0;
            self.lines = 0;
        }
        let started = self.offset;
        file.seek(SeekFrom::Start(self.offset)).map_err(Error::io(&self.path))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        while out.len() < max {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(Error::io(&self.path))?;
            if n == 0 || line.last() != Some(&b'\n') {
                return Ok(true);
            }
            let parsed = serde_json::from_slice::<FillRecord>(&line).ok().and_then(|mut rec| {
                if rec.seq == 0 {
                    if !part.by_position {
                        return None;
                    }
                    rec.seq = self.lines + 1;
                }
                Some(rec)
            });
            if parsed.as_ref().is_some_and(|rec| rec.seq > until) {
                return Ok(false); // not consumed: the next call starts here
            }
            self.lines += 1;
            self.offset += n as u64;
            if let Some(rec) = parsed {
                // Strictly after the last line handed out too: a line comes once, in order.
                let expected = after.max(self.passed) + 1;
                if rec.seq >= expected {
                    if rec.seq > expected {
                        if started > 0 {
                            // Read from a remembered offset: the file may have been cut and
                            // grown again behind it. Only a read from its start can tell.
                            self.offset = 0;
                            self.lines = 0;
                            return self.read_from(part, after, until, max, out);
                        }
                        self.gaps.push((expected, rec.seq - 1));
                    }
                    self.passed = rec.seq;
                    out.push(rec);
                }
            }
        }
        Ok(false)
    }
}
