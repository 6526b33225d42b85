//! A plugin's delivered cursor in the state dir (`plugins/NAME.cursor`) and where a version
//! without one in memory starts.

use crate::lock::{LockAnyway, WaitAnyway};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// A plugin's saved cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct SavedCursor {
    pub(super) delivered: u64,
    /// False while the plugin runs: a file that says false at start means the last run crashed.
    pub(super) clean: bool,
}

pub(super) fn cursor_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("plugins").join(format!("{name}.cursor"))
}

/// What the state dir says of a plugin's cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CursorFile {
    /// No file: a name seen for the first time.
    Missing,
    Saved(SavedCursor),
    /// A file that exists but cannot be read or parsed (torn, emptied, garbled): never taken
    /// for "first seen", which would start at the log's end and skip what came after it.
    Unreadable(String),
}

pub(super) fn load_cursor(state_dir: &Path, name: &str) -> CursorFile {
    let path = cursor_path(state_dir, name);
    match fs::read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => CursorFile::Missing,
        Err(e) => CursorFile::Unreadable(format!("cannot read {}: {e}", path.display())),
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(c) => CursorFile::Saved(c),
            Err(e) => CursorFile::Unreadable(format!("{} ({} bytes) does not parse: {e}", path.display(), bytes.len())),
        },
    }
}

/// Where a plugin without a cursor in memory starts: from its saved cursor (what follows it
/// marked replayed if the last run did not stop cleanly); a new name at the log's end, or its
/// start with `history = all`; and one whose cursor file is unreadable from the log's start,
/// every line up to `durable` marked replayed: it may see lines again, it never misses one.
pub(super) fn start_from(file: &CursorFile, history_all: bool, durable: u64) -> Go {
    let go = |delivered, replay_until| Go { delivered, replay_until, previous_last_call: None };
    match file {
        CursorFile::Saved(c) => go(c.delivered, if c.clean { 0 } else { durable }),
        CursorFile::Unreadable(_) => go(0, durable),
        CursorFile::Missing if history_all => go(0, 0),
        CursorFile::Missing => go(durable, 0),
    }
}

/// Written to a temporary file, fsynced, renamed into place and its folder fsynced: after a
/// crash or a power cut the file is the old or the new cursor, never half of one.
pub(super) fn save_cursor(state_dir: &Path, name: &str, c: SavedCursor) {
    let path = cursor_path(state_dir, name);
    let dir = state_dir.join("plugins");
    if let Err(e) = crate::statedir::write_private(&dir, &path, &serde_json::to_vec(&c).unwrap_or_default()) {
        log::warn!("plugin {name}: cannot save its cursor ({e}); a restart may replay fills");
    }
}

/// Saves a running plugin's cursor on a thread of its own (`cursor:NAME`), so that the plugin's
/// thread never waits for a save's two `fsync`s between fills: a fill that came while it did
/// waited for them (milliseconds on a busy disk, at every fill of a slow flow). The latest
/// cursor asked for wins: one a save did not get to yet is replaced, never queued. A crash
/// before a save only means lines come again, marked replayed.
pub(super) struct CursorSaver {
    shared: Arc<(Mutex<Slot>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    state_dir: PathBuf,
    name: String,
}

#[derive(Default)]
struct Slot {
    next: Option<SavedCursor>,
    writing: bool,
    closed: bool,
}

impl CursorSaver {
    pub(super) fn start(state_dir: &Path, name: &str) -> CursorSaver {
        let shared = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let (theirs, dir, who) = (shared.clone(), state_dir.to_path_buf(), name.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("cursor:{name}"))
            .stack_size(64 << 10)
            .spawn(move || {
                let (slot, changed) = &*theirs;
                loop {
                    let mut s = slot.lock_anyway();
                    while s.next.is_none() && !s.closed {
                        s = changed.wait_anyway(s);
                    }
                    let Some(c) = s.next.take() else { return };
                    s.writing = true;
                    drop(s);
                    save_cursor(&dir, &who, c);
                    slot.lock_anyway().writing = false;
                    changed.notify_all();
                }
            })
            .map_err(|e| log::warn!("plugin {name}: no thread to save its cursor ({e}); saved on its own thread"))
            .ok();
        CursorSaver { shared, thread, state_dir: state_dir.to_path_buf(), name: name.to_string() }
    }

