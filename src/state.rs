//! THREAD `state`: the one writer of the fill log. It performs no network I/O, so a stream
//! fill never waits behind a REST request (issue 14).
//!
//! Fills arrive from two places: `executionReport` TRADE events from the stream (low latency)
//! and `myTrades` pages that the `reconcile` thread read over REST (complete). Both go through
//! one dedupe by `(symbol, trade_id)`, so a fill is logged once however often it is seen (the
//! exchange may send a TRADE twice, and reconciliation overlaps the stream by design).
//!
//! The cursor (per symbol, the next `fromId`) lives here and only moves when the reconciler
//! commits a page whose every fill is durable in the log; it is saved atomically (temp file,
//! fsync, rename, fsync of the directory). A fill the stream delivered past a missed one cannot
//! move it, so the missed one is found by the next pass. If the state file is missing or
//! unreadable, cursors are rebuilt from the fill log. If the log cannot be written (disk full),
//! fills wait in memory, in order, are retried every second with a loud error, and the cursor
//! stays behind them. The decisions themselves are in [`crate::reconcile::cursor`].

use crate::error::Error;
use crate::filllog::{Carry, FileCheck, FillLog, FillRecord, FillTap, FsyncPolicy};
use crate::notify::Notifier;
use crate::reconcile::cursor::{Cursors, Journal, Ledger};
use crate::reconcile::Reported;
use crate::reconcile::{Answer, Ask, Heard, WriterLink};
use crate::registry::Source;
use crate::stream::StreamMsg;
use crate::wire::{ExecutionReport, Refusal, UserEvent};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct StateSettings {
    pub symbols: Vec<String>,
    pub state_dir: PathBuf,
    pub fill_log: PathBuf,
    pub fsync: FsyncPolicy,
    /// The fill log's permission bits (`SYNCD_FILL_LOG_MODE`).
    pub fill_log_mode: u32,
    /// How often the fill log's file is looked at (deleted, truncated, renamed without SIGHUP).
    pub check_every: Duration,
    pub metrics: std::sync::Arc<crate::registry::Metrics>,
}

/// Where the cursors are saved.
pub fn cursors_path(state_dir: &Path) -> PathBuf {
    state_dir.join("cursors.json")
}

/// The saved cursors, or `None` if there is no file or it cannot be trusted (then they are
/// rebuilt from the log).
fn load_cursors(state_dir: &Path) -> Option<Cursors> {
    let path = cursors_path(state_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("{}: {e}; rebuilding cursors from the fill log", path.display());
            return None;
        }
    };
    let cursors = Cursors::parse(&text);
    if cursors.is_none() {
        log::warn!("{}: not a cursor file; rebuilding cursors from the fill log", path.display());
    }
    cursors
}

/// Writes the file so that a crash leaves either the old or the new one, never a mix.
fn save_cursors(cursors: &Cursors, state_dir: &Path) -> Result<(), Error> {
    let body = serde_json::to_vec_pretty(cursors).map_err(|e| Error::Decode(e.to_string()))?;
    save_atomic(state_dir, &cursors_path(state_dir), &body)
}

/// Temp file (0600), fsync, rename, fsync of the directory.
fn save_atomic(state_dir: &Path, path: &Path, body: &[u8]) -> Result<(), Error> {
    crate::statedir::write_private(state_dir, path, body)
}

/// Where the fill log's [`Carry`] is saved: the last `seq` and the dedupe's ids, written at
/// every rotation and shutdown, so that a new, empty file after a rotation continues the
/// numbering (plugin cursors are `seq` numbers) and still knows which fills were logged.
pub fn carry_path(state_dir: &Path) -> PathBuf {
    state_dir.join("filllog.json")
}

fn load_carry(state_dir: &Path) -> Option<Carry> {
    let path = carry_path(state_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("{}: {e}; numbering from the fill log alone", path.display());
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn!("{}: not a fill-log carry file ({e}); numbering from the fill log alone", path.display());
            None
        }
    }
}

impl Journal for FillLog {
    fn contains(&self, symbol: &str, trade_id: u64) -> bool {
        FillLog::contains(self, symbol, trade_id)
    }

