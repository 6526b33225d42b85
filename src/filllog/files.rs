//! The files of the log: trusted opens, rotated files found by name, where their lines start.

use super::*;
use crate::trust::{Distrust, Facts, Kind};

/// A file's identity: (device, inode).
pub(super) fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// One file of the log, open for reading: the live one or a rotated one.
#[derive(Debug)]
pub(super) struct Part {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) id: (u64, u64),
    /// Its size when opened (of two copies starting at the same line, the longer one wins).
    pub(super) len: u64,
    /// The `seq` of its first numbered line; `None` while it has no whole line, and for a
    /// rotated file whose lines are from before the field (only their trade ids are read back).
    pub(super) first: Option<u64>,
    /// Lines without `seq` count by their position here (the live file's oldest lines).
    pub(super) by_position: bool,
}

impl Part {
    /// `live`: the file at the log's path, where lines from before `seq` count by position.
    pub(super) fn open(path: &Path, live: bool) -> std::io::Result<Option<Part>> {
        let file = match open_trusted(path, OpenOptions::new().read(true), None) {
            Ok(file) => file,
            Err(Untrusted::Io(e)) => return Err(e),
            Err(Untrusted::Because(why)) => {
                untrusted(path, &why);
                return Ok(None);
            }
        };
        let meta = file.metadata()?;
        // Lines from before `seq` count by their position only in the live file, the only
        // file there was when they were written; elsewhere they are skipped.
        let (first, by_position) = match first_seq(&file) {
            Some((_, true)) if live => (Some(1), true),
            Some((0, _)) => (None, false),
            Some((seq, _)) => (Some(seq), false),
            None if live => (None, false),
            None => return Ok(None), // not a fill log (compressed, foreign)
        };
        Ok(Some(Part { path: path.to_path_buf(), file, id: file_id(&meta), len: meta.len(), first, by_position }))
    }
}

/// What the start of a file holds: `None` if its first whole line is not a fill record;
/// else the `seq` of its first numbered line within the first 64 KiB (0 if none there) and
/// whether lines from before the field come first. Reads at most 64 KiB, so a compressed or
/// foreign file costs little.
pub(super) fn first_seq(file: &File) -> Option<(u64, bool)> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut len, mut at, mut legacy) = (0, 0, false);
    // Read as far as the first numbered line, a few KiB at a time: a rotated file's first
    // line is usually in the first read.
    while len < buf.len() {
        let end = (len + 4096).min(buf.len());
        match file.read_at(&mut buf[len..end], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
        // Whole lines only: the last piece has no newline (cut at 64 KiB, or being written).
        while let Some(end) = buf[at..len].iter().position(|b| *b == b'\n') {
            match serde_json::from_slice::<FillRecord>(&buf[at..at + end]) {
                Ok(rec) if rec.seq > 0 => return Some((rec.seq, legacy)),
                Ok(_) => legacy = true,
                Err(_) if at == 0 => return None,
                Err(_) => return legacy.then_some((0, true)), // a foreign line after old ones
            }
            at += end + 1;
        }
    }
    legacy.then_some((0, true))
}

/// The `seq` of the file's last whole line, read from its last 64 KiB (`None`: no numbered
/// line there).
pub(super) fn last_line_seq(file: &File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(64 * 1024);
    let mut buf = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut buf, start).ok()?;
    let end = buf.iter().rposition(|b| *b == b'\n')?;
    let begin = buf[..end].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let rec: FillRecord = serde_json::from_slice(&buf[begin..end]).ok()?;
    (rec.seq > 0).then_some(rec.seq)
}

/// Why a file of the log was not opened.
pub(super) enum Untrusted {
    Io(std::io::Error),
    /// It may have been written by someone else than the daemon (see [`open_trusted`]).
    Because(String),
}

/// Opens a file of the log (the live one or a rotated one) only if the daemon can believe what
/// it holds, as sshd's `StrictModes` does with its key files (issue 19): a forged line with a
/// huge trade id would count as logged and could hide a real fill, or be handed to a plugin
/// as one. The path is not followed if it is a symbolic link (`O_NOFOLLOW`), and never blocks
/// on a FIFO (`O_NONBLOCK`; no effect on a regular file); the opened file must be a regular
/// file owned by root, this process's effective user or the owner of its directory (who can
/// replace any file in it anyway; so `fills --follow` run by another user still reads a log in
/// the daemon's directory), and writable by neither its group nor others.
///
/// With `fix_mode`, the writer's own file (owned by this user) is first given exactly that
/// mode: a log from before modes were set, left writable by a umask 002, is narrowed, not
/// refused. Another user's file is only judged.
pub(super) fn open_trusted(path: &Path, options: &mut OpenOptions, fix_mode: Option<u32>) -> Result<File, Untrusted> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file =
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Untrusted::Because(Distrust::NotRegular(Kind::Symlink).to_string()),
            _ => Untrusted::Io(e),
        })?;
    let mut meta = file.metadata().map_err(Untrusted::Io)?;
    let me = crate::sys::euid();
    if let Some(wanted) = fix_mode.filter(|_| meta.is_file() && meta.uid() == me) {
        set_mode_of(&file, path, wanted);
        meta = file.metadata().map_err(Untrusted::Io)?;
    }
    let dir_owner = path
        .parent()
        .map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d })
        .and_then(|d| std::fs::metadata(d).ok())
        .map(|m| m.uid());
    crate::trust::judge_file_owned(Facts::of(&meta), me, dir_owner)
        .map_err(|why| Untrusted::Because(why.to_string()))?;
    Ok(file)
}

/// Reports a file of the log that is ignored, once per file and reason (readers look again and
/// again); a few hundred at most.
pub(super) fn untrusted(path: &Path, why: &str) {
    static REPORTED: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    let mut reported = REPORTED.lock_anyway();
    let key = (path.to_path_buf(), why.to_string());
    if reported.len() >= 256 || reported.contains(&key) {
        return;
    }
    log::warn!("{}: ignored, not trusted as a file of the fill log: {why}", path.display());
    reported.push(key);
}

/// The rotated files of the log at `path` that can be read back, oldest first: in its
/// directory, named after it (`fills.jsonl.1`, `fills.jsonl-20261201`, `fills.jsonl_old`) and
/// starting with a fill line (a compressed one does not, and is left out).
pub(super) fn rotated_files(path: &Path) -> Vec<Part> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut parts: Vec<Part> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let entry = e.file_name();
            let Some(rest) = entry.to_str().and_then(|n| n.strip_prefix(name)) else { return false };
            rest.len() > 1 && rest.starts_with(['.', '-', '_'])
        })
        .filter(|e| match e.file_type() {
            // Told by the directory entry, so a FIFO or a device is never even opened.
            Ok(t) if !t.is_file() => {
                untrusted(&e.path(), &Distrust::NotRegular(Kind::of(t)).to_string());
                false
            }
            Ok(_) => true,
            Err(_) => false,
        })
        .filter_map(|e| Part::open(&e.path(), false).ok().flatten())
        .collect();
    parts.sort_by_key(|p| (p.first, p.len));
    parts
}

/// The `seq` of the last line in the newest rotated file (0 if there is none): where the
/// log goes on when the file at its path has no line yet (just rotated).
pub fn last_rotated_seq(path: &Path) -> u64 {
    rotated_files(path).iter().rev().find_map(|p| p.first.and_then(|_| last_line_seq(&p.file))).unwrap_or(0)
}
