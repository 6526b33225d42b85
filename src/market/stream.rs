//! THREAD `market`: the public market stream and a local order book per symbol.
//!
//! One WebSocket to the combined stream of every `SYNCD_SYMBOLS` symbol on the host of
//! `SYNCD_WS_URL`: `/stream?streams=<s>@bookTicker/<s>@depth@100ms/<s>@trade/...`, each frame
//! `{"stream":"<name>","data":{...}}` (Binance.US "WebSocket Market Streams",
//! <https://docs.binance.us/#websocket-market-streams>). It needs no key. Like the user stream
//! (`crate::stream`, whose connect and liveness pieces it uses) it answers pings, pings a quiet
//! connection and gives a silent one up, reconnects with jittered exponential backoff under a
//! cap on connection attempts, leaves before the documented 24 h cut, treats `serverShutdown`
//! as a reason to reconnect at once, refuses frames over a size limit, and skips what it cannot
//! read without dropping the connection. It never gives up, and while it cannot connect nothing
//! else changes: the executor polls `ticker/bookTicker` as it did without it.
//!
//! Each symbol's book follows the documented procedure ("How to manage a local order book
//! correctly", same page) through [`BookSync`]: diff events are buffered from the (re)connect,
//! a `GET /api/v3/depth` snapshot is asked once one is buffered, and after a gap or a snapshot
//! that cannot be joined another is asked, paced per symbol ([`Pacer`]: a backoff and a cap per
//! window, so a stream with gaps never turns into a snapshot storm). Snapshots are fetched by a
//! helper thread, `market-depth`, through the shared REST client's gate as background reads, so
//! the socket keeps being read (and pinged) while one is on the wire, and the executor's order
//! thread never fetches one.
//!
//! What it knows goes into the shared [`MarketView`]: per symbol the best bid and ask (from
//! the book or `@bookTicker`, whichever update id is newer), the best levels of the book, the
//! last public trade, and counters for `/metrics`.

use super::book::{BookSync, Broken, DepthUpdate, Level, Need, Snapshot};
use super::feed::{BookUpdate, TradeUpdate};
use super::view::{MarketView, Top};
use crate::backoff::{Backoff, WindowCap};
use crate::decimal::Decimal;
use crate::rest::{RestClient, DEPTH, DEPTH_LIMIT};
use crate::stream::{close, connect_limited, is_timeout, stopping, Attempts, Conn, Liveness, Quiet, StreamSettings};
use crossbeam_channel::{Receiver, Sender};
use serde::Deserialize;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// Where snapshots come from: the REST client in the daemon, a script in tests.
pub trait DepthSource: Send + Sync {
    /// `GET /api/v3/depth` for `symbol`.
    fn depth(&self, symbol: &str) -> Result<Snapshot, String>;
}

/// Share of each rate limit a snapshot may use (the background reads' share: never waits in
/// the gate, so orders keep their room).
const SNAPSHOT_SHARE: u64 = 50;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DepthReply {
    last_update_id: u64,
    bids: Vec<Level>,
    asks: Vec<Level>,
}

impl DepthSource for RestClient {
    fn depth(&self, symbol: &str) -> Result<Snapshot, String> {
        let r: DepthReply = self
            .call_background(&DEPTH, &[("symbol", symbol), ("limit", DEPTH_LIMIT)], SNAPSHOT_SHARE)
            .map_err(|e| e.to_string())?;
        Ok(Snapshot { last_update_id: r.last_update_id, bids: r.bids, asks: r.asks })
    }
}

