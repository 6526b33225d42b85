//! The watcher thread's scan: the folder's trust, the listing and its stability rule, removed
//! files, finished plugin threads, and which files to (re)load.

use super::runner::Ended;
use super::settings::conf_path;
use super::supervise::QUICK_DEATH;
use super::{sig, sys, trust, PluginHost, PluginSettings, PluginView, Running, Seen};
use crate::executor::{ExecutorLink, Intent};
use crate::filllog::FillTap;
use crate::rules::LiveRules;
use crossbeam_channel::Receiver;
use std::collections::HashMap;
use std::io;
use std::thread::{self, JoinHandle};
use std::time::Instant;

impl PluginHost {
    pub fn new(settings: PluginSettings, executor: ExecutorLink, rules: LiveRules, tap: FillTap) -> PluginHost {
        PluginHost {
            real_dir: settings.dir.clone(),
            settings,
            executor,
            rules,
            tap,
            view: PluginView::default(),
            running: HashMap::new(),
            parked: HashMap::new(),
            last_scan: HashMap::new(),
            generation: 0,
            cursors: HashMap::new(),
            stuck: std::collections::HashSet::new(),
            failed_at: HashMap::new(),
            euid: sys::euid(),
            folder_refused: None,
            tags: HashMap::new(),
            tag_refused: std::collections::HashSet::new(),
            restarts: HashMap::new(),
            backoff: HashMap::new(),
            streaks: HashMap::new(),
            ending: crossbeam_channel::unbounded(),
            market: None,
        }
    }

    /// Books and trades for its plugins come from `market`'s feed.
    pub fn with_market(mut self, market: Option<crate::market::MarketView>) -> PluginHost {
        self.market = market;
        self
    }

    pub fn view(&self) -> PluginView {
        self.view.clone()
    }

    pub fn spawn(mut self, stop: Receiver<()>) -> io::Result<JoinHandle<()>> {
        thread::Builder::new().name("plugins".into()).spawn(move || {
            loop {
                self.scan();
                self.watch_stalls();
                if !self.between_scans(&stop) {
                    break;
                }
            }
            let names: Vec<String> = self.running.keys().cloned().collect();
            for name in names {
                self.stop_plugin(&name);
            }
        })
    }

    /// The plugin files of the folder ([`super::exec::plugin_files`]: `.so` files and
    /// programs) and what they look like; `quiet`: an unreadable folder was already reported.
    pub(super) fn listing(&self, quiet: bool) -> HashMap<String, Seen> {
        let mut now: HashMap<String, Seen> = HashMap::new();
        match super::exec::plugin_files(&self.real_dir) {
            Ok(files) => {
                for (name, files) in files {
                    // A clash is seen as its first file, refused with its reason, until all
                    // but one are gone (a change: the remaining one is looked at afresh).
                    let clash = super::exec::clash(&name, &files);
                    let Some((file, kind)) = files.into_iter().next() else { continue };
                    if let Some(image) = sig(&self.real_dir.join(&file)) {
                        let conf = sig(&conf_path(&self.real_dir, &name));
                        now.insert(name, Seen { image, conf, file, kind, clash });
                    }
                }
            }
            Err(e) if !quiet => log::warn!("plugins: cannot read {}: {e}", self.settings.dir.display()),
            Err(_) => {}
        }
        now
    }

    /// Whether the folder (and every one above it) is trusted; while it is not, nothing in it
    /// is loaded or stopped (the running versions stay) and its plugins show as refused.
    pub(super) fn folder_trusted(&mut self) -> bool {
        let why = match trust::folder(&self.settings.dir, self.euid) {
            Ok(real) => {
                self.real_dir = real;
                if let Some(old) = self.folder_refused.take() {
                    log::info!("plugins: the plugin folder {} is trusted again", self.settings.dir.display());
                    for name in self.running.keys() {
                        self.view.update(name, |s| {
                            if s.problem == old {
                                s.problem.clear();
                            }
                        });
                    }
                }
                return true;
            }
            Err(why) => why,
        };
        if self.folder_refused.as_ref() != Some(&why) {
            log::warn!("plugins: refused: {why}; nothing in it is loaded (running versions stay)");
        }
        for name in self.listing(true).into_keys() {
            let running = self.running.contains_key(&name);
            self.view.update(&name, |s| {
                s.problem = why.clone();
                if !running {
                    s.state = "refused".into();
                }
            });
        }
        // Looked at afresh (and for stability again) once the folder is fixed.
        self.last_scan.clear();
        self.folder_refused = Some(why);
        false
    }

