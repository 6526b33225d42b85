//! The state directory: one daemon at a time, and files only the daemon's user reads.
//!
//! **The lock.** Two daemons on one `SYNCD_STATE_DIR` log fills twice and delete each other's
//! listen key, so `run` and `demo` take an exclusive `flock` on `SYNCD_STATE_DIR/lock` before
//! they open the fill log, the stream or a listen key, and hold it for the life of the process.
//! A second one exits 2 naming the directory and the pid in the file. The kernel drops a
//! `flock` with the last descriptor of its holder, so a lock left by a killed process never
//! blocks (no stale-pid guessing). Inside one process the lock is shared: `run` takes it
//! before anything else and the daemon it starts takes the same one.
//!
//! **Modes that do not depend on the umask.** A directory this module creates is `0700`, a
//! state file `0600` (both set explicitly after creation, so an operator's `umask 022` does not
//! make trades or cursors world-readable). The fill log's mode is the fill log's own setting
//! (`SYNCD_FILL_LOG_MODE`, default `0640`).

use crate::error::Error;
use crate::lock::LockAnyway;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "lock";
/// Mode of the state directory when the daemon creates it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every state file (cursors, carry, instance id, lock).
pub const FILE_MODE: u32 = 0o600;

/// Held while a daemon (or `demo`) works on a state directory; released when the last clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct StateLock {
    held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    /// The open descriptor carries the `flock`: closing it releases the lock.
    _file: File,
    dir: PathBuf,
}

/// The locks this process holds, by canonical directory: `run` and the daemon it starts share one.
static HELD: Mutex<Vec<(PathBuf, Weak<Held>)>> = Mutex::new(Vec::new());

