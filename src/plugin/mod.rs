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
//! durable number ahead of it) and reads the missing lines from the file ([`Reader`]). A plugin
//! never delays the writer, the executor or another plugin. After a crash, lines the previous
//! run may have delivered come again marked `replayed`. A name seen for the first time starts
//! at the end of the log, unless its settings say `history = all`.
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
//! while it keeps dying within a minute of its start), and the fill it was on comes again marked replayed. In-process, a
//! stalled callback only gets its intents refused until it returns. Its open orders stay in
//! the executor's book, under its tag, for the next version.

pub mod elf;
pub mod ffi;
pub mod harden;
pub mod hostrole;
pub mod proto;
pub mod remote;
mod spin;
mod wake;
pub use crate::sys;
pub mod trust;
pub use remote::{set_host_program, usage, Usage};
pub use spin::SpinCounts;
pub use sys::euid;

use crate::decimal::Decimal;
use crate::executor::{ExecutorLink, Intent, OrderReport, Outcome, Reply, StrategyHandle};
use crate::filllog::{FillRecord, FillTap, Reader};
use crate::lock::LockAnyway;
use crate::model::{OrderRef, Side};
use crate::rules::LiveRules;
use binance_syncd_plugin::abi;
use crossbeam_channel::{Receiver, Sender};
use ffi::{HostServices, IntentIn, Plugin};
use proto::{Call, FillMsg, UpdateMsg};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// Lines a plugin's channel holds before it reads the file instead.
const CHANNEL: usize = 1024;
/// Lines read from the file per batch while catching up.
const BATCH: usize = 256;
/// How long a stop waits for a plugin thread to end.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Joins `t` if it ends within `limit`; otherwise leaves it running (detached).
fn join_within<T>(t: JoinHandle<T>, limit: Duration) -> bool {
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
}

fn conf_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.conf"))
}

/// `key = value` of a settings text.
fn setting<'a>(settings: &'a str, key: &str) -> Option<&'a str> {
    settings.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// The tag a plugin's file name gives it: the name's first 8 letters and digits.
fn name_tag(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).take(8).collect()
}

/// The strategy tag: the settings' `tag`, else the name's; and whether the settings chose it.
pub fn tag_of(name: &str, settings: &str) -> (String, bool) {
    match setting(settings, "tag") {
        Some(t) => (t.to_string(), true),
        None => (name_tag(name), false),
    }
}

/// Why `name` may not trade under `tag`, if another plugin holds it: one that took it first
/// (`holders`: name → tag of the plugins loaded and still in the folder, whose orders stay in
/// the book under it), or, for a tag claimed in settings, another file whose name gives it.
/// A plugin keeps a tag it already holds. Settings text is the later claimer: a file's name
/// is there before anyone's settings can point at it.
pub fn tag_taken<'a>(
    name: &str,
    tag: &str,
    claimed_in_settings: bool,
    holders: &HashMap<String, String>,
    names: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    if holders.get(name).is_some_and(|t| t == tag) {
        return None;
    }
    if let Some((other, _)) = holders.iter().filter(|(n, t)| *n != name && *t == tag).min() {
        return Some(format!("tag {tag} is already held by plugin {other}"));
    }
    if claimed_in_settings {
        if let Some(other) = names.into_iter().filter(|n| *n != name && name_tag(n) == tag).min() {
            return Some(format!("tag {tag} (from {name}.conf) is plugin {other}'s, from its file name"));
        }
    }
    None
}

/// Settings larger than this are refused: they are a few lines.
pub const MAX_SETTINGS: u64 = 64 * 1024;

/// A plugin's saved cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct SavedCursor {
    delivered: u64,
    /// False while the plugin runs: a file that says false at start means the last run crashed.
    clean: bool,
}

fn cursor_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("plugins").join(format!("{name}.cursor"))
}

/// What the state dir says of a plugin's cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CursorFile {
    /// No file: a name seen for the first time.
    Missing,
    Saved(SavedCursor),
    /// A file that exists but cannot be read or parsed (torn, emptied, garbled): never taken
    /// for "first seen", which would start at the log's end and skip what came after it.
    Unreadable(String),
}