/// How often a symbol may be re-snapshotted.
#[derive(Debug, Clone)]
pub struct SnapshotPace {
    /// At most this many snapshot requests per symbol in any `window`.
    pub per_window: usize,
    pub window: Duration,
    /// After a failed, stale or broken book, the next request waits a backoff from `min` to `max`
    /// (reset once a book stayed live for `max`).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for SnapshotPace {
    fn default() -> SnapshotPace {
        SnapshotPace {
            per_window: 4,
            window: Duration::from_secs(60),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// The largest market frame or message read (a `depthUpdate` of a busy symbol is a few kB).
pub const MAX_FRAME: usize = 1 << 20;

/// The market thread's settings; see `config` for the variables behind them.
#[derive(Debug, Clone)]
pub struct MarketSettings {
    /// Connection, liveness and reconnect settings as for the user stream; `ws.ws_url` is
    /// `SYNCD_WS_URL`, to which the path `/stream?streams=...` is appended.
    pub ws: StreamSettings,
    pub symbols: Vec<String>,
    /// A connection is left (and a new one opened) after this long: the server cuts at 24 h.
    pub max_life: Duration,
    /// Frames and messages larger than this end the connection.
    pub max_frame: usize,
    pub snapshots: SnapshotPace,
    /// Book levels a side kept in the view.
    pub levels: usize,
}

impl MarketSettings {
    /// The user stream's `ws` settings with the market's defaults: reconnect backoff 1 s
    /// doubling to 60 s (the reference's policy for Binance streams; a market outage costs
    /// only REST polls), a new connection after 23 h 50 min, frames up to 1 MiB (a
    /// `depthUpdate` of a busy symbol is a few kB).
    pub fn new(ws: StreamSettings, symbols: &[String]) -> MarketSettings {
        MarketSettings {
            ws: StreamSettings {
                backoff_min: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
                backoff_reset: Duration::from_secs(60),
                ..ws
            },
            symbols: symbols.to_vec(),
            max_life: Duration::from_secs(23 * 3600 + 50 * 60),
            max_frame: MAX_FRAME,
            snapshots: SnapshotPace::default(),
            levels: 20,
        }
    }

    /// The combined stream's path: see [`combined_path`].
    pub fn path(&self) -> String {
        combined_path(&self.symbols)
    }
}

/// The combined stream's path for `symbols`: three streams per symbol, names in lower case.
pub fn combined_path(symbols: &[String]) -> String {
    let names: Vec<String> = symbols
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .map(|s| format!("{s}@bookTicker/{s}@depth@100ms/{s}@trade"))
        .collect();
    format!("/stream?streams={}", names.join("/"))
}

/// The pacing of one symbol's snapshot requests. Pure: callers pass `now`.
#[derive(Debug, Clone)]
pub struct Pacer {
    cap: WindowCap,
    backoff: Backoff,
    not_before: Instant,
    in_flight: bool,
}

impl Pacer {
    pub fn new(pace: &SnapshotPace, now: Instant) -> Pacer {
        Pacer {
            cap: WindowCap::new(pace.per_window, pace.window),
            backoff: Backoff::new(pace.backoff_min, pace.backoff_max, pace.backoff_max),
            not_before: now,
            in_flight: false,
        }
    }

    /// True (and counted) if a request may go now: none in flight, past the backoff, under the cap.
    pub fn try_start(&mut self, now: Instant) -> bool {
        if self.in_flight || now < self.not_before || !self.cap.wait(now).is_zero() {
            return false;
        }
        self.cap.record(now);
        self.in_flight = true;
        true
    }

    /// The answer came: `live` if the book is live from it.
    pub fn answered(&mut self, live: bool, now: Instant) {
        self.in_flight = false;
        if live {
            self.backoff.connected(now);
        } else {
            self.broken(now);
        }
    }

    /// The book broke (a gap) or a snapshot could not be used: the next request waits.
    pub fn broken(&mut self, now: Instant) {
        self.not_before = now + self.backoff.next_delay(now);
    }
}

/// One symbol in the thread.
struct SymbolBook {
    symbol: String,
    /// The stream names' prefix, `btcusd`.
    prefix: String,
    sync: BookSync,
    pacer: Pacer,
    /// A diff event arrived since the connection opened: a snapshot can be joined to it.
    depth_seen: bool,
    /// This session's last `@bookTicker`: update id, bid, ask, when read.
    ticker: Option<(u64, Decimal, Decimal, Instant)>,
    /// The last applied diff event's `E` and when it was read.
    depth_at: Option<(i64, Instant)>,
}

#[derive(Deserialize)]
struct Combined {
    stream: String,
    data: serde_json::Value,
}

/// `depthUpdate` ("Diff. Depth Stream").
#[derive(Deserialize)]
struct DepthEvent {
    #[serde(rename = "E")]
    event_time: i64,
    #[serde(rename = "U")]
    first: u64,
    #[serde(rename = "u")]
    last: u64,
    #[serde(rename = "b")]
    bids: Vec<Level>,
    #[serde(rename = "a")]
    asks: Vec<Level>,
}

/// `@bookTicker` ("Individual Symbol Book Ticker Streams"): no `e`, no `E`.
#[derive(Deserialize)]
struct TickerEvent {
    u: u64,
    b: Decimal,
    a: Decimal,
}

/// `@trade` ("Trade Streams").
#[derive(Deserialize)]
struct TradeEvent {
    p: Decimal,
    q: Decimal,
    #[serde(rename = "T")]
    time: i64,
    /// Trade id, event time, buyer is the maker: only plugins read them.
    #[serde(default)]
    t: u64,
    #[serde(rename = "E", default)]
    event_time: i64,
    #[serde(default)]
    m: bool,
}

/// `at` as ms since the epoch, for plugins (which have no `Instant` of ours).
fn wall_ms(at: Instant) -> i64 {
    let ago = at.elapsed();
    std::time::SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// Why a connection ended.
enum End {
    Stop,
    Lost { cause: &'static str, reason: String, quick: bool },
}

fn lost(cause: &'static str, reason: impl Into<String>, quick: bool) -> End {
    End::Lost { cause, reason: reason.into(), quick }
}

/// A log line at most once per `every` at warn, the rest at debug: an exchange without the
/// market stream (the paper exchange today) must not fill the log.
struct Quota {
    every: Duration,
    last: Option<Instant>,
}

impl Quota {
    fn warn(&mut self, msg: std::fmt::Arguments) {
        let now = Instant::now();
        if self.last.is_none_or(|t| now.duration_since(t) >= self.every) {
            self.last = Some(now);
            log::warn!("{msg}");
        } else {
            log::debug!("{msg}");
        }
    }
}

pub struct MarketStream {
    pub settings: MarketSettings,
    pub view: MarketView,
    pub depth: Arc<dyn DepthSource>,
    pub stop: Receiver<()>,
}

impl MarketStream {
    /// Starts `market` and its helper `market-depth` (which ends once `market` has).
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        let (req_tx, req_rx) = crossbeam_channel::bounded::<String>(self.settings.symbols.len().max(1));
        let (res_tx, res_rx) = crossbeam_channel::unbounded();
        let depth = self.depth.clone();
        thread::Builder::new().name("market-depth".into()).spawn(move || {
            for symbol in req_rx {
                let got = depth.depth(&symbol);
                if res_tx.send((symbol, got)).is_err() {
                    return;
                }
            }
        })?;
        self.view.with(|s| s.enabled = true);
        thread::Builder::new().name("market".into()).spawn(move || Market::new(self, req_tx, res_rx).run())
    }
}

struct Market {
    s: MarketSettings,
    view: MarketView,
    stop: Receiver<()>,
    books: Vec<SymbolBook>,
    ask: Sender<String>,
    answers: Receiver<(String, Result<Snapshot, String>)>,
    connect_log: Quota,
    frame_log: Quota,
}

impl Market {
    fn new(m: MarketStream, ask: Sender<String>, answers: Receiver<(String, Result<Snapshot, String>)>) -> Market {
        let now = Instant::now();
        let books = m
            .settings
            .symbols
            .iter()
            .map(|s| SymbolBook {
                symbol: s.clone(),
                prefix: s.to_ascii_lowercase(),
                // 100 ms events for a minute: more waiting than that is no longer joinable.
                sync: BookSync::new(600),
                pacer: Pacer::new(&m.settings.snapshots, now),
                depth_seen: false,
                ticker: None,
                depth_at: None,
            })
            .collect();
        Market {
            s: m.settings,
            view: m.view,
            stop: m.stop,
            books,
            ask,
            answers,
            connect_log: Quota { every: Duration::from_secs(300), last: None },
            frame_log: Quota { every: Duration::from_secs(60), last: None },
        }
    }

    fn run(mut self) {
        // The user stream keeps 250 of the 300 attempts Binance allows per 5 minutes per IP.
        let mut attempts = Attempts::new(&self.s.ws, 40);
        let mut session = 0u64;
        let mut delay = Duration::ZERO;
        let path = self.s.path();
        loop {
            if attempts.wait(&self.stop, delay) {
                return;
            }
            let (w, max_frame) = (&self.s.ws, self.s.max_frame);
            let ws = match connect_limited(&w.ws_url, &path, w.connect_timeout, &w.tls, max_frame, &mut || {
                attempts.record()
            }) {
                Ok(ws) => ws,
                Err(e) => {
                    self.view.with(|v| v.connect_failures += 1);
                    delay = attempts.backoff.next_delay(Instant::now());
                    self.connect_log.warn(format_args!(
                        "market: cannot connect the market stream ({e}); REST prices meanwhile; retrying in {delay:?}"
                    ));
                    continue;
                }
            };
            session += 1;
            let now = Instant::now();
            attempts.backoff.connected(now);
            self.connect_log.last = None;
            log::info!("market: connected session={session} for {} symbols", self.books.len());
            for b in &mut self.books {
                b.sync.reset();
                b.depth_seen = false;
                b.ticker = None;
                b.depth_at = None;
            }
            self.view.with(|v| {
                v.up = true;
                v.sessions += 1;
                v.last_frame = Some(now);
            });
            let end = self.read_loop(ws);
            for b in &self.books {
                self.view.feed().forget(&b.symbol);
            }
            self.view.with(|v| {
                v.up = false;
                for m in v.symbols.values_mut() {
                    m.top = None;
                    m.synced = false;
                    m.levels = (Vec::new(), Vec::new());
                    m.book_id = None;
                }
            });
            match end {
                End::Stop => return,
                End::Lost { cause, reason, quick } => {
                    delay = if quick { self.s.ws.backoff_min } else { attempts.backoff.next_delay(Instant::now()) };
                    self.view.with(|v| *v.reconnects.entry(cause).or_default() += 1);
                    log::warn!(
                        "market: session={session} lost ({reason}); REST prices meanwhile; reconnecting in {delay:?}"
                    );
                }
            }
        }
    }

    fn read_loop(&mut self, mut ws: WebSocket<Conn>) -> End {
        if let Err(e) = ws.get_ref().tcp().set_read_timeout(Some(self.s.ws.poll)) {
            return lost("error", format!("socket: {}", e.kind()), false);
        }
        let opened = Instant::now();
        let mut live = Liveness::new(self.s.ws.ping_every, self.s.ws.silence_timeout, opened);
        loop {
            if stopping(&self.stop) {
                close(&mut ws);
                return End::Stop;
            }
            let now = Instant::now();
            if now.duration_since(opened) >= self.s.max_life {
                close(&mut ws);
                return lost("lifetime", "connection lifetime reached (the server cuts at 24 h)", true);
            }
            match live.tick(&mut ws, now) {
                Ok(()) => {}
                Err(Quiet::Silent(why)) => return lost("silence", why, true),
                Err(Quiet::PingFailed(why)) => return lost("error", why, false),
            }
            self.take_snapshots();
            self.ask_snapshots();
            match ws.read() {
                Ok(msg) => {
                    let at = live.heard(Instant::now());
                    self.view.with(|v| v.last_frame = Some(at));
                    match msg {
                        Message::Text(text) => {
                            if self.on_text(text.as_str(), at) {
                                close(&mut ws);
                                return lost("server_shutdown", "serverShutdown", true);
                            }
                        }
                        Message::Binary(b) => {
                            self.view.with(|v| v.skipped_frames += 1);
                            self.frame_log.warn(format_args!("market: skipped a binary frame of {} bytes", b.len()));
                        }
                        Message::Close(frame) => {
                            let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                            let _ = ws.flush();
                            return lost("closed", format!("server closed with {code}"), false);
                        }
                        // tungstenite queues the pong for a ping; it goes out with the next flush.
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                    if let Err(e) = ws.flush() {
                        if !is_timeout(&e) {
                            return lost("error", format!("flush: {}", crate::Error::from(e)), false);
                        }
                    }
                }
                Err(e) if is_timeout(&e) => {
                    let _ = ws.flush();
                }
                Err(e) => return lost("error", crate::Error::from(e).to_string(), false),
            }
        }
    }

    /// One text frame; true on `serverShutdown`.
    fn on_text(&mut self, text: &str, at: Instant) -> bool {
        let frame: Combined = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                self.skipped(text.len(), &e.to_string());
                return false;
            }
        };
        // Sent before a planned shutdown, on every stream ("serverShutdown", Binance.US
        // changelog 2026-07-30): leave now, a new connection is served elsewhere.
        if frame.data.get("e").and_then(serde_json::Value::as_str) == Some("serverShutdown") {
            return true;
        }
        let (prefix, kind) = frame.stream.split_once('@').unwrap_or((frame.stream.as_str(), ""));
        let Some(i) = self.books.iter().position(|b| b.prefix == prefix) else {
            log::debug!("market: ignoring stream {:?}", frame.stream);
            return false;
        };
        let done = match kind {
            "depth@100ms" | "depth" => serde_json::from_value::<DepthEvent>(frame.data)
                .map_err(|e| e.to_string())
                .and_then(|e| self.on_depth(i, e, at)),
            "bookTicker" => serde_json::from_value::<TickerEvent>(frame.data).map_err(|e| e.to_string()).map(|t| {
                self.books[i].ticker = Some((t.u, t.b, t.a, at));
                self.publish(i);
            }),
            "trade" => serde_json::from_value::<TradeEvent>(frame.data).map_err(|e| e.to_string()).map(|t| {
                let symbol = &self.books[i].symbol;
                self.view.with(|v| {
                    if let Some(m) = v.symbols.get_mut(symbol) {
                        m.trades += 1;
                        m.last_trade = Some((t.p, t.q, t.time));
                    }
                });
                if self.view.feed().wants_trades() {
                    self.view.feed().trade(TradeUpdate {
                        symbol: symbol.clone(),
                        trade_id: t.t,
                        price: t.p,
                        qty: t.q,
                        time_ms: t.time,
                        event_time_ms: t.event_time,
                        received_ms: wall_ms(at),
                        buyer_maker: t.m,
                    });
                }
            }),
            _ => {
                log::debug!("market: ignoring stream {:?}", frame.stream);
                Ok(())
            }
        };
        if let Err(e) = done {
            self.skipped(text.len(), &format!("{}: {e}", frame.stream));
        }
        false
    }

    fn skipped(&mut self, len: usize, why: &str) {
        self.view.with(|v| v.skipped_frames += 1);
        self.frame_log.warn(format_args!("market: skipped a text frame of {len} bytes: {why}"));
    }

    fn on_depth(&mut self, i: usize, e: DepthEvent, at: Instant) -> Result<(), String> {
        if e.first > e.last {
            return Err(format!("update ids {}..{} run backwards", e.first, e.last));
        }
        let b = &mut self.books[i];
        b.depth_seen = true;
        let event_time = e.event_time;
        let ev = DepthUpdate { first_id: e.first, last_id: e.last, event_time, bids: e.bids, asks: e.asks };
        // While buffering too: the last buffered event is the newest the book holds once live.
        b.depth_at = Some((event_time, at));
        match b.sync.on_event(ev) {
            Ok(_) => {}
            Err(broken) => {
                log::info!("market: {} book broken ({broken:?}); a new snapshot follows", b.symbol);
                b.pacer.broken(Instant::now());
            }
        }
        self.publish(i);
        Ok(())
    }

    /// Answers from `market-depth`.
    fn take_snapshots(&mut self) {
        while let Ok((symbol, got)) = self.answers.try_recv() {
            let Some(i) = self.books.iter().position(|b| b.symbol == symbol) else { continue };
            let now = Instant::now();
            let b = &mut self.books[i];
            let result = got.and_then(|snap| {
                b.sync.on_snapshot(&snap).map_err(|broken| match broken {
                    Broken::StaleSnapshot { .. } => format!("cannot be joined to the stream ({broken:?})"),
                    other => format!("the buffered events break ({other:?})"),
                })
            });
            let live = result.is_ok() && b.sync.need() == Need::Events;
            b.pacer.answered(live, now);
            if live {
                log::info!(
                    "market: {symbol} book synchronised at update id {:?}",
                    b.sync.book().map(|k| k.last_update_id())
                );
            }
            if let Err(e) = &result {
                log::warn!("market: {symbol} snapshot not used: {e}");
            }
            self.view.with(|v| {
                if let Some(m) = v.symbols.get_mut(&symbol) {
                    m.snapshot_failures += u64::from(result.is_err());
                }
            });
            self.publish(i);
        }
    }

    /// Asks for the snapshots that are due.
    fn ask_snapshots(&mut self) {
        let now = Instant::now();
        for b in &mut self.books {
            if b.sync.need() != Need::Snapshot || !b.depth_seen || !b.pacer.try_start(now) {
                continue;
            }
            if self.ask.try_send(b.symbol.clone()).is_err() {
                // Cannot happen (one request per symbol at most); if it did, try again later.
                b.pacer.answered(false, now);
                continue;
            }
            let symbol = &b.symbol;
            self.view.with(|v| {
                if let Some(m) = v.symbols.get_mut(symbol) {
                    m.snapshots += 1;
                }
            });
        }
    }

    /// Writes symbol `i`'s top, levels and counters into the view.
    fn publish(&self, i: usize) {
        let b = &self.books[i];
        let book = b.sync.book();
        let from_book = book.and_then(|k| {
            let (event_time, received) = b.depth_at?;
            let event_time = Some(event_time).filter(|t| *t > 0);
            Some(Top {
                bid: k.best_bid()?.0,
                ask: k.best_ask()?.0,
                update_id: k.last_update_id(),
                event_time_ms: event_time,
                received,
            })
        });
        let from_ticker =
            b.ticker.map(|(u, bid, ask, received)| Top { bid, ask, update_id: u, event_time_ms: None, received });
        let top = match (from_book, from_ticker) {
            (Some(k), Some(t)) if t.update_id > k.update_id => Some(t),
            (k, t) => k.or(t),
        };
        let levels = book.map(|k| k.top(self.s.levels)).unwrap_or_default();
        // Plugins get the book itself (not a newer `@bookTicker` top), each change once.
        match (book, b.depth_at) {
            (Some(k), Some((event_time, received))) => self.view.feed().book(BookUpdate {
                symbol: b.symbol.clone(),
                update_id: k.last_update_id(),
                event_time_ms: event_time.max(0),
                received_ms: wall_ms(received),
                bids: levels.0.clone(),
                asks: levels.1.clone(),
            }),
            _ => self.view.feed().forget(&b.symbol),
        }
        self.view.with(|v| {
            if let Some(m) = v.symbols.get_mut(&b.symbol) {
                m.top = top;
                m.synced = book.is_some();
                m.levels = levels;
                m.book_id = book.map(|k| k.last_update_id());
                m.resyncs = b.sync.resyncs;
                m.gaps = b.sync.gaps;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::Mutex;
    use tungstenite::handshake::server::{Request, Response};

    type Script = Box<dyn FnOnce(WebSocket<TcpStream>) + Send>;

    /// A WebSocket server on loopback giving its `n`th connection the `n`th script (later ones
    /// are dropped at once); the request paths it was asked for.
    fn serve(scripts: Vec<Script>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = paths.clone();
        thread::spawn(move || {
            let mut scripts = scripts.into_iter();
            for tcp in listener.incoming().map_while(Result::ok) {
                let Some(script) = scripts.next() else { continue };
                let seen = seen.clone();
                thread::spawn(move || {
                    #[expect(clippy::result_large_err, reason = "tungstenite's Callback fixes the error type")]
                    let note = |req: &Request, resp: Response| {
                        seen.lock().unwrap().push(req.uri().to_string());
                        Ok(resp)
                    };
                    if let Ok(ws) = tungstenite::accept_hdr(tcp, note) {
                        script(ws);
                    }
                });
            }
        });
        (addr, paths)
    }

    fn send(ws: &mut WebSocket<TcpStream>, text: String) {
        ws.send(Message::text(text)).unwrap();
    }

    /// Reads (answering pings) until the client goes.
    fn hold(mut ws: WebSocket<TcpStream>) {
        while ws.read().is_ok() {}
    }

    fn levels(side: &[(&str, &str)]) -> String {
        let v: Vec<String> = side.iter().map(|(p, q)| format!("[\"{p}\",\"{q}\"]")).collect();
        format!("[{}]", v.join(","))
    }

    fn depth(first: u64, last: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> String {
        format!(
            r#"{{"stream":"btcusd@depth@100ms","data":{{"e":"depthUpdate","E":{},"s":"BTCUSD","U":{first},"u":{last},"b":{},"a":{}}}}}"#,
            1_700_000_000_000u64 + last,
            levels(bids),
            levels(asks)
        )
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn side(levels: &[(&str, &str)]) -> Vec<Level> {
        levels.iter().map(|(p, q)| (d(p), d(q))).collect()
    }

    fn snap(id: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> Snapshot {
        Snapshot { last_update_id: id, bids: side(bids), asks: side(asks) }
    }

    /// Answers snapshots in order (an error once they run out) and counts the requests.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<VecDeque<Snapshot>>,
        calls: Mutex<u64>,
    }

    impl DepthSource for Scripted {
        fn depth(&self, symbol: &str) -> Result<Snapshot, String> {
            assert_eq!(symbol, "BTCUSD");
            *self.calls.lock().unwrap() += 1;
            self.answers.lock().unwrap().pop_front().ok_or_else(|| "no snapshot scripted".to_string())
        }
    }

    fn scripted(answers: Vec<Snapshot>) -> Arc<Scripted> {
        Arc::new(Scripted { answers: Mutex::new(answers.into()), calls: Mutex::new(0) })
    }

    fn settings(addr: SocketAddr) -> MarketSettings {
        let ws = StreamSettings {
            ws_url: format!("ws://{addr}"),
            connect_timeout: Duration::from_secs(2),
            ping_every: Duration::from_secs(5),
            silence_timeout: Duration::from_secs(15),
            backoff_min: Duration::ZERO,
            backoff_max: Duration::ZERO,
            backoff_reset: Duration::ZERO,
            poll: Duration::from_millis(20),
            tls: crate::tls::client_config(&[]).unwrap(),
        };
        let mut s = MarketSettings::new(ws, &["BTCUSD".to_string()]);
        s.ws.backoff_min = Duration::from_millis(20);
        s.ws.backoff_max = Duration::from_millis(100);
        s.snapshots = SnapshotPace {
            per_window: 10,
            window: Duration::from_secs(1),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
        };
        s
    }

    /// A running thread; stopped and joined when dropped.
    struct Running {
        view: MarketView,
        stop: Option<Sender<()>>,
        handle: Option<JoinHandle<()>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.take();
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    fn start(settings: MarketSettings, view: MarketView, depth: Arc<dyn DepthSource>) -> Running {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let handle = MarketStream { settings, view: view.clone(), depth, stop: stop_rx }.spawn().unwrap();
        Running { view, stop: Some(stop_tx), handle: Some(handle) }
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "never: {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn btc(view: &MarketView) -> crate::market::SymbolMarket {
        view.state().symbols.get("BTCUSD").cloned().unwrap_or_default()
    }

    /// Waits until the book is at `id` and then holds exactly these levels.
    fn wait_book(view: &MarketView, id: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) {
        wait_for(&format!("book at {id}"), || btc(view).book_id == Some(id));
        assert_eq!(btc(view).levels, (side(bids), side(asks)));
    }

    fn view() -> MarketView {
        MarketView::new(&["BTCUSD".to_string()], false)
    }

    #[test]
    fn after_a_gap_the_book_is_snapshotted_again_and_equals_the_exchanges() {
        let v = view();
        let v2 = v.clone();
        let (addr, paths) = serve(vec![Box::new(move |mut ws| {
            send(&mut ws, depth(101, 101, &[("10", "1")], &[]));
            wait_for("synced", || btc(&v2).synced);
            send(&mut ws, depth(102, 102, &[], &[("11", "2")]));
            // 103 (a bid of 8 at 5) is lost on the way.
            send(&mut ws, depth(104, 104, &[("9", "0")], &[]));
            send(&mut ws, depth(105, 105, &[], &[("12", "0.00000000")]));
            hold(ws)
        })]);
        let snaps = scripted(vec![
            snap(100, &[("9", "1")], &[("12", "1")]),
            snap(103, &[("10", "1"), ("9", "1"), ("8", "5")], &[("11", "2"), ("12", "1")]),
        ]);
        let run = start(settings(addr), v, snaps.clone());
        wait_book(&run.view, 105, &[("10", "1"), ("8", "5")], &[("11", "2")]);
        let m = btc(&run.view);
        assert_eq!((m.gaps, m.resyncs, m.snapshots, m.snapshot_failures), (1, 1, 2, 0));
        let top = m.top.unwrap();
        assert_eq!(
            (top.bid, top.ask, top.update_id, top.event_time_ms),
            (d("10"), d("11"), 105, Some(1_700_000_000_105))
        );
        let state = run.view.state();
        assert!(state.enabled && state.up);
        assert_eq!(state.sessions, 1);
        assert_eq!(
            paths.lock().unwrap().as_slice(),
            ["/stream?streams=btcusd@bookTicker/btcusd@depth@100ms/btcusd@trade"]
        );
    }

    #[test]
    fn after_a_reconnect_the_book_starts_again_from_a_new_snapshot() {
        let v = view();
        let v2 = v.clone();
        let (addr, _) = serve(vec![
            Box::new(move |mut ws| {
                send(&mut ws, depth(101, 101, &[("10", "1")], &[]));
                wait_for("synced", || btc(&v2).synced);
                ws.close(None).unwrap();
                hold(ws)
            }),
            Box::new(|mut ws| {
                // Events 102..200 went by while the client was away.
                send(&mut ws, depth(201, 201, &[("7", "3")], &[]));
                hold(ws)
            }),
        ]);
        let snaps = scripted(vec![snap(100, &[("9", "1")], &[("12", "1")]), snap(200, &[("9", "1")], &[("11", "1")])]);
        let run = start(settings(addr), v, snaps);
        wait_book(&run.view, 201, &[("9", "1"), ("7", "3")], &[("11", "1")]);
        let state = run.view.state();
        assert_eq!((state.sessions, state.reconnects.get("closed").copied()), (2, Some(1)));
        assert_eq!(btc(&run.view).resyncs, 1, "the live book was discarded at the reconnect");
    }

    #[test]
    fn garbage_frames_are_skipped_and_the_connection_kept() {
        let (addr, _) = serve(vec![Box::new(|mut ws| {
            for junk in [
                "not json".to_string(),
                r#"{"result":null,"id":1}"#.to_string(),
                r#"{"stream":"ethusd@depth@100ms","data":{}}"#.to_string(),
                r#"{"stream":"btcusd@depth@100ms","data":{"U":"x"}}"#.to_string(),
                r#"{"stream":"btcusd@depth@100ms","data":{"E":1,"U":9,"u":3,"b":[],"a":[]}}"#.to_string(),
                r#"{"stream":"btcusd@bookTicker","data":{"u":1,"b":"1e5","a":"2"}}"#.to_string(),
                r#"{"stream":"btcusd@kline_1m","data":{}}"#.to_string(),
            ] {
                send(&mut ws, junk);
            }
            ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
            send(&mut ws, depth(101, 101, &[("10", "1")], &[]));
            send(
                &mut ws,
                r#"{"stream":"btcusd@bookTicker","data":{"u":102,"s":"BTCUSD","b":"10.5","B":"1","a":"11","A":"2"}}"#
                    .to_string(),
            );
            send(
                &mut ws,
                r#"{"stream":"btcusd@trade","data":{"e":"trade","E":5,"s":"BTCUSD","t":7,"p":"10.7","q":"0.5","T":4,"m":true}}"#
                    .to_string(),
            );
            hold(ws)
        })]);
        let run = start(settings(addr), view(), scripted(vec![snap(100, &[("9", "1")], &[("12", "1")])]));
        wait_book(&run.view, 101, &[("10", "1"), ("9", "1")], &[("12", "1")]);
        wait_for("the trade", || btc(&run.view).trades == 1);
        let m = btc(&run.view);
        // The ticker's update id (102) is newer than the book's (101): its prices are the touch.
        let top = m.top.unwrap();
        assert_eq!((top.bid, top.ask, top.update_id, top.event_time_ms), (d("10.5"), d("11"), 102, None));
        assert_eq!(m.last_trade, Some((d("10.7"), d("0.5"), 4)));
        let state = run.view.state();
        assert_eq!(
            (state.sessions, state.skipped_frames),
            (1, 6),
            "not json, a reply, two bad depths, a bad ticker and the binary frame"
        );
    }

    #[test]
    fn a_silent_socket_is_given_up_and_a_new_one_opened() {
        let (addr, _) = serve(vec![
            Box::new(|mut ws| {
                send(&mut ws, depth(101, 101, &[("10", "1")], &[]));
                // Silent, and never reads: no pong for the client's pings either.
                thread::sleep(Duration::from_secs(5));
                drop(ws)
            }),
            Box::new(hold),
        ]);
        let mut s = settings(addr);
        s.ws.ping_every = Duration::from_millis(100);
        s.ws.silence_timeout = Duration::from_millis(400);
        let run = start(s, view(), scripted(vec![]));
        wait_for("a second session", || run.view.state().sessions == 2);
        assert_eq!(run.view.state().reconnects.get("silence").copied(), Some(1));
    }

    #[test]
    fn server_shutdown_an_oversized_frame_and_the_lifetime_each_end_a_connection() {
        let (addr, _) = serve(vec![
            Box::new(|mut ws| {
                send(&mut ws, r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}"#.to_string());
                hold(ws)
            }),
            Box::new(|mut ws| {
                send(&mut ws, format!(r#"{{"stream":"btcusd@trade","data":"{}"}}"#, "x".repeat(4096)));
                hold(ws)
            }),
            Box::new(hold),
            Box::new(hold),
        ]);
        let mut s = settings(addr);
        s.max_frame = 2048;
        s.max_life = Duration::from_millis(500);
        let run = start(s, view(), scripted(vec![]));
        wait_for("a fourth session", || run.view.state().sessions == 4);
        let r = run.view.state().reconnects;
        assert_eq!(
            (r.get("server_shutdown"), r.get("error"), r.get("lifetime")),
            (Some(&1), Some(&1), Some(&1)),
            "{r:?}"
        );
    }

    #[test]
    fn a_stream_full_of_gaps_gets_snapshots_only_at_the_paced_rate() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let sending = Arc::new(AtomicBool::new(true));
        let sent = Arc::new(AtomicU64::new(0));
        let (on, last) = (sending.clone(), sent.clone());
        let (addr, _) = serve(vec![Box::new(move |mut ws| {
            // Every event skips one id; every snapshot is joinable, so each one is used and
            // broken again by the next event.
            let mut id = 100;
            while on.load(Ordering::Relaxed) {
                id += 2;
                send(&mut ws, depth(id, id, &[("10", "1")], &[]));
                last.store(id, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(5));
            }
            hold(ws)
        })]);
        /// The book just before the newest event sent, which that event brackets.
        struct Fresh(Arc<AtomicU64>);
        impl DepthSource for Fresh {
            fn depth(&self, _: &str) -> Result<Snapshot, String> {
                Ok(snap(self.0.load(Ordering::Relaxed).saturating_sub(1), &[], &[]))
            }
        }
        let mut s = settings(addr);
        s.snapshots = SnapshotPace {
            per_window: 3,
            window: Duration::from_millis(500),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
        };
        let started = Instant::now();
        let run = start(s, view(), Arc::new(Fresh(sent)));
        wait_for("gaps", || btc(&run.view).gaps >= 5);
        sending.store(false, Ordering::Relaxed);
        let took = started.elapsed();
        let m = btc(&run.view);
        let windows = took.as_millis() / 500 + 1;
        assert!(m.snapshots <= 3 * windows as u64, "{} snapshots in {took:?}", m.snapshots);
        assert!(m.gaps <= m.snapshots, "a gap needs a live book, a live book a snapshot");
    }

    #[test]
    fn the_pacer_holds_the_cap_and_the_backoff() {
        let pace = SnapshotPace::default();
        let t0 = Instant::now();
        let mut p = Pacer::new(&pace, t0);
        let mut asked = Vec::new();
        // A gap right after every snapshot, checked every 100 ms for 10 minutes.
        for step in 0..6000u64 {
            let now = t0 + Duration::from_millis(100 * step);
            if p.try_start(now) {
                asked.push(now);
                p.answered(true, now);
                p.broken(now);
            }
        }
        for (i, t) in asked.iter().enumerate() {
            let in_window = asked[i..].iter().take_while(|u| u.duration_since(*t) < pace.window).count();
            assert!(in_window <= pace.per_window, "{in_window} snapshots within a minute");
        }
        for w in asked.windows(2) {
            assert!(w[1] - w[0] >= pace.backoff_min / 2, "{:?} apart", w[1] - w[0]);
        }
        // Paced, never stopped: the backoff tops out at 30 s.
        assert!(asked.len() >= 19, "{} snapshots in 10 minutes", asked.len());
        // One in flight at a time.
        let mut q = Pacer::new(&pace, t0);
        assert!(q.try_start(t0));
        assert!(!q.try_start(t0 + Duration::from_secs(100)));
    }
}