    /// Tags with open orders in the executor's book.
    pub(super) fn resting_tags(&self) -> std::collections::HashSet<String> {
        if self.tags.is_empty() {
            return Default::default();
        }
        self.executor
            .view()
            .open_orders
            .iter()
            .filter_map(|o| self.executor.tag_of(&o.client_order_id).map(String::from))
            .collect()
    }

    pub(super) fn scan(&mut self) {
        if !self.folder_trusted() {
            return;
        }
        let now = self.listing(false);
        let holders = self.tags.len();
        // A removed plugin's tag stays held while orders of its rest in the book
        // (`cancel_on_stop = false`): another plugin under that tag would take them over.
        let resting = self.resting_tags();
        self.tags.retain(|n, t| now.contains_key(n) || resting.contains(t.as_str()));
        if self.tags.len() < holders || self.last_scan.keys().any(|n| !now.contains_key(n)) {
            for name in self.tag_refused.drain() {
                self.parked.remove(&name);
            }
        }
        // Removed files stop their plugins.
        let gone: Vec<String> = self.running.keys().filter(|n| !now.contains_key(*n)).cloned().collect();
        for name in gone {
            log::info!("plugin {name}: its file is gone; stopping it");
            let cancel = self.running.get(&name).filter(|r| r.cancel_on_stop).map(|r| r.handle.tag().to_string());
            self.stop_plugin(&name);
            if let Some(tag) = cancel {
                // After the stop: the plugin's own handle is revoked (whatever it still had
                // queued is refused), so nothing it sent can land after these cancels.
                if let Ok((host_handle, _replies)) = self.executor.strategy(&tag) {
                    for symbol in self.rules.snapshot().symbols.keys() {
                        let _ = host_handle.submit(Intent::CancelAll { symbol: symbol.clone() });
                    }
                    log::info!("plugin {name}: cancel_on_stop: cancelling its open orders");
                }
            }
        }
        self.parked.retain(|n, s| now.get(n) == Some(s));
        self.restarts.retain(|n, _| now.contains_key(n));
        self.reap();
        // In name order: of two settings claiming one tag, the same one wins every time.
        let mut names: Vec<&String> = now.keys().collect();
        names.sort();
        for name in names {
            let seen = &now[name];
            let stable = self.last_scan.get(name) == Some(seen);
            if self.restarts.get(name).is_some_and(|r| r.seen == *seen && Instant::now() < r.at) {
                continue; // crashed: its backoff is not over (a changed file starts at once)
            }
            let current = self.running.get(name).map(|r| &r.seen).or(self.parked.get(name));
            if stable && current != Some(seen) {
                self.swap(name, seen.clone(), &now);
            }
        }
        self.last_scan = now;
    }

    /// Finished threads: a crashed plugin is scheduled for its restart (or quarantined), one
    /// that failed is parked until its file changes.
    pub(super) fn reap(&mut self) {
        let finished: Vec<String> =
            self.running.iter().filter(|(_, r)| r.thread.is_finished()).map(|(n, _)| n.clone()).collect();
        for name in finished {
            if let Some(r) = self.running.remove(&name) {
                r.handle.revoke();
                let Running { thread, seen, started, restart_base, restart_max, quarantine_after, .. } = r;
                let ended = thread.join().unwrap_or(Ended::new(0, true, None));
                self.cursors.insert(name.clone(), ended.delivered);
                if let Some(why) = &ended.crashed {
                    let quick = started.elapsed() < QUICK_DEATH;
                    if self.quarantines(&name, quick, ended.delivered, quarantine_after) {
                        self.quarantine(&name, seen, &ended, why);
                    } else {
                        self.crashed(&name, seen, started, (restart_base, restart_max), &ended, why);
                    }
                    continue;
                }
                if ended.failed {
                    // The line it failed on reached it: the next version gets it marked replayed.
                    self.failed_at.insert(name.clone(), ended.delivered + 1);
                }
                self.parked.insert(name.clone(), seen);
                self.view.update(&name, |s| {
                    s.state = "disabled".into();
                    s.delivered = ended.delivered;
                });
            }
        }
    }
}
