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
use crate::exit::Exit;
use crate::filllog::{FillLog, FillRecord};
use crate::rest::{RestClient, ACCOUNT, ALL_ORDERS, MY_TRADES, ORDER_QUERY};
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
/// Longest `startTime`..`endTime` window of one `myTrades` request (Binance caps it at 24 h).
const WINDOW_MS: i64 = 23 * 3_600_000;
/// Share of each rate limit reconciliation may use, leaving the rest for the listen-key calls
/// that keep the stream alive.
const RECONCILE_SHARE: u64 = 50;

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
    /// Re-read `exchangeInfo` (rate limits) this often.
    pub rules_refresh: Duration,
}

/// The saved per-symbol cursors: the `fromId` the next reconciliation starts at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursors {
    pub version: u32,
    pub next_from_id: BTreeMap<String, u64>,
    /// Symbols with no trade id yet (first start): read by time from here (server ms).
    #[serde(default)]
    pub since_ms: BTreeMap<String, i64>,
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
}

pub struct State {
    settings: StateSettings,
    rest: Arc<RestClient>,
    log: FillLog,
    cursors: Cursors,
    balances: HashMap<String, (Decimal, Decimal)>,
    /// Client ids of orders, by `(symbol, orderId)`: order ids are per symbol.
    client_ids: HashMap<(String, u64), String>,
    client_id_order: VecDeque<(String, u64)>,
    pending: VecDeque<FillRecord>,
    stream_up: bool,
    next_rules: Instant,
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
        // From the log, conservatively: the oldest fill it still holds exactly. The stream logs
        // fills ahead of the cursor, so the newest one may sit after a gap REST has yet to fill;
        // re-reading from the oldest costs a few pages and the dedupe skips what is there.
        let from_log = log.first_ids();
        let mut cursors = Cursors::load(&settings.state_dir).unwrap_or_else(|| Cursors {
            version: 1,
            next_from_id: from_log.iter().map(|(s, id)| (s.clone(), *id)).collect(),
            since_ms: BTreeMap::new(),
        });
        for symbol in &settings.symbols {
            // A symbol added since the cursors were saved: its logged fills still count.
            if let (None, Some(id)) = (cursors.next_from_id.get(symbol), from_log.get(symbol)) {
                cursors.next_from_id.insert(symbol.clone(), *id);
            }
        }
        log::info!(
            "state: fill log {} ({} lines), cursors {:?}",
            settings.fill_log.display(),
            report.lines,
            cursors.next_from_id
        );
        let rules_refresh = settings.rules_refresh;
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
            next_rules: Instant::now() + rules_refresh,
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
        loop {
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= self.next_rules {
                // Limits change (Binance.US raised them on 2026-08-31); the gate follows.
                match self.rest.exchange_info_background(&self.settings.symbols, RECONCILE_SHARE) {
                    Ok(_) => self.next_rules = now + self.settings.rules_refresh,
                    Err(e) => {
                        log::warn!("state: exchangeInfo refresh failed ({e}); retrying in a minute");
                        self.next_rules = now + Duration::from_secs(60).min(self.settings.rules_refresh);
                    }
                }
            }
            if now >= self.next_reconcile && !self.reconcile_all()? {
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
            StreamMsg::Event(event) => self.on_event(event),
        }
        Ok(())
    }