impl StateLock {
    /// Creates `dir` (mode 0700) if it is missing and takes its lock, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, Error> {
        create_private_dir(dir)?;
        let canonical = fs::canonicalize(dir).map_err(Error::io(dir))?;
        let mut held = HELD.lock_anyway();
        held.retain(|(_, w)| w.strong_count() > 0);
        if let Some(existing) = held.iter().find(|(d, _)| *d == canonical).and_then(|(_, w)| w.upgrade()) {
            return Ok(StateLock { held: existing });
        }
        let path = canonical.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            // A symlink planted as `lock` must not make us truncate whatever it points at.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(Error::io(&path))?;
        let meta = file.metadata().map_err(Error::io(&path))?;
        if !meta.is_file() {
            return Err(Error::Config(format!("SYNCD_STATE_DIR: {} is not a regular file", path.display())));
        }
        // `check` takes a shared lock for an instant to see whether a daemon holds it: a start
        // that meets it tries again for a moment instead of exiting 2 beside no daemon. So does
        // one that finds the lock still held in this very process's name after its own daemon
        // let it go: a child another thread was forking at that moment holds a copy of the
        // lock's descriptor until its `exec` closes it (close-on-exec), and no other process can
        // have written this pid.
        let mut tries = 0;
        let locked = loop {
            match file.try_lock() {
                Err(fs::TryLockError::WouldBlock)
                    if tries < 50 && (!held_exclusively(&path) || read_pid(&mut file) == Some(std::process::id())) =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = read_pid(&mut file).map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
                return Err(Error::Config(format!(
                    "SYNCD_STATE_DIR: {} is in use by another binance-syncd ({holder}); two daemons on one state directory would log fills twice. Stop it, or give this one its own SYNCD_STATE_DIR",
                    dir.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path)(e)),
        }
        // The pid is for people and `check`; the lock itself is the flock.
        let pid = format!("{}\n", std::process::id());
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .and_then(|()| file.set_permissions(fs::Permissions::from_mode(FILE_MODE)));
        written.map_err(Error::io(&path))?;
        let held_now = Arc::new(Held { _file: file, dir: canonical.clone() });
        held.push((canonical, Arc::downgrade(&held_now)));
        Ok(StateLock { held: held_now })
    }

    /// The directory this lock holds.
    pub fn dir(&self) -> &Path {
        &self.held.dir
    }
}

/// Who holds `dir`'s lock: `Ok(None)` when nobody does (or the directory has no lock file yet),
/// `Ok(Some(pid))` when a running daemon does (the pid as it wrote it; 0 if unreadable).
/// Takes the lock for an instant only when it is free, so it never blocks a daemon for longer.
pub fn holder(dir: &Path) -> Result<Option<u32>, std::io::Error> {
    let path = dir.join(LOCK_FILE);
    let mut file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    match file.try_lock_shared() {
        Ok(()) => Ok(None),
        Err(fs::TryLockError::WouldBlock) => Ok(Some(read_pid(&mut file).unwrap_or(0))),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether an exclusive lock (a daemon's) is held on the file at `path`, as opposed to `check`'s
/// momentary shared one: another descriptor's shared attempt fails only against an exclusive one.
fn held_exclusively(path: &Path) -> bool {
    let Ok(probe) = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) else {
        return false;
    };
    matches!(probe.try_lock_shared(), Err(fs::TryLockError::WouldBlock))
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Creates `dir` and any missing parent with mode 0700, whatever the umask. An existing
/// directory keeps its mode: the operator may have opened it to a group on purpose (so the
/// group can `tail -f` the fill log inside).
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(Error::io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(Error::io(dir))
}

/// Writes `body` to `path` in `dir` so that a crash leaves the old file or the new one, never a
/// mix: a temporary file (mode 0600, never following a link), fsync, rename, fsync of `dir`.
pub fn write_private(dir: &Path, path: &Path, body: &[u8]) -> Result<(), Error> {
    create_private_dir(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(Error::io(&tmp))?;
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE)).map_err(Error::io(&tmp))?;
    f.write_all(body).map_err(Error::io(&tmp))?;
    f.sync_all().map_err(Error::io(&tmp))?;
    fs::rename(&tmp, path).map_err(Error::io(path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("syncd-statedir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_lock_on_one_directory_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = temp("lock");
        let first = StateLock::acquire(&dir).unwrap();
        assert_eq!(holder(&dir).unwrap(), Some(std::process::id()));
        // Another open file description, as another process would have: refused.
        let other = OpenOptions::new().read(true).open(dir.join(LOCK_FILE)).unwrap();
        assert!(matches!(other.try_lock(), Err(fs::TryLockError::WouldBlock)));
        // The same process asking again shares the lock instead of deadlocking on itself.
        let again = StateLock::acquire(&dir).unwrap();
        assert_eq!(again.dir(), first.dir());
        drop(first);
        assert!(holder(&dir).unwrap().is_some(), "one holder is left");
        drop(again);
        assert_eq!(holder(&dir).unwrap(), None);
        other.try_lock().unwrap();
        let refused = StateLock::acquire(&dir).unwrap_err().to_string();
        assert!(refused.contains("in use by another binance-syncd"), "{refused}");
        assert!(refused.contains(&dir.display().to_string()), "{refused}");
        drop(other);
        StateLock::acquire(&dir).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_copy_of_our_own_released_lock_held_for_a_moment_is_waited_for() {
        // As a child forked by another thread holds a copy of the descriptor until its exec.
        let dir = temp("lock-fork");
        drop(StateLock::acquire(&dir).unwrap()); // the file now names this process
        let copy = OpenOptions::new().read(true).open(dir.join(LOCK_FILE)).unwrap();
        copy.try_lock().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(copy);
        });
        StateLock::acquire(&dir).unwrap();
        release.join().unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn created_directories_and_files_are_private_whatever_the_umask() {
        let dir = temp("modes").join("a/b");
        let path = dir.join("cursors.json");
        write_private(&dir, &path, b"{}").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(dir.parent().unwrap()), DIR_MODE);
        assert_eq!(mode(&path), FILE_MODE);
        // A file that was world-readable before is replaced by a private one.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&dir, &path, b"{}").unwrap();
        assert_eq!(mode(&path), FILE_MODE);
        let _ = fs::remove_dir_all(temp("modes"));
    }

    #[test]
    fn a_symlink_planted_as_the_lock_file_is_not_followed() {
        let dir = temp("link");
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(LOCK_FILE)).unwrap();
        assert!(StateLock::acquire(&dir).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        let _ = fs::remove_dir_all(&dir);
    }
}
