//! THREAD `plugin:NAME`: one version of one plugin, in its own process or in the daemon; fills
//! delivered by seq (from the channel, or the file when the channel overflowed), ticks,
//! prices, balances and order updates, each callback with the stall clock on.

use super::cursor::{save_cursor, CursorSaver, Go, SavedCursor};
use super::services::Services;
use super::spin::{self, SpinCounts};
use super::{ffi::Plugin, marshal, now_ms, proto, remote, PluginView};
use crate::decimal::Decimal;
use crate::executor::{ExecutorLink, OrderReport, Reply, StrategyHandle};
use crate::filllog::{FillRecord, FillTap, Reader};
use crate::rules::LiveRules;
use binance_syncd_plugin::abi;
use crossbeam_channel::{Receiver, Sender};
use proto::Call;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines read from the file per batch while catching up.
pub(super) const BATCH: usize = 256;

/// How a plugin thread ended.
#[derive(Debug, Clone)]
pub(super) struct Ended {
    pub(super) delivered: u64,
    pub(super) failed: bool,
    pub(super) last_call: Option<Instant>,
    /// Its process died or was killed (a crash, not a status): why. It is started again.
    pub(super) crashed: Option<String>,
    /// Killed for a callback over `SYNCD_PLUGIN_STALL_S`.
    pub(super) stalled: bool,
}

impl Ended {
    pub(super) fn new(delivered: u64, failed: bool, last_call: Option<Instant>) -> Ended {
        Ended { delivered, failed, last_call, crashed: None, stalled: false }
    }
}

/// How a plugin runs: in its own plugin-host process (the default) or in the daemon.
pub(super) enum Guest {
    Local(Plugin),
    Remote(remote::Remote),
}

impl Guest {
    pub(super) fn version(&self) -> &str {
        match self {
            Guest::Local(p) => p.version(),
            Guest::Remote(r) => r.version(),
        }
    }

    pub(super) fn abi_minor(&self) -> u32 {
        match self {
            Guest::Local(p) => p.abi_minor(),
            Guest::Remote(r) => r.abi_minor(),
        }
    }

    /// `on_book`, `on_trade` exported (whatever its minor: see `marshal::market_wants`).
    pub(super) fn market_wants(&self) -> (bool, bool) {
        match self {
            Guest::Local(p) => p.market_wants(),
            Guest::Remote(r) => r.market_wants(),
        }
    }

    pub(super) fn call(&mut self, call: &Call) -> abi::Status {
        match self {
            Guest::Local(p) => proto::invoke(p, call),
            Guest::Remote(r) => r.call(call),
        }
    }

    /// Fires once its process died between calls; never for one in the daemon.
    pub(super) fn died(&self) -> Receiver<()> {
        match self {
            Guest::Local(_) => crossbeam_channel::never(),
            Guest::Remote(r) => r.died().clone(),
        }
    }

    /// Why its process is gone, and whether it was killed for a stall.
    pub(super) fn gone(&self) -> Option<(String, bool)> {
        match self {
            Guest::Local(_) => None,
            Guest::Remote(r) => r.gone().map(|g| (g.to_string(), r.stalled())),
        }
    }
}

