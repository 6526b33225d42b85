//! Where the exchange's engine meets its WebSocket connections.
//!
//! The engine publishes to a listen key; the hub fans each item out to every connection bound
//! to that key. Public market events go by stream name (`btcusd@trade`) to every connection
//! subscribed to it, by URL or by `SUBSCRIBE`; book diffs wait in the [`DepthFeed`] for their
//! stream's cadence. A connection registers with [`StreamHub::attach`] and gets a bounded channel of
//! [`StreamItem`]s: events to send as text, and faults to act out (drop the TCP connection,
//! go silent, send garbage). Sessions are recorded for the ground-truth report.

pub use crate::feed::{Commit, DepthFeed};
use crate::lock::LockAnyway;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a connection is told to do next.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// A JSON event, sent as one text frame (already in the connection's format).
    Event(Arc<str>),
    /// A raw text frame (garbage faults).
    Text(Arc<str>),
    /// A binary frame (garbage faults).
    Binary(Arc<[u8]>),
    /// Close the WebSocket with this code and reason, then the TCP connection.
    Close { code: u16, reason: String },
    /// Drop the TCP connection without a close frame: `rst` sends a reset, else a FIN.
    Drop { rst: bool },
    /// Stop sending anything, pings included, while keeping TCP open.
    Silence,
    /// The next `frames` frames go out in writes of at most `bytes` (over TLS, one record
    /// each), every write cut in two with `pause` between the halves.
    Trickle { frames: u32, bytes: usize, pause: std::time::Duration },
}

/// How a connection subscribed, which decides the event format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamFormat {
    /// `/ws/<listenKey>`: bare event JSON.
    Raw,
    /// `/stream?streams=<listenKey>`: `{"stream":"<listenKey>","data":{...}}`.
    Combined,
}

/// One WebSocket session, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    pub id: u64,
    /// Fingerprint of the listen key, not the key itself.
    pub key: String,
    pub format: StreamFormat,
    pub opened_ms: i64,
    pub closed_ms: Option<i64>,
    pub pings_sent: u64,
    pub pongs_received: u64,
    pub events_sent: u64,
    pub messages_received: u64,
    pub close_reason: Option<String>,
}

struct Subscriber {
    id: u64,
    format: StreamFormat,
    tx: Sender<StreamItem>,
}

/// A connection without a listen key: public market streams only.
struct MarketSubscriber {
    id: u64,
    format: StreamFormat,
    /// Market stream names it gets, from its URL and `SUBSCRIBE`.
    streams: Vec<String>,
    tx: Sender<StreamItem>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    by_key: HashMap<String, Vec<Subscriber>>,
    /// Streams a user-stream connection subscribed to besides its key (combined URLs).
    key_streams: HashMap<u64, Vec<String>>,
    market: Vec<MarketSubscriber>,
    sessions: Vec<SessionRecord>,
    market_sessions: Vec<SessionRecord>,
}

/// Shared by the engine (publishes) and the WebSocket server (attaches connections).
#[derive(Clone, Default)]
pub struct StreamHub {
    inner: Arc<Mutex<Inner>>,
    /// Book diffs waiting for their stream's next event.
    pub feed: Arc<Mutex<DepthFeed>>,
}

/// A market stream name: `<symbol>@<type>` (a listen key has no `@`).
pub fn is_market_stream(name: &str) -> bool {
    name.contains('@')
}

/// Items a connection may have queued before it counts as too slow and is cut.
pub const QUEUE_DEPTH: usize = 65_536;

impl StreamHub {
    pub fn new() -> StreamHub {
        StreamHub::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock_anyway()
    }

    /// Registers a connection for `key`, or (`None`) for public market streams only, and for
    /// the market streams among `streams`. The caller has checked that the key is live.
    pub fn attach(
        &self,
        key: Option<&str>,
        key_tag: String,
        format: StreamFormat,
        streams: &[String],
        now_ms: i64,
    ) -> (u64, Receiver<StreamItem>) {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let market: Vec<String> = streams.iter().filter(|s| is_market_stream(s)).cloned().collect();
        let sessions = match key {
            Some(key) => {
                inner.by_key.entry(key.to_string()).or_default().push(Subscriber { id, format, tx });
                inner.key_streams.insert(id, market);
                &mut inner.sessions
            }
            None => {
                inner.market.push(MarketSubscriber { id, format, streams: market, tx });
                &mut inner.market_sessions
            }
        };
        sessions.push(SessionRecord {
            id,
            key: key_tag,
            format,
            opened_ms: now_ms,
            closed_ms: None,
            pings_sent: 0,
            pongs_received: 0,
            events_sent: 0,
            messages_received: 0,
            close_reason: None,
        });
        (id, rx)
    }

    /// Unregisters a connection and records why it ended (the first reason given wins).
    pub fn detach(&self, id: u64, reason: &str, now_ms: i64) {
        let mut inner = self.lock();
        for subs in inner.by_key.values_mut() {
            subs.retain(|s| s.id != id);
        }
        inner.by_key.retain(|_, subs| !subs.is_empty());
        inner.key_streams.remove(&id);
        inner.market.retain(|s| s.id != id);
        let inner = &mut *inner;
        if let Some(s) = inner.sessions.iter_mut().chain(inner.market_sessions.iter_mut()).find(|s| s.id == id) {
            if s.closed_ms.is_none() {
                s.closed_ms = Some(now_ms);
                s.close_reason = Some(reason.to_string());
            }
        }
    }