    fn stage(&mut self, fill: &mut FillRecord) -> Result<bool, Error> {
        FillLog::stage(self, fill)
    }

    fn commit(&mut self) -> Result<(), Error> {
        FillLog::commit(self)
    }

    fn keep_from(&mut self, symbol: &str, cursor: u64) {
        FillLog::keep_from(self, symbol, cursor)
    }
}

pub struct State {
    settings: StateSettings,
    ledger: Ledger<FillLog>,
    /// The cursors moved since they were last saved.
    unsaved: bool,
    last_alert: Option<Instant>,
    /// Where each durable fill goes next (plugins): never waits for a follower.
    tap: FillTap,
    /// When each stream fill still waiting to be written was read off the socket.
    read_at: HashMap<(String, u64), Instant>,
    notify: Notifier,
    stream_up: bool,
    /// Fills written by this run.
    written: u64,
    /// Since when the log's path has not named the file being written (no SIGHUP yet).
    renamed_since: Option<Instant>,
    /// Taking in a burst of stream events: fills wait for one flush at its end.
    deferring: bool,
    /// Stream reports refused as fills and already reported (the exchange may send one twice).
    refused: Reported,
}

/// Stream events taken into one flush at most (a bound on how long the first one waits).
const BURST: usize = 64;

impl State {
    /// Opens the fill log (repairing a torn tail) and loads or rebuilds the cursors.
    pub fn open(settings: StateSettings, tap: FillTap) -> Result<State, Error> {
        let carry = load_carry(&settings.state_dir);
        // The saved cursors bind the dedupe before the files are read: no id a cursor has not
        // passed may go into its floor, whatever the files hold (issue 19). Lost cursors are
        // rebuilt from the log below, from the oldest id it still knows exactly.
        let loaded = load_cursors(&settings.state_dir);
        let keep_from = loaded.as_ref().map(|c| c.keep_from_all(&settings.symbols)).unwrap_or_default();
        let (log, report) = FillLog::open_bounded(
            &settings.fill_log,
            settings.fsync,
            carry.as_ref(),
            &keep_from,
            settings.fill_log_mode,
        )?;
        if report.torn_bytes > 0 || report.bad_lines > 0 {
            log::warn!(
                "{}: repaired on open (torn bytes {}, foreign lines {})",
                settings.fill_log.display(),
                report.torn_bytes,
                report.bad_lines
            );
        }
        let cursors = Cursors::rebuild(loaded, &log.first_ids(), &settings.symbols);
        tap.set_durable(log.last_seq());
        log::info!(
            "state: fill log {} ({} lines), cursors {:?}",
            settings.fill_log.display(),
            report.lines,
            cursors.next_from_id
        );
        let mut ledger = Ledger::new(log, cursors);
        ledger.bind(&settings.symbols);
        let state = State {
            settings,
            ledger,
            unsaved: false,
            last_alert: None,
            tap,
            read_at: HashMap::new(),
            notify: Notifier::default(),
            stream_up: false,
            written: 0,
            renamed_since: None,
            deferring: false,
            refused: Reported::new(1000),
        };
        // What this start read (rotated files included) is now in the carry: if the live file
        // is rotated and the daemon dies before the SIGHUP, the next start still knows it even
        // after logrotate compressed the file.
        state.save_carry();
        Ok(state)
    }

