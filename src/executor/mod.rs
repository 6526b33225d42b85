//! THREAD `executor`: the only path to the order endpoints.
//!
//! Strategies send [`Intent`]s through a [`StrategyHandle`]; the executor checks each against
//! everything it knows before anything is sent, and answers with a typed [`Outcome`]:
//!
//! 1. **Maker only, by construction.** It holds the one [`OrderDesk`], which can send nothing
//!    but `LIMIT_MAKER`. A price that crosses the last known best bid/ask is refused here; a
//!    `-2010 Order would immediately match and take` from the exchange is reported as such and
//!    never retried as anything else.
//! 2. **Filters and precision** from the live rules ([`LiveRules`]): price rounded passive (BUY
//!    down, SELL up) to the tick, quantity down to the step, then every filter, with
//!    PERCENT_PRICE(_BY_SIDE) against a recent `avgPrice` and MAX_NUM_ORDERS /
//!    EXCHANGE_MAX_NUM_ORDERS against the open-order [`Book`]. A `-1013`/`-1111` answer means our
//!    rules are stale: they are re-read before the next order.
//! 3. **The account**: an order the free balance cannot pay for is refused here.
//! 4. **Per-strategy limits** ([`StrategyLimits`]), and round-robin service of the strategies'
//!    queues, so one strategy flooding intents cannot starve another.
//! 5. **Rate limits** through the shared gate: orders wait there as long as it says (the reply's
//!    `waited` shows it), and after a 429/418 nothing is sent until the hold ends.
//! 6. **Unknown outcomes** (5xx, `-1006`/`-1007`, a timeout or a reset after sending, see
//!    `executor/resolve.rs`): nothing else is sent for that symbol until it is known. The new
//!    order is looked up by its client id (`GET /api/v3/order`, re-asked a few times since that
//!    path can lag, then `allOrders`, which lists filled and cancelled orders too), an unknown
//!    `cancelReplace`'s old order by its id as well, and a stream report settles it early; the
//!    stream's silence settles nothing. Only when every lookup says the request did nothing is
//!    it sent again, once, exactly as before (a placement with the same client id, a replace as
//!    the same `cancelReplace` of the same old order), so no order is ever doubled. Lookups that
//!    give up answer [`Outcome::Unresolved`] (never `NotDone`, which says the exchange never got
//!    it), and the order counts as open against the strategy's limits until it is known.
//!
//! The open-order book is rebuilt from `GET /api/v3/openOrders` at start, after every stream
//! reconnect and every `SYNCD_BOOK_REFRESH_S`; balances from `GET /api/v3/account` at the same
//! times and from `outboundAccountPosition`/`balanceUpdate` in between. Best bid/ask comes from
//! the `market` thread's view (read again before every order's crossing check) while the market
//! stream confirms it within `SYNCD_MARKET_STALE_S`; otherwise it is polled from
//! `ticker/bookTicker` every `SYNCD_PRICE_POLL_S`. `avgPrice` is polled every
//! `SYNCD_AVG_PRICE_POLL_S`, `exchangeInfo` every `SYNCD_RULES_REFRESH_S`. Polls run on a
//! helper thread, `executor-poll` (`executor/poll.rs`), as background reads on the REST
//! client's background lane that never wait in the gate and use at most half of it; the
//! executor thread sends only on the order lane, so an intent never waits for a poll or a
//! reconciliation page on the wire.
//!
//! Binance.US REST API: "New order (TRADE)", "Cancel order (TRADE)", "Query order (USER_DATA)",
//! "Filters" and "LIMITS": <https://docs.binance.us/#trade-order-endpoints>.

pub mod book;
mod entry;
pub mod ids;
pub mod intent;
mod market;
mod poll;
mod resolve;

pub use crate::limits::StrategyLimits;
pub use book::{Balances, Book, OpenOrder};
pub use intent::{
    valid_tag, Adjustment, Canceled, Intent, OrderReport, Outcome, Placed, RefusalCode, Reply, Request, StrategyHandle,
    SubmitError,
};