    /// Saves `c` soon, on the saver's thread.
    pub(super) fn save(&self, c: SavedCursor) {
        if self.thread.is_none() {
            return save_cursor(&self.state_dir, &self.name, c);
        }
        self.shared.0.lock_anyway().next = Some(c);
        self.shared.1.notify_all();
    }

    /// Saves `c` now, once any save asked before is done: nothing older is written after it.
    pub(super) fn save_now(&self, c: SavedCursor) {
        let (slot, changed) = &*self.shared;
        let mut s = slot.lock_anyway();
        while s.next.is_some() || s.writing {
            s = changed.wait_anyway(s);
        }
        drop(s);
        save_cursor(&self.state_dir, &self.name, c);
    }
}

impl Drop for CursorSaver {
    /// Writes what is still asked for, then ends the thread.
    fn drop(&mut self) {
        self.shared.0.lock_anyway().closed = true;
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a new version starts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Go {
    pub(super) delivered: u64,
    /// Lines up to here may have been delivered before a crash.
    pub(super) replay_until: u64,
    /// When the previous version's last callback returned (a swap).
    pub(super) previous_last_call: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_or_empty_cursor_file_replays_from_the_start_marked_and_never_skips() {
        let state = std::env::temp_dir().join(format!("syncd-plugin-cursor-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        fs::create_dir_all(state.join("plugins")).unwrap();
        let durable = 40;
        for (what, body) in [("empty", &b""[..]), ("torn", &br#"{"delivered":3"#[..]), ("garbled", &b"\xff\x00"[..])] {
            fs::write(cursor_path(&state, "p"), body).unwrap();
            let file = load_cursor(&state, "p");
            assert!(matches!(file, CursorFile::Unreadable(_)), "{what}: {file:?}");
            for history_all in [false, true] {
                let go = start_from(&file, history_all, durable);
                assert_eq!((go.delivered, go.replay_until), (0, durable), "{what}: every line again, marked");
            }
        }
        // A saved cursor round-trips through the durable write; a missing one is a new name.
        save_cursor(&state, "p", SavedCursor { delivered: 7, clean: true });
        assert_eq!(load_cursor(&state, "p"), CursorFile::Saved(SavedCursor { delivered: 7, clean: true }));
        assert!(!state.join("plugins").join("p.cursor.tmp").exists());
        let go = start_from(&load_cursor(&state, "p"), false, durable);
        assert_eq!((go.delivered, go.replay_until), (7, 0));
        fs::remove_file(cursor_path(&state, "p")).unwrap();
        assert_eq!(load_cursor(&state, "p"), CursorFile::Missing);
        assert_eq!(start_from(&CursorFile::Missing, false, durable).delivered, durable);
        let _ = fs::remove_dir_all(&state);
    }

    #[test]
    fn the_saver_writes_the_latest_cursor_and_nothing_older_after_a_save_now() {
        let state = std::env::temp_dir().join(format!("syncd-plugin-saver-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let saver = CursorSaver::start(&state, "p");
        for delivered in 1..=200 {
            saver.save(SavedCursor { delivered, clean: false });
        }
        saver.save_now(SavedCursor { delivered: 201, clean: true });
        assert_eq!(load_cursor(&state, "p"), CursorFile::Saved(SavedCursor { delivered: 201, clean: true }));
        // What is still asked for when it ends is written before its thread ends.
        saver.save(SavedCursor { delivered: 202, clean: false });
        drop(saver);
        assert_eq!(load_cursor(&state, "p"), CursorFile::Saved(SavedCursor { delivered: 202, clean: false }));
        let _ = fs::remove_dir_all(&state);
    }
}
