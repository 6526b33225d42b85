//! `binance-syncd run`: starts the roles, waits for a signal or a failure, stops them all.
//!
//! Shutdown (SIGTERM or SIGINT, to the process or its group): the stop channel closes, the rate
//! gate releases anything waiting in it, the threads end (the stream closes its socket, `state`
//! flushes the fill log), then the listen key is deleted and the process exits 0, all within
//! 10 s. A fatal problem (the API key refused) exits 2 with one message; no retry loop.

use crate::clock::ServerClock;
use crate::config::Config;
use crate::error::Error;
use crate::executor::{Executor, ExecutorLink, ExecutorSettings};
use crate::exit::Exit;
use crate::keepalive::Keepalive;
use crate::market::{MarketSettings, MarketStream, MarketView};
use crate::notify::Notifier;
use crate::plugin::{PluginHost, PluginSettings, PluginView};
use crate::ratelimit::RateGate;
use crate::reconcile::{ReconcileSettings, Reconciler};
use crate::rest::{RestClient, RestConfig, ACCOUNT, LISTEN_KEY_CLOSE};
use crate::rules::LiveRules;
use crate::state::{State, StateSettings};
use crate::stream::{Fanout, KeyCell, Stream, StreamSettings};
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Everything `run` needs beyond `Config`: tests shorten the intervals.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub ws_ping_every: Duration,
    pub ws_silence_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub reconcile_up: Duration,
    pub reconcile_down: Duration,
    pub rules_refresh: Duration,
    pub price_poll: Duration,
    pub avg_price_poll: Duration,
    pub book_refresh: Duration,
}

impl Tuning {
    pub fn from_config(c: &Config) -> Tuning {
        Tuning {
            ws_ping_every: c.ws_ping,
            ws_silence_timeout: c.ws_silence,
            backoff_min: Duration::from_millis(200),
            backoff_max: c.backoff_max,
            reconcile_up: c.reconcile_up,
            reconcile_down: c.reconcile_down,
            rules_refresh: c.rules_refresh,
            price_poll: c.price_poll,
            avg_price_poll: c.avg_price_poll,
            book_refresh: c.book_refresh,
        }
    }
}

/// A running daemon. `stop()` (or a signal fed to `exit`) ends it.
pub struct Daemon {
    stop: Option<Sender<()>>,
    exit_rx: Receiver<Exit>,
    pub exit_tx: Sender<Exit>,
    threads: Vec<(&'static str, JoinHandle<()>)>,
    rest: Arc<RestClient>,
    key: KeyCell,
    executor: ExecutorLink,
    /// The executor cancels our orders on exit: it needs the gate open until it is done.
    cancel_on_exit: bool,
    plugins: Option<PluginView>,
    /// The market thread's view (absent when `SYNCD_MARKET_STREAM` is off).
    market: Option<MarketView>,
    tap: crate::filllog::FillTap,
    metrics_addr: Option<std::net::SocketAddr>,
    /// One message per `SIGHUP`: the `state` thread reopens the fill log.
    reopen: Sender<()>,
    notify: Notifier,
    /// The metrics server and alerter when this daemon started them itself.
    own_service: Option<crate::metrics::Service>,
    /// The state directory's lock, released when the daemon is dropped (after `stop`).
    _lock: crate::statedir::StateLock,
}

impl Daemon {
    /// Starts every role with its own REST client.
    pub fn start(config: &Config, tuning: &Tuning) -> Result<Daemon, Error> {
        Daemon::start_with(config, tuning, rest_client(config))
    }

    /// Starts every role on `rest`, whose gate the caller may close to abandon a slow start.
    pub fn start_with(config: &Config, tuning: &Tuning, rest: Arc<RestClient>) -> Result<Daemon, Error> {
        Daemon::start_on(config, tuning, rest, None)
    }