    fn on_event(&mut self, event: UserEvent) {
        match event {
            UserEvent::Execution(report) => {
                self.remember_client_id(&report.symbol, report.order_id, report.order_client_id().to_string());
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

    fn remember_client_id(&mut self, symbol: &str, order_id: u64, client_id: String) {
        let key = (symbol.to_string(), order_id);
        if client_id.is_empty() || self.client_ids.contains_key(&key) {
            return;
        }
        self.client_ids.insert(key.clone(), client_id);
        self.client_id_order.push_back(key);
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
        match self.rest.call_background::<Account>(&ACCOUNT, &[], RECONCILE_SHARE) {
            Ok(a) => {
                for b in a.balances {
                    self.balances.insert(b.asset, (b.free, b.locked));
                }
            }
            Err(e) => log::warn!("state: balance refresh failed: {e}"),
        }
    }

    /// Saves the cursors once every fill they pass is on disk (with `SYNCD_FSYNC=never` that
    /// takes an explicit sync first).
    fn save_cursors(&mut self) {
        if self.settings.fsync == FsyncPolicy::Never {
            if let Err(e) = self.log.sync() {
                log::error!("state: cannot sync the fill log ({e}); cursors not saved");
                return;
            }
        }
        if let Err(e) = self.cursors.save(&self.settings.state_dir) {
            log::error!("state: cannot save cursors: {e}");
        }
    }

    /// One pass over every symbol. `Ok(true)`: it stopped early for the rate gate and set its
    /// own next time.
    fn reconcile_all(&mut self) -> Result<bool, String> {
        self.stats.reconciles += 1;
        let symbols = self.settings.symbols.clone();
        let mut changed = false;
        let mut retry_after = None;
        for symbol in &symbols {
            match self.reconcile(symbol) {
                Ok(moved) => changed |= moved,
                Err(e) if e.is_auth_failure() => return Err(format!("API key refused during reconciliation: {e}")),
                Err(Error::Stopped) => break,
                // The whole exchange is out of reach for now: the other symbols would fare no
                // better. Come back when the gate allows.
                Err(Error::RateLimited { retry_after: wait }) | Err(Error::Banned { retry_after: wait }) => {
                    log::info!("reconcile {symbol}: rate gate holds for {wait:?}; resuming later");
                    retry_after = Some(wait);
                    break;
                }
                Err(e @ Error::Transport(_)) => {
                    log::warn!("reconcile {symbol}: {e}; will retry");
                    break;
                }
                // Anything else concerns this symbol only: the others still get their pass.
                Err(e) => log::warn!("reconcile {symbol}: {e}; will retry"),
            }
        }
        if changed {
            self.save_cursors();
        }
        if let Some(wait) = retry_after {
            let every = if self.stream_up { self.settings.reconcile_up } else { self.settings.reconcile_down };
            self.next_reconcile = Instant::now() + wait.clamp(Duration::from_millis(100), every.max(wait));
            return Ok(true);
        }
        Ok(false)
    }

    /// One REST pass for `symbol`. Returns whether the cursor moved. Never waits in the rate
    /// gate: a hold ends the pass with `RateLimited`, and stream fills keep being logged.
    ///
    /// The cursor is a trade id (`fromId`) once one is known. Before that (a first start, with
    /// no log) it is a time: a minute before the daemon started, so fills made while it was
    /// starting are kept without importing the account's history. Reading by time relies only
    /// on results being ascending (§5.12), in windows of under 24 h.
    fn reconcile(&mut self, symbol: &str) -> Result<bool, Error> {
        let mut moved = false;
        loop {
            let by_time = !self.cursors.next_from_id.contains_key(symbol);
            let now = self.rest.clock().now_ms();
            let mut window_end = now;
            let mut params: Vec<(&str, String)> = vec![("symbol", symbol.to_string())];
            match self.cursors.next_from_id.get(symbol) {
                Some(from) => params.push(("fromId", from.to_string())),
                None => {
                    let since = match self.cursors.since_ms.get(symbol) {
                        Some(s) => *s,
                        None => {
                            let s = self.started_ms - 60_000;
                            self.cursors.since_ms.insert(symbol.to_string(), s);
                            // Saved at once: a restart before the first trade must not move it.
                            self.save_cursors();
                            s
                        }
                    };
                    window_end = now.min(since + WINDOW_MS);
                    params.push(("startTime", since.to_string()));
                    params.push(("endTime", window_end.to_string()));
                }
            }
            params.push(("limit", PAGE.to_string()));
            let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let rows: Vec<serde_json::Value> = self.rest.call_background(&MY_TRADES, &borrowed, RECONCILE_SHARE)?;
            let count = rows.len();
            let mut page = Vec::with_capacity(count);
            for row in rows {
                // Row by row: a row we cannot read is skipped loudly instead of costing the page
                // (or, stopping there, every later fill of the symbol).
                match serde_json::from_value::<MyTrade>(row) {
                    Ok(t) => page.push(t),
                    Err(e) => log::error!("reconcile {symbol}: skipping a myTrades row that could not be read ({e})"),
                }
            }
            let fresh: Vec<&MyTrade> = page.iter().filter(|t| !self.log.contains(symbol, t.id)).collect();
            let unknown: Vec<u64> = fresh
                .iter()
                .map(|t| t.order_id)
                .filter(|o| !self.client_ids.contains_key(&(symbol.to_string(), *o)))
                .collect();
            self.learn_client_ids(symbol, &unknown)?;
            let mut last = None;
            for trade in page {
                last = Some(last.map_or(trade.id, |l: u64| l.max(trade.id)));
                if self.log.contains(symbol, trade.id) {
                    continue;
                }
                let client_id = self.client_ids.get(&(symbol.to_string(), trade.order_id)).cloned().unwrap_or_default();
                log::info!("reconcile {symbol}: trade {} came by REST", trade.id);
                self.accept(trade.into_fill(client_id));
            }
            if !self.pending.is_empty() {
                // Not durable yet: the cursor must not pass these fills.
                return Ok(moved);
            }
            match last {
                Some(id) => {
                    self.cursors.next_from_id.insert(symbol.to_string(), id + 1);
                    self.cursors.since_ms.remove(symbol);
                    moved = true;
                }
                None if by_time => {
                    // Nothing in this window. A window that ended before now moves on at once;
                    // one that reached now leaves a minute's margin for trades still landing.
                    let next = if window_end < now { window_end } else { now - 60_000 };
                    let since = self.cursors.since_ms.get(symbol).copied().unwrap_or(next);
                    if next > since {
                        self.cursors.since_ms.insert(symbol.to_string(), next);
                        moved = true;
                    }
                    if window_end < now {
                        continue;
                    }
                }
                None => {}
            }
            if count < PAGE {
                return Ok(moved);
            }
        }
    }

    /// Learns the client ids of `orders` (REST trades carry none): one `allOrders` page from
    /// the oldest of them (weight 20 for up to 1000 orders), then single lookups for any it did
    /// not cover. A transient failure aborts the pass so no fill is logged without its id; an
    /// order the exchange no longer knows (`-2013`, `-2026`) is logged with `""`.
    fn learn_client_ids(&mut self, symbol: &str, orders: &[u64]) -> Result<(), Error> {
        let Some(oldest) = orders.iter().min() else { return Ok(()) };
        let from = oldest.to_string();
        let listed: Vec<serde_json::Value> = self.rest.call_background(
            &ALL_ORDERS,
            &[("symbol", symbol), ("orderId", from.as_str()), ("limit", "1000")],
            RECONCILE_SHARE,
        )?;
        // Row by row: an order we cannot read is looked up on its own below.
        for o in listed.into_iter().filter_map(|row| serde_json::from_value::<QueriedOrder>(row).ok()) {
            self.remember_client_id(symbol, o.order_id, o.client_order_id);
        }
        for order_id in orders {
            let key = (symbol.to_string(), *order_id);
            if self.client_ids.contains_key(&key) {
                continue;
            }
            let id_text = order_id.to_string();
            match self.rest.call_background::<QueriedOrder>(
                &ORDER_QUERY,
                &[("symbol", symbol), ("orderId", id_text.as_str())],
                RECONCILE_SHARE,
            ) {
                Ok(o) => self.remember_client_id(symbol, o.order_id, o.client_order_id),
                Err(e) if matches!(e.api_code(), Some(-2013 | -2026)) => {
                    log::warn!("reconcile {symbol}: order {order_id} is unknown to the exchange; logging its fills without a client id");
                    self.client_ids.insert(key, String::new());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
