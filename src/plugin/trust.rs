//! Which plugin files the daemon will read, as sshd's `StrictModes` and sudo decide it: anyone
//! who can write a plugin, its settings or a folder on the way to them can run code in the
//! daemon, so only root and the daemon's own user may.
//!
//! - The plugin folder and every folder above it: a directory, owned by root or the daemon's
//!   user, not writable by group or others; a folder *above* it may be if sticky (`/tmp`:
//!   others may add entries there but not replace ours). The plugin folder itself never: in a
//!   sticky folder anyone may add a `NAME.so` of their own, and their name would take a tag.
//! - Each `NAME.so` and `NAME.conf`: a regular file (never a symlink, FIFO, device or socket),
//!   owned by root or the daemon's user, not writable by group or others.
//!
//! A file is looked at with `lstat` first (a device is never opened), then opened with
//! `O_NOFOLLOW | O_NONBLOCK` (a symlink put in its place fails, a FIFO cannot block) and checked
//! again on the descriptor; whatever is read or copied comes from that descriptor, and its
//! device, inode, size and mtime must be the same after the read as when it was checked.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use crate::trust::{judge_dir, judge_file, Distrust, Facts, Kind};

/// Whether the file at `path` (not followed) would pass [`judge_file`]: only such files count
/// when deciding whose name gives a tag.
pub fn file_trusted(path: &Path, euid: u32) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| judge_file(Facts::of(&m), euid).is_ok())
}

/// Checks `dir` and every folder above it (after resolving symlinks: the folders that hold
/// the files); returns the resolved path, which the files are then opened under.
pub fn folder(dir: &Path, euid: u32) -> Result<PathBuf, String> {
    let real = fs::canonicalize(dir).map_err(|e| format!("plugin folder {}: {e}", dir.display()))?;
    for d in real.ancestors() {
        let m = fs::symlink_metadata(d).map_err(|e| format!("folder {}: {e}", d.display()))?;
        judge_dir(Facts::of(&m), euid, d != real).map_err(|why| {
            if d == real {
                format!("the plugin folder {} {why}", d.display())
            } else {
                format!("{}, a folder above the plugin folder, {why}", d.display())
            }
        })?;
    }
    Ok(real)
}

/// The identity and version of a file: the same before and after a read means the bytes read
/// are the bytes of the file that was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp { dev: m.dev(), ino: m.ino(), size: m.len(), mtime: (m.mtime(), m.mtime_nsec()) }
    }
}

/// A checked file, open for reading.
#[derive(Debug)]
pub struct Opened {
    file: File,
    stamp: Stamp,
}

/// Opens `path` if it is trusted: `Ok(None)` when there is no such file, `Err` with the reason
/// (starting with the file's name) when it is not trusted or cannot be opened.
pub fn open(path: &Path, euid: u32) -> Result<Option<Opened>, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let before = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    // Refused before it is opened: opening a device can have effects of its own.
    judge_file(Facts::of(&before), euid).map_err(|why| format!("{name} {why}"))?;
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!("{name} {}", Distrust::NotRegular(Kind::Symlink)));
        }
        Err(e) => return Err(format!("{name}: cannot open it: {e}")),
    };
    let m = file.metadata().map_err(|e| format!("{name}: {e}"))?;
    judge_file(Facts::of(&m), euid).map_err(|why| format!("{name} {why}"))?;
    let stamp = Stamp::of(&m);
    if (stamp.dev, stamp.ino) != (before.dev(), before.ino()) {
        return Err(format!("{name} was replaced while it was being checked"));
    }
    Ok(Some(Opened { file, stamp }))
}

fn unchanged(o: &Opened, read: u64) -> io::Result<bool> {
    Ok(read == o.stamp.size && Stamp::of(&o.file.metadata()?) == o.stamp)
}

const CHANGED: &str = "changed while it was being read";

impl Opened {
    /// Copies the checked file to `to` (a new file, 0600), from the descriptor that was checked.
    pub fn copy_to(&self, to: &Path) -> Result<(), String> {
        self.copy_with_mode(to, 0o600)
    }

    /// As [`Opened::copy_to`], the copy executable by its owner only (0700): a program
    /// plugin's, which is run rather than mapped.
    pub fn copy_executable_to(&self, to: &Path) -> Result<(), String> {
        self.copy_with_mode(to, 0o700)
    }

    fn copy_with_mode(&self, to: &Path, mode: u32) -> Result<(), String> {
        let copy = || -> io::Result<bool> {
            let mut out = OpenOptions::new().write(true).create_new(true).mode(mode).open(to)?;
            // One byte past the checked size is enough to see that it grew.
            let n = io::copy(&mut (&self.file).take(self.stamp.size + 1), &mut out)?;
            unchanged(self, n)
        };
        match copy() {
            Ok(true) => Ok(()),
            Ok(false) => {
                let _ = fs::remove_file(to);
                Err(CHANGED.into())
            }
            Err(e) => {
                let _ = fs::remove_file(to);
                Err(format!("cannot copy it to {}: {e}", to.display()))
            }
        }
    }

    /// The checked file as text, if it is at most `limit` bytes of UTF-8.
    pub fn text(&self, limit: u64) -> Result<String, String> {
        if self.stamp.size > limit {
            return Err(format!("is {} bytes, more than the {limit} a settings file may have", self.stamp.size));
        }
        let mut text = String::new();
        let n = (&self.file).take(limit + 1).read_to_string(&mut text).map_err(|e| format!("cannot read it: {e}"))?;
        match unchanged(self, n as u64) {
            Ok(true) => Ok(text),
            Ok(false) => Err(CHANGED.into()),
            Err(e) => Err(format!("cannot read it: {e}")),
        }
    }

    /// The descriptor, for reading parts of the file in place (`check`).
    pub fn file(&self) -> &File {
        &self.file
    }
}
