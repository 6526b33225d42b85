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

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a path is, as `lstat` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl Kind {
    fn of(t: fs::FileType) -> Kind {
        if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Directory
        } else if t.is_fifo() {
            Kind::Fifo
        } else if t.is_char_device() {
            Kind::CharDevice
        } else if t.is_block_device() {
            Kind::BlockDevice
        } else if t.is_socket() {
            Kind::Socket
        } else {
            Kind::Regular
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Regular => "a regular file",
            Kind::Directory => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Socket => "a socket",
        })
    }
}

/// What the decision looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub kind: Kind,
    /// Permission bits with sticky/setuid/setgid (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
}

impl Facts {
    pub fn of(m: &fs::Metadata) -> Facts {
        Facts { kind: Kind::of(m.file_type()), mode: m.mode() & 0o7777, uid: m.uid() }
    }
}

/// Why a path is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distrust {
    NotRegular(Kind),
    NotDirectory(Kind),
    Owner { uid: u32, euid: u32 },
    Writable { mode: u32 },
}

impl fmt::Display for Distrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distrust::NotRegular(k) => write!(f, "is {k}, not a regular file"),
            Distrust::NotDirectory(k) => write!(f, "is {k}, not a directory"),
            Distrust::Owner { uid, euid } if *euid == 0 => write!(f, "is owned by uid {uid}, not by root"),
            Distrust::Owner { uid, euid } => {
                write!(f, "is owned by uid {uid}, neither root nor the daemon's user (uid {euid})")
            }
            Distrust::Writable { mode } => write!(f, "is writable by group or others (mode {mode:04o})"),
        }
    }
}

const GROUP_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

fn owner_ok(f: Facts, euid: u32) -> Result<(), Distrust> {
    if f.uid == 0 || f.uid == euid {
        Ok(())
    } else {
        Err(Distrust::Owner { uid: f.uid, euid })
    }
}

/// A plugin image or settings file.
pub fn judge_file(f: Facts, euid: u32) -> Result<(), Distrust> {
    if f.kind != Kind::Regular {
        return Err(Distrust::NotRegular(f.kind));
    }
    owner_ok(f, euid)?;
    if f.mode & GROUP_OTHER_WRITE != 0 {
        return Err(Distrust::Writable { mode: f.mode });
    }
    Ok(())
}

/// Whether the file at `path` (not followed) would pass [`judge_file`]: only such files count
/// when deciding whose name gives a tag.
pub fn file_trusted(path: &Path, euid: u32) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| judge_file(Facts::of(&m), euid).is_ok())
}

/// The plugin folder (`above` false) or a folder above it (`above` true: sticky may be
/// world-writable).
pub fn judge_dir(f: Facts, euid: u32, above: bool) -> Result<(), Distrust> {
    if f.kind != Kind::Directory {
        return Err(Distrust::NotDirectory(f.kind));
    }
    owner_ok(f, euid)?;
    if f.mode & GROUP_OTHER_WRITE != 0 && !(above && f.mode & STICKY != 0) {
        return Err(Distrust::Writable { mode: f.mode });
    }
    Ok(())
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
        let copy = || -> io::Result<bool> {
            let mut out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(to)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;

    fn file(kind: Kind, mode: u32, uid: u32) -> Result<(), Distrust> {
        judge_file(Facts { kind, mode, uid }, ME)
    }

    fn dir(mode: u32, uid: u32) -> Result<(), Distrust> {
        judge_dir(Facts { kind: Kind::Directory, mode, uid }, ME, true)
    }

    #[test]
    fn files_owned_by_root_or_the_daemon_and_writable_by_them_alone_pass() {
        for mode in [0o644, 0o755, 0o600, 0o400, 0o700, 0o4755] {
            assert_eq!(file(Kind::Regular, mode, 0), Ok(()), "{mode:o}");
            assert_eq!(file(Kind::Regular, mode, ME), Ok(()), "{mode:o}");
        }
    }

    #[test]
    fn group_or_other_write_or_another_owner_refuses_a_file() {
        for mode in [0o666, 0o664, 0o646, 0o620, 0o602, 0o777, 0o1666] {
            assert_eq!(file(Kind::Regular, mode, 0), Err(Distrust::Writable { mode }), "{mode:o}");
        }
        assert_eq!(file(Kind::Regular, 0o644, 65534), Err(Distrust::Owner { uid: 65534, euid: ME }));
        // The owner is judged before the mode: the first thing to fix is said first.
        assert_eq!(file(Kind::Regular, 0o666, 65534), Err(Distrust::Owner { uid: 65534, euid: ME }));
    }

    #[test]
    fn anything_but_a_regular_file_is_refused_whatever_its_mode() {
        for kind in [Kind::Symlink, Kind::Fifo, Kind::CharDevice, Kind::BlockDevice, Kind::Socket, Kind::Directory] {
            assert_eq!(file(kind, 0o644, 0), Err(Distrust::NotRegular(kind)), "{kind}");
        }
    }

    #[test]
    fn folders_may_be_world_writable_only_when_sticky() {
        assert_eq!(dir(0o755, 0), Ok(()));
        assert_eq!(dir(0o700, ME), Ok(()));
        assert_eq!(dir(0o1777, 0), Ok(()), "/tmp");
        assert_eq!(dir(0o777, 0), Err(Distrust::Writable { mode: 0o777 }));
        assert_eq!(dir(0o775, ME), Err(Distrust::Writable { mode: 0o775 }));
        assert_eq!(dir(0o1777, 65534), Err(Distrust::Owner { uid: 65534, euid: ME }), "sticky, but not ours");
        assert_eq!(
            judge_dir(Facts { kind: Kind::Regular, mode: 0o755, uid: 0 }, ME, true),
            Err(Distrust::NotDirectory(Kind::Regular))
        );
    }

    #[test]
    fn the_plugin_folder_itself_is_never_trusted_world_writable_even_sticky() {
        let plugin_folder = |mode| judge_dir(Facts { kind: Kind::Directory, mode, uid: 0 }, ME, false);
        assert_eq!(plugin_folder(0o1777), Err(Distrust::Writable { mode: 0o1777 }));
        assert_eq!(plugin_folder(0o1755), Ok(()));
        assert_eq!(plugin_folder(0o755), Ok(()));
    }

    #[test]
    fn as_root_only_root_owned_files_pass() {
        let f = |uid| judge_file(Facts { kind: Kind::Regular, mode: 0o644, uid }, 0);
        assert_eq!(f(0), Ok(()));
        assert_eq!(f(ME), Err(Distrust::Owner { uid: ME, euid: 0 }));
        assert_eq!(Distrust::Owner { uid: ME, euid: 0 }.to_string(), "is owned by uid 1000, not by root");
    }

    #[test]
    fn reasons_name_the_mode_in_octal() {
        assert_eq!(Distrust::Writable { mode: 0o666 }.to_string(), "is writable by group or others (mode 0666)");
        assert_eq!(Distrust::NotRegular(Kind::Fifo).to_string(), "is a FIFO, not a regular file");
    }
}