fn load_cursor(state_dir: &Path, name: &str) -> CursorFile {
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
fn start_from(file: &CursorFile, history_all: bool, durable: u64) -> Go {
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
fn save_cursor(state_dir: &Path, name: &str, c: SavedCursor) {
    let path = cursor_path(state_dir, name);
    let dir = state_dir.join("plugins");
    if let Err(e) = crate::statedir::write_private(&dir, &path, &serde_json::to_vec(&c).unwrap_or_default()) {
        log::warn!("plugin {name}: cannot save its cursor ({e}); a restart may replay fills");
    }
}

/// Intents a plugin may have unanswered (queued in the executor, in flight, or answered and
/// not yet handed to it), unless its settings say `max_pending`: past that `submit` answers
/// `STATUS_BUSY`, so what the daemon holds for a plugin does not grow with what it submits.
const MAX_PENDING: usize = 1024;

/// Crashes in a row (each within [`QUICK_DEATH`] of its start, or on the same fill as the one
/// before) that quarantine a plugin, unless its settings say `quarantine_after`.
const QUARANTINE_AFTER: u32 = 3;
const QUICK_DEATH: Duration = Duration::from_secs(10);

/// `plugins/NAME.quarantine`: why, and which file (inode, size, mtime) it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Quarantine {
    reason: String,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

fn quarantine_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("plugins").join(format!("{name}.quarantine"))
}

/// The identity of `dir/NAME.so` (not followed): what "its file changed" means to a quarantine.
fn image_identity(dir: &Path, name: &str) -> Option<(u64, u64, (i64, i64))> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(dir.join(format!("{name}.so"))).ok()?;
    Some((m.ino(), m.len(), (m.mtime(), m.mtime_nsec())))
}

/// Why `NAME.so` in `dir` is quarantined, if its quarantine (in `state_dir`) holds this very
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

/// Where a new version starts.
#[derive(Debug, Clone, Copy)]
struct Go {
    delivered: u64,
    /// Lines up to here may have been delivered before a crash.
    replay_until: u64,
    /// When the previous version's last callback returned (a swap).
    previous_last_call: Option<Instant>,
}

/// How a plugin thread ended.
#[derive(Debug, Clone)]
struct Ended {
    delivered: u64,
    failed: bool,
    last_call: Option<Instant>,
    /// Its process died or was killed (a crash, not a status): why. It is started again.
    crashed: Option<String>,
    /// Killed for a callback over `SYNCD_PLUGIN_STALL_S`.
    stalled: bool,
}

impl Ended {
    fn new(delivered: u64, failed: bool, last_call: Option<Instant>) -> Ended {
        Ended { delivered, failed, last_call, crashed: None, stalled: false }
    }
}

/// Restart backoff: from the plugin's `restart_backoff_ms` (default 1 s), doubling after each
/// crash that comes within [`BACKOFF_MAX`] of its start, up to that.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A crashed plugin waiting for its restart.
struct Restart {
    at: Instant,
    seen: Seen,
}

/// How a plugin runs: in its own plugin-host process (the default) or in the daemon.
enum Guest {
    Local(Plugin),
    Remote(remote::Remote),
}

impl Guest {
    fn version(&self) -> &str {
        match self {
            Guest::Local(p) => p.version(),
            Guest::Remote(r) => r.version(),
        }
    }

    fn abi_minor(&self) -> u32 {
        match self {
            Guest::Local(p) => p.abi_minor(),
            Guest::Remote(r) => r.abi_minor(),
        }
    }

    fn call(&mut self, call: &Call) -> abi::Status {
        match self {
            Guest::Local(p) => proto::invoke(p, call),
            Guest::Remote(r) => r.call(call),
        }
    }

    /// Why its process is gone, and whether it was killed for a stall.
    fn gone(&self) -> Option<(String, bool)> {
        match self {
            Guest::Local(_) => None,
            Guest::Remote(r) => r.gone().map(|g| (g.to_string(), r.stalled())),
        }
    }
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
    /// Plugin threads say here that they end, so that a crash is restarted once its backoff is
    /// over rather than at a scan ([`wake`]).
    ending: (Sender<thread::ThreadId>, Receiver<thread::ThreadId>),
}