use crate::decimal::Decimal;
use crate::error::Error;
use crate::exit::Exit;
use crate::filters::{MarketContext, PreparedOrder, Rejection, SymbolRules};
use crate::limits::{OrderRate, Usage};
use crate::lock::LockAnyway;
use crate::model::Side;
use crate::rest::desk::{MakerOrder, OrderDesk, OrderRef};
use crate::rest::{ACCOUNT, AVG_PRICE};
use crate::rules::LiveRules;
use crate::stream::StreamMsg;
use crate::wire::{OrderReply, UserEvent};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use entry::*;
use ids::ClientIds;
use poll::{Polled, Poller};
use resolve::{NewOrder, Pending, PendingKind};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Share of each rate limit the background reads (prices, rules, account) may use.
const READ_SHARE: u64 = 50;
/// Times a placement that met a 429 is put back in its queue before the intent is rejected.
const MAX_REQUEUES: u32 = 3;

/// The executor's settings; see `config` for the variables behind them.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    pub symbols: Vec<String>,
    pub state_dir: PathBuf,
    pub price_poll: Duration,
    pub avg_price_poll: Duration,
    /// The market thread's view, when it runs: best bid/ask come from it while it is confirmed
    /// within `market_stale`, from `ticker/bookTicker` otherwise.
    pub market: Option<crate::market::MarketView>,
    pub market_stale: Duration,
    pub rules_refresh: Duration,
    pub book_refresh: Duration,
    /// Cancel this daemon's own open orders on shutdown (`SYNCD_CANCEL_ON_EXIT`).
    pub cancel_on_exit: bool,
    /// Longest time those cancels may take.
    pub exit_budget: Duration,
    pub limits: StrategyLimits,
    /// Intents one strategy may have waiting (`SYNCD_STRATEGY_QUEUE`).
    pub queue_per_strategy: usize,
}

/// Counters, for tests, benchmarks and the status line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutorStats {
    pub intents: u64,
    pub placed: u64,
    pub canceled: u64,
    pub refused: u64,
    pub rejected: u64,
    /// Of `rejected`: `-2010 ... would immediately match and take`.
    pub taker_rejections: u64,
    /// Of `rejected`: `-1013` and `-1111` (each one means our rules were wrong).
    pub filter_rejections: u64,
    pub unknown: u64,
    pub resolved: u64,
    pub book_rebuilds: u64,
    pub rules_refreshes: u64,
}

/// What the executor thread shows the rest of the process (updated after every change).
#[derive(Debug, Clone, Default)]
pub struct ExecutorView {
    /// The open-order book, by symbol then order id.
    pub open_orders: Vec<OpenOrder>,
    pub stats: ExecutorStats,
    /// The book has been built from REST at least once.
    pub ready: bool,
    pub unresolved: usize,
    /// Last polled best bid and ask per symbol.
    pub quotes: Vec<(String, Decimal, Decimal)>,
    /// Free and locked per asset, as the executor sees them.
    pub balances: Vec<(String, Decimal, Decimal)>,
}

/// Quotes (symbol, bid, ask) and balances (asset, free, locked).
pub type MarketView = (Vec<(String, Decimal, Decimal)>, Vec<(String, Decimal, Decimal)>);

/// The executor's shared view and the sender strategies' handles are made from.
#[derive(Debug, Clone)]
pub struct ExecutorLink {
    requests: Sender<Request>,
    /// This daemon's instance in its client ids ([`ids`]): what makes an order its own.
    instance: Arc<str>,
    view: Arc<Mutex<ExecutorView>>,
    reports: ReportTaps,
}

/// Who wants the stream's reports of which tag's orders.
type ReportTaps = Arc<Mutex<Vec<(String, Sender<OrderReport>)>>>;

/// Reports a follower may have waiting; past that they are dropped (the book and REST stay the
/// truth: a report is news, not state).
const REPORTS_QUEUED: usize = 4096;

impl ExecutorLink {
    /// A handle for the strategy `tag` (1-8 ASCII letters and digits, carried in every client
    /// order id it gets) and the channel its replies arrive on.
    pub fn strategy(&self, tag: &str) -> Result<(StrategyHandle, Receiver<Reply>), Error> {
        if !valid_tag(tag) {
            return Err(Error::Config(format!("strategy tag {tag:?} must be 1 to 8 ASCII letters or digits")));
        }
        Ok(StrategyHandle::new(tag.to_string(), self.requests.clone()))
    }

