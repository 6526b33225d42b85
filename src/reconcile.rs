//! THREAD `reconcile`: reads over REST the fills the stream may have missed, and hands them to
//! the `state` thread, the fill log's one writer, which does no network I/O (issue 14).
//!
//! A pass reads `myTrades?symbol=S&fromId=<cursor>` in pages of 1000 for each symbol, through
//! the shared rate gate with [`RestClient::call_background`]: it never waits in the gate and uses
//! at most half of each limit, so a 429 hold or a ban ends the pass early instead of starving the
//! listen-key calls. Passes run after every stream `Up`, every `reconcile_up` while the stream is
//! up and every `reconcile_down` while it is down, so fills keep flowing during an outage.
//!
//! Per page, over the [`link`] between the two threads:
//! 1. [`Ask::Unknown`]: the writer says which of the page's trade ids it neither logged nor
//!    holds, so only those cost client-id lookups (REST trades carry none).
//! 2. Client ids: from the stream (the writer forwards every `executionReport`'s as
//!    [`Heard::ClientId`]), else one `allOrders` page, else single `GET /order` lookups.
//! 3. [`Ask::Commit`]: the fills, and the cursor move the page allows ([`cursor::after_page`]).
//!    The writer dedupes, appends and syncs, and moves the cursor only if no fill is held (disk
//!    full); [`Answer::Committed`] says whether it did, and this thread's copy of the cursors
//!    follows only then. So the cursor never passes a fill that is not durable, and a pass never
//!    runs ahead of a writer that cannot write.
//!
//! While a request is on the wire the writer goes on logging stream fills; a request still
//! running at shutdown is left behind (`Daemon::stop` bounds the wait), which costs nothing:
//! the cursor did not move, so the next start reads the page again.

pub mod cursor;

use crate::error::Error;
use crate::exit::Exit;
use crate::filllog::FillRecord;
use crate::registry::{Metrics, Source};
use crate::rest::{RestClient, ALL_ORDERS, MY_TRADES, ORDER_QUERY};
use crate::wire::{MyTrade, QueriedOrder, Refusal};
use crossbeam_channel::{Receiver, Sender};
use cursor::{Advance, Cursors, Read, PAGE};
use serde::Deserialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Order ids whose client id we remember (from events or lookups).
const CLIENT_ID_CACHE: usize = 10_000;
/// Share of each rate limit reconciliation may use, leaving the rest for the listen-key calls
/// that keep the stream alive.
const RECONCILE_SHARE: u64 = 50;

/// What the writer passes on from the stream, unasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// The stream (re)connected: reconcile now, and at the up cadence.
    Up,
    /// The stream is gone: fills come by REST only, at the down cadence.
    Down,
    /// An order's client id, from an `executionReport`.
    ClientId { symbol: String, order_id: u64, client_id: String },
}

/// A question from the reconciler to the writer; each gets exactly one [`Answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Which of these trade ids of `symbol` are neither logged nor held?
    Unknown { symbol: String, ids: Vec<u64> },
    /// Log `fills`; then, if no fill is held, move `symbol`'s cursor as `advance` says, and
    /// save the cursors if `save` (the symbol's pass ends here).
    Commit { symbol: String, fills: Vec<FillRecord>, advance: Advance, save: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Unknown(Vec<u64>),
    /// `durable`: every fill is in the log and the cursor moved as asked.
    Committed {
        durable: bool,
    },
}

/// The writer's end of the link.
pub struct WriterLink {
    pub asks: Receiver<Ask>,
    pub answers: Sender<Answer>,
    pub heard: Sender<Heard>,
}

/// The reconciler's end of the link.
pub struct ReconcilerLink {
    asks: Sender<Ask>,
    answers: Receiver<Answer>,
    heard: Receiver<Heard>,
}