    /// The periodic look at the fill log's file (`SYNCD_FILL_LOG_CHECK_S`).
    fn check_file(&mut self) {
        let path = self.settings.fill_log.display().to_string();
        match self.ledger.journal_mut().check() {
            Ok(FileCheck::Same) => self.renamed_since = None,
            Ok(FileCheck::Renamed) => match self.renamed_since {
                None => {
                    // A rotation between its rename and its SIGHUP looks like this too.
                    log::info!("state: {path} was renamed; still writing to the renamed file until SIGHUP");
                    self.renamed_since = Some(Instant::now());
                }
                Some(since) if since.elapsed() >= self.settings.check_every => {
                    // A rotation without its SIGHUP: if logrotate compresses the renamed file
                    // later, whatever is still written to it would be lost.
                    log::warn!(
                        "state: {path} renamed {} s ago and no SIGHUP came; reopening as if one had (add the \
                         postrotate SIGHUP to the rotation)",
                        since.elapsed().as_secs()
                    );
                    self.reopen();
                }
                Some(_) => {}
            },
            Ok(FileCheck::Deleted) => {
                log::error!(
                    "state: {path} was deleted while open; the fills written to it are in no file now (the \
                     dedupe still knows them); starting a new file there. Rotate by renaming, then SIGHUP"
                );
                self.reopen();
            }
            Ok(FileCheck::Truncated { from, to }) => log::error!(
                "state: {path} was cut from {from} to {to} bytes from outside; the fills cut are gone from it (the \
                 dedupe still knows them). Never truncate it (no copytruncate): rotate by renaming, then SIGHUP"
            ),
            Err(e) => log::warn!("state: cannot check the fill log ({e})"),
        }
    }

    /// Where the watchdog pings and status lines go (systemd; see [`crate::notify`]).
    pub fn supervised_by(mut self, notify: Notifier) -> State {
        self.notify = notify;
        self
    }

    /// The one-line status for the supervisor.
    fn status(&self) -> String {
        // Fills waiting for a burst's flush are not held back by a failing log.
        let held = if self.deferring { 0 } else { self.ledger.held() };
        format!(
            "stream {} | fills logged {} this run, last seq {}{}",
            if self.stream_up { "up" } else { "down" },
            self.written,
            self.ledger.journal().last_seq(),
            if held > 0 { format!(" | {held} fills HELD (fill log not writable)") } else { String::new() }
        )
    }

    /// `SIGHUP`: the fill log was renamed (logrotate); write on in a new file at its path. The
    /// carry is saved first, so a restart before the new file's first line still numbers on.
    fn reopen(&mut self) {
        self.save_carry();
        match self.ledger.journal_mut().reopen() {
            Ok(true) => {
                self.renamed_since = None;
                log::info!(
                    "state: fill log reopened at {} (rotation); numbering goes on after seq {}",
                    self.settings.fill_log.display(),
                    self.ledger.journal().last_seq()
                )
            }
            Ok(false) => log::info!("state: SIGHUP, but {} is still the same file", self.settings.fill_log.display()),
            // Still writing to the old file (nothing is lost); the next SIGHUP tries again.
            Err(e) => log::error!("state: cannot reopen the fill log ({e}); still writing to the old file"),
        }
    }

    fn save_carry(&self) {
        let carry = self.ledger.journal().carry();
        let path = carry_path(&self.settings.state_dir);
        let saved = serde_json::to_vec(&carry)
            .map_err(|e| Error::Decode(e.to_string()))
            .and_then(|body| save_atomic(&self.settings.state_dir, &path, &body));
        if let Err(e) = saved {
            log::error!("state: cannot save {}: {e}", path.display());
        }
    }

    /// The cursors as opened: the reconciler starts from a copy.
    pub fn cursors(&self) -> &Cursors {
        self.ledger.cursors()
    }

    /// `reopen`: one message per `SIGHUP` (log rotation).
    pub fn spawn(
        mut self,
        events: Receiver<StreamMsg>,
        link: WriterLink,
        reopen: Receiver<()>,
        stop: Receiver<()>,
    ) -> io::Result<JoinHandle<()>> {
        thread::Builder::new().name("state".into()).spawn(move || {
            self.run(&events, &link, &reopen, &stop);
            self.finish();
        })
    }

    /// Flushes what can be flushed before the process exits.
    fn finish(&mut self) {
        self.flush();
        if let Err(e) = self.ledger.journal_mut().sync() {
            log::error!("state: final sync of the fill log failed: {e}");
        }
        if self.unsaved && self.ledger.held() == 0 {
            self.save_cursors();
        }
        if self.ledger.held() > 0 {
            log::error!(
                "state: {} fills could not be written before exit; REST reconciliation will recover them at the next start",
                self.ledger.held()
            );
        }
        self.save_carry();
    }

