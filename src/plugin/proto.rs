//! The daemon ↔ plugin-host protocol (issue 21): frames over one AF_UNIX stream socket, each a
//! 4-byte big-endian length then that many bytes of JSON. Every frame is bounded ([`MAX_UP`]
//! from the child, which runs plugin code and is not trusted; [`MAX_DOWN`] from the daemon); a
//! frame over its bound, or one that does not parse, ends the child, never the daemon.
//!
//! Strictly one conversation at a time, driven by the daemon:
//!
//! ```text
//! daemon                                  child (plugin-host)
//!   Load {proto, image}          ──▶      dlopen + entry + ABI check + create
//!                                ◀──      Ready {proto, version, abi_minor, books, trades}
//!                                         | Refused {why}
//!   Call {Start | Fill | Order | Price | Balance | Tick | Book | Trade | Stop}
//!                                ◀──      any number of Intent / RulesOf / Log, then
//!                                ◀──      Done {status, seq}     (seq: the fill's, 0 otherwise)
//!   (each Intent is answered by Submitted {request, status}, each RulesOf by Rules {json},
//!    before the child goes on: the C host functions stay synchronous)
//!   EOF                          ──▶      destroy, exit 0
//! ```
//!
//! `Done` after a `Fill` is its acknowledgement: the daemon's cursor moves only then. Request
//! ids are the daemon's (the executor's), so a plugin sees the same ids in its later
//! `on_order` updates as it did in-process.

use crate::plugin::ffi::Plugin;
use binance_syncd_plugin::abi;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Bumped on any incompatible change; both ends are the same binary today, so a mismatch
/// means an upgrade in flight (the daemon's image replaced under a running daemon).
pub const PROTO: u32 = 1;
/// Largest frame the daemon accepts from a child.
pub const MAX_UP: usize = 1 << 20;
/// Largest frame the child accepts from the daemon (a start snapshot holds every symbol's
/// rules).
pub const MAX_DOWN: usize = 16 << 20;
/// Longest log message a child forwards (the daemon cuts it further).
pub const MAX_LOG: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FillMsg {
    pub seq: u64,
    pub trade_id: u64,
    pub order_id: u64,
    pub time_ms: i64,
    pub symbol: String,
    pub client_order_id: String,
    pub price: String,
    pub qty: String,
    pub quote_qty: String,
    pub commission: String,
    pub commission_asset: String,
    pub side: u8,
    pub maker: bool,
    pub replayed: bool,
    /// Placed by this daemon (its instance's client ids); false for a plugin below ABI 1.4.
    #[serde(default)]
    pub own: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateMsg {
    pub request: u64,
    pub order_id: u64,
    pub code: i64,
    pub symbol: String,
    pub client_order_id: String,
    pub price: String,
    pub qty: String,
    pub status: String,
    pub reason: String,
    pub kind: u8,
    pub side: u8,
    pub resolved: bool,
    /// An `abi::REASON_*`; `REASON_NONE` for a plugin below ABI 1.4.
    #[serde(default)]
    pub reason_code: u8,
}

/// A book for `on_book` (ABI 1.5): levels as `(price, qty)` exact decimal strings, best first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookMsg {
    pub symbol: String,
    pub update_id: u64,
    pub event_time_ms: i64,
    pub received_ms: i64,
    pub skipped: u64,
    pub bids: Vec<(String, String)>,
    pub asks: Vec<(String, String)>,
}

/// A public trade for `on_trade` (ABI 1.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeMsg {
    pub symbol: String,
    pub trade_id: u64,
    pub price: String,
    pub qty: String,
    pub time_ms: i64,
    pub event_time_ms: i64,
    pub received_ms: i64,
    pub buyer_maker: bool,
    pub dropped: u64,
}

/// One callback of the plugin's table, with its argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "c", rename_all = "snake_case")]
pub enum Call {
    Start { name: String, settings: String, snapshot: String },
    Fill(FillMsg),
    Order(UpdateMsg),
    Price { symbol: String, bid: String, ask: String },
    Balance { asset: String, free: String, locked: String },
    Tick { now_ms: i64 },
    Stop,
    Book(BookMsg),
    Trade(TradeMsg),
}