fn several_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

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
        }
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

    /// The `.so` files of the folder and what they look like; `quiet`: an unreadable folder
    /// was already reported.
    fn listing(&self, quiet: bool) -> HashMap<String, Seen> {
        let mut now: HashMap<String, Seen> = HashMap::new();
        match fs::read_dir(&self.real_dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let path = e.path();
                    if path.extension().and_then(|x| x.to_str()) != Some("so") {
                        continue;
                    }
                    let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(String::from) else { continue };
                    if let Some(image) = sig(&path) {
                        now.insert(name.clone(), Seen { image, conf: sig(&conf_path(&self.real_dir, &name)) });
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
    fn folder_trusted(&mut self) -> bool {
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
    fn resting_tags(&self) -> std::collections::HashSet<String> {
        if self.tags.is_empty() {
            return Default::default();
        }
        self.executor
            .view()
            .open_orders
            .iter()
            .filter_map(|o| o.client_order_id.strip_prefix("sd-")?.split('-').next().map(String::from))
            .collect()
    }

    fn scan(&mut self) {
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
    fn reap(&mut self) {
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

    fn watch_stalls(&mut self) {
        let limit = self.settings.stall_after.as_millis() as u64;
        for (name, r) in self.running.iter_mut() {
            let since = r.busy_since.load(Ordering::Acquire);
            let stalled = since != 0 && now_ms().saturating_sub(since) > limit;
            if stalled != r.stalled {
                r.stalled = stalled;
                r.handle.set_paused(stalled);
                if stalled {
                    log::error!(
                        "plugin {name}: a callback has run for over {:?}; its intents are refused until it returns",
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
    fn crashed(
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
    fn quarantines(&mut self, name: &str, quick: bool, delivered: u64, after: u32) -> bool {
        let streak = match self.streaks.get(name) {
            Some(&(n, at)) if quick || at == delivered => n + 1,
            _ => 1,
        };
        self.streaks.insert(name.to_string(), (streak, delivered));
        after != 0 && streak >= after
    }

    /// Parks a plugin that keeps dying until its file changes, in the state dir too (a daemon
    /// restart keeps it), where `check` sees it.
    fn quarantine(&mut self, name: &str, seen: Seen, ended: &Ended, why: &str) {
        let streak = self.streaks.remove(name).map_or(0, |(n, _)| n);
        self.backoff.remove(name);
        self.failed_at.insert(name.to_string(), ended.delivered + 1);
        let reason = format!(
            "quarantined: its process died {streak} times in a row, each soon after its start or on the same \
             fill (last: {why}, after fill #{}); replace {name}.so to release it",
            ended.delivered
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
    fn held_in_quarantine(&mut self, name: &str, seen: &Seen) -> bool {
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

    /// Loads `name`'s current file on a new thread; on success stops the old version and starts
    /// the new one where the old one stopped.
    fn swap(&mut self, name: &str, seen: Seen, folder: &HashMap<String, Seen>) {
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
        // Everything read from here on is read from a checked descriptor (`trust`).
        let image = match trust::open(&self.real_dir.join(format!("{name}.so")), self.euid) {
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
        let isolated = match setting(&settings_text, "isolation") {
            None | Some("process") => true,
            Some("none") => false,
            Some(other) => {
                return refuse(self, format!("{name}.conf: isolation = {other:?}: `process` (the default) or `none`"))
            }
        };
        let restart_base = match setting(&settings_text, "restart_backoff_ms") {
            None => BACKOFF_BASE,
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms).min(BACKOFF_MAX),
                _ => return refuse(self, format!("{name}.conf: restart_backoff_ms = {v:?}: a number of ms above 0")),
            },
        };
        let restart_max = match setting(&settings_text, "restart_backoff_max_ms") {
            None => BACKOFF_MAX,
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms).clamp(restart_base, BACKOFF_MAX),
                _ => {
                    return refuse(self, format!("{name}.conf: restart_backoff_max_ms = {v:?}: a number of ms above 0"))
                }
            },
        };
        let limits = match remote::Limits::from_settings(name, &settings_text) {
            Ok(l) => l,
            Err(why) => return refuse(self, why),
        };
        let quarantine_after = match setting(&settings_text, "quarantine_after") {
            None => QUARANTINE_AFTER,
            Some(v) => match v.parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    return refuse(
                        self,
                        format!("{name}.conf: quarantine_after = {v:?}: a number of crashes (0: never)"),
                    )
                }
            },
        };
        let max_pending = match setting(&settings_text, "max_pending") {
            None => MAX_PENDING,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return refuse(self, format!("{name}.conf: max_pending = {v:?}: a number of intents above 0")),
            },
        };
        let restarting = self.restarts.remove(name).is_some();
        if !restarting {
            // A version loaded for a change, not a crash, starts a streak of its own.
            self.streaks.remove(name);
        }
        let (tag, explicit) = tag_of(name, &settings_text);
        let cancel_on_stop = setting(&settings_text, "cancel_on_stop") == Some("true");
        let history_all = setting(&settings_text, "history") == Some("all");
        let mut holders = self.tags.clone();
        for (n, r) in &self.running {
            holders.insert(n.clone(), r.handle.tag().to_string());
        }
        // Only a trusted file's name gives a tag: a file nobody may load claims nothing.
        let trusted = folder.keys().filter(|n| trust::file_trusted(&self.real_dir.join(format!("{n}.so")), self.euid));
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
        let staged = images.join(format!("{name}-{}-{}.so", std::process::id(), self.generation));
        if let Err(e) = fs::create_dir_all(&images) {
            return refuse(self, format!("cannot create {}: {e}", images.display()));
        }
        let _ = fs::remove_file(&staged); // a leftover of a crashed run of this pid
        if let Err(why) = image.copy_to(&staged) {
            return refuse(self, format!("{name}.so {why}"));
        }
        drop(image);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<String, String>>(1);
        let (go_tx, go_rx) = crossbeam_channel::bounded::<Go>(1);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let busy_since = Arc::new(AtomicU64::new(0));
        let hears_heads_up = !self.settings.spin.is_zero() && several_cpus();
        let runner = Runner {
            isolated,
            limits,
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
        let version = match loaded {
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
    fn stop_plugin(&mut self, name: &str) -> Option<Ended> {
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

/// One plugin's thread: the only thread its code ever runs on.
struct Runner {
    /// In a plugin-host process of its own (`isolation`, default) rather than this thread.
    isolated: bool,
    limits: remote::Limits,
    stall: Duration,
    /// The plugin-host's working directory.
    workdir: PathBuf,
    name: String,
    tag: String,
    settings_text: String,
    staged: PathBuf,
    state_dir: PathBuf,
    fill_log: PathBuf,
    tick_every: Duration,
    fills: Receiver<FillRecord>,
    heads_up: Receiver<()>,
    /// `heads_up` is subscribed (a spin budget and two or more CPUs), not `never()`.
    hears_heads_up: bool,
    spin: Duration,
    tap: FillTap,
    replies: Receiver<Reply>,
    reports: Receiver<OrderReport>,
    handle: StrategyHandle,
    rules: LiveRules,
    executor: ExecutorLink,
    busy_since: Arc<AtomicU64>,
    view: PluginView,
    last_call: std::cell::Cell<Option<Instant>>,
}

/// What the plugin's host callbacks reach.
struct Services {
    name: String,
    handle: StrategyHandle,
    rules: LiveRules,
    /// The plugin's declared ABI minor, once loaded: whether it knows `STATUS_BUSY`.
    abi_minor: Arc<std::sync::atomic::AtomicU32>,
}

fn parse_side(v: u8) -> Result<Side, i32> {
    match v {
        abi::SIDE_BUY => Ok(Side::Buy),
        abi::SIDE_SELL => Ok(Side::Sell),
        _ => Err(abi::STATUS_REFUSED),
    }
}

impl HostServices for Services {
    fn submit(&self, i: IntentIn<'_>) -> Result<u64, i32> {
        let refused = abi::STATUS_REFUSED;
        let dec = |s: &str| s.parse::<Decimal>().map_err(|_| refused);
        let order = || {
            if i.order_id != 0 {
                Ok(OrderRef::Id(i.order_id))
            } else if !i.client_order_id.is_empty() {
                Ok(OrderRef::ClientId(i.client_order_id.to_string()))
            } else {
                Err(refused)
            }
        };
        let symbol = i.symbol.to_string();
        let intent = match i.kind {
            abi::INTENT_PLACE => {
                Intent::Place { symbol, side: parse_side(i.side)?, price: dec(i.price)?, qty: dec(i.qty)? }
            }
            abi::INTENT_CANCEL => Intent::Cancel { symbol, order: order()? },
            abi::INTENT_CANCEL_ALL => Intent::CancelAll { symbol },
            abi::INTENT_REPLACE => Intent::Replace {
                symbol,
                order: order()?,
                side: parse_side(i.side)?,
                price: dec(i.price)?,
                qty: dec(i.qty)?,
            },
            _ => return Err(refused),
        };
        self.handle.submit(intent).map_err(|e| {
            log::debug!("plugin {}: intent refused: {e}", self.name);
            match e {
                crate::executor::SubmitError::Busy if self.abi_minor.load(Ordering::Relaxed) >= 3 => abi::STATUS_BUSY,
                _ => refused,
            }
        })
    }

    fn log(&self, level: i32, msg: &str) {
        let level = match level {
            abi::LOG_ERROR => log::Level::Error,
            abi::LOG_WARN => log::Level::Warn,
            abi::LOG_INFO => log::Level::Info,
            _ => log::Level::Debug,
        };
        // Bounded: a plugin must not be able to flood the daemon's log with one call.
        let msg: String = msg.chars().take(2000).collect();
        log::log!(target: "binance_syncd::plugin", level, "plugin {}: {msg}", self.name);
    }

    fn rules(&self, symbol: &str) -> Option<String> {
        self.rules.snapshot().raw_symbols.get(symbol).map(|v| v.to_string())
    }
}

impl Runner {
    fn run(self, ready: Sender<Result<String, String>>, go: Receiver<Go>, stop: Receiver<()>) -> Ended {
        let abi_minor = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let services = Box::new(Services {
            name: self.name.clone(),
            handle: self.handle.clone(),
            rules: self.rules.clone(),
            abi_minor: abi_minor.clone(),
        });
        let loaded = if self.isolated {
            remote::Remote::spawn(&self.staged, &self.workdir, services, self.stall, self.limits).map(Guest::Remote)
        } else {
            Plugin::load(&self.staged, services).map(Guest::Local).map_err(|e| e.to_string())
        };
        let mut plugin = match loaded {
            Ok(p) => p,
            Err(e) => {
                let _ = ready.send(Err(e));
                return Ended::new(0, true, None);
            }
        };
        abi_minor.store(plugin.abi_minor(), Ordering::Relaxed);
        let _ = ready.send(Ok(plugin.version().to_string()));
        let go = go.recv();
        self.handle.set_paused(false);
        let Ok(go) = go else {
            // Refused after loading (the swap was abandoned): never started.
            return Ended::new(0, false, None);
        };
        let pid = match &plugin {
            Guest::Remote(r) => r.pid(),
            Guest::Local(_) => 0,
        };
        self.view.update(&self.name, |s| s.pid = pid);
        let mut run = Delivery {
            delivered: go.delivered,
            replay_until: go.replay_until,
            reader: Reader::new(&self.fill_log),
            reader_stuck_logged: None,
        };
        save_cursor(&self.state_dir, &self.name, SavedCursor { delivered: run.delivered, clean: false });
        let snapshot = self.snapshot();
        if let Some(previous) = go.previous_last_call {
            let pause = previous.elapsed().as_micros() as u64;
            self.view.update(&self.name, |s| {
                s.last_swap_pause_us = Some(pause);
                s.pauses_timed += 1;
            });
        }
        let start = Call::Start { name: self.name.clone(), settings: self.settings_text.clone(), snapshot };
        let started = self.call(|| plugin.call(&start));
        if started != abi::STATUS_OK {
            return self.ended(plugin, &run, started, "start");
        }
        let mut prices: HashMap<String, (Decimal, Decimal)> = HashMap::new();
        let mut balances: HashMap<String, (Decimal, Decimal)> = HashMap::new();
        let mut next_tick = Instant::now();
        let mut last_save = Instant::now();
        let mut spin = spin::SpinPolicy::new(self.spin);
        // This version's counts, not the last one's, from its start.
        self.view.update(&self.name, |s| s.heads_ups = SpinCounts::default());
        let outcome = loop {
            // Ticks (and prices, balances) keep their pace even while fills keep arriving.
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + self.tick_every;
                if let Err(status) = self.tick(&mut plugin, &mut prices, &mut balances) {
                    break Err(status);
                }
                // Also here, not only after a delivery: a queue that drained (or a plugin that
                // gets no fills) would otherwise show its last depth for ever.
                let queued = self.fills.len() as u64;
                self.view.update(&self.name, |s| s.queued = queued);
            }
            // Lines the channel could not hold, or that came before this version started. Not
            // while the channel has lines: they are taken from there (a gap before them is read
            // from the file then), not read again from the file because `durable` moved first.
            if self.tap.durable() > run.delivered && self.fills.is_empty() {
                if let Err(status) = self.catch_up(&mut plugin, &mut run, self.tap.durable()) {
                    break Err(status);
                }
                spin.forget();
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            crossbeam_channel::select_biased! {
                recv(stop) -> _ => break Ok(()),
                recv(self.fills) -> fill => {
                    let Ok(fill) = fill else { break Ok(()) };
                    if fill.seq <= run.delivered {
                        continue;
                    }
                    if fill.seq > run.delivered + 1 {
                        if let Err(status) = self.catch_up(&mut plugin, &mut run, fill.seq - 1) {
                            break Err(status);
                        }
                        spin.forget();
                    }
                    if let Err(status) = self.deliver(&mut plugin, &mut run, &fill) {
                        break Err(status);
                    }
                    if self.hears_heads_up {
                        if spin.delivered(self.tap.published_instant(fill.seq)) && self.heads_up.try_recv().is_ok() {
                            spin.late();
                        }
                        self.view.update(&self.name, |s| s.heads_ups = spin.counts);
                    }
                    // Once per burst (or every 100 ms of a steady flow), not per line: the next
                    // line's callback must not wait for a file write. A crash in between only
                    // means lines come again, marked.
                    if self.fills.is_empty() || last_save.elapsed() >= Duration::from_millis(100) {
                        save_cursor(&self.state_dir, &self.name, SavedCursor { delivered: run.delivered, clean: false });
                        last_save = Instant::now();
                    }
                }
                recv(self.heads_up) -> _ => {
                    // A line is being written: stay on the CPU for it (bounded, since it may
                    // be a duplicate that never comes) rather than pay a wake-up once it is
                    // durable, unless recent lines took longer than that (`spin`). Not
                    // yielding: under load a yield hands the CPU away for a whole time slice.
                    // With one CPU the spin would only delay the writer, so the host
                    // subscribes to heads-ups only with two or more (`Runner::heads_up`).
                    if spin.announced(Instant::now()) {
                        let until = Instant::now() + self.spin;
                        while self.fills.is_empty() && Instant::now() < until {
                            std::hint::spin_loop();
                        }
                        spin.spun(!self.fills.is_empty());
                    }
                }
                recv(self.replies) -> reply => {
                    let Ok(reply) = reply else { continue };
                    if !reply.resolved {
                        self.handle.answered(); // taken off its budget (`max_pending`)
                    }
                    let status = self.order_update(&mut plugin, &reply);
                    if status != abi::STATUS_OK {
                        break Err(status);
                    }
                }
                recv(self.reports) -> report => {
                    let Ok(report) = report else { continue };
                    let status = self.order_report(&mut plugin, &report);
                    if status != abi::STATUS_OK {
                        break Err(status);
                    }
                }
                default(wait) => {}
            }
        };
        if let Err(status) = outcome {
            return self.ended(plugin, &run, status, "a callback");
        }
        let status = self.call(|| plugin.call(&Call::Stop));
        if let Some((why, _)) = plugin.gone() {
            // Killed at its stop (over the stall limit) or dead in it: it was going anyway, and
            // every fill it was sent was acknowledged, so this is no crash and the next version
            // gets nothing marked replayed.
            log::warn!("plugin {}: {why} at its stop", self.name);
        } else if status != abi::STATUS_OK {
            self.failed(status, "stop");
        }
        self.handle.revoke();
        drop(plugin); // destroy, then close the library: this thread is the only one it ran on
        self.finish(&run, true);
        Ended::new(run.delivered, false, self.last_call.get())
    }

    /// The end of a version whose callback returned `status` (not OK), or whose process is
    /// gone: disabled for a status, started again for a crash (by the watcher).
    fn ended(&self, plugin: Guest, run: &Delivery, status: i32, what: &str) -> Ended {
        self.handle.revoke();
        let gone = plugin.gone();
        drop(plugin);
        self.finish(run, false);
        let mut ended = Ended::new(run.delivered, true, self.last_call.get());
        match gone {
            Some((why, stalled)) => {
                ended.crashed = Some(why);
                ended.stalled = stalled;
            }
            None => self.failed(status, what),
        }
        ended
    }

    fn finish(&self, run: &Delivery, clean: bool) {
        save_cursor(&self.state_dir, &self.name, SavedCursor { delivered: run.delivered, clean });
        self.view.update(&self.name, |s| s.delivered = run.delivered);
    }

    fn failed(&self, status: i32, what: &str) {
        let why =
            if status == abi::STATUS_PANICKED { "panicked".to_string() } else { format!("returned status {status}") };
        log::error!("plugin {}: {what} {why}; disabled until its file changes", self.name);
        self.view.update(&self.name, |s| s.problem = format!("{what} {why}"));
    }

    /// Runs one callback with the stall clock on.
    fn call(&self, f: impl FnOnce() -> abi::Status) -> abi::Status {
        self.busy_since.store(now_ms().max(1), Ordering::Release);
        let status = f();
        self.busy_since.store(0, Ordering::Release);
        self.last_call.set(Some(Instant::now()));
        status
    }

    fn catch_up(&self, plugin: &mut Guest, run: &mut Delivery, until: u64) -> Result<(), i32> {
        while run.delivered < until {
            let batch = match run.reader.read_after(run.delivered, until, BATCH) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!("plugin {}: cannot read the fill log ({e}); retrying", self.name);
                    return Ok(());
                }
            };
            let gaps = run.reader.take_gaps();
            let skipped = |from: u64, to: &FillRecord| gaps.iter().any(|&(f, l)| f <= from && l + 1 >= to.seq);
            if batch.first().is_none_or(|f| f.seq != run.delivered + 1 && !skipped(run.delivered + 1, f)) {
                let quiet = run.reader_stuck_logged.is_some_and(|t| t.elapsed() < Duration::from_secs(10));
                if !batch.is_empty() && !quiet {
                    log::error!(
                        "plugin {}: fill #{} is not in the fill log where it should be; waiting for it",
                        self.name,
                        run.delivered + 1
                    );
                    run.reader_stuck_logged = Some(Instant::now());
                }
                return Ok(()); // not readable yet (or a log that was replaced); the next wake tries again
            }
            for fill in &batch {
                if fill.seq > run.delivered + 1 && skipped(run.delivered + 1, fill) {
                    log::error!(
                        "plugin {}: fills #{}..#{} are in no readable file of the fill log (rotated away \
                         compressed, or deleted); skipping them",
                        self.name,
                        run.delivered + 1,
                        fill.seq - 1
                    );
                    run.delivered = fill.seq - 1;
                }
                self.deliver(plugin, run, fill)?;
            }
            save_cursor(&self.state_dir, &self.name, SavedCursor { delivered: run.delivered, clean: false });
        }
        Ok(())
    }

    fn deliver(&self, plugin: &mut Guest, run: &mut Delivery, fill: &FillRecord) -> Result<(), i32> {
        if fill.seq != run.delivered + 1 {
            return Ok(()); // never out of order: the caller fills the gap first
        }
        let call = Call::Fill(FillMsg {
            seq: fill.seq,
            trade_id: fill.trade_id,
            order_id: fill.order_id,
            time_ms: fill.time,
            symbol: fill.symbol.clone(),
            client_order_id: fill.client_order_id.clone(),
            price: fill.price.to_string(),
            qty: fill.qty.to_string(),
            quote_qty: fill.quote_qty.to_string(),
            commission: fill.commission.to_string(),
            commission_asset: fill.commission_asset.clone(),
            side: if fill.side == Side::Sell { abi::SIDE_SELL } else { abi::SIDE_BUY },
            maker: fill.maker,
            replayed: fill.seq <= run.replay_until,
        });
        // Returns once the plugin's `on_fill` returned: in its own process, its acknowledgement.
        let status = self.call(|| plugin.call(&call));
        if status != abi::STATUS_OK {
            // Not counted: the next version gets this line again (marked replayed: this one
            // did see it).
            return Err(status);
        }
        run.delivered = fill.seq;
        let queued = self.fills.len() as u64;
        self.view.update(&self.name, |s| (s.delivered, s.queued) = (fill.seq, queued));
        Ok(())
    }

    fn order_update(&self, plugin: &mut Guest, reply: &Reply) -> abi::Status {
        let mut u = UpdateMsg { request: reply.request, resolved: reply.resolved, ..Default::default() };
        match &reply.outcome {
            Outcome::Placed(p) => {
                u.kind = abi::UPDATE_PLACED;
                placed_fields(&mut u, p);
            }
            Outcome::Replaced { placed, .. } => {
                u.kind = abi::UPDATE_REPLACED;
                placed_fields(&mut u, placed);
            }
            Outcome::Canceled(c) => {
                u.kind = abi::UPDATE_CANCELED;
                u.symbol = c.symbol.clone();
                u.order_id = c.order_id;
                u.client_order_id = c.client_order_id.clone();
            }
            Outcome::CanceledAll { symbol, canceled, failed } => {
                u.kind = abi::UPDATE_CANCELED_ALL;
                u.symbol = symbol.clone();
                u.reason = format!("{} canceled, {} failed", canceled.len(), failed.len());
            }
            Outcome::Refused { rule, reason } => {
                u.kind = abi::UPDATE_REFUSED;
                u.status = rule.clone();
                u.reason = reason.clone();
            }
            Outcome::Rejected { code, msg, .. } => {
                u.kind = abi::UPDATE_REJECTED;
                u.code = *code;
                u.reason = msg.clone();
            }
            Outcome::Unknown { client_order_id } => {
                u.kind = abi::UPDATE_UNKNOWN;
                u.client_order_id = client_order_id.clone();
            }
            Outcome::NotDone { client_order_id, reason } => {
                u.kind = abi::UPDATE_NOT_DONE;
                u.client_order_id = client_order_id.clone();
                u.reason = reason.clone();
            }
            Outcome::Unresolved { client_order_id, reason } => {
                // A plugin built before ABI 1.2 does not know the kind (the SDK then read any
                // unknown kind as NotDone, the one reading that is false here): it gets a
                // resolved UNKNOWN, which says just as much.
                u.kind = if plugin.abi_minor() >= 2 { abi::UPDATE_UNRESOLVED } else { abi::UPDATE_UNKNOWN };
                u.client_order_id = client_order_id.clone();
                u.reason = reason.clone();
            }
        }
        let call = Call::Order(u);
        self.call(|| plugin.call(&call))
    }

    /// A stream report of one of its orders, as an order update with request 0.
    fn order_report(&self, plugin: &mut Guest, r: &OrderReport) -> abi::Status {
        let o = &r.order;
        let call = Call::Order(UpdateMsg {
            request: 0,
            order_id: o.order_id,
            code: 0,
            symbol: o.symbol.clone(),
            client_order_id: o.client_order_id.clone(),
            price: o.price.to_string(),
            qty: o.orig_qty.to_string(),
            status: r.status.clone(),
            reason: format!("{}; executed {} of {}", r.execution, o.executed_qty, o.orig_qty),
            kind: abi::UPDATE_REPORT,
            side: if o.side == Side::Sell { abi::SIDE_SELL } else { abi::SIDE_BUY },
            resolved: false,
        });
        self.call(|| plugin.call(&call))
    }

    /// The periodic tick, plus price and balance updates when the executor's view changed.
    fn tick(
        &self,
        plugin: &mut Guest,
        prices: &mut HashMap<String, (Decimal, Decimal)>,
        balances: &mut HashMap<String, (Decimal, Decimal)>,
    ) -> Result<(), i32> {
        let (quotes, assets) = self.executor.market();
        for (symbol, bid, ask) in &quotes {
            if prices.get(symbol) == Some(&(*bid, *ask)) {
                continue;
            }
            prices.insert(symbol.clone(), (*bid, *ask));
            let call = Call::Price { symbol: symbol.clone(), bid: bid.to_string(), ask: ask.to_string() };
            let status = self.call(|| plugin.call(&call));
            if status != abi::STATUS_OK {
                return Err(status);
            }
        }
        for (asset, free, locked) in &assets {
            if balances.get(asset) == Some(&(*free, *locked)) {
                continue;
            }
            balances.insert(asset.clone(), (*free, *locked));
            let call = Call::Balance { asset: asset.clone(), free: free.to_string(), locked: locked.to_string() };
            let status = self.call(|| plugin.call(&call));
            if status != abi::STATUS_OK {
                return Err(status);
            }
        }
        let status = self.call(|| plugin.call(&Call::Tick { now_ms: now_ms() as i64 }));
        if status != abi::STATUS_OK {
            return Err(status);
        }
        Ok(())
    }

    /// `start`'s JSON: the symbols' rules, balances and the strategy's own open orders.
    fn snapshot(&self) -> String {
        let rules = self.rules.snapshot();
        let view = self.executor.view();
        let prefix = format!("sd-{}-", self.tag);
        let orders: Vec<serde_json::Value> = view
            .open_orders
            .iter()
            .filter(|o| o.client_order_id.starts_with(&prefix))
            .map(|o| {
                serde_json::json!({"symbol": o.symbol, "order_id": o.order_id, "client_order_id": o.client_order_id,
                    "side": o.side.as_str(), "price": o.price.to_string(), "orig_qty": o.orig_qty.to_string(),
                    "executed_qty": o.executed_qty.to_string()})
            })
            .collect();
        let balances: Vec<serde_json::Value> = view
            .balances
            .iter()
            .map(|(a, f, l)| serde_json::json!({"asset": a, "free": f.to_string(), "locked": l.to_string()}))
            .collect();
        serde_json::json!({"tag": self.tag, "symbols": rules.raw_symbols, "balances": balances, "open_orders": orders})
            .to_string()
    }
}

/// An update's fields for an order the executor placed.
fn placed_fields(u: &mut UpdateMsg, p: &crate::executor::Placed) {
    u.symbol = p.symbol.clone();
    u.order_id = p.order_id;
    u.client_order_id = p.client_order_id.clone();
    u.side = if p.side == Side::Sell { abi::SIDE_SELL } else { abi::SIDE_BUY };
    u.price = p.price.to_string();
    u.qty = p.qty.to_string();
    u.status = p.status.clone();
    u.reason = p
        .adjustments
        .iter()
        .map(|a| format!("{} {} -> {}: {}", a.field, a.asked, a.sent, a.why))
        .collect::<Vec<_>>()
        .join("; ");
}

/// A plugin's place in the fill log.
struct Delivery {
    delivered: u64,
    replay_until: u64,
    reader: Reader,
    /// When a missing line was last complained about.
    reader_stuck_logged: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holders(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect()
    }

    #[test]
    fn a_tag_held_by_another_loaded_plugin_is_refused_to_the_later_claimer() {
        let held = holders(&[("grid_maker", "gridmake")]);
        let why = tag_taken("thief", "gridmake", true, &held, ["grid_maker", "thief"]).unwrap();
        assert_eq!(why, "tag gridmake is already held by plugin grid_maker");
        // The holder itself, restarting with the same tag, keeps it.
        assert_eq!(tag_taken("grid_maker", "gridmake", false, &held, ["grid_maker", "thief"]), None);
        // A name that derives a held tag is refused too: the first holder keeps its orders.
        assert!(tag_taken("grid_maker2", "gridmake", false, &held, ["grid_maker", "grid_maker2"]).is_some());
    }

    #[test]
    fn settings_cannot_claim_the_tag_another_file_name_gives() {
        // Neither loaded yet: the file name wins over the settings' claim, whatever the order.
        let why = tag_taken("thief", "gridmake", true, &HashMap::new(), ["grid_maker", "thief"]).unwrap();
        assert_eq!(why, "tag gridmake (from thief.conf) is plugin grid_maker's, from its file name");
        assert_eq!(tag_taken("grid_maker", "gridmake", false, &HashMap::new(), ["grid_maker", "thief"]), None);
        // A claim of a tag no other file's name gives and nobody holds is fine.
        assert_eq!(tag_taken("thief", "mytag", true, &HashMap::new(), ["grid_maker", "thief"]), None);
    }

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
    fn tag_of_prefers_the_settings_and_says_so() {
        assert_eq!(tag_of("grid_maker", "levels = 3\n"), ("gridmake".to_string(), false));
        assert_eq!(tag_of("grid_maker", "tag = g2 # mine\n"), ("g2".to_string(), true));
    }
}