    /// Like [`Daemon::start_with`], attaching to a metrics server and alerter started before
    /// (see [`crate::metrics::Service`]); with `None` the daemon starts and stops its own.
    pub fn start_on(
        config: &Config,
        tuning: &Tuning,
        rest: Arc<RestClient>,
        service: Option<&crate::metrics::Service>,
    ) -> Result<Daemon, Error> {
        // Before anything else touches the fill log, the stream or a listen key: a second
        // daemon on this directory would log every fill twice and delete our listen key.
        let lock = crate::statedir::StateLock::acquire(&config.state_dir)?;
        // Clock and rules first: every signed call needs the one, the gate the other.
        rest.sync_clock()?;
        let rules = match rest.exchange_info(&config.symbols) {
            Err(e) if e.api_code() == Some(-1121) => {
                return Err(Error::Config(format!("SYNCD_SYMBOLS: the exchange does not list them all ({e})")));
            }
            other => other?,
        };
        for s in &config.symbols {
            if !rules.symbols.contains_key(s) {
                return Err(Error::Config(format!("SYNCD_SYMBOLS: {s} is not listed by the exchange")));
            }
        }
        // One signed call before any thread starts: a refused key or a wrong secret is a
        // configuration problem to report once, not something for every thread to retry.
        match rest.call(&ACCOUNT, &[]) {
            Err(e) if e.is_auth_failure() || e.api_code() == Some(-1022) => {
                return Err(Error::Config(format!("BINANCE_API_KEY/BINANCE_API_SECRET refused: {e}")));
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let metrics = rest.metrics().clone();
        // Bound before any other thread starts: an address in use is a configuration problem.
        let own_service = match service {
            Some(_) => None,
            None => Some(crate::metrics::Service::start(config, &rest)?),
        };
        let Some(service) = service.or(own_service.as_ref()) else {
            return Err(Error::Internal("no metrics service".into()));
        };
        let metrics_addr = service.addr();
        let tap = crate::filllog::FillTap::default();
        // Set only when systemd (Type=notify) started us; otherwise every message is a no-op.
        let notify = Notifier::from_env();
        let state = State::open(
            StateSettings {
                symbols: config.symbols.clone(),
                state_dir: config.state_dir.clone(),
                fill_log: config.fill_log.clone(),
                fsync: config.fsync,
                fill_log_mode: config.fill_log_mode,
                check_every: config.fill_log_check,
                metrics: metrics.clone(),
            },
            tap.clone(),
        )?
        .supervised_by(notify.clone());
        let reconciler = Reconciler::new(
            ReconcileSettings {
                symbols: config.symbols.clone(),
                reconcile_up: tuning.reconcile_up,
                reconcile_down: tuning.reconcile_down,
            },
            rest.clone(),
            state.cursors().clone(),
        )
        .supervised_by(notify.clone());
        let live_rules = LiveRules::new(rules);
        let desk = rest
            .order_desk()
            .ok_or_else(|| Error::Config("this REST client's order desk already belongs to another executor".into()))?;
        // The market stream's view, read by the executor and /metrics (absent when switched off).
        let market = config.market_stream.then(|| MarketView::new(&config.symbols, false));
        let (executor, executor_link, intents) = Executor::open(
            ExecutorSettings {
                symbols: config.symbols.clone(),
                state_dir: config.state_dir.clone(),
                price_poll: tuning.price_poll,
                avg_price_poll: tuning.avg_price_poll,
                market: market.clone(),
                market_stale: config.market_stale,
                rules_refresh: tuning.rules_refresh,
                book_refresh: tuning.book_refresh,
                cancel_on_exit: config.cancel_on_exit,
                exit_budget: Duration::from_secs(5),
                limits: config.strategy_limits.clone(),
                queue_per_strategy: config.strategy_queue,
            },
            desk,
            live_rules.clone(),
        )?;
        // The writer and the reconciler: pages and cursor moves one way, answers the other.
        let (writer_link, reconciler_link) = crate::reconcile::link();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (exit_tx, exit_rx) = crossbeam_channel::unbounded::<Exit>();
        // Unbounded: a bounded channel preallocates every slot (megabytes of RSS for a queue
        // that is almost always empty), and the stream must never block on a slow disk or it
        // stops answering pings. Events arrive at human rates; `state` drains them.
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (book_tx, book_rx) = crossbeam_channel::unbounded();
        let (ctl_tx, ctl_rx) = crossbeam_channel::bounded(16);
        let key = KeyCell::default();
        let spawn_err = |e: std::io::Error| Error::Internal(format!("cannot start a thread: {e}"));
        let mut threads = Vec::new();
        // Bounded: SIGHUPs in a burst are one reopen.
        let (reopen_tx, reopen_rx) = crossbeam_channel::bounded(1);
        threads.push(("state", state.spawn(events_rx, writer_link, reopen_rx, stop_rx.clone()).map_err(spawn_err)?));
        let ws_settings = StreamSettings {
            ws_url: config.ws_url.clone(),
            connect_timeout: Duration::from_secs(5),
            ping_every: tuning.ws_ping_every,
            silence_timeout: tuning.ws_silence_timeout,
            backoff_min: tuning.backoff_min,
            backoff_max: tuning.backoff_max,
            backoff_reset: Duration::from_secs(60),
            poll: Duration::from_millis(100),
            tls: config.tls.clone(),
        };
        if let Some(view) = &market {
            let m = MarketStream {
                settings: MarketSettings::new(
                    StreamSettings { ws_url: config.market_ws_url.clone(), ..ws_settings.clone() },
                    &config.symbols,
                ),
                view: view.clone(),
                depth: rest.clone(),
                stop: stop_rx.clone(),
            };
            threads.push(("market", m.spawn().map_err(spawn_err)?));
        }
        let stream = Stream {
            settings: ws_settings,
            rest: rest.clone(),
            key: key.clone(),
            events: Fanout::new(events_tx, vec![book_tx]).with_tap(tap.clone()),
            ctl: ctl_rx,
            stop: stop_rx.clone(),
            exit: exit_tx.clone(),
        };
        threads.push(("stream", stream.spawn().map_err(spawn_err)?));
        let keepalive = Keepalive {
            rest: rest.clone(),
            key: key.clone(),
            every: config.keepalive,
            retry: Duration::from_secs(60).min(config.keepalive),
            ctl: ctl_tx,
            stop: stop_rx.clone(),
        };
        threads.push(("keepalive", keepalive.spawn().map_err(spawn_err)?));
        threads
            .push(("executor", executor.spawn(intents, book_rx, stop_rx.clone(), exit_tx.clone()).map_err(spawn_err)?));
        // Last, so that `stop` joins the others first: a reconciler inside a slow request is
        // the one thread shutdown may have to leave behind.
        let reconcile = reconciler.spawn(reconciler_link, stop_rx.clone(), exit_tx.clone()).map_err(spawn_err)?;
        threads.push(("reconcile", reconcile));
        let mut plugins = None;
        if let Some(dir) = &config.plugin_dir {
            let host = PluginHost::new(
                PluginSettings {
                    dir: dir.clone(),
                    state_dir: config.state_dir.clone(),
                    fill_log: config.fill_log.clone(),
                    scan_every: config.plugin_scan,
                    stall_after: config.plugin_stall,
                    tick_every: config.plugin_tick,
                    spin: config.plugin_spin,
                },
                executor_link.clone(),
                live_rules.clone(),
                tap.clone(),
            )
            .with_market(market.clone());
            plugins = Some(host.view());
            threads.push(("plugins", host.spawn(stop_rx.clone()).map_err(spawn_err)?));
        }
        let sources = crate::metrics::Sources {
            metrics,
            gate: rest.gate().clone(),
            clock: rest.clock().clone(),
            executor: Some(executor_link.clone()),
            plugins: plugins.clone(),
            tap: Some(tap.clone()),
            market: market.clone(),
        };
        service.attach(sources);
        // A core thread that ends while we run is a bug or a fatal error: stop everything.
        let watch_threads: Vec<&'static str> = threads.iter().map(|(n, _)| *n).collect();
        log::info!("daemon: running threads {watch_threads:?} for {:?}", config.symbols);
        Ok(Daemon {
            stop: Some(stop_tx),
            exit_rx,
            exit_tx,
            threads,
            rest,
            key,
            executor: executor_link,
            cancel_on_exit: config.cancel_on_exit,
            plugins,
            market,
            tap,
            metrics_addr,
            reopen: reopen_tx,
            notify,
            own_service,
            _lock: lock,
        })
    }

    /// Where `/metrics` and `/healthz` are served (the bound port when `SYNCD_METRICS_ADDR`
    /// asked for port 0).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// The metrics registry every thread of this daemon reports to.
    pub fn metrics(&self) -> &Arc<crate::registry::Metrics> {
        self.rest.metrics()
    }

    /// Asks the `state` thread to reopen the fill log (after it was renamed by logrotate);
    /// never blocks.
    pub fn reopen_fill_log(&self) {
        let _ = self.reopen.try_send(());
    }

    /// A handle that does what [`Daemon::reopen_fill_log`] does, for a signal thread.
    pub fn fill_log_reopener(&self) -> Sender<()> {
        self.reopen.clone()
    }

    /// The fill log's followers: a new follower gets every line from now on (see
    /// [`FillTap`](crate::filllog::FillTap)).
    pub fn fill_tap(&self) -> &crate::filllog::FillTap {
        &self.tap
    }

    /// The plugins' status, if `SYNCD_PLUGIN_DIR` is set.
    pub fn plugins(&self) -> Option<&PluginView> {
        self.plugins.as_ref()
    }

    /// The market stream's view (with `SYNCD_MARKET_STREAM`): its state, and the feed that
    /// brings books and trades to plugins.
    pub fn market(&self) -> Option<&MarketView> {
        self.market.as_ref()
    }

    /// Where strategies get their handles, and the executor's view of the account.
    pub fn executor(&self) -> &ExecutorLink {
        &self.executor
    }

    /// Blocks until a signal, a fatal error or a dead core thread.
    pub fn wait(&self) -> Exit {
        loop {
            // `self` holds a sender, so the channel cannot disconnect: a timeout is the only error.
            if let Ok(exit) = self.exit_rx.recv_timeout(Duration::from_millis(200)) {
                return exit;
            }
            if let Some((name, _)) = self.threads.iter().find(|(_, t)| t.is_finished()) {
                // A thread that ends reports why first; give a report in flight a moment.
                return self.exit_rx.recv_timeout(Duration::from_millis(500)).unwrap_or(Exit::Died(name));
            }
        }
    }

    /// Stops every thread, flushes, deletes the listen key. Bounded by `deadline`: a thread
    /// still inside a slow network call by then is left behind (the process is exiting).
    pub fn stop(mut self, deadline: Duration) {
        let started = Instant::now();
        self.notify.stopping();
        drop(self.stop.take());
        if self.cancel_on_exit {
            // The executor's cancels go through the gate: it closes once they are done (or
            // their budget is spent).
            if let Some((_, t)) = self.threads.iter().find(|(n, _)| *n == "executor") {
                let by = started + deadline.mul_f32(0.6);
                while !t.is_finished() && Instant::now() < by {
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
        self.rest.gate().close();
        // Most of the time for the threads (state flushing the log matters most), the rest for
        // closing the listen key.
        let join_by = started + deadline.mul_f32(0.7);
        for (name, t) in self.threads.drain(..) {
            while !t.is_finished() && Instant::now() < join_by {
                thread::sleep(Duration::from_millis(10));
            }
            if !t.is_finished() {
                log::warn!("daemon: thread {name} is still busy; not waiting for it");
                continue;
            }
            if t.join().is_err() {
                log::error!("daemon: thread {name} panicked");
            }
        }
        if let Some(key) = self.key.get() {
            self.rest.gate().reopen();
            let left = deadline.saturating_sub(started.elapsed()).min(Duration::from_secs(2));
            match self.rest.call_within(&LISTEN_KEY_CLOSE, &[("listenKey", key.expose())], left) {
                Ok(_) => log::info!("daemon: listen key {} closed", key.fingerprint()),
                Err(e) => log::warn!("daemon: could not close listen key {}: {e}", key.fingerprint()),
            }
        }
        if let Some(service) = self.own_service.take() {
            service.stop(started + deadline);
        }
        log::info!("daemon: stopped in {:?}", started.elapsed());
    }
}

/// The process's one REST client. Its gate starts with no budget limits: they are unknown until
/// `exchangeInfo` has been read (429 and 418 are honoured from the first request on).
pub fn rest_client(config: &Config) -> Arc<RestClient> {
    let clock = Arc::new(ServerClock::new());
    let gate = Arc::new(RateGate::new(Vec::new(), clock.clone()));
    Arc::new(RestClient::new(
        RestConfig {
            base_url: config.rest_url.clone(),
            api_key: config.api_key.clone(),
            api_secret: config.api_secret.clone(),
            recv_window_ms: config.recv_window_ms,
            timeout: config.http_timeout,
            clock_resync: config.clock_sync,
            tls: config.tls.clone(),
        },
        clock,
        gate,
    ))
}

/// Feeds SIGTERM/SIGINT into the daemon's exit channel, and each SIGHUP (log rotation) into
/// `hangup`. Installed before anything else, so an early SIGHUP cannot kill the process (its
/// default action).
pub fn watch_signals(exit: Sender<Exit>, hangup: Sender<()>) -> Result<(), Error> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Error::Internal(format!("cannot install signal handlers: {e}")))?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    log::info!("daemon: SIGHUP; reopening the fill log");
                    let _ = hangup.send(());
                    continue;
                }
                log::info!("daemon: signal {sig}; stopping");
                let _ = exit.send(Exit::Signal);
                return;
            }
        })
        .map_err(|e| Error::Internal(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}