/// One plugin's thread: the only thread its code ever runs on.
pub(super) struct Runner {
    /// In a plugin-host process of its own (`isolation`, default) rather than this thread.
    pub(super) isolated: bool,
    /// Its process's resource limits (`memory_mb`, `open_files`).
    pub(super) limits: super::remote::Limits,
    /// A program plugin ([`super::exec`]): `staged` is run, not loaded.
    pub(super) program: bool,
    /// The plugin folder (resolved and trusted): a program plugin is told it
    /// (`SYNCD_PLUGIN_DIR`), as it runs from a private copy elsewhere.
    pub(super) plugin_dir: PathBuf,
    pub(super) stall: Duration,
    /// The plugin-host's working directory.
    pub(super) workdir: PathBuf,
    pub(super) name: String,
    pub(super) tag: String,
    pub(super) settings_text: String,
    pub(super) staged: PathBuf,
    pub(super) state_dir: PathBuf,
    pub(super) fill_log: PathBuf,
    pub(super) tick_every: Duration,
    pub(super) fills: Receiver<FillRecord>,
    pub(super) heads_up: Receiver<()>,
    /// `heads_up` is subscribed (a spin budget and two or more CPUs), not `never()`.
    pub(super) hears_heads_up: bool,
    pub(super) spin: Duration,
    pub(super) tap: FillTap,
    pub(super) replies: Receiver<Reply>,
    pub(super) reports: Receiver<OrderReport>,
    pub(super) handle: StrategyHandle,
    pub(super) rules: LiveRules,
    pub(super) executor: ExecutorLink,
    pub(super) busy_since: Arc<AtomicU64>,
    pub(super) view: PluginView,
    pub(super) last_call: std::cell::Cell<Option<Instant>>,
    /// Where books and trades come from (none while the market stream is off).
    pub(super) market: Option<crate::market::MarketView>,
    /// `book_depth`: levels a side of each book.
    pub(super) book_depth: usize,
}

