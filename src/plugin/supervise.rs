//! What the watcher does with a plugin that stalls, crashes or keeps crashing: the stall flag,
//! the restart backoff, the crash streak and the quarantine file (`plugins/NAME.quarantine`).

use super::runner::Ended;
use super::settings::BACKOFF_MAX;
use super::{now_ms, PluginHost, Restart, Seen};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A crash this soon after its start counts towards a quarantine whatever fill it was on
/// ([`super::settings::QUARANTINE_AFTER`] of them in a row).
pub(super) const QUICK_DEATH: Duration = Duration::from_secs(10);

/// `plugins/NAME.quarantine`: why, and which file (inode, size, mtime) it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Quarantine {
    pub(super) reason: String,
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime: (i64, i64),
}

pub(super) fn quarantine_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("plugins").join(format!("{name}.quarantine"))
}

/// The identity of plugin `name`'s one file in `dir` (`NAME.so` or a program; not followed):
/// what "its file changed" means to a quarantine.
pub(super) fn image_identity(dir: &Path, name: &str) -> Option<(u64, u64, (i64, i64))> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(dir.join(super::exec::file_of(dir, name)?)).ok()?;
    Some((m.ino(), m.len(), (m.mtime(), m.mtime_nsec())))
}

/// Why plugin `name`'s file in `dir` is quarantined, if its quarantine (in `state_dir`) holds this very
/// file. A quarantine file that does not read counts as holding it: only a new file frees it.
pub fn quarantined(state_dir: &Path, dir: &Path, name: &str) -> Option<String> {
    let text = match fs::read(quarantine_path(state_dir, name)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("quarantined (its quarantine file does not read: {e})")),
        Ok(t) => t,
    };
    let Ok(q) = serde_json::from_slice::<Quarantine>(&text) else {
        return Some("quarantined (its quarantine file does not parse)".into());
    };
    (image_identity(dir, name) == Some((q.ino, q.size, q.mtime))).then_some(q.reason)
}

impl PluginHost {
    pub(super) fn watch_stalls(&mut self) {
        let limit = self.settings.stall_after.as_millis() as u64;
        for (name, r) in self.running.iter_mut() {
            let since = r.busy_since.load(Ordering::Acquire);
            let stalled = since != 0 && now_ms().saturating_sub(since) > limit;
            if stalled != r.stalled {
                r.stalled = stalled;
                r.handle.set_paused(stalled);
                if stalled {
                    log::error!(
                        "plugin {name}: a callback has run for over {:?}; its intents are answered BUSY until it returns",
                        self.settings.stall_after
                    );
                } else {
                    log::warn!("plugin {name}: recovered from its stall");
                }
                self.view.update(name, |s| s.state = if stalled { "stalled".into() } else { "running".into() });
            }
        }
    }

    /// A plugin's process died or was killed: logged with why, started again from its cursor
    /// after a backoff, and the line it may have been handling comes again marked replayed.
    pub(super) fn crashed(
        &mut self,
        name: &str,
        seen: Seen,
        started: Instant,
        backoff: (Duration, Duration),
        ended: &Ended,
        why: &str,
    ) {
        self.failed_at.insert(name.to_string(), ended.delivered + 1);
        let (base, max) = backoff;
        let delay = match self.backoff.get(name) {
            Some(last) if started.elapsed() < BACKOFF_MAX => (*last * 2).min(max),
            _ => base,
        };
        self.backoff.insert(name.to_string(), delay);
        self.restarts.insert(name.to_string(), Restart { at: Instant::now() + delay, seen });
        log::error!(
            "plugin {name}: {why} (after fill #{}); starting it again in {delay:?} from there",
            ended.delivered
        );
        self.view.update(name, |s| {
            s.state = if ended.stalled { "stalled".into() } else { "crashed".into() };
            s.problem = why.to_string();
            s.last_exit = why.to_string();
            s.delivered = ended.delivered;
            s.pid = 0;
        });
    }

    /// Counts a crash (`quick`: within [`QUICK_DEATH`] of its start; `delivered`: its cursor);
    /// true once `after` of them came in a row, each quick or on the same fill as the last.
    pub(super) fn quarantines(&mut self, name: &str, quick: bool, delivered: u64, after: u32) -> bool {
        let streak = match self.streaks.get(name) {
            Some(&(n, at)) if quick || at == delivered => n + 1,
            _ => 1,
        };
        self.streaks.insert(name.to_string(), (streak, delivered));
        after != 0 && streak >= after
    }

    /// Parks a plugin that keeps dying until its file changes, in the state dir too (a daemon
    /// restart keeps it), where `check` sees it.
    pub(super) fn quarantine(&mut self, name: &str, seen: Seen, ended: &Ended, why: &str) {
        let streak = self.streaks.remove(name).map_or(0, |(n, _)| n);
        self.backoff.remove(name);
        self.failed_at.insert(name.to_string(), ended.delivered + 1);
        let reason = format!(
            "quarantined: its process died {streak} times in a row, each soon after its start or on the same \
             fill (last: {why}, after fill #{}); replace {} to release it",
            ended.delivered, seen.file
        );
        log::error!("plugin {name}: {reason}");
        match image_identity(&self.real_dir, name) {
            // Replaced while it kept dying: the new file gets its chance (the next scan loads
            // it, since what is parked here is the old one).
            Some((ino, ..)) if ino != seen.image.4 => log::info!("plugin {name}: its file changed meanwhile; not held"),
            Some((ino, size, mtime)) => {
                let q = Quarantine { reason: reason.clone(), ino, size, mtime };
                let body = serde_json::to_vec(&q).unwrap_or_default();
                let dir = self.settings.state_dir.join("plugins");
                if let Err(e) =
                    crate::statedir::write_private(&dir, &quarantine_path(&self.settings.state_dir, name), &body)
                {
                    log::error!("plugin {name}: cannot save its quarantine ({e}); a daemon restart lifts it");
                }
            }
            None => log::warn!("plugin {name}: its file is gone; the quarantine is not saved"),
        }
        self.parked.insert(name.to_string(), seen);
        self.view.update(name, |s| {
            s.state = "quarantined".into();
            s.problem = reason.clone();
            s.last_exit = why.to_string();
            s.delivered = ended.delivered;
            s.pid = 0;
        });
    }

    /// Whether `name` is quarantined (and then parked and shown so); a quarantine of an older
    /// file is lifted.
    pub(super) fn held_in_quarantine(&mut self, name: &str, seen: &Seen) -> bool {
        if let Some(reason) = quarantined(&self.settings.state_dir, &self.real_dir, name) {
            self.parked.insert(name.to_string(), seen.clone());
            self.view.update(name, |s| {
                s.state = "quarantined".into();
                s.problem = reason;
            });
            return true;
        }
        let path = quarantine_path(&self.settings.state_dir, name);
        if path.exists() {
            log::info!("plugin {name}: its file changed; released from quarantine");
            let _ = fs::remove_file(&path);
        }
        false
    }
}
