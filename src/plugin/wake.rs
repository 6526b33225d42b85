//! The watcher between two scans: a plugin whose process died is restarted as soon as its
//! backoff is over, not at the next scan of the folder (`SYNCD_PLUGIN_SCAN_S`, 1 s by
//! default, would otherwise add up to two scans to every restart: one to see the thread end,
//! one to start it again). Only restarts happen here: a new or changed file still waits for the
//! scans (its stability rule counts scans).

use super::PluginHost;
use crossbeam_channel::Receiver;
use std::time::{Duration, Instant};

/// How long the watcher waits for a thread that said it ends to be finished (it returns a
/// moment after it said so).
const FINISH_WAIT: Duration = Duration::from_millis(50);

impl PluginHost {
    /// Waits for the next scan, restarting crashed plugins meanwhile; false once `stop` fired
    /// (a message, or its sender dropped).
    pub(super) fn between_scans(&mut self, stop: &Receiver<()>) -> bool {
        let next_scan = Instant::now() + self.settings.scan_every;
        loop {
            // Only restarts still ahead: one that is due but did not start (its file changed,
            // or an old thread of it is stuck) is the scan's, and must not make this loop spin.
            let now = Instant::now();
            let due = self.restarts.values().map(|r| r.at).filter(|&at| at > now).min();
            let due = due.map_or(next_scan, |at| at.min(next_scan));
            let ending = self.ending.1.clone();
            crossbeam_channel::select_biased! {
                recv(stop) -> _ => return false,
                recv(ending) -> id => {
                    let Ok(id) = id else { continue };
                    let end = Instant::now() + FINISH_WAIT;
                    while let Some(r) = self.running.values().find(|r| r.thread.thread().id() == id) {
                        if r.thread.is_finished() || Instant::now() >= end {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    self.reap();
                }
                default(due.saturating_duration_since(Instant::now())) => {}
            }
            if Instant::now() >= next_scan {
                return true;
            }
            self.restart_due();
        }
    }

    /// Starts again each crashed plugin whose backoff is over and whose file is as the last
    /// scan saw it (a changed one is the scan's).
    fn restart_due(&mut self) {
        if self.folder_refused.is_some() {
            return;
        }
        let now = Instant::now();
        let mut due: Vec<String> = self
            .restarts
            .iter()
            .filter(|(n, r)| r.at <= now && self.last_scan.get(*n) == Some(&r.seen) && !self.running.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        due.sort();
        let folder = self.last_scan.clone();
        for name in due {
            if let Some(seen) = folder.get(&name) {
                self.swap(&name, seen.clone(), &folder);
            }
        }
    }
}
