//! THREAD `plugins` (the watcher) and one THREAD `plugin:<name>` per loaded strategy, each
//! with its plugin-host child process.
//!
//! The watcher scans `SYNCD_PLUGIN_DIR` every `SYNCD_PLUGIN_SCAN_S` for `*.so` (and each one's
//! `NAME.conf`). A file counts once it has looked the same (size, mtime) for one scan, so an
//! install by `rename` is picked up whole. A new or changed file is copied to a private path in
//! the state dir with a fresh name (`dlopen` hands back an image it already holds for a path or
//! inode it has seen, so a rebuilt file under the old name could run old code) and loaded on a
//! new plugin thread; only once it loaded and its ABI checked out is the old version stopped and
//! its thread joined, and then the new one started from the old one's fill cursor. Two versions
//! never trade at once, and a file that does not load leaves the running version alone. A
//! removed file stops its plugin.
//!
//! Delivery is exactly once and in order. Every fill-log line has a sequence number; each
//! plugin's delivered cursor is kept in memory across swaps and in `plugins/NAME.cursor` in the
//! state dir across restarts. Lines reach a plugin thread through its own bounded channel from
//! the writer ([`FillTap`]); when that channel was full the thread sees a gap (or the log's
//! durable number ahead of it) and reads the missing lines from the file
//! ([`Reader`](crate::filllog::Reader)). A plugin never delays the writer, the executor or
//! another plugin. After a crash, lines the previous run may have delivered come again marked
//! `replayed`. A name seen for the first time starts at the end of the log, unless its settings
//! say `history = all`.
//!
//! Each plugin's code runs in a child process of its own (issue 21): the plugin thread starts
//! `binance-syncd plugin-host` ([`hostrole`]) with an empty environment and a socket pair as
//! its stdin/stdout, the child loads the private copy with the same [`ffi`] code, and every
//! callback becomes a round trip of [`proto`] frames ([`remote`]). Everything above stays in
//! the daemon: the fill log, the cursors, the executor, the keys. `isolation = none` in
//! `NAME.conf` loads the plugin into the daemon as before (a crash of it is then the daemon's).
//!
//! A plugin that panics or returns an error is disabled until its file changes. A plugin
//! whose process dies (a signal, an exit, a broken frame) or whose callback runs longer than
//! `SYNCD_PLUGIN_STALL_S` (its process is then killed) is started again from its cursor after
//! a backoff (`restart_backoff_ms`, default 1 s, doubling to `restart_backoff_max_ms`, 60 s,
//! while it keeps dying within a minute of its start), and the fill it was on comes again
//! marked replayed. In-process, a
//! stalled callback only gets its intents answered BUSY until it returns. Its open orders stay in
//! the executor's book, under its tag, for the next version.
//!
//! The files: this one holds the shared types ([`PluginHost`]'s fields, [`PluginView`]);
//! `watcher` the scan, `swap` loading and the swap sequence, `supervise` stalls, crash
//! restarts and quarantine, `runner` the plugin thread, `marshal` the records as messages,
//! `services` the host functions, `cursor` the cursor file, `settings` `NAME.conf`.

pub mod conform;
pub mod elf;
pub mod exec;
pub mod ffi;
pub mod harden;
pub mod hostrole;
pub mod proto;
pub mod remote;
mod spin;
mod stderr;
pub use crate::sys;
pub mod trust;
pub use remote::{set_host_program, usage, Usage};
pub use spin::SpinCounts;
pub use sys::euid;

mod cursor;
mod marshal;
mod runner;
mod services;
mod settings;
mod supervise;
mod swap;
mod wake;
mod watcher;
pub use settings::{tag_of, tag_taken, Options, MAX_SETTINGS};
pub use supervise::quarantined;

use crate::executor::{ExecutorLink, StrategyHandle};
use crate::filllog::FillTap;
use crate::lock::LockAnyway;
use crate::rules::LiveRules;
use crossbeam_channel::Sender;
use runner::Ended;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone)]
pub struct PluginSettings {
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    pub fill_log: PathBuf,
    pub scan_every: Duration,
    pub stall_after: Duration,
    pub tick_every: Duration,
    /// How long a plugin thread, told a fill is being written, waits for it awake
    /// (`SYNCD_PLUGIN_SPIN_US`); zero: it sleeps until the line is there.
    pub spin: Duration,
}

/// One plugin as the status line and tests see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    pub tag: String,
    /// `running`, `stalled`, `disabled`, `refused`, `stopped`.
    pub state: String,
    /// The last problem, in words.
    pub problem: String,
    /// Sequence number of the last fill delivered.
    pub delivered: u64,
    /// Fills waiting in its channel, as of the last delivery or tick.
    pub queued: u64,
    /// Versions loaded since the daemon started.
    pub loads: u64,
    /// The last swap's pause: the old version's last callback to the new one's first (µs).
    pub last_swap_pause_us: Option<u64>,
    /// Swaps whose pause was measured: set by the new version's thread a moment after `loads`
    /// moves, so a reader that wants this swap's pause waits for this to move too.
    pub pauses_timed: u64,
    /// What this version did with its heads-ups (`SYNCD_PLUGIN_SPIN_US`), as of its last
    /// delivery.
    pub heads_ups: SpinCounts,
    /// Times its process was started again after it died or was killed.
    pub restarts: u64,
    /// How its process last died (kept across the restart that follows), empty if never.
    pub last_exit: String,
    /// Its plugin-host process, 0 when none runs (or it runs in the daemon: `isolation = none`).
    pub pid: u32,
    /// This version's `on_book` calls, and books it did not get because a newer one of the
    /// same symbol came first (conflation: it was busy), as of its last book.
    pub books: u64,
    pub books_skipped: u64,
    /// This version's `on_trade` calls, and trades dropped from its full queue.
    pub trades: u64,
    pub trades_dropped: u64,
}