impl Runner {
    /// `ready` gets the loaded version and its process id (0 in-process), or why it did not load.
    pub(super) fn run(
        self,
        ready: Sender<Result<(String, u32), String>>,
        go: Receiver<Go>,
        stop: Receiver<()>,
    ) -> Ended {
        let abi_minor = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let services = Box::new(Services {
            name: self.name.clone(),
            handle: self.handle.clone(),
            rules: self.rules.clone(),
            abi_minor: abi_minor.clone(),
        });
        let loaded = if self.program {
            super::exec::spawn(
                &self.staged,
                &self.workdir,
                &self.plugin_dir,
                &self.name,
                services,
                self.stall,
                self.limits,
            )
            .map(Guest::Remote)
        } else if self.isolated {
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
        let pid = match &plugin {
            Guest::Remote(r) => r.pid(),
            Guest::Local(_) => 0,
        };
        let _ = ready.send(Ok((plugin.version().to_string(), pid)));
        let go = go.recv();
        self.handle.set_paused(false);
        let Ok(go) = go else {
            // Refused after loading (the swap was abandoned): never started.
            return Ended::new(0, false, None);
        };
        let mut run = Delivery {
            delivered: go.delivered,
            replay_until: go.replay_until,
            reader: Reader::new(&self.fill_log),
            reader_stuck_logged: None,
            saver: CursorSaver::start(&self.state_dir, &self.name),
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
        self.view.update(&self.name, |s| {
            s.heads_ups = SpinCounts::default();
            (s.books, s.books_skipped, s.trades, s.trades_dropped) = (0, 0, 0, 0);
        });
        // Only a plugin that exports on_book or on_trade subscribes: the others cost the
        // market thread nothing and never wake for it.
        let (books, trades) = marshal::market_wants(plugin.market_wants(), plugin.abi_minor());
        let feed = self.market.as_ref().and_then(|m| m.feed().subscribe(books, trades, self.book_depth));
        let market_wake = feed.as_ref().map_or_else(crossbeam_channel::never, |f| f.wake.clone());
        let died = plugin.died();
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
                recv(died) -> _ => {
                    // Its process died between callbacks: ended now, so that the watcher
                    // restarts it after its backoff, not a tick later at the next call.
                    if let Guest::Remote(r) = &mut plugin {
                        r.collect();
                    }
                    break Err(remote::GONE);
                }
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
                    // Once per burst (or every 100 ms of a steady flow), not per line, and on
                    // the saver's thread: the next line's callback must not wait for a file
                    // write. A crash in between only means lines come again, marked.
                    if self.fills.is_empty() || last_save.elapsed() >= Duration::from_millis(100) {
                        run.saver.save(SavedCursor { delivered: run.delivered, clean: false });
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
                recv(market_wake) -> _ => {
                    if let Some(feed) = &feed {
                        if let Err(status) = self.market(&mut plugin, feed) {
                            break Err(status);
                        }
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
    pub(super) fn ended(&self, plugin: Guest, run: &Delivery, status: i32, what: &str) -> Ended {
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

    pub(super) fn finish(&self, run: &Delivery, clean: bool) {
        run.saver.save_now(SavedCursor { delivered: run.delivered, clean });
        self.view.update(&self.name, |s| s.delivered = run.delivered);
    }

    pub(super) fn failed(&self, status: i32, what: &str) {
        let why =
            if status == abi::STATUS_PANICKED { "panicked".to_string() } else { format!("returned status {status}") };
        log::error!("plugin {}: {what} {why}; disabled until its file changes", self.name);
        self.view.update(&self.name, |s| s.problem = format!("{what} {why}"));
    }

    /// Runs one callback with the stall clock on.
    pub(super) fn call(&self, f: impl FnOnce() -> abi::Status) -> abi::Status {
        self.busy_since.store(now_ms().max(1), Ordering::Release);
        let status = f();
        self.busy_since.store(0, Ordering::Release);
        self.last_call.set(Some(Instant::now()));
        status
    }

    pub(super) fn catch_up(&self, plugin: &mut Guest, run: &mut Delivery, until: u64) -> Result<(), i32> {
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
            run.saver.save(SavedCursor { delivered: run.delivered, clean: false });
        }
        Ok(())
    }

    pub(super) fn deliver(&self, plugin: &mut Guest, run: &mut Delivery, fill: &FillRecord) -> Result<(), i32> {
        if fill.seq != run.delivered + 1 {
            return Ok(()); // never out of order: the caller fills the gap first
        }
        let own = self.executor.owns(&fill.client_order_id);
        let call = Call::Fill(marshal::fill(fill, fill.seq <= run.replay_until, own, plugin.abi_minor()));
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

    pub(super) fn order_update(&self, plugin: &mut Guest, reply: &Reply) -> abi::Status {
        let call = Call::Order(marshal::update(reply, plugin.abi_minor()));
        self.call(|| plugin.call(&call))
    }

    /// A stream report of one of its orders, as an order update with request 0.
    pub(super) fn order_report(&self, plugin: &mut Guest, r: &OrderReport) -> abi::Status {
        let Some(update) = marshal::report(r, plugin.abi_minor()) else { return abi::STATUS_OK };
        let call = Call::Order(update);
        self.call(|| plugin.call(&call))
    }

    /// Everything in its market inbox: the newest book of each symbol that changed and the
    /// trades since the last wake-up, in the order they were published.
    pub(super) fn market(&self, plugin: &mut Guest, feed: &crate::market::Subscription) -> Result<(), i32> {
        let (mut books, mut trades) = (0u64, 0u64);
        let mut outcome = Ok(());
        for item in feed.take() {
            let call = marshal::market(&item);
            let status = self.call(|| plugin.call(&call));
            match call {
                Call::Book(_) => books += 1,
                _ => trades += 1,
            }
            if status != abi::STATUS_OK {
                outcome = Err(status);
                break;
            }
        }
        let lost = feed.losses();
        self.view.update(&self.name, |s| {
            s.books += books;
            s.trades += trades;
            (s.books_skipped, s.trades_dropped) = (lost.books_skipped, lost.trades_dropped);
        });
        outcome
    }

    /// The periodic tick, plus price and balance updates when the executor's view changed.
    pub(super) fn tick(
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
    pub(super) fn snapshot(&self) -> String {
        let rules = self.rules.snapshot();
        let view = self.executor.view();

        let orders: Vec<serde_json::Value> = view
            .open_orders
            .iter()
            .filter(|o| self.executor.tag_of(&o.client_order_id) == Some(self.tag.as_str()))
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

/// A plugin's place in the fill log.
pub(super) struct Delivery {
    pub(super) delivered: u64,
    pub(super) replay_until: u64,
    pub(super) reader: Reader,
    /// When a missing line was last complained about.
    pub(super) reader_stuck_logged: Option<Instant>,
    /// Writes the cursor as it moves, off this thread.
    pub(super) saver: CursorSaver,
}