/// The channels between `state` and `reconcile`. Asks and answers hold one message each: the
/// reconciler waits for every answer, so there is never more than one in flight. `Heard` is
/// unbounded, like the stream's own channel, because the writer must never block on a
/// reconciler busy in a slow request; it carries a few small messages per order.
pub fn link() -> (WriterLink, ReconcilerLink) {
    let (asks_tx, asks_rx) = crossbeam_channel::bounded(1);
    let (answers_tx, answers_rx) = crossbeam_channel::bounded(1);
    let (heard_tx, heard_rx) = crossbeam_channel::unbounded();
    (
        WriterLink { asks: asks_rx, answers: answers_tx, heard: heard_tx },
        ReconcilerLink { asks: asks_tx, answers: answers_rx, heard: heard_rx },
    )
}

#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    pub symbols: Vec<String>,
    /// Reconcile this often while the stream is up (a safety net for dropped events).
    pub reconcile_up: Duration,
    /// Reconcile this often while the stream is down (fills keep flowing by REST).
    pub reconcile_down: Duration,
}

/// Client ids of orders by `(symbol, orderId)` (order ids are per symbol), in bounded memory:
/// every id learned is queued for eviction, however it was learned.
#[derive(Debug)]
struct ClientIds {
    ids: HashMap<(String, u64), String>,
    order: VecDeque<(String, u64)>,
    capacity: usize,
}