    /// Updates a session's counters.
    pub fn record(&self, id: u64, update: impl FnOnce(&mut SessionRecord)) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(s) = inner.sessions.iter_mut().chain(inner.market_sessions.iter_mut()).find(|s| s.id == id) {
            update(s);
        }
    }

    /// The market streams connection `id` gets, after a `SUBSCRIBE` or `UNSUBSCRIBE`.
    pub fn set_streams(&self, id: u64, streams: &[String]) {
        let market: Vec<String> = streams.iter().filter(|s| is_market_stream(s)).cloned().collect();
        let mut inner = self.lock();
        if let Some(s) = inner.market.iter_mut().find(|s| s.id == id) {
            s.streams = market;
        } else if let Some(s) = inner.key_streams.get_mut(&id) {
            *s = market;
        }
    }

    /// Whether any connection gets `stream`.
    pub fn wants(&self, stream: &str) -> bool {
        let inner = self.lock();
        let has = |list: &Vec<String>| list.iter().any(|s| s == stream);
        inner.market.iter().any(|s| has(&s.streams)) || inner.key_streams.values().any(has)
    }

    /// Sends a public market event to every connection subscribed to `stream`, bare or as
    /// `{"stream":..,"data":..}` by the connection's format. A full queue cuts the connection,
    /// as for [`StreamHub::publish`]. Returns how many connections it reached.
    pub fn publish_market(&self, stream: &str, event_json: &str) -> usize {
        let inner = self.lock();
        let mut raw: Option<Arc<str>> = None;
        let mut combined: Option<Arc<str>> = None;
        let mut reached = 0;
        let has = |list: &[String]| list.iter().any(|s| s == stream);
        let mut targets: Vec<(StreamFormat, &Sender<StreamItem>)> =
            inner.market.iter().filter(|s| has(&s.streams)).map(|s| (s.format, &s.tx)).collect();
        for s in inner.by_key.values().flatten() {
            if inner.key_streams.get(&s.id).is_some_and(|list| has(list)) {
                targets.push((s.format, &s.tx));
            }
        }
        for (format, tx) in targets {
            let item = wrapped(format, stream, event_json, &mut raw, &mut combined);
            match tx.try_send(StreamItem::Event(item)) {
                Ok(()) => reached += 1,
                Err(TrySendError::Full(_)) => {
                    let _ = tx.try_send(StreamItem::Drop { rst: true });
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        reached
    }

    /// Sends a command (a market fault) to every connection without a listen key.
    pub fn command_market(&self, item: StreamItem) -> usize {
        let inner = self.lock();
        inner.market.iter().filter(|s| s.tx.try_send(item.clone()).is_ok()).count()
    }

    /// The sessions of market-only connections, for the report.
    pub fn market_sessions(&self) -> Vec<SessionRecord> {
        self.lock().market_sessions.clone()
    }

    /// Takes a book change for the depth streams (see [`DepthFeed`]).
    pub fn depth_changed(&self, symbol: &str, commit: &Commit) {
        self.feed.lock_anyway().add(symbol, commit);
    }

    /// Sends the depth events due now: `@depth@100ms` always, `@depth` (1000 ms) when `slow`.
    pub fn flush_depth(&self, now_ms: i64, slow: bool) {
        let due = self.feed.lock_anyway().take(now_ms, slow, &|s| self.wants(s));
        for (stream, json) in due {
            self.publish_market(&stream, &json);
        }
    }

    /// Sends an event to every connection on `key`, wrapped per connection format. A
    /// connection whose queue is full is cut: the client is not reading.
    /// Returns how many connections it reached.
    pub fn publish(&self, key: &str, event_json: &str) -> usize {
        let inner = self.lock();
        let Some(subs) = inner.by_key.get(key) else { return 0 };
        let mut raw: Option<Arc<str>> = None;
        let mut combined: Option<Arc<str>> = None;
        let mut reached = 0;
        for s in subs {
            let item = wrapped(s.format, key, event_json, &mut raw, &mut combined);
            match s.tx.try_send(StreamItem::Event(item)) {
                Ok(()) => reached += 1,
                Err(TrySendError::Full(_)) => {
                    let _ = s.tx.try_send(StreamItem::Drop { rst: true });
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        reached
    }

    /// Sends a command (a fault to act out) to every connection on `key`, or on all keys if
    /// `None` (market-only connections are [`StreamHub::command_market`]'s).
    pub fn command(&self, key: Option<&str>, item: StreamItem) -> usize {
        let inner = self.lock();
        let mut reached = 0;
        for (k, subs) in &inner.by_key {
            if key.is_some_and(|want| want != k) {
                continue;
            }
            for s in subs {
                if s.tx.try_send(item.clone()).is_ok() {
                    reached += 1;
                }
            }
        }
        reached
    }

    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.lock().sessions.clone()
    }
}

/// An event as a connection of `format` gets it, built once per publish for each format.
fn wrapped(
    format: StreamFormat,
    stream: &str,
    event_json: &str,
    raw: &mut Option<Arc<str>>,
    combined: &mut Option<Arc<str>>,
) -> Arc<str> {
    match format {
        StreamFormat::Raw => raw.get_or_insert_with(|| Arc::from(event_json)).clone(),
        StreamFormat::Combined => combined
            .get_or_insert_with(|| {
                let stream = serde_json::to_string(stream).unwrap_or_else(|_| "\"\"".into());
                Arc::from(format!("{{\"stream\":{stream},\"data\":{event_json}}}"))
            })
            .clone(),
    }
}
