//! Where the exchange's engine meets its WebSocket connections.
//!
//! The engine publishes to a listen key; the hub fans each item out to every connection bound
//! to that key. A connection registers with [`StreamHub::attach`] and gets a bounded channel of
//! [`StreamItem`]s: events to send as text, and faults to act out (drop the TCP connection,
//! go silent, send garbage). Sessions are recorded for the ground-truth report.

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

#[derive(Default)]
struct Inner {
    next_id: u64,
    by_key: HashMap<String, Vec<Subscriber>>,
    sessions: Vec<SessionRecord>,
}

/// Shared by the engine (publishes) and the WebSocket server (attaches connections).
#[derive(Clone, Default)]
pub struct StreamHub {
    inner: Arc<Mutex<Inner>>,
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

    /// Registers a connection for `key`. The caller has checked that the key is live.
    pub fn attach(&self, key: &str, key_tag: String, format: StreamFormat, now_ms: i64) -> (u64, Receiver<StreamItem>) {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.by_key.entry(key.to_string()).or_default().push(Subscriber { id, format, tx });
        inner.sessions.push(SessionRecord {
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
        if let Some(s) = inner.sessions.iter_mut().find(|s| s.id == id) {
            if s.closed_ms.is_none() {
                s.closed_ms = Some(now_ms);
                s.close_reason = Some(reason.to_string());
            }
        }
    }

    /// Updates a session's counters.
    pub fn record(&self, id: u64, update: impl FnOnce(&mut SessionRecord)) {
        if let Some(s) = self.lock().sessions.iter_mut().find(|s| s.id == id) {
            update(s);
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
            let item = match s.format {
                StreamFormat::Raw => raw.get_or_insert_with(|| Arc::from(event_json)).clone(),
                StreamFormat::Combined => combined
                    .get_or_insert_with(|| {
                        let stream = serde_json::to_string(key).unwrap_or_else(|_| "\"\"".into());
                        Arc::from(format!("{{\"stream\":{stream},\"data\":{event_json}}}"))
                    })
                    .clone(),
            };
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

    /// Sends a command (a fault to act out) to every connection on `key`, or on all keys if `None`.
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