impl ClientIds {
    fn new(capacity: usize) -> ClientIds {
        ClientIds { ids: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    fn get(&self, symbol: &str, order_id: u64) -> Option<&str> {
        self.ids.get(&(symbol.to_string(), order_id)).map(String::as_str)
    }

    /// `""` is remembered too: an order the exchange no longer knows is not asked about again.
    fn remember(&mut self, symbol: &str, order_id: u64, client_id: String) {
        let key = (symbol.to_string(), order_id);
        if self.ids.contains_key(&key) {
            return;
        }
        self.ids.insert(key.clone(), client_id);
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// Refusals already reported, by a hash of the row or event, in bounded memory: a refused row
/// is read again until a later fill moves the cursor past it, and is reported and counted once.
#[derive(Debug)]
pub(crate) struct Reported {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

/// Refusals remembered as reported (a few MB of hashes at most).
const REPORTED: usize = 10_000;

impl Reported {
    pub(crate) fn new(capacity: usize) -> Reported {
        Reported { seen: HashSet::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Reports `why` (one warning, one count) unless `key` was reported already.
    pub(crate) fn refuse(&mut self, metrics: &Metrics, source: Source, what: &str, key: impl Hash, why: &Refusal) {
        // Fixed keys: the same row hashes the same on every pass.
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        let key = h.finish();
        if !self.seen.insert(key) {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        metrics.fill_refused(source, why.reason());
        log::warn!("refused {what} as a fill: {why}; not logged");
    }
}

/// A `myTrades` page, sorted by [`screen`].
#[derive(Debug, Default)]
struct Screened {
    /// The rows that are fills.
    page: Vec<MyTrade>,
    /// Ids of rows refused for what they say: they may still move the cursor (see
    /// [`cursor::after_page`]).
    passable: Vec<u64>,
    /// Each refused row: what it is, the row as text (its identity for [`Reported`]), why.
    refused: Vec<(String, String, Refusal)>,
}

/// Sorts a `myTrades` page for `symbol` row by row: a row we cannot use is refused instead of
/// costing the page (or, stopping there, every later fill of the symbol).
fn screen(symbol: &str, rows: &[serde_json::Value]) -> Screened {
    let mut out = Screened { page: Vec::with_capacity(rows.len()), ..Screened::default() };
    for row in rows {
        let trade = match MyTrade::deserialize(row) {
            Ok(t) => t,
            Err(e) => {
                let what = format!("a myTrades row for {symbol}");
                out.refused.push((what, row.to_string(), Refusal::Unreadable(e.to_string())));
                continue;
            }
        };
        match trade.check(symbol) {
            Ok(()) => out.page.push(trade),
            Err(why) => {
                if why.of_content() {
                    out.passable.push(trade.id);
                }
                let what = format!("myTrades row for {symbol} (trade id {}, order id {})", trade.id, trade.order_id);
                out.refused.push((what, row.to_string(), why));
            }
        }
    }
    out
}

/// Progress of one symbol's pass, logged for long ones (a first start over days of history):
/// every few seconds while it runs, and a summary at its end if it took more than one page.
struct Progress<'a> {
    symbol: &'a str,
    started: Instant,
    last_log: Instant,
    pages: u64,
    trades: u64,
    fresh: u64,
    /// Trade times seen, ms since the epoch.
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

/// How often a long pass says how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl<'a> Progress<'a> {
    fn new(symbol: &'a str) -> Progress<'a> {
        let now = Instant::now();
        Progress { symbol, started: now, last_log: now, pages: 0, trades: 0, fresh: 0, first_ms: None, last_ms: None }
    }

    fn page(&mut self, read: Read, page: &[MyTrade]) {
        self.pages += 1;
        self.trades += page.len() as u64;
        for t in page {
            self.first_ms = Some(self.first_ms.map_or(t.time, |f| f.min(t.time)));
            self.last_ms = Some(self.last_ms.map_or(t.time, |l| l.max(t.time)));
        }
        if self.last_log.elapsed() >= PROGRESS_EVERY {
            self.last_log = Instant::now();
            let at = match read {
                Read::FromId(from) => format!("fromId {from}"),
                Read::Window(start, end) => {
                    format!("window {} .. {}", crate::utc::format_ms(start), crate::utc::format_ms(end))
                }
            };
            log::info!("reconcile {}: catching up: {}, now at {at}", self.symbol, self.summary());
        }
    }

    /// Pages, trades, time taken and the trades' time span.
    fn summary(&self) -> String {
        let span = match (self.first_ms, self.last_ms) {
            (Some(a), Some(b)) => format!(", trades {} .. {}", crate::utc::format_ms(a), crate::utc::format_ms(b)),
            _ => String::new(),
        };
        format!(
            "{} pages, {} trades read ({} new) in {:.1?}{span}",
            self.pages,
            self.trades,
            self.fresh,
            self.started.elapsed()
        )
    }

    fn done(&self) {
        if self.pages > 1 {
            log::info!("reconcile {}: caught up: {}", self.symbol, self.summary());
        }
    }
}

pub struct Reconciler {
    settings: ReconcileSettings,
    rest: Arc<RestClient>,
    /// A copy of the writer's cursors, moved only when the writer says it moved them.
    cursors: Cursors,
    client_ids: ClientIds,
    reported: Reported,
    /// Server time when the daemon started (ms): where a first start reads from.
    started_ms: i64,
    stream_up: bool,
    next: Instant,
    /// An `Up` came during a pass: start another as soon as it ends.
    again: bool,
    /// `READY=1` goes here after the first complete pass with the stream up.
    notify: crate::notify::Notifier,
}

impl Reconciler {
    /// `cursors`: the writer's, as it opened them (`State::cursors`).
    pub fn new(settings: ReconcileSettings, rest: Arc<RestClient>, cursors: Cursors) -> Reconciler {
        Reconciler {
            settings,
            started_ms: rest.clock().now_ms(),
            rest,
            cursors,
            client_ids: ClientIds::new(CLIENT_ID_CACHE),
            reported: Reported::new(REPORTED),
            stream_up: false,
            next: Instant::now(),
            again: false,
            notify: crate::notify::Notifier::default(),
        }
    }

    /// The supervisor to tell once the daemon is ready (see [`crate::notify`]).
    pub fn supervised_by(mut self, notify: crate::notify::Notifier) -> Reconciler {
        self.notify = notify;
        self
    }

    pub fn spawn(mut self, link: ReconcilerLink, stop: Receiver<()>, exit: Sender<Exit>) -> io::Result<JoinHandle<()>> {
        thread::Builder::new().name("reconcile".into()).spawn(move || {
            if let Err(e) = self.run(&link, &stop) {
                let _ = exit.send(Exit::Fatal(e));
            }
        })
    }

    /// Returns when `stop` closes or the writer is gone; `Err` for a problem no retry fixes.
    fn run(&mut self, link: &ReconcilerLink, stop: &Receiver<()>) -> Result<(), String> {
        loop {
            let wait = self.next.saturating_duration_since(Instant::now());
            crossbeam_channel::select_biased! {
                recv(stop) -> _ => return Ok(()),
                recv(link.heard) -> msg => match msg {
                    Ok(msg) => self.hear(msg),
                    Err(_) => return Ok(()), // the writer is gone: nowhere to hand fills
                },
                default(wait) => {}
            }
            if Instant::now() >= self.next {
                self.reconcile_all(link, stop)?;
            }
        }
    }

    fn hear(&mut self, msg: Heard) {
        match msg {
            Heard::Up => {
                self.stream_up = true;
                self.next = Instant::now();
                self.again = true;
            }
            Heard::Down => {
                self.stream_up = false;
                self.next = self.next.min(Instant::now() + self.settings.reconcile_down);
            }
            Heard::ClientId { symbol, order_id, client_id } => self.client_ids.remember(&symbol, order_id, client_id),
        }
    }

    /// What the writer passed on while this thread was busy.
    fn drain(&mut self, link: &ReconcilerLink) {
        while let Ok(msg) = link.heard.try_recv() {
            self.hear(msg);
        }
    }

    fn every(&self) -> Duration {
        if self.stream_up {
            self.settings.reconcile_up
        } else {
            self.settings.reconcile_down
        }
    }

    /// One pass over every symbol, then sets the time of the next.
    fn reconcile_all(&mut self, link: &ReconcilerLink, stop: &Receiver<()>) -> Result<(), String> {
        self.again = false;
        let mut retry_after = None;
        let up_at_start = self.stream_up;
        let mut complete = true;
        for symbol in self.settings.symbols.clone() {
            let result = self.reconcile(&symbol, link, stop);
            complete &= result.is_ok();
            match result {
                Ok(()) => {}
                Err(e) if e.is_auth_failure() => return Err(format!("API key refused during reconciliation: {e}")),
                Err(Error::Stopped) => return Ok(()),
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
        self.rest.metrics().reconcile_pass();
        self.drain(link);
        if complete && up_at_start && self.stream_up {
            // Stream up and nothing missed before it: what a supervisor may call ready.
            self.notify.ready(&format!("ready: stream up, {} symbols reconciled", self.settings.symbols.len()));
        }
        let every = self.every();
        self.next = match retry_after {
            Some(wait) => Instant::now() + wait.clamp(Duration::from_millis(100), every.max(wait)),
            None if self.again => Instant::now(),
            None => Instant::now() + every,
        };
        Ok(())
    }

    /// Sends one question to the writer and waits for its answer (or for `stop`).
    fn ask(&self, link: &ReconcilerLink, stop: &Receiver<()>, ask: Ask) -> Result<Answer, Error> {
        link.asks.send(ask).map_err(|_| Error::Stopped)?;
        crossbeam_channel::select_biased! {
            recv(stop) -> _ => Err(Error::Stopped),
            recv(link.answers) -> answer => answer.map_err(|_| Error::Stopped),
        }
    }

    /// Hands fills and a cursor move to the writer; true if all are durable and it moved.
    fn commit(
        &mut self,
        link: &ReconcilerLink,
        stop: &Receiver<()>,
        symbol: &str,
        fills: Vec<FillRecord>,
        advance: Advance,
        save: bool,
    ) -> Result<bool, Error> {
        let ask = Ask::Commit { symbol: symbol.to_string(), fills, advance, save };
        match self.ask(link, stop, ask)? {
            Answer::Committed { durable: true } => {
                self.cursors.apply(symbol, advance);
                Ok(true)
            }
            Answer::Committed { durable: false } => Ok(false),
            Answer::Unknown(_) => Err(Error::Decode("writer answered a commit with a lookup".into())),
        }
    }

    /// One REST pass for `symbol`, page by page, until a short page or a held fill.
    fn reconcile(&mut self, symbol: &str, link: &ReconcilerLink, stop: &Receiver<()>) -> Result<(), Error> {
        let mut progress = Progress::new(symbol);
        loop {
            let now = self.rest.clock().now_ms();
            let plan = cursor::plan(&self.cursors, symbol, self.started_ms, now);
            if let Some(since) = plan.init {
                // Saved at once: a restart before the first trade must not move it.
                if !self.commit(link, stop, symbol, Vec::new(), Advance::Since(since), true)? {
                    return Ok(());
                }
            }
            let mut params: Vec<(&str, String)> = vec![("symbol", symbol.to_string())];
            match plan.read {
                Read::FromId(from) => params.push(("fromId", from.to_string())),
                Read::Window(start, end) => {
                    params.push(("startTime", start.to_string()));
                    params.push(("endTime", end.to_string()));
                }
            }
            params.push(("limit", PAGE.to_string()));
            let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let rows: Vec<serde_json::Value> = self.rest.call_background(&MY_TRADES, &borrowed, RECONCILE_SHARE)?;
            let count = rows.len();
            let Screened { page, passable, refused } = screen(symbol, &rows);
            for (what, row, why) in &refused {
                self.reported.refuse(self.rest.metrics(), Source::Rest, what, (symbol, row), why);
            }
            let ids: Vec<u64> = page.iter().map(|t| t.id).collect();
            let step = cursor::after_page(plan.read, &ids, &passable, count, now);
            progress.page(plan.read, &page);
            let unknown: HashSet<u64> = if ids.is_empty() {
                HashSet::new()
            } else {
                match self.ask(link, stop, Ask::Unknown { symbol: symbol.to_string(), ids })? {
                    Answer::Unknown(ids) => ids.into_iter().collect(),
                    Answer::Committed { .. } => {
                        return Err(Error::Decode("writer answered a lookup with a commit".into()));
                    }
                }
            };
            let fresh: Vec<MyTrade> = page.into_iter().filter(|t| unknown.contains(&t.id)).collect();
            progress.fresh += fresh.len() as u64;
            // Client ids the stream brought while the request was on the wire.
            self.drain(link);
            let orders: Vec<u64> =
                fresh.iter().map(|t| t.order_id).filter(|o| self.client_ids.get(symbol, *o).is_none()).collect();
            self.learn_client_ids(symbol, &orders)?;
            let fills: Vec<FillRecord> = fresh
                .into_iter()
                .map(|t| {
                    log::info!("reconcile {symbol}: trade {} came by REST", t.id);
                    let client_id = self.client_ids.get(symbol, t.order_id).unwrap_or_default().to_string();
                    t.into_fill(client_id)
                })
                .collect();
            if !self.commit(link, stop, symbol, fills, step.advance, !step.more)? {
                // Not durable yet: the cursor stays behind these fills; the next pass reads
                // them again.
                return Ok(());
            }
            if !step.more {
                progress.done();
                return Ok(());
            }
        }
    }

    /// Learns the client ids of `orders`: one `allOrders` page from the oldest of them (weight 20
    /// for up to 1000 orders), then single lookups for any it did not cover. A transient failure
    /// aborts the pass so no fill is logged without its id; an order the exchange no longer knows
    /// (`-2013`, `-2026`) is logged with `""`.
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
            self.client_ids.remember(symbol, o.order_id, o.client_order_id);
        }
        for order_id in orders {
            if self.client_ids.get(symbol, *order_id).is_some() {
                continue;
            }
            let id_text = order_id.to_string();
            match self.rest.call_background::<QueriedOrder>(
                &ORDER_QUERY,
                &[("symbol", symbol), ("orderId", id_text.as_str())],
                RECONCILE_SHARE,
            ) {
                Ok(o) => self.client_ids.remember(symbol, o.order_id, o.client_order_id),
                Err(e) if matches!(e.api_code(), Some(-2013 | -2026)) => {
                    log::warn!("reconcile {symbol}: order {order_id} is unknown to the exchange; logging its fills without a client id");
                    self.client_ids.remember(symbol, *order_id, String::new());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decimal::Decimal;

    #[test]
    fn a_long_pass_reports_pages_trades_and_their_time_span() {
        let trade = |id: u64, time: i64| MyTrade {
            symbol: "BTCUSD".into(),
            id,
            order_id: 1,
            price: Decimal::ONE,
            qty: Decimal::ONE,
            quote_qty: None,
            commission: Decimal::ZERO,
            commission_asset: None,
            time,
            is_buyer: true,
            is_maker: true,
        };
        let mut p = Progress::new("BTCUSD");
        p.page(Read::Window(0, 86_400_000), &[trade(1, 1_788_540_400_100), trade(2, 1_788_540_500_000)]);
        p.fresh += 2;
        p.page(Read::FromId(3), &[trade(3, 1_788_626_800_100)]);
        let text = p.summary();
        assert!(text.starts_with("2 pages, 3 trades read (2 new) in "), "{text}");
        assert!(text.ends_with("trades 2026-09-04T16:46:40.100Z .. 2026-09-05T16:46:40.100Z"), "{text}");
    }

    #[test]
    fn a_wrong_symbol_a_zero_quantity_and_trade_id_u64_max_are_refused_and_counted_once() {
        let row = |symbol: &str, id: u64, qty: &str| {
            serde_json::json!({"symbol": symbol, "id": id, "orderId": 7, "price": "60000.00", "qty": qty,
                "quoteQty": "60.00", "commission": "0", "commissionAsset": "BTC", "time": 1788540400100i64,
                "isBuyer": true, "isMaker": true})
        };
        let mut negative = row("BTCUSD", 14, "0.001");
        negative["price"] = "-1.00".into();
        let mut float = row("BTCUSD", 15, "0.001");
        float["qty"] = serde_json::json!(0.001);
        let rows = vec![
            row("BTCUSD", 10, "0.001"),
            row("ETHUSD", 11, "0.001"),
            row("BTCUSD", 12, "0.00000000"),
            row("BTCUSD", u64::MAX, "0.001"),
            negative,
            float,
        ];
        let Screened { page, passable, refused } = screen("BTCUSD", &rows);
        assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), [10]);
        assert_eq!(passable, [12, 14], "only rows of this symbol, refused for what they say");
        let reasons: Vec<&str> = refused.iter().map(|(_, _, why)| why.reason()).collect();
        assert_eq!(reasons, ["wrong_symbol", "qty", "trade_id", "price", "unreadable"]);
        let metrics = Metrics::default();
        let mut reported = Reported::new(100);
        for _pass in 0..2 {
            for (what, row, why) in &refused {
                reported.refuse(&metrics, Source::Rest, what, ("BTCUSD", row), why);
            }
        }
        for reason in ["wrong_symbol", "qty", "trade_id", "price", "unreadable"] {
            assert_eq!(metrics.fills_refused.get(&["rest", reason]), 1, "{reason}: counted once over two passes");
        }
    }

    #[test]
    fn client_ids_stay_bounded_however_they_were_learned() {
        let mut ids = ClientIds::new(3);
        for order in 0..10 {
            // Unknown orders ("") used to be inserted without being queued for eviction.
            let client = if order % 2 == 0 { String::new() } else { format!("c-{order}") };
            ids.remember("BTCUSD", order, client);
        }
        assert_eq!((ids.ids.len(), ids.order.len()), (3, 3));
        assert_eq!(ids.get("BTCUSD", 9), Some("c-9"));
        assert_eq!(ids.get("BTCUSD", 8), Some(""), "an unknown order is not asked about again");
        assert_eq!(ids.get("BTCUSD", 6), None, "the oldest went first");
        ids.remember("BTCUSD", 9, "other".into());
        assert_eq!(ids.get("BTCUSD", 9), Some("c-9"), "the first answer stands");
        assert_eq!(ids.get("ETHUSD", 9), None, "order ids are per symbol");
    }
}