    fn run(&mut self, events: &Receiver<StreamMsg>, link: &WriterLink, reopen: &Receiver<()>, stop: &Receiver<()>) {
        let mut asks = link.asks.clone();
        let mut reopen = reopen.clone();
        // The watchdog pings come from this loop, so a writer that stops turning stops them.
        let beat_every = self.notify.watchdog_every().or(self.notify.enabled().then_some(Duration::from_secs(10)));
        let mut next_beat = Instant::now();
        let mut next_check = Instant::now() + self.settings.check_every;
        loop {
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return;
            }
            if let Some(every) = beat_every {
                if Instant::now() >= next_beat {
                    self.notify.beat(&self.status());
                    next_beat = Instant::now() + every;
                }
            }
            if Instant::now() >= next_check {
                self.check_file();
                next_check = Instant::now() + self.settings.check_every;
            }
            let mut wait = if self.ledger.held() > 0 { Duration::from_secs(1) } else { Duration::from_secs(60) };
            if beat_every.is_some() {
                wait = wait.min(next_beat.saturating_duration_since(Instant::now()));
            }
            wait = wait.min(next_check.saturating_duration_since(Instant::now()));
            // Stream events first: they are the fills someone is waiting for.
            crossbeam_channel::select_biased! {
                recv(stop) -> _ => return,
                recv(reopen) -> msg => match msg {
                    Ok(()) => self.reopen(),
                    Err(_) => reopen = crossbeam_channel::never(),
                },
                recv(events) -> msg => match msg {
                    Ok(msg) => {
                        // Events already queued behind this one go into the same commit: a
                        // burst of fills costs one fdatasync, not one each.
                        self.deferring = true;
                        self.on_stream(msg, &link.heard);
                        for _ in 1..BURST {
                            match events.try_recv() {
                                Ok(msg) => self.on_stream(msg, &link.heard),
                                Err(_) => break,
                            }
                        }
                        self.deferring = false;
                        // Only when the burst brought fills: most events (balances, order
                        // updates) bring none, and there is nothing to commit then.
                        if self.ledger.held() > 0 {
                            self.flush();
                        }
                    }
                    Err(_) => return,
                },
                recv(asks) -> ask => match ask {
                    Ok(ask) => {
                        let answer = self.on_ask(ask);
                        // Never blocks: the reconciler waits for each answer before it asks
                        // again, so the one slot is free unless it has gone (stopping).
                        let _ = link.answers.try_send(answer);
                    }
                    // The reconciler ended; `Daemon::wait` sees that. Keep logging the stream.
                    Err(_) => asks = crossbeam_channel::never(),
                },
                default(wait) => self.flush(),
            }
        }
    }

    fn on_stream(&mut self, msg: StreamMsg, heard: &Sender<Heard>) {
        // A send fails only once the reconciler has ended, which `Daemon::wait` reports.
        match msg {
            StreamMsg::Up { session } => {
                log::info!("state: stream up (session {session}); reconciling");
                self.stream_up = true;
                self.notify.status(&self.status());
                let _ = heard.send(Heard::Up);
            }
            StreamMsg::Down { reason } => {
                log::warn!("state: stream down ({reason}); fills continue over REST");
                self.stream_up = false;
                self.notify.status(&self.status());
                let _ = heard.send(Heard::Down);
            }
            StreamMsg::Event(event, read_at) => self.on_event(event, heard, read_at),
        }
    }

    fn on_event(&mut self, event: UserEvent, heard: &Sender<Heard>, read_at: Instant) {
        match event {
            UserEvent::Execution(report) => {
                let client_id = report.order_client_id();
                if !client_id.is_empty() {
                    let _ = heard.send(Heard::ClientId {
                        symbol: report.symbol.clone(),
                        order_id: report.order_id,
                        client_id: client_id.to_string(),
                    });
                }
                match report.fill() {
                    Ok(Some(fill)) if self.settings.symbols.contains(&fill.symbol) => self.accept(fill, read_at),
                    Ok(Some(fill)) => self.refuse(&report, &Refusal::Untracked(fill.symbol)),
                    Err(why) => self.refuse(&report, &why),
                    Ok(None) => log::debug!(
                        "order symbol={} order_id={} status={} exec={}",
                        report.symbol,
                        report.order_id,
                        report.status,
                        report.execution_type
                    ),
                }
            }
            UserEvent::BalanceUpdate(u) => log::info!("balance update asset={} delta={}", u.asset, u.delta),
            UserEvent::ListStatus(l) => {
                log::debug!("list status symbol={} list={} status={}", l.symbol, l.order_list_id, l.list_order_status)
            }
            UserEvent::Position(_)
            | UserEvent::ListenKeyExpired
            | UserEvent::ServerShutdown
            | UserEvent::Unknown(_) => {}
        }
    }

    fn on_ask(&mut self, ask: Ask) -> Answer {
        match ask {
            Ask::Unknown { symbol, ids } => Answer::Unknown(self.ledger.unknown(&symbol, &ids)),
            Ask::Commit { symbol, fills, advance, save } => {
                for fill in fills {
                    self.ledger.offer(fill);
                }
                self.flush();
                let durable = self.ledger.held() == 0;
                if self.ledger.advance(&symbol, advance) {
                    self.unsaved = true;
                }
                if save && self.unsaved {
                    self.save_cursors();
                }
                Answer::Committed { durable }
            }
        }
    }

    /// A stream `TRADE` that is not a fill the log can take: reported once, counted, not logged.
    fn refuse(&mut self, report: &ExecutionReport, why: &Refusal) {
        let what = format!("a stream TRADE report (trade id {}, order id {})", report.trade_id, report.order_id);
        let key = (report.symbol.as_str(), report.trade_id, report.order_id, why.reason());
        self.refused.refuse(&self.settings.metrics, Source::Stream, &what, key, why);
    }

    /// Logs a fill unless it is already in the log; keeps it in memory if the log fails.
    fn accept(&mut self, fill: FillRecord, read_at: Instant) {
        let (symbol, trade_id) = (fill.symbol.clone(), fill.trade_id);
        if self.ledger.offer(fill) {
            self.read_at.insert((symbol, trade_id), read_at);
            if !self.deferring {
                self.flush();
            }
        } else {
            log::debug!("fill symbol={symbol} trade_id={trade_id} already logged");
        }
    }

    /// Writes waiting fills in order; stops at the first failure so order is kept.
    fn flush(&mut self) {
        let flushed = self.ledger.flush();
        for fill in flushed.written {
            // Timed first (durable is now), then handed on before the line is logged:
            // formatting and writing it to stderr is not the followers' to wait for.
            crate::metrics::fill_logged(
                &self.settings.metrics,
                &fill,
                self.read_at.remove(&(fill.symbol.clone(), fill.trade_id)),
            );
            self.tap.publish(&fill);
            log::info!(
                "fill symbol={} side={} qty={} price={} trade_id={} order_id={} maker={}",
                fill.symbol,
                fill.side,
                fill.qty,
                fill.price,
                fill.trade_id,
                fill.order_id,
                fill.maker
            );
            self.written += 1;
        }
        if self.ledger.held() == 0 {
            // Fills offered but not written (already in the log) leave nothing behind.
            self.read_at.clear();
            self.settings.metrics.filllog_ok();
        }
        if let Some(e) = flushed.failed {
            self.settings.metrics.filllog_failed();
            let loud = self.last_alert.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
            if loud {
                log::error!(
                    "{e}: cannot write the fill log; {} fills held in memory, retrying every second",
                    self.ledger.held()
                );
                self.last_alert = Some(Instant::now());
            }
        }
    }

    /// Saves the cursors once every fill they pass is on disk (with `SYNCD_FSYNC=never` that
    /// takes an explicit sync first).
    fn save_cursors(&mut self) {
        if self.settings.fsync == FsyncPolicy::Never {
            if let Err(e) = self.ledger.journal_mut().sync() {
                log::error!("state: cannot sync the fill log ({e}); cursors not saved");
                return;
            }
        }
        match save_cursors(self.ledger.cursors(), &self.settings.state_dir) {
            Ok(()) => self.unsaved = false,
            Err(e) => log::error!("state: cannot save cursors: {e}"),
        }
    }
}