/// The watcher's view, shared with the daemon.
#[derive(Debug, Clone, Default)]
pub struct PluginView(Arc<Mutex<HashMap<String, PluginStatus>>>);

impl PluginView {
    pub fn get(&self, name: &str) -> Option<PluginStatus> {
        self.0.lock_anyway().get(name).cloned()
    }

    pub fn all(&self) -> Vec<PluginStatus> {
        let mut v: Vec<PluginStatus> = self.0.lock_anyway().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut PluginStatus)) {
        let mut map = self.0.lock_anyway();
        let entry = map
            .entry(name.to_string())
            .or_insert_with(|| PluginStatus { name: name.to_string(), ..Default::default() });
        f(entry);
    }
}

/// Size and modification time, and type, mode and owner: what "the file changed" means here
/// (a `chmod go-w` of a refused file is a change that gets it looked at again). Of the path
/// itself: a symlink is never followed.
/// The inode too: a file replaced by one with the same size and mtime (`cp -p`) is a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sig(u64, SystemTime, u32, u32, u64);

fn sig(path: &Path) -> Option<Sig> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path).ok()?;
    Some(Sig(m.len(), m.modified().ok()?, m.mode(), m.uid(), m.ino()))
}

/// The settings file's text and the image's signature: either changing restarts the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    image: Sig,
    conf: Option<Sig>,
    /// The plugin's file in the folder: `NAME.so`, or a program (`grid.py`, `mystrat`).
    file: String,
    kind: exec::Kind,
    /// Why it is refused when several files give its name ([`exec::clash`]).
    clash: Option<String>,
}

/// A crashed plugin waiting for its restart.
struct Restart {
    at: Instant,
    seen: Seen,
}

/// A running plugin thread.
struct Running {
    seen: Seen,
    /// `cancel_on_stop = true` in its settings: its orders go when its file does.
    cancel_on_stop: bool,
    stop: Option<Sender<()>>,
    thread: JoinHandle<Ended>,
    handle: StrategyHandle,
    /// ms since the epoch when the current callback began, 0 when none runs.
    busy_since: Arc<AtomicU64>,
    stalled: bool,
    /// In its own process: a stop may take up to the stall limit (the callback is then killed).
    isolated: bool,
    restart_base: Duration,
    /// The most its restart backoff doubles to (`restart_backoff_max_ms`, default 60 s).
    restart_max: Duration,
    /// Crashes in a row that quarantine it (0: never).
    quarantine_after: u32,
    started: Instant,
}

/// Everything the watcher owns.
pub struct PluginHost {
    settings: PluginSettings,
    executor: ExecutorLink,
    rules: LiveRules,
    tap: FillTap,
    view: PluginView,
    running: HashMap<String, Running>,
    /// Files refused or disabled, by what they looked like: not retried until they change.
    parked: HashMap<String, Seen>,
    /// Last scan's observation, for the stability rule.
    last_scan: HashMap<String, Seen>,
    generation: u64,
    /// Cursors of plugins stopped in this process (removed files), for a file put back.
    cursors: HashMap<String, u64>,
    /// Plugins whose thread did not stop: never restarted in this process.
    stuck: std::collections::HashSet<String>,
    /// The line each failed plugin failed on: its next version gets it marked replayed.
    failed_at: HashMap<String, u64>,
    /// The daemon's user: besides root, the only owner whose plugin files are trusted.
    euid: u32,
    /// Why the plugin folder is not trusted, while it is not (said once per reason).
    folder_refused: Option<String>,
    /// The plugin folder as [`trust::folder`] resolved and checked it: files are listed and
    /// opened under this path, never through a symlink on the configured one that was not.
    real_dir: PathBuf,
    /// The tag of each plugin that loaded, while its file is in the folder ([`tag_taken`]).
    tags: HashMap<String, String>,
    /// Plugins refused for a tag someone held: looked at again once a file is gone.
    tag_refused: std::collections::HashSet<String>,
    /// Crashed plugins and when they start again.
    restarts: HashMap<String, Restart>,
    /// The last restart delay of each plugin that crashed.
    backoff: HashMap<String, Duration>,
    /// Crashes in a row that count towards a quarantine, and the cursor at the last one.
    streaks: HashMap<String, (u32, u64)>,
    /// The market stream's view, whose feed brings books and trades to the plugins that
    /// export `on_book`, `on_trade` (none while the stream is off).
    market: Option<crate::market::MarketView>,
    /// Plugin threads say here that they end, so that a crash is restarted once its backoff is
    /// over rather than at a scan ([`wake`]).
    ending: (Sender<std::thread::ThreadId>, crossbeam_channel::Receiver<std::thread::ThreadId>),
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
