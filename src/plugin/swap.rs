//! Loading a plugin's file and swapping it in: the settings read from a checked descriptor,
//! the private copy, the new version's thread started and checked before the old one is
//! stopped, and where the new one starts.

use super::cursor::{load_cursor, start_from, CursorFile, Go};
use super::runner::{Ended, Runner};
use super::settings::{conf_path, tag_of, tag_taken, Options, MAX_SETTINGS};
use super::{trust, PluginHost, Running, Seen};
use std::collections::HashMap;
use std::fs;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Lines a plugin's channel holds before it reads the file instead.
pub(super) const CHANNEL: usize = 1024;
/// How long a stop waits for a plugin thread to end.
pub(super) const STOP_WAIT: Duration = Duration::from_secs(5);

/// Joins `t` if it ends within `limit`; otherwise leaves it running (detached).
pub(super) fn join_within<T>(t: JoinHandle<T>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !t.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    if t.is_finished() {
        let _ = t.join();
        true
    } else {
        false
    }
}

pub(super) fn several_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

impl PluginHost {
    /// Loads `name`'s current file on a new thread; on success stops the old version and starts
    /// the new one where the old one stopped.
    pub(super) fn swap(&mut self, name: &str, seen: Seen, folder: &HashMap<String, Seen>) {
        if self.stuck.contains(name) {
            return; // its old thread may still run plugin code: never two at once
        }
        if self.running.get(name).is_some_and(|r| r.stalled) {
            return; // stopping it now would wait on the stall; try again on a later scan
        }
        if self.held_in_quarantine(name, &seen) {
            return;
        }
        let refuse = |host: &mut PluginHost, why: String| {
            log::error!(
                "plugin {name}: refused: {why}{}",
                if host.running.contains_key(name) { "; the running version stays" } else { "" }
            );
            host.parked.insert(name.to_string(), seen.clone());
            host.view.update(name, |s| {
                s.problem = why.clone();
                if !host.running.contains_key(name) {
                    s.state = "refused".into();
                }
            });
        };
        if let Some(why) = &seen.clash {
            return refuse(self, why.clone());
        }
        let program = seen.kind == super::exec::Kind::Program;
        // Everything read from here on is read from a checked descriptor (`trust`).
        let image = match trust::open(&self.real_dir.join(&seen.file), self.euid) {
            Ok(Some(f)) => f,
            Ok(None) => return, // gone since the scan: the next scan stops it, if it ran
            Err(why) => return refuse(self, why),
        };
        let settings_text = match trust::open(&conf_path(&self.real_dir, name), self.euid) {
            Ok(None) => String::new(),
            Ok(Some(f)) => match f.text(MAX_SETTINGS) {
                Ok(t) => t,
                Err(why) => return refuse(self, format!("{name}.conf {why}")),
            },
            Err(why) => return refuse(self, why),
        };
        let Options {
            isolated,
            restart_base,
            restart_max,
            limits,
            quarantine_after,
            max_pending,
            cancel_on_stop,
            history_all,
            book_depth,
        } = match Options::of_plugin(name, &seen.file, seen.kind, &settings_text) {
            Ok(o) => o,
            Err(why) => return refuse(self, why),
        };
        let restarting = self.restarts.remove(name).is_some();
        if !restarting {
            // A version loaded for a change, not a crash, starts a streak of its own.
            self.streaks.remove(name);
        }
        let (tag, explicit) = tag_of(name, &settings_text);
        let mut holders = self.tags.clone();
        for (n, r) in &self.running {
            holders.insert(n.clone(), r.handle.tag().to_string());
        }
        // Only a trusted file's name gives a tag: a file nobody may load claims nothing.
        let trusted =
            folder.iter().filter(|(_, s)| trust::file_trusted(&self.real_dir.join(&s.file), self.euid)).map(|(n, _)| n);
        if let Some(why) = tag_taken(name, &tag, explicit, &holders, trusted.map(String::as_str)) {
            self.tag_refused.insert(name.to_string());
            return refuse(self, why);
        }
        let (handle, replies) = match self.executor.strategy(&tag) {
            Ok(h) => h,
            Err(e) => return refuse(self, format!("{e} (set tag = ... in {name}.conf)")),
        };
        // Paused until `go`: code that runs while loading (initialisers, `create`) must not
        // trade beside the old version.
        handle.set_paused(true);
        handle.set_budget(max_pending);
        self.generation += 1;
        let images = self.settings.state_dir.join("plugins").join("images");
        // A program's copy keeps its extension: an interpreter may go by it (and a traceback
        // names a file that looks like the plugin's).
        let ext = match seen.kind {
            super::exec::Kind::Library => ".so".to_string(),
            super::exec::Kind::Program => seen
                .file
                .rsplit_once('.')
                .filter(|(stem, _)| !stem.is_empty())
                .map_or(String::new(), |(_, e)| format!(".{e}")),
        };
        let staged = images.join(format!("{name}-{}-{}{ext}", std::process::id(), self.generation));
        if let Err(e) = fs::create_dir_all(&images) {
            return refuse(self, format!("cannot create {}: {e}", images.display()));
        }
        let _ = fs::remove_file(&staged); // a leftover of a crashed run of this pid
        let copied = if program { image.copy_executable_to(&staged) } else { image.copy_to(&staged) };
        if let Err(why) = copied {
            return refuse(self, format!("{} {why}", seen.file));
        }
        drop(image);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(String, u32), String>>(1);
        let (go_tx, go_rx) = crossbeam_channel::bounded::<Go>(1);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let busy_since = Arc::new(AtomicU64::new(0));
        let hears_heads_up = !self.settings.spin.is_zero() && several_cpus();
        let runner = Runner {
            isolated,
            limits,
            program,
            plugin_dir: self.real_dir.clone(),
            stall: self.settings.stall_after,
            workdir: self.settings.state_dir.join("plugins").join("run").join(name),
            name: name.to_string(),
            tag: tag.clone(),
            settings_text,
            staged: staged.clone(),
            state_dir: self.settings.state_dir.clone(),
            fill_log: self.settings.fill_log.clone(),
            tick_every: self.settings.tick_every,
            fills: self.tap.follow(CHANNEL),
            heads_up: if hears_heads_up { self.tap.heads_up() } else { crossbeam_channel::never() },
            hears_heads_up,
            spin: self.settings.spin,
            tap: self.tap.clone(),
            replies,
            reports: self.executor.reports(&tag),
            handle: handle.clone(),
            rules: self.rules.clone(),
            executor: self.executor.clone(),
            busy_since: busy_since.clone(),
            view: self.view.clone(),
            last_call: std::cell::Cell::new(None),
            market: self.market.clone(),
            book_depth,
        };
        let ending = self.ending.0.clone();
        let thread = match thread::Builder::new().name(format!("plugin:{name}")).spawn(move || {
            let ended = runner.run(ready_tx, go_rx, stop_rx);
            let _ = ending.send(thread::current().id());
            ended
        }) {
            Ok(t) => t,
            Err(e) => return refuse(self, format!("cannot start its thread: {e}")),
        };
        let loaded = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| Err("it did not load within 10 s".into()));
        // The image is mapped now (or refused): the private copy's name is no longer needed.
        let _ = fs::remove_file(&staged);
        // The pid is shown with "running", in one update: a reader never sees one without the other.
        let (version, pid) = match loaded {
            Ok(v) => v,
            Err(why) => {
                drop(go_tx); // the new thread ends without starting
                handle.revoke();
                // A thread still inside dlopen or create is left to finish on its own: joining it
                // could hang the watcher, and it can never start (its `go` is gone).
                if !join_within(thread, Duration::from_secs(1)) {
                    log::error!("plugin {name}: its loading thread is stuck; left behind");
                }
                return refuse(self, why);
            }
        };
        // Stop the old version first: two versions never trade at once.
        let had_old = self.running.contains_key(name);
        let stopped = self.stop_plugin(name);
        if had_old && stopped.is_none() {
            // The old version would not stop: the new one must not start beside it.
            drop(go_tx);
            handle.revoke();
            let _ = join_within(thread, Duration::from_secs(1));
            return;
        }
        let previous = match stopped {
            Some(ended) => Some((ended.delivered, ended.last_call)),
            None => self.cursors.remove(name).map(|d| (d, None)),
        };
        let failed_at = self.failed_at.remove(name).unwrap_or(0);
        let go = match previous {
            Some((delivered, last_call)) => Go { delivered, replay_until: failed_at, previous_last_call: last_call },
            None => {
                let file = load_cursor(&self.settings.state_dir, name);
                if let CursorFile::Unreadable(why) = &file {
                    log::error!(
                        "plugin {name}: its cursor file is unreadable ({why}); replaying the fill log from its \
                         start, marked replayed"
                    );
                }
                start_from(&file, history_all, self.tap.durable())
            }
        };
        let mut go = go;
        if go.delivered > self.tap.durable() {
            log::error!(
                "plugin {name}: its cursor (#{}) is past the fill log's end (#{}): was the log replaced? starting at the end",
                go.delivered,
                self.tap.durable()
            );
            go.delivered = self.tap.durable();
        }
        log::info!("plugin {name}: version {version:?} (tag {tag}) starts after fill #{}", go.delivered);
        self.tags.insert(name.to_string(), tag.clone());
        let _ = go_tx.send(go);
        self.view.update(name, |s| {
            s.version = version.clone();
            s.tag = tag.clone();
            s.state = "running".into();
            s.pid = pid;
            s.problem.clear();
            s.loads += 1;
            s.restarts += u64::from(restarting);
        });
        self.running.insert(
            name.to_string(),
            Running {
                seen,
                cancel_on_stop,
                stop: Some(stop_tx),
                thread,
                handle,
                busy_since,
                stalled: false,
                isolated,
                restart_base,
                restart_max,
                quarantine_after,
                started: Instant::now(),
            },
        );
    }

    /// Stops and joins `name`'s thread; returns how it ended.
    pub(super) fn stop_plugin(&mut self, name: &str) -> Option<Ended> {
        let mut r = self.running.remove(name)?;
        r.handle.revoke();
        drop(r.stop.take());
        // Bounded: a plugin stuck in a callback must not freeze the watcher for every plugin.
        // An isolated one is killed by its thread once its callback is over the stall limit.
        let limit = if r.isolated { self.settings.stall_after + STOP_WAIT } else { STOP_WAIT };
        let deadline = Instant::now() + limit;
        while !r.thread.is_finished() && Instant::now() < deadline {
            // Short naps: this wait is most of a swap's pause.
            thread::sleep(Duration::from_micros(200));
        }
        if !r.thread.is_finished() {
            log::error!("plugin {name}: did not stop within {STOP_WAIT:?} (stuck in a callback); left behind, its intents refused");
            self.view.update(name, |s| {
                s.state = "stuck".into();
                s.problem = format!("did not stop within {STOP_WAIT:?}");
            });
            // Parked so that no new version starts beside code that may still run.
            self.parked.insert(name.to_string(), r.seen.clone());
            self.stuck.insert(name.to_string());
            return None;
        }
        let ended = match r.thread.join() {
            Ok(e) => e,
            // The thread itself panicked (not the plugin: that is a status): fall back to the
            // saved cursor, with replay marking, rather than to the start of the log.
            Err(_) => {
                let delivered = match load_cursor(&self.settings.state_dir, name) {
                    CursorFile::Saved(c) => c.delivered,
                    _ => 0,
                };
                Ended::new(delivered, true, None)
            }
        };
        self.cursors.insert(name.to_string(), ended.delivered);
        if ended.failed || ended.crashed.is_some() {
            self.failed_at.insert(name.to_string(), ended.delivered + 1);
        }
        self.view.update(name, |s| {
            s.state = if ended.failed { "disabled".into() } else { "stopped".into() };
            s.delivered = ended.delivered;
            s.pid = 0;
        });
        Some(ended)
    }
}
