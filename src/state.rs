//! THREAD `state`: the one writer of the fill log, and the account state the stream reports.
//!
//! Fills arrive from two places: `executionReport` TRADE events from the stream (low latency)
//! and `myTrades` pages from REST reconciliation (complete). Both go through one dedupe by
//! `(symbol, trade_id)`, so a fill is logged once however often it is seen (the exchange may
//! send a TRADE twice, and reconciliation overlaps the stream by design).
//!
//! Reconciliation runs after every (re)connect, periodically while the stream is up, and on a
//! slower cadence while it is down, so fills keep flowing during an outage. Each pass reads
//! `myTrades?symbol=S&fromId=<cursor>` in pages of 1000 through the shared rate gate.
//!
//! The cursor (per symbol, the next `fromId`) only moves after a REST pass whose every fill is
//! durable in the log, and it is saved atomically (temp file, fsync, rename, fsync of the
//! directory). A fill the stream delivered past a missed one cannot move it, so the missed one
//! is found by the next pass. If the state file is missing or unreadable, cursors are rebuilt
//! from the fill log. If the log cannot be written (disk full), fills wait in memory, in order,
//! are retried every second with a loud error, and the cursor stays behind them.

use crate::config::FsyncPolicy;
use crate::decimal::Decimal;
use crate::error::Error;
use crate::filllog::{FillLog, FillRecord};
use crate::rest::{RestClient, ACCOUNT, MY_TRADES, ORDER_QUERY};
use crate::stream::StreamMsg;
use crate::wire::{MyTrade, QueriedOrder, UserEvent};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Rows per `myTrades` page: Binance's maximum.
const PAGE: usize = 1000;
/// Order ids whose client id we remember (from events or lookups).
const CLIENT_ID_CACHE: usize = 10_000;

#[derive(Debug, Clone)]
pub struct StateSettings {
    pub symbols: Vec<String>,
    pub state_dir: PathBuf,
    pub fill_log: PathBuf,
    pub fsync: FsyncPolicy,
    /// Reconcile this often while the stream is up (a safety net for dropped events).
    pub reconcile_up: Duration,
    /// Reconcile this often while the stream is down (fills keep flowing by REST).
    pub reconcile_down: Duration,
}

/// Why the daemon must stop, sent to `main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT: a clean stop, exit 0.
    Signal,
    /// A problem no retry can fix: one message, exit non-zero.
    Fatal(String),
    /// A core thread ended unexpectedly.
    Died(&'static str),
}

/// The saved per-symbol cursors: the `fromId` the next reconciliation starts at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursors {
    pub version: u32,
    pub next_from_id: BTreeMap<String, u64>,
}