/// Daemon → child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Down {
    Load {
        proto: u32,
        image: String,
    },
    /// The first frame to a program plugin (issue 23), in place of `Load`: it answers `Ready`
    /// or `Refused` as a plugin host does. `name` is its plugin name.
    Hello {
        proto: u32,
        name: String,
    },
    Call {
        call: Call,
    },
    Submitted {
        request: u64,
        status: i32,
    },
    Rules {
        json: Option<String>,
    },
}

/// Child → daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Up {
    Ready {
        proto: u32,
        version: String,
        abi_minor: u32,
        /// It exports `on_book`, `on_trade` (ABI 1.5): only then is it sent books, trades.
        #[serde(default)]
        books: bool,
        #[serde(default)]
        trades: bool,
    },
    Refused {
        why: String,
    },
    Done {
        status: i32,
        seq: u64,
    },
    Intent {
        kind: u8,
        side: u8,
        order_id: u64,
        symbol: String,
        price: String,
        qty: String,
        client_order_id: String,
    },
    RulesOf {
        symbol: String,
    },
    Log {
        level: i32,
        msg: String,
    },
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Writes one frame; a message over `max` is an error and nothing is written.
pub fn write_frame<T: Serialize>(mut w: impl Write, msg: &T, max: usize) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(|e| invalid(e.to_string()))?;
    if body.len() > max {
        return Err(invalid(format!("a frame of {} bytes, over the {max} allowed", body.len())));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)
}