    pub fn view(&self) -> ExecutorView {
        self.view.lock_anyway().clone()
    }

    /// The counters only, without copying the book (for `/metrics`).
    pub fn stats(&self) -> ExecutorStats {
        self.view.lock_anyway().stats.clone()
    }

    /// The stream's reports of the orders of strategy `tag` from now on (until the receiver
    /// is dropped).
    pub fn reports(&self, tag: &str) -> Receiver<OrderReport> {
        let (tx, rx) = crossbeam_channel::bounded(REPORTS_QUEUED);
        self.reports.lock_anyway().push((tag.to_string(), tx));
        rx
    }

    /// The strategy tag of one of this daemon's client order ids; `None` for anyone else's
    /// (another client, the web UI, another daemon on the account): the one own-order rule,
    /// [`ids::tag_in`] with this instance.
    pub fn tag_of<'a>(&self, client_order_id: &'a str) -> Option<&'a str> {
        ids::tag_in(client_order_id, Some(&self.instance))
    }

    /// Whether this daemon placed the order `client_order_id` (any strategy's).
    pub fn owns(&self, client_order_id: &str) -> bool {
        self.tag_of(client_order_id).is_some()
    }

    /// Quotes and balances only: what a plugin's tick needs, without copying the order book.
    pub fn market(&self) -> MarketView {
        let v = self.view.lock_anyway();
        (v.quotes.clone(), v.balances.clone())
    }
}

/// The one thing that stops the executor thread: the exchange refused the API key (`-2014`,
/// `-2015`, HTTP 401). Every other failure is retried or answered to the strategy; this one
/// ends the daemon with exit 2, with the exchange's words.
#[derive(Debug)]
pub(crate) struct KeyRefused(String);

impl KeyRefused {
    fn by(e: &Error) -> KeyRefused {
        KeyRefused(format!("API key refused by the executor: {e}"))
    }
}

/// Best bid and ask from the market stream or the last poll.
#[derive(Debug, Clone, Copy)]
struct Quote {
    bid: Decimal,
    ask: Decimal,
}

pub struct Executor {
    settings: ExecutorSettings,
    desk: OrderDesk,
    rules: LiveRules,
    ids: ClientIds,
    book: Book,
    balances: Balances,
    quotes: HashMap<String, Quote>,
    avg: HashMap<String, (Decimal, Instant)>,
    queues: BTreeMap<String, VecDeque<(Request, u32)>>,
    /// The tag served last, for round robin.
    last_served: Option<String>,
    rate: OrderRate,
    pending: Vec<Pending>,
    need_rebuild: bool,
    /// A stale mark on the rules has been turned into a read.
    stale_seen: bool,
    rebuild_failing_since: Option<Instant>,
    last_rebuild_alert: Option<Instant>,
    next_rebuild_try: Instant,
    /// When the quotes are next taken from the market stream's view (REST polls are the
    /// poller's).
    next_prices: Instant,
    next_book: Instant,
    stats: ExecutorStats,
    ready: bool,
    view: Arc<Mutex<ExecutorView>>,
    dirty: bool,
    reports: ReportTaps,
}

impl Executor {
    /// Picks this run's client-id epoch (saved before any order) and takes the desk.
    pub fn open(
        settings: ExecutorSettings,
        desk: OrderDesk,
        rules: LiveRules,
    ) -> Result<(Executor, ExecutorLink, Receiver<Request>), Error> {
        let ids = ClientIds::open(&settings.state_dir, desk.rest().clock().now_ms())?;
        desk.rest().metrics().set_instance(ids.instance());
        let (tx, rx) = crossbeam_channel::bounded(1024);
        let view = Arc::new(Mutex::new(ExecutorView::default()));
        let reports: ReportTaps = Arc::default();
        let now = Instant::now();
        let exec = Executor {
            next_book: now + settings.book_refresh,
            settings,
            desk,
            rules,
            ids,
            book: Book::new(),
            balances: Balances::default(),
            quotes: HashMap::new(),
            avg: HashMap::new(),
            queues: BTreeMap::new(),
            last_served: None,
            rate: OrderRate::default(),
            pending: Vec::new(),
            need_rebuild: true,
            stale_seen: false,
            rebuild_failing_since: None,
            last_rebuild_alert: None,
            next_rebuild_try: now,
            next_prices: now,
            stats: ExecutorStats::default(),
            ready: false,
            view: view.clone(),
            dirty: true,
            reports: reports.clone(),
        };
        let instance: Arc<str> = exec.ids.instance().into();
        Ok((exec, ExecutorLink { requests: tx, instance, view, reports }, rx))
    }