impl Cursors {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("cursors.json")
    }

    /// `Ok(None)` if there is no file or it cannot be read as cursors (then they are rebuilt).
    pub fn load(state_dir: &Path) -> Option<Cursors> {
        let path = Cursors::path(state_dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("{}: {e}; rebuilding cursors from the fill log", path.display());
                return None;
            }
        };
        match serde_json::from_str::<Cursors>(&text) {
            Ok(c) if c.version == 1 => Some(c),
            _ => {
                log::warn!("{}: not a cursor file; rebuilding cursors from the fill log", path.display());
                None
            }
        }
    }

    /// Writes the file so that a crash leaves either the old or the new one, never a mix.
    pub fn save(&self, state_dir: &Path) -> Result<(), Error> {
        fs::create_dir_all(state_dir).map_err(Error::io(state_dir))?;
        let path = Cursors::path(state_dir);
        let tmp = state_dir.join("cursors.json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(|e| Error::Decode(e.to_string()))?;
        let mut f = File::create(&tmp).map_err(Error::io(&tmp))?;
        f.write_all(&body).map_err(Error::io(&tmp))?;
        f.sync_all().map_err(Error::io(&tmp))?;
        fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        if let Ok(dir) = File::open(state_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Counters for logs, tests and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateStats {
    pub logged: u64,
    pub duplicates: u64,
    pub reconciles: u64,
    pub write_failures: u64,
    pub bad_frames: u64,
}

pub struct State {
    settings: StateSettings,
    rest: Arc<RestClient>,
    log: FillLog,
    cursors: Cursors,
    balances: HashMap<String, (Decimal, Decimal)>,
    client_ids: HashMap<u64, String>,
    client_id_order: VecDeque<u64>,
    pending: VecDeque<FillRecord>,
    stream_up: bool,
    /// Server time when the daemon started (ms).
    started_ms: i64,
    next_reconcile: Instant,
    last_alert: Option<Instant>,
    pub stats: StateStats,
    /// Where each logged fill goes next (plugins, tests). A full or closed receiver never
    /// holds up the log.
    pub observers: Vec<Sender<FillRecord>>,
}

impl State {
    /// Opens the fill log (repairing a torn tail) and loads or rebuilds the cursors.
    pub fn open(settings: StateSettings, rest: Arc<RestClient>) -> Result<State, Error> {
        let (log, report) = FillLog::open(&settings.fill_log, settings.fsync)?;
        if report.torn_bytes > 0 || report.bad_lines > 0 {
            log::warn!(
                "{}: repaired on open (torn bytes {}, foreign lines {})",
                settings.fill_log.display(),
                report.torn_bytes,
                report.bad_lines
            );
        }
        let cursors = match Cursors::load(&settings.state_dir) {
            Some(c) => c,
            None => {
                // From the log: resume after the newest fill of each symbol.
                let next_from_id = log.last_ids().into_iter().map(|(s, id)| (s, id + 1)).collect();
                Cursors { version: 1, next_from_id }
            }
        };
        log::info!(
            "state: fill log {} ({} lines), cursors {:?}",
            settings.fill_log.display(),
            report.lines,
            cursors.next_from_id
        );
        Ok(State {
            settings,
            rest: rest.clone(),
            log,
            cursors,
            balances: HashMap::new(),
            client_ids: HashMap::new(),
            client_id_order: VecDeque::new(),
            pending: VecDeque::new(),
            stream_up: false,
            started_ms: rest.clock().now_ms(),
            next_reconcile: Instant::now(),
            last_alert: None,
            stats: StateStats::default(),
            observers: Vec::new(),
        })
    }

    pub fn balances(&self) -> &HashMap<String, (Decimal, Decimal)> {
        &self.balances
    }

    pub fn spawn(
        mut self,
        events: Receiver<StreamMsg>,
        stop: Receiver<()>,
        exit: Sender<Exit>,
    ) -> io::Result<JoinHandle<()>> {
        thread::Builder::new().name("state".into()).spawn(move || {
            if let Err(e) = self.run(&events, &stop) {
                let _ = exit.send(Exit::Fatal(e));
            }
            self.finish();
        })
    }

    /// Flushes what can be flushed before the process exits.
    fn finish(&mut self) {
        self.flush_pending();
        if let Err(e) = self.log.sync() {
            log::error!("state: final sync of the fill log failed: {e}");
        }
        if !self.pending.is_empty() {
            log::error!(
                "state: {} fills could not be written before exit; REST reconciliation will recover them at the next start",
                self.pending.len()
            );
        }
    }

    fn run(&mut self, events: &Receiver<StreamMsg>, stop: &Receiver<()>) -> Result<(), String> {
        self.refresh_balances();
        loop {
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= self.next_reconcile {
                self.reconcile_all()?;
                let every = if self.stream_up { self.settings.reconcile_up } else { self.settings.reconcile_down };
                self.next_reconcile = Instant::now() + every;
            }
            let mut wait = self.next_reconcile.saturating_duration_since(Instant::now());
            if !self.pending.is_empty() {
                wait = wait.min(Duration::from_secs(1));
            }
            crossbeam_channel::select_biased! {
                recv(stop) -> _ => return Ok(()),
                recv(events) -> msg => match msg {
                    Ok(msg) => self.on_stream(msg)?,
                    Err(_) => return Ok(()),
                },
                default(wait) => self.flush_pending(),
            }
        }
    }

    fn on_stream(&mut self, msg: StreamMsg) -> Result<(), String> {
        match msg {
            StreamMsg::Up { session } => {
                log::info!("state: stream up (session {session}); reconciling");
                self.stream_up = true;
                self.next_reconcile = Instant::now();
                self.refresh_balances();
            }
            StreamMsg::Down { reason } => {
                log::warn!("state: stream down ({reason}); fills continue over REST");
                self.stream_up = false;
                self.next_reconcile = self.next_reconcile.min(Instant::now() + self.settings.reconcile_down);
            }
            StreamMsg::Fatal(why) => return Err(why),
            StreamMsg::Event(event) => self.on_event(event),
        }
        Ok(())
    }

    fn on_event(&mut self, event: UserEvent) {
        match event {
            UserEvent::Execution(report) => {
                self.remember_client_id(report.order_id, report.order_client_id().to_string());
                if let Some(fill) = report.fill() {
                    self.accept(fill);
                } else {
                    log::debug!(
                        "order symbol={} order_id={} status={} exec={}",
                        report.symbol,
                        report.order_id,
                        report.status,
                        report.execution_type
                    );
                }
            }
            UserEvent::Position(p) => {
                for b in p.balances {
                    self.balances.insert(b.asset, (b.free, b.locked));
                }
            }
            UserEvent::BalanceUpdate(u) => {
                log::info!("balance update asset={} delta={}", u.asset, u.delta);
                let entry = self.balances.entry(u.asset).or_insert((Decimal::ZERO, Decimal::ZERO));
                entry.0 = entry.0.checked_add(u.delta).unwrap_or(entry.0);
            }
            UserEvent::ListStatus(l) => {
                log::debug!("list status symbol={} list={} status={}", l.symbol, l.order_list_id, l.list_order_status)
            }
            UserEvent::ListenKeyExpired | UserEvent::ServerShutdown | UserEvent::Unknown(_) => {}
        }
    }

    fn remember_client_id(&mut self, order_id: u64, client_id: String) {
        if client_id.is_empty() || self.client_ids.contains_key(&order_id) {
            return;
        }
        self.client_ids.insert(order_id, client_id);
        self.client_id_order.push_back(order_id);
        while self.client_id_order.len() > CLIENT_ID_CACHE {
            if let Some(old) = self.client_id_order.pop_front() {
                self.client_ids.remove(&old);
            }
        }
    }

    /// Logs a fill unless it is already in the log; keeps it in memory if the log fails.
    fn accept(&mut self, fill: FillRecord) {
        if self.log.contains(&fill.symbol, fill.trade_id)
            || self.pending.iter().any(|p| p.symbol == fill.symbol && p.trade_id == fill.trade_id)
        {
            self.stats.duplicates += 1;
            log::debug!("fill symbol={} trade_id={} already logged", fill.symbol, fill.trade_id);
            return;
        }
        self.pending.push_back(fill);
        self.flush_pending();
    }

    /// Writes waiting fills in order; stops at the first failure so order is kept.
    fn flush_pending(&mut self) {
        while let Some(fill) = self.pending.front() {
            match self.log.append(fill) {
                Ok(written) => {
                    let Some(fill) = self.pending.pop_front() else { break };
                    if written {
                        self.stats.logged += 1;
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
                        self.observers
                            .retain(|o| !matches!(o.try_send(fill.clone()), Err(TrySendError::Disconnected(_))));
                    }
                }
                Err(e) => {
                    self.stats.write_failures += 1;
                    let loud = self.last_alert.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                    if loud {
                        log::error!(
                            "{e}: cannot write the fill log; {} fills held in memory, retrying every second",
                            self.pending.len()
                        );
                        self.last_alert = Some(Instant::now());
                    }
                    return;
                }
            }
        }
    }

    fn refresh_balances(&mut self) {
        #[derive(Deserialize)]
        struct Account {
            balances: Vec<AccountBalance>,
        }
        #[derive(Deserialize)]
        struct AccountBalance {
            asset: String,
            free: Decimal,
            locked: Decimal,
        }
        match self.rest.call_json::<Account>(&ACCOUNT, &[]) {
            Ok(a) => {
                for b in a.balances {
                    self.balances.insert(b.asset, (b.free, b.locked));
                }
            }
            Err(e) => log::warn!("state: balance refresh failed: {e}"),
        }
    }

    fn reconcile_all(&mut self) -> Result<(), String> {
        self.stats.reconciles += 1;
        let symbols = self.settings.symbols.clone();
        let mut changed = false;
        for symbol in &symbols {
            match self.reconcile(symbol) {
                Ok(moved) => changed |= moved,
                Err(e) if e.is_auth_failure() => return Err(format!("API key refused during reconciliation: {e}")),
                Err(Error::Stopped) => return Ok(()),
                Err(e) => {
                    log::warn!("reconcile {symbol}: {e}; will retry");
                    break;
                }
            }
        }
        if changed {
            if let Err(e) = self.cursors.save(&self.settings.state_dir) {
                log::error!("state: cannot save cursors: {e}");
            }
        }
        Ok(())
    }

    /// One REST pass for `symbol`. Returns whether the cursor moved.
    fn reconcile(&mut self, symbol: &str) -> Result<bool, Error> {
        let start = self.cursors.next_from_id.get(symbol).copied();
        let mut from = match start {
            Some(f) => f,
            None => self.first_cursor(symbol)?,
        };
        let mut moved = start != Some(from);
        loop {
            let from_text = from.to_string();
            let limit = PAGE.to_string();
            let page: Vec<MyTrade> = self.rest.call_json(
                &MY_TRADES,
                &[("symbol", symbol), ("fromId", from_text.as_str()), ("limit", limit.as_str())],
            )?;
            let count = page.len();
            let mut last = None;
            for trade in page {
                last = Some(trade.id);
                if self.log.contains(symbol, trade.id) {
                    continue;
                }
                let client_id = self.client_id_for(symbol, trade.order_id);
                log::info!("reconcile {symbol}: trade {} came by REST", trade.id);
                self.accept(trade.into_fill(client_id));
            }
            if !self.pending.is_empty() {
                // Not durable yet: the cursor must not pass these fills.
                return Ok(moved);
            }
            if let Some(id) = last {
                from = id + 1;
                self.cursors.next_from_id.insert(symbol.to_string(), from);
                moved = true;
            }
            if count < PAGE {
                if moved {
                    self.cursors.next_from_id.insert(symbol.to_string(), from);
                }
                return Ok(moved);
            }
        }
    }

    /// No cursor and nothing in the log for `symbol`: a first start. Follow trades from a
    /// minute before the daemon started, so fills made while it was starting are not lost,
    /// without importing the account's whole history.
    fn first_cursor(&mut self, symbol: &str) -> Result<u64, Error> {
        let since = self.started_ms - 60_000;
        let since_text = since.to_string();
        let recent: Vec<MyTrade> = self
            .rest
            .call_json(&MY_TRADES, &[("symbol", symbol), ("startTime", since_text.as_str()), ("limit", "1")])?;
        let next = match recent.first() {
            Some(t) => t.id,
            None => {
                let latest: Vec<MyTrade> = self.rest.call_json(&MY_TRADES, &[("symbol", symbol), ("limit", "1")])?;
                // A trade made between the two requests is newer than `since`: include it.
                latest.last().map_or(0, |t| if t.time >= since { t.id } else { t.id + 1 })
            }
        };
        log::info!("reconcile {symbol}: first start; following trades from id {next}");
        self.cursors.next_from_id.insert(symbol.to_string(), next);
        Ok(next)
    }

    fn client_id_for(&mut self, symbol: &str, order_id: u64) -> String {
        if let Some(id) = self.client_ids.get(&order_id) {
            return id.clone();
        }
        let id_text = order_id.to_string();
        match self.rest.call_json::<QueriedOrder>(&ORDER_QUERY, &[("symbol", symbol), ("orderId", id_text.as_str())]) {
            Ok(o) => {
                self.remember_client_id(o.order_id, o.client_order_id.clone());
                o.client_order_id
            }
            Err(e) => {
                log::warn!("reconcile {symbol}: client id of order {order_id} unknown ({e})");
                String::new()
            }
        }
    }
}