/// Reads one frame; `Ok(None)` at a clean end of stream (between frames).
pub fn read_frame<T: DeserializeOwned>(mut r: impl Read, max: usize) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(invalid(format!("a frame of {len} bytes announced, over the {max} allowed")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map(Some).map_err(|e| invalid(format!("a malformed frame: {e}")))
}

/// Reads frames through a buffer of its own: a frame's length and body come in one `read`
/// (and several frames in one, when the peer sent more than one: log lines before a `Done`),
/// where [`read_frame`] takes two per frame. Each end reads its channel through one of these
/// only. The buffer grows to the largest frame read (so never past `4 + max`) and goes back to
/// its usual size (8 KiB) once such a frame is consumed. A read that fails or times out
/// mid-frame keeps what it got: the next call goes on from there.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl FrameReader {
    /// The buffer's size between large frames: any fill, update or intent fits.
    const KEEP: usize = 8 << 10;

    /// Buffers at least `want` unread bytes, reading as needed; false if the stream ended first.
    fn fill(&mut self, r: &mut impl Read, want: usize) -> io::Result<bool> {
        while self.end - self.start < want {
            if self.buf.len() - self.start < want {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < want {
                    self.buf.resize(want.max(Self::KEEP), 0);
                }
            }
            match r.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// As [`read_frame`].
    pub fn read<T: DeserializeOwned>(&mut self, mut r: impl Read, max: usize) -> io::Result<Option<T>> {
        if !self.fill(&mut r, 4)? {
            return if self.end == self.start { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.buf[self.start..self.start + 4]);
        let len = u32::from_be_bytes(len) as usize;
        if len > max {
            return Err(invalid(format!("a frame of {len} bytes announced, over the {max} allowed")));
        }
        if !self.fill(&mut r, 4 + len)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let body = &self.buf[self.start + 4..self.start + 4 + len];
        let msg = serde_json::from_slice(body).map_err(|e| invalid(format!("a malformed frame: {e}")));
        self.start += 4 + len;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if self.buf.len() > Self::KEEP {
                self.buf.truncate(Self::KEEP);
                self.buf.shrink_to_fit();
            }
        }
        msg.map(Some)
    }
}

/// Runs `call` on a loaded plugin: the ABI structures are built here, borrowing the message's
/// strings for the duration of the call. The in-process path and the plugin host share it.
pub fn invoke(plugin: &mut Plugin, call: &Call) -> abi::Status {
    match call {
        Call::Start { name, settings, snapshot } => plugin.start(name, settings, snapshot),
        Call::Fill(f) => plugin.on_fill(&abi::Fill {
            seq: f.seq,
            trade_id: f.trade_id,
            order_id: f.order_id,
            time_ms: f.time_ms,
            symbol: abi::Str::of(&f.symbol),
            client_order_id: abi::Str::of(&f.client_order_id),
            price: abi::Str::of(&f.price),
            qty: abi::Str::of(&f.qty),
            quote_qty: abi::Str::of(&f.quote_qty),
            commission: abi::Str::of(&f.commission),
            commission_asset: abi::Str::of(&f.commission_asset),
            side: f.side,
            maker: u8::from(f.maker),
            replayed: u8::from(f.replayed),
            own: u8::from(f.own),
        }),
        Call::Order(u) => plugin.on_order(&abi::OrderUpdate {
            request: u.request,
            order_id: u.order_id,
            code: u.code,
            symbol: abi::Str::of(&u.symbol),
            client_order_id: abi::Str::of(&u.client_order_id),
            price: abi::Str::of(&u.price),
            qty: abi::Str::of(&u.qty),
            status: abi::Str::of(&u.status),
            reason: abi::Str::of(&u.reason),
            kind: u.kind,
            side: u.side,
            resolved: u8::from(u.resolved),
            reason_code: u.reason_code,
            _reserved: [0; 4],
        }),
        Call::Price { symbol, bid, ask } => plugin.on_price(&abi::Price {
            symbol: abi::Str::of(symbol),
            bid: abi::Str::of(bid),
            ask: abi::Str::of(ask),
        }),
        Call::Balance { asset, free, locked } => plugin.on_balance(&abi::Balance {
            asset: abi::Str::of(asset),
            free: abi::Str::of(free),
            locked: abi::Str::of(locked),
        }),
        Call::Tick { now_ms } => plugin.on_tick(*now_ms),
        Call::Stop => plugin.stop(),
        Call::Book(b) => invoke_book(plugin, b),
        Call::Trade(t) => plugin.on_trade(&abi::Trade {
            trade_id: t.trade_id,
            time_ms: t.time_ms,
            event_time_ms: t.event_time_ms,
            received_ms: t.received_ms,
            dropped: t.dropped,
            symbol: abi::Str::of(&t.symbol),
            price: abi::Str::of(&t.price),
            qty: abi::Str::of(&t.qty),
            buyer_maker: u8::from(t.buyer_maker),
            _reserved: [0; 7],
        }),
    }
}

/// `on_book` with the levels laid out as the ABI's arrays, borrowing the message's strings.
fn invoke_book(plugin: &mut Plugin, b: &BookMsg) -> abi::Status {
    let side = |levels: &[(String, String)]| -> Vec<abi::Level> {
        levels.iter().map(|(p, q)| abi::Level { price: abi::Str::of(p), qty: abi::Str::of(q) }).collect()
    };
    let (bids, asks) = (side(&b.bids), side(&b.asks));
    plugin.on_book(&abi::Book {
        update_id: b.update_id,
        event_time_ms: b.event_time_ms,
        received_ms: b.received_ms,
        skipped: b.skipped,
        symbol: abi::Str::of(&b.symbol),
        bids: bids.as_ptr(),
        bid_count: bids.len(),
        asks: asks.as_ptr(),
        ask_count: asks.len(),
    })
}

/// `msg` cut to at most `max` bytes on a character boundary.
pub fn cut(msg: &str, max: usize) -> &str {
    if msg.len() <= max {
        return msg;
    }
    let mut end = max;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    &msg[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_bad_one_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        let fill =
            Call::Fill(FillMsg { seq: 7, price: "1.50".into(), replayed: true, own: true, ..Default::default() });
        write_frame(&mut buf, &Down::Call { call: fill.clone() }, MAX_DOWN).unwrap();
        write_frame(&mut buf, &Up::Done { status: 0, seq: 7 }, MAX_UP).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<Down>(&mut r, MAX_DOWN).unwrap(), Some(Down::Call { call: fill }));
        assert_eq!(read_frame::<Up>(&mut r, MAX_UP).unwrap(), Some(Up::Done { status: 0, seq: 7 }));
        assert_eq!(read_frame::<Up>(&mut r, MAX_UP).unwrap(), None, "a clean end");
        // Announced too large: refused before anything is allocated for it.
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(read_frame::<Up>(&huge[..], MAX_UP).is_err());
        // Not JSON of a known message, or cut short.
        let mut junk = 5u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{\"t\":");
        assert!(read_frame::<Up>(&junk[..], MAX_UP).is_err());
        assert!(read_frame::<Up>(&junk[..6], MAX_UP).is_err());
        // A frame over the writer's bound is not written at all.
        let mut out = Vec::new();
        let log = Up::Log { level: 3, msg: "x".repeat(100) };
        assert!(write_frame(&mut out, &log, 50).is_err());
        assert!(out.is_empty());
    }

    /// A reader that hands out at most `chunk` bytes per `read`, counting the calls.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
        reads: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let n = self.chunk.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_frame_reader_reads_what_read_frame_reads_in_fewer_reads_and_keeps_its_bounds() {
        let mut buf = Vec::new();
        let msgs = [
            Up::Log { level: 1, msg: "a".into() },
            Up::Log { level: 2, msg: "b".repeat(20_000) },
            Up::Done { status: 0, seq: 9 },
        ];
        for m in &msgs {
            write_frame(&mut buf, m, MAX_UP).unwrap();
        }
        for chunk in [1, 7, 1 << 20] {
            let mut r = Trickle { data: &buf, chunk, reads: 0 };
            let mut frames = FrameReader::default();
            for m in &msgs {
                assert_eq!(frames.read::<Up>(&mut r, MAX_UP).unwrap().as_ref(), Some(m), "chunk {chunk}");
            }
            assert_eq!(frames.read::<Up>(&mut r, MAX_UP).unwrap(), None, "a clean end");
            assert!(frames.buf.len() <= FrameReader::KEEP, "back to its size after the large frame");
            if chunk == 1 << 20 {
                // read_frame: two per frame and one for the end, 7.
                assert!(r.reads <= 4, "three frames and the end in {} reads", r.reads);
            }
        }
        // The same refusals: announced too large (nothing allocated for it), cut short, junk.
        let mut frames = FrameReader::default();
        assert!(frames.read::<Up>(&[0xff, 0xff, 0xff, 0xff][..], MAX_UP).is_err());
        assert!(frames.buf.len() <= FrameReader::KEEP);
        let mut junk = 5u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{\"t\":");
        assert!(FrameReader::default().read::<Up>(&junk[..], MAX_UP).is_err());
        assert!(FrameReader::default().read::<Up>(&junk[..6], MAX_UP).is_err());
        assert!(FrameReader::default().read::<Up>(&junk[..2], MAX_UP).is_err());
    }

    #[test]
    fn books_trades_and_what_a_plugin_wants_round_trip_and_an_older_ready_reads_as_wanting_none() {
        let book = Call::Book(BookMsg {
            symbol: "BTCUSD".into(),
            update_id: 42,
            event_time_ms: 1_700_000_000_000,
            received_ms: 1_700_000_000_003,
            skipped: 3,
            bids: vec![("100.10".into(), "0.5".into()), ("100.00".into(), "2".into())],
            asks: vec![("100.20".into(), "0.00000001".into())],
        });
        let trade = Call::Trade(TradeMsg {
            symbol: "ETHUSD".into(),
            trade_id: 7,
            price: "2000.5".into(),
            qty: "0.1".into(),
            buyer_maker: true,
            dropped: 2,
            ..Default::default()
        });
        let ready = Up::Ready { proto: PROTO, version: "v".into(), abi_minor: 5, books: true, trades: false };
        let mut buf = Vec::new();
        for call in [&book, &trade] {
            write_frame(&mut buf, &Down::Call { call: call.clone() }, MAX_DOWN).unwrap();
        }
        write_frame(&mut buf, &ready, MAX_UP).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<Down>(&mut r, MAX_DOWN).unwrap(), Some(Down::Call { call: book }));
        assert_eq!(read_frame::<Down>(&mut r, MAX_DOWN).unwrap(), Some(Down::Call { call: trade }));
        assert_eq!(read_frame::<Up>(&mut r, MAX_UP).unwrap(), Some(ready));
        // A host of the previous protocol says nothing of books: it is sent none.
        let old = br#"{"t":"ready","proto":1,"version":"v","abi_minor":4}"#;
        let mut frame = (old.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(old);
        assert_eq!(
            read_frame::<Up>(&frame[..], MAX_UP).unwrap(),
            Some(Up::Ready { proto: 1, version: "v".into(), abi_minor: 4, books: false, trades: false })
        );
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }
}