    pub fn spawn(
        mut self,
        requests: Receiver<Request>,
        events: Receiver<StreamMsg>,
        stop: Receiver<()>,
        exit: Sender<Exit>,
    ) -> io::Result<JoinHandle<()>> {
        let (polled_tx, polled) = crossbeam_channel::bounded(poll::POLLED_QUEUED);
        Poller {
            rest: self.desk.rest().clone(),
            symbols: self.settings.symbols.clone(),
            price_poll: self.settings.price_poll,
            avg_price_poll: self.settings.avg_price_poll,
            rules_refresh: self.settings.rules_refresh,
            market: self.settings.market.clone(),
            market_stale: self.settings.market_stale,
            rules: self.rules.clone(),
            out: polled_tx,
            stop: stop.clone(),
        }
        .spawn()?;
        thread::Builder::new().name("executor".into()).spawn(move || {
            let ran = self.run(&requests, &events, &polled, &stop);
            self.finish(&requests, ran.is_err());
            if let Err(why) = ran {
                let _ = exit.send(Exit::Fatal(why.0));
            }
        })
    }

    fn stopped(stop: &Receiver<()>) -> bool {
        !matches!(stop.try_recv(), Err(TryRecvError::Empty))
    }

    fn run(
        &mut self,
        requests: &Receiver<Request>,
        events: &Receiver<StreamMsg>,
        polled: &Receiver<Polled>,
        stop: &Receiver<()>,
    ) -> Result<(), KeyRefused> {
        loop {
            if Executor::stopped(stop) {
                return Ok(());
            }
            while let Ok(msg) = events.try_recv() {
                self.on_stream(msg);
            }
            while let Ok(p) = polled.try_recv() {
                self.on_polled(p);
            }
            while let Ok(req) = requests.try_recv() {
                self.enqueue(req);
            }
            self.timers()?;
            self.resolve_due()?;
            self.publish();
            // Biased to stop: once it closes, no queued intent goes out as one more order.
            if Executor::stopped(stop) {
                return Ok(());
            }
            if let Some(next) = self.next_request() {
                self.serve(next)?;
                continue;
            }
            let wait = self.next_wake().saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
            crossbeam_channel::select_biased! {
                recv(stop) -> _ => return Ok(()),
                recv(events) -> msg => if let Ok(msg) = msg { self.on_stream(msg) },
                recv(requests) -> req => if let Ok(req) = req { self.enqueue(req) },
                recv(polled) -> p => if let Ok(p) = p { self.on_polled(p) },
                default(wait) => {}
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let mut t = self.next_prices.min(self.next_book);
        if self.need_rebuild {
            t = t.min(self.next_rebuild_try);
        }
        for p in &self.pending {
            t = t.min(p.next_try);
        }
        t
    }

    /// Shutdown: optional cancels of our own orders, then every queued intent is answered.
    /// `key_refused`: it stops because the exchange refused the key (what queued intents hear).
    fn finish(&mut self, requests: &Receiver<Request>, key_refused: bool) {
        if self.settings.cancel_on_exit {
            self.cancel_own_orders();
        }
        while let Ok(req) = requests.try_recv() {
            self.enqueue(req);
        }
        let queued: Vec<(Request, u32)> = self.queues.values_mut().flat_map(|q| q.drain(..)).collect();
        for (req, _) in queued {
            let code = if key_refused { RefusalCode::KeyRefused } else { RefusalCode::Shutdown };
            self.answer(&req, refused(code, "shutdown", "the daemon is stopping; nothing was sent"));
        }
        self.publish();
    }

    /// `SYNCD_CANCEL_ON_EXIT`: every open order with one of our ids (this run's or an earlier
    /// one's), never anyone else's, within the exit budget.
    fn cancel_own_orders(&mut self) {
        let started = Instant::now();
        let own: Vec<OpenOrder> =
            self.book.orders().filter(|o| self.ids.tag_of(&o.client_order_id).is_some()).cloned().collect();
        let (mut done, mut failed) = (0, 0);
        for o in &own {
            let left = self.settings.exit_budget.saturating_sub(started.elapsed());
            if left < Duration::from_millis(100) {
                break;
            }
            let cancel_id = self.ids.next(self.ids.tag_of(&o.client_order_id).unwrap_or("x"));
            match self.desk.cancel(&o.symbol, &OrderRef::Id(o.order_id), &cancel_id, Some(left)) {
                Ok(_) => {
                    done += 1;
                    self.book.close(&o.symbol, o.order_id);
                }
                Err(e) if e.api_code() == Some(-2011) => self.book.close(&o.symbol, o.order_id),
                Err(e) => {
                    failed += 1;
                    log::warn!("executor: cancel on exit of {} {} failed: {e}", o.symbol, o.client_order_id);
                }
            }
        }
        // Placements whose outcome is still unknown may be live too: cancel them by client id.
        let unknown: Vec<(String, String)> = self
            .pending
            .iter()
            .filter(|p| p.what.new_order().is_some())
            .map(|p| (p.symbol.clone(), p.lookup_id.clone()))
            .collect();
        for (symbol, client_id) in unknown {
            let left = self.settings.exit_budget.saturating_sub(started.elapsed());
            if left < Duration::from_millis(100) {
                break;
            }
            let cancel_id = self.ids.next(self.ids.tag_of(&client_id).unwrap_or("x"));
            match self.desk.cancel(&symbol, &OrderRef::ClientId(client_id.clone()), &cancel_id, Some(left)) {
                Ok(_) => done += 1,
                Err(e) if e.api_code() == Some(-2011) => {}
                Err(e) => log::warn!("executor: cancel on exit of unresolved {symbol} {client_id} failed: {e}"),
            }
        }
        log::info!(
            "executor: cancelled {done} of our {} open orders on exit ({failed} failed, {:?})",
            own.len(),
            started.elapsed()
        );
    }

    fn publish(&mut self) {
        self.desk.rest().metrics().executor_queue.set(self.queues.values().map(VecDeque::len).sum::<usize>() as i64);
        if !self.dirty {
            return;
        }
        self.dirty = false;
        // Built before the lock: readers (plugin ticks, the status line) must never wait while
        // a large book is copied.
        let mut quotes: Vec<(String, Decimal, Decimal)> =
            self.quotes.iter().map(|(s, q)| (s.clone(), q.bid, q.ask)).collect();
        quotes.sort();
        let mut balances: Vec<(String, Decimal, Decimal)> =
            self.balances.all().map(|(a, (f, l))| (a.clone(), *f, *l)).collect();
        balances.sort();
        let fresh = ExecutorView {
            open_orders: self.book.orders().cloned().collect(),
            stats: self.stats.clone(),
            ready: self.ready,
            unresolved: self.pending.len(),
            quotes,
            balances,
        };
        let old = std::mem::replace(&mut *self.view.lock_anyway(), fresh);
        drop(old); // freed outside the lock too
    }

    fn answer(&mut self, req: &Request, outcome: Outcome) {
        self.count(&outcome);
        let _ = req.reply.send(Reply { request: req.id, outcome, waited: req.submitted.elapsed(), resolved: false });
        self.dirty = true;
    }

    fn count(&mut self, outcome: &Outcome) {
        let s = &mut self.stats;
        match outcome {
            Outcome::Placed(_) => s.placed += 1,
            Outcome::Replaced { .. } => {
                s.placed += 1;
                s.canceled += 1;
            }
            Outcome::Canceled(_) => s.canceled += 1,
            Outcome::CanceledAll { canceled, .. } => s.canceled += canceled.len() as u64,
            Outcome::Refused { .. } => s.refused += 1,
            Outcome::Rejected { code, msg, .. } => {
                self.desk.rest().metrics().rejected(*code);
                s.rejected += 1;
                if is_taker_rejection(*code, msg) {
                    s.taker_rejections += 1;
                }
                if matches!(code, -1013 | -1111) {
                    s.filter_rejections += 1;
                }
            }
            Outcome::Unknown { .. } => s.unknown += 1,
            Outcome::NotDone { .. } | Outcome::Unresolved { .. } => {}
        }
    }

    fn enqueue(&mut self, req: Request) {
        self.stats.intents += 1;
        let cap = self.settings.queue_per_strategy;
        let q = self.queues.entry(req.tag.clone()).or_default();
        let cancel = matches!(req.intent, Intent::Cancel { .. } | Intent::CancelAll { .. });
        if q.len() >= cap && !cancel {
            let why = format!("strategy {} already has {cap} intents waiting", req.tag);
            self.answer(&req, refused(RefusalCode::Busy, "queue full", why));
            return;
        }
        q.push_back((req, 0));
    }

    /// Round robin over strategies; a strategy whose next intent is for a symbol with an
    /// unresolved order waits its turn without holding up the others.
    fn next_request(&mut self) -> Option<(Request, u32)> {
        // Until the book is known, counts cannot be checked: only cancels go (by order id, they
        // are safe on a stale book, and a strategy must be able to pull its quotes).
        let cancels_only = self.need_rebuild;
        let tags: Vec<String> = self.queues.iter().filter(|(_, q)| !q.is_empty()).map(|(t, _)| t.clone()).collect();
        if tags.is_empty() {
            return None;
        }
        let start = self.last_served.as_ref().and_then(|l| tags.iter().position(|t| t > l)).unwrap_or(0);
        for i in 0..tags.len() {
            let tag = &tags[(start + i) % tags.len()];
            let Some(q) = self.queues.get_mut(tag) else { continue };
            let blocked = q.front().is_some_and(|(r, _)| {
                (cancels_only && !matches!(r.intent, Intent::Cancel { .. } | Intent::CancelAll { .. }))
                    || self.pending.iter().any(|p| !p.given_up && p.symbol == r.intent.symbol())
            });
            if blocked {
                continue;
            }
            if let Some(next) = q.pop_front() {
                self.last_served = Some(tag.clone());
                return Some(next);
            }
        }
        None
    }

    fn timers(&mut self) -> Result<(), KeyRefused> {
        let now = Instant::now();
        // A stale mark asks for a read now, once, before the next order: a failed read leaves
        // it to the poller's next refresh, so a read that keeps failing cannot turn into a
        // request per loop.
        if self.rules.is_stale() && !self.stale_seen {
            self.stale_seen = true;
            self.refresh_rules();
        }
        if self.need_rebuild && now >= self.next_rebuild_try {
            self.rebuild()?;
        }
        if now >= self.next_book {
            self.next_book = now + self.settings.book_refresh;
            self.need_rebuild = true;
        }
        if now >= self.next_prices {
            self.next_prices = now + self.settings.price_poll;
            self.stream_quotes();
        }
        Ok(())
    }

    /// Re-reads the rules after a `-1013`/`-1111`, on the order lane (the next order needs them).
    fn refresh_rules(&mut self) {
        match self.desk.exchange_info(&self.settings.symbols, READ_SHARE) {
            Ok(rules) => {
                self.rules.install(rules);
                self.stale_seen = false;
                self.stats.rules_refreshes += 1;
                self.dirty = true;
            }
            // The last good rules stay; the poller's next refresh tries again.
            Err(e) => log::warn!("executor: exchangeInfo re-read failed ({e}); keeping the last rules"),
        }
    }

    /// What the poller found.
    fn on_polled(&mut self, p: Polled) {
        match p {
            // The stream's quote, where it confirms one, is newer than any poll.
            Polled::Quote { symbol, bid, ask } => {
                if !self.stream_quote(&symbol) {
                    self.set_quote(symbol, Quote { bid, ask });
                }
            }
            Polled::Avg { symbol, price, at } => {
                // An order may have read a newer one on the spot meanwhile.
                if self.avg.get(&symbol).is_none_or(|(_, had)| *had < at) {
                    self.avg.insert(symbol, (price, at));
                }
            }
            Polled::Rules => {
                self.stats.rules_refreshes += 1;
                self.dirty = true;
                // A mark that came after the poller's read still asks for one.
                if !self.rules.is_stale() {
                    self.stale_seen = false;
                }
            }
        }
    }

    /// Open orders of every symbol and the balances, from REST. Intents wait until it worked.
    fn rebuild(&mut self) -> Result<(), KeyRefused> {
        for symbol in self.settings.symbols.clone() {
            let mark = self.book.mark();
            match self.desk.open_orders(&symbol) {
                Ok(orders) => self.book.replace_symbol(&symbol, &orders, mark),
                Err(e) => return self.rebuild_failed(&e),
            }
        }
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
        match self.desk.read::<Account>(&ACCOUNT, &[]) {
            Ok(a) => {
                self.balances.release_all();
                for b in a.balances {
                    self.balances.set(&b.asset, b.free, b.locked);
                }
            }
            Err(e) => return self.rebuild_failed(&e),
        }
        self.need_rebuild = false;
        self.rebuild_failing_since = None;
        self.ready = true;
        self.stats.book_rebuilds += 1;
        self.dirty = true;
        log::info!("executor: open-order book rebuilt from REST: {} open orders", self.book.count_total());
        Ok(())
    }

    fn rebuild_failed(&mut self, e: &Error) -> Result<(), KeyRefused> {
        if e.is_auth_failure() {
            return Err(KeyRefused::by(e));
        }
        let since = *self.rebuild_failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > Duration::from_secs(60)
            && self.last_rebuild_alert.is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            log::error!(
                "executor: the open-order book could not be rebuilt for {:?} ({e}); only cancels go",
                since.elapsed()
            );
            self.last_rebuild_alert = Some(Instant::now());
        } else if !matches!(e, Error::Stopped) {
            log::warn!("executor: cannot rebuild the open-order book yet ({e}); only cancels go meanwhile");
        }
        self.next_rebuild_try = Instant::now() + Duration::from_secs(1);
        Ok(())
    }

    fn on_stream(&mut self, msg: StreamMsg) {
        match msg {
            StreamMsg::Up { .. } => {
                // The stream was down: the book may have missed updates.
                self.need_rebuild = true;
                self.next_rebuild_try = Instant::now();
            }
            StreamMsg::Down { .. } => {}
            StreamMsg::Event(UserEvent::Execution(r), _) => {
                // The position event that follows this report includes the order's lock.
                self.balances.reported(r.order_client_id());
                self.book.apply_report(&r);
                self.dirty = true;
                self.resolve_from_stream(&r.symbol, r.order_id, r.order_client_id(), &r.status);
                self.forward_report(&r);
            }
            StreamMsg::Event(UserEvent::Position(p), _) => {
                for b in p.balances {
                    self.balances.position(&b.asset, b.free, b.locked);
                }
                self.dirty = true;
            }
            StreamMsg::Event(UserEvent::BalanceUpdate(u), _) => {
                self.balances.add_free(&u.asset, u.delta);
                self.dirty = true;
            }
            StreamMsg::Event(..) => {}
        }
    }

    /// Hands a report of one of a strategy's orders to whoever follows that strategy.
    fn forward_report(&self, r: &crate::wire::ExecutionReport) {
        let Some(tag) = self.ids.tag_of(r.order_client_id()) else { return };
        let mut taps = self.reports.lock_anyway();
        if !taps.iter().any(|(t, _)| t == tag) {
            return;
        }
        let Some(order) = OpenOrder::from_report(r) else { return };
        let report = OrderReport { order, status: r.status.clone(), execution: r.execution_type.clone() };
        taps.retain(|(t, tx)| {
            t != tag || !matches!(tx.try_send(report.clone()), Err(crossbeam_channel::TrySendError::Disconnected(_)))
        });
    }

    fn serve(&mut self, (req, requeues): (Request, u32)) -> Result<(), KeyRefused> {
        if req.is_revoked() {
            self.answer(
                &req,
                refused(RefusalCode::Revoked, "revoked", "the strategy that asked has stopped; nothing was sent"),
            );
            return Ok(());
        }
        let outcome = match req.intent.clone() {
            Intent::Place { symbol, side, price, qty } => self.place(&req, requeues, &symbol, side, price, qty)?,
            Intent::Cancel { symbol, order } => self.cancel(&req, &symbol, &order)?,
            Intent::CancelAll { symbol } => self.cancel_all(&req, &symbol)?,
            Intent::Replace { symbol, order, side, price, qty } => {
                self.replace(&req, &symbol, &order, side, price, qty)?
            }
        };
        if let Some(outcome) = outcome {
            self.answer(&req, outcome);
        }
        Ok(())
    }
}
