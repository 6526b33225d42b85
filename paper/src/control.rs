//! Fault injection and the ground-truth report: `POST /paper/fault?name=...`, `GET
//! /paper/report`, and the timeline file that schedules faults.
//!
//! Every fault is one row of [`FAULTS`]: its name, its parameters (in brackets when optional,
//! defaults after `=`), what it does, and the function that does it. Dispatch, the timeline's
//! name check and the fault table of `docs/paper-exchange.md` all come from that one table (a unit
//! test keeps the page's names equal to it).
//!
//! Timeline file: one fault per line, `<at> <name> [key=value ...]`, `at` after start as `500ms`,
//! `5s` or `2m`; `#` starts a comment. Example:
//!
//! ```text
//! # rehearse an outage with fills in the gap
//! 10s drop mode=rst refuse_ms=3000
//! 11s fill symbol=BTCUSD
//! 30s burst_429 count=2 retry_after=2
//! ```

use super::engine::Engine;
use super::http::{Request, Response};
use super::hub::StreamItem;
use super::Shared;
use crate::lock::{LockAnyway, WaitAnyway};
use binance_syncd_plugin::Decimal;
use crossbeam_channel::Receiver;
use serde::Serialize;
use serde_json::{json, Value};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A fault that fired, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub time_ms: i64,
    pub name: String,
    pub params: Vec<(String, String)>,
}

/// How an order request's answer misbehaves (fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderFault {
    /// Answered 503 with `-1007`.
    Status503,
    /// Answered 504 with a non-JSON body.
    Status504,
    /// The connection is closed without an answer.
    Reset,
}

/// The next `count` order requests of one kind misbehave as `answer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmedFault {
    pub count: u64,
    pub answer: OrderFault,
    /// The request is lost on its way in: the engine never sees it (else it is carried out and
    /// the answer is lost on its way out). The client cannot tell the two apart.
    pub request_lost: bool,
}

/// The fault knobs the REST side reads on every request.
#[derive(Debug, Default)]
pub struct RestFaults {
    /// The next `.0` requests get 429 with `Retry-After: .1` seconds.
    pub burst_429: Option<(u64, u64)>,
    /// Order placements (`POST /api/v3/order`).
    pub order_fault: Option<ArmedFault>,
    /// Cancels (`DELETE /api/v3/order`).
    pub cancel_fault: Option<ArmedFault>,
    /// `POST /api/v3/order/cancelReplace`.
    pub replace_fault: Option<ArmedFault>,
    /// The next `.0` `GET /api/v3/order` lookups answer `-2013` although the order exists.
    pub lookup_lag: u64,
    /// Every request and every answer is delayed by `.0` (only those with API key `.1`, if set).
    pub delay: Option<(Duration, Option<String>)>,
    /// The next `myTrades` answer for this symbol carries [`bad_trade_rows`] too.
    pub bad_trades: Option<String>,
    /// The next `GET /api/v3/depth` answers are stale (`stale_depth`).
    pub stale_depth: Option<StaleDepth>,
}

/// The next `count` depth snapshots (of `symbol`, or any) show the book as it was `back`
/// updates ago, and arrive `lag` late.
#[derive(Debug, Clone)]
pub struct StaleDepth {
    pub symbol: Option<String>,
    pub count: u64,
    pub back: usize,
    pub lag: Duration,
}

/// Rows no exchange should send, for a client's checks: one of another symbol than `asked`
/// (with a fresh id), one with a zero quantity, one with trade id `u64::MAX`. Ids are far above
/// any the paper exchange makes, so a client that took one would show it.
pub fn bad_trade_rows(asked: &str, other: &str, now_ms: i64) -> Vec<Value> {
    let row = |symbol: &str, id: u64, qty: &str| {
        json!({
            "symbol": symbol, "id": id, "orderId": 1, "orderListId": -1, "price": "100.00000000",
            "qty": qty, "quoteQty": "100.00000000", "commission": "0.00000000", "commissionAsset": "USD",
            "time": now_ms, "isBuyer": true, "isMaker": true, "isBestMatch": true,
        })
    };
    vec![row(other, 1 << 40, "1.00000000"), row(asked, (1 << 40) + 1, "0.00000000"), row(asked, u64::MAX, "1.00000000")]
}

/// REST requests held open by `hold_rest`, so a test can keep a client's request in flight for
/// as long as it needs (the HTTP server is thread-per-connection: the other connections go on).
#[derive(Debug, Default)]
pub struct RestHold {
    state: Mutex<HoldState>,
    released: Condvar,
}

#[derive(Debug, Default)]
struct HoldState {
    path: Option<String>,
    until: Option<Instant>,
    /// Requests waiting right now.
    held: u64,
    /// Bumped by every release: a waiter leaves when it changes, even if a new hold started.
    generation: u64,
}

impl RestHold {
    fn lock(&self) -> std::sync::MutexGuard<'_, HoldState> {
        self.state.lock_anyway()
    }

    fn hold(&self, path: &str, limit: Duration) {
        let mut s = self.lock();
        s.path = Some(path.to_string());
        s.until = Some(Instant::now() + limit);
    }

    /// Ends the hold; returns how many requests it lets go.
    pub fn release(&self) -> u64 {
        let mut s = self.lock();
        s.path = None;
        s.until = None;
        s.generation += 1;
        self.released.notify_all();
        s.held
    }

    pub fn held(&self) -> u64 {
        self.lock().held
    }

    /// Blocks while requests to `path` are held: until a release or the hold's time limit.
    pub fn wait(&self, path: &str) {
        let mut s = self.lock();
        if s.path.as_deref() != Some(path) {
            return;
        }
        let (generation, until) = (s.generation, s.until.unwrap_or_else(Instant::now));
        s.held += 1;
        while s.generation == generation {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self.released.wait_timeout_anyway(s, left);
        }
        s.held -= 1;
    }
}

/// How long a REST request (and then its answer) is delayed on its way, by `rest_delay`.
pub fn rest_delay(shared: &Shared, req: &Request) -> Duration {
    let faults = shared.rest_faults.lock_anyway();
    match &faults.delay {
        Some((each_way, None)) => *each_way,
        Some((each_way, Some(key))) if req.header("x-mbx-apikey") == Some(key.as_str()) => *each_way,
        _ => Duration::ZERO,
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: Duration,
    pub name: String,
    pub params: Vec<(String, String)>,
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (num, unit) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        return None;
    };
    let ms = num.parse::<Decimal>().ok()?.checked_mul(Decimal::from_int(unit))?.floor_to(Decimal::ONE)?;
    ms.to_fixed_i64(0).filter(|v| *v >= 0).map(|v| Duration::from_millis(v as u64))
}

/// Parses a timeline file; errors name the line.
pub fn parse_timeline(text: &str) -> Result<Vec<TimelineEntry>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(at), Some(name)) = (words.next(), words.next()) else {
            return Err(format!("line {}: expected `<at> <fault> [key=value ...]`", n + 1));
        };
        let at =
            parse_duration(at).ok_or_else(|| format!("line {}: {at:?} is not a time like 500ms, 5s or 2m", n + 1))?;
        let mut params = Vec::new();
        for w in words {
            let (k, v) = w.split_once('=').ok_or_else(|| format!("line {}: {w:?} is not key=value", n + 1))?;
            params.push((k.to_string(), v.to_string()));
        }
        if fault(name).is_none() {
            return Err(format!("line {}: unknown fault {name:?}; known: {}", n + 1, fault_names()));
        }
        out.push(TimelineEntry { at, name: name.to_string(), params });
    }
    out.sort_by_key(|e| e.at);
    Ok(out)
}

pub fn spawn_timeline(
    shared: Arc<Shared>,
    stop: Receiver<()>,
    entries: Vec<TimelineEntry>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name("paper-timeline".into()).spawn(move || {
        let start = Instant::now();
        for e in entries {
            let wait = e.at.saturating_sub(start.elapsed());
            if !matches!(stop.recv_timeout(wait), Err(crossbeam_channel::RecvTimeoutError::Timeout)) && !wait.is_zero()
            {
                return;
            }
            let params: Vec<(&str, &str)> = e.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match apply(&shared, &e.name, &params) {
                Ok(_) => log::info!("paper timeline: {} at {:?}", e.name, e.at),
                Err(why) => log::warn!("paper timeline: {} failed: {why}", e.name),
            }
        }
    })
}

fn get<'a>(params: &'a [(&str, &str)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

fn num(params: &[(&str, &str)], name: &str, default: i64) -> Result<i64, String> {
    match get(params, name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("{name}={v:?} is not a whole number")),
    }
}

fn dec(params: &[(&str, &str)], name: &str) -> Result<Decimal, String> {
    let v = get(params, name).ok_or_else(|| format!("{name} is required"))?;
    v.parse().map_err(|_| format!("{name}={v:?} is not a decimal"))
}

/// What a fault's function is given: the exchange, the server time, and the live listen key
/// (read before anything else takes the engine lock).
struct Ctx<'a> {
    shared: &'a Shared,
    now: i64,
    key: Option<String>,
}

impl Ctx<'_> {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.shared.engine.lock_anyway()
    }

    fn rest_faults(&self) -> MutexGuard<'_, RestFaults> {
        self.shared.rest_faults.lock_anyway()
    }
}

type Params<'a> = [(&'a str, &'a str)];

/// One fault the exchange can act out.
pub struct FaultSpec {
    pub name: &'static str,
    /// Its parameters as `docs/paper-exchange.md` writes them: `[optional=default]`, `required=VALUE`.
    pub params: &'static str,
    pub effect: &'static str,
    run: fn(&Ctx<'_>, &Params<'_>) -> Result<Value, String>,
}

/// Every fault, in the order of `docs/paper-exchange.md`'s table.
pub static FAULTS: &[FaultSpec] = &[
    FaultSpec {
        name: "drop",
        params: "[mode=rst|fin, refuse_ms=0]",
        effect: "drop every user-data stream connection without a close frame; refuse new connections (any stream) for `refuse_ms`",
        run: |c, p| drop_connections(c, p, false),
    },
    FaultSpec {
        name: "silent",
        params: "",
        effect: "user-data stream connections stay open and send nothing, pings included",
        run: |c, _| Ok(json!({"connections": c.shared.hub.command(None, StreamItem::Silence)})),
    },
    FaultSpec {
        name: "trickle",
        params: "[frames=4, bytes=64, pause_ms=150]",
        effect: "the next `frames` stream frames go out in writes of `bytes` (over TLS one record each), every write cut in two with `pause_ms` between the halves",
        run: |c, p| {
            let frames = num(p, "frames", 4)?.clamp(0, 100_000) as u32;
            let bytes = num(p, "bytes", 64)?.clamp(1, 16_384) as usize;
            let pause = Duration::from_millis(num(p, "pause_ms", 150)?.clamp(0, 10_000) as u64);
            let item = StreamItem::Trickle { frames, bytes, pause };
            Ok(json!({"connections": c.shared.hub.command(None, item), "frames": frames}))
        },
    },
    FaultSpec {
        name: "expire_key",
        params: "",
        effect: "the listen key expires now: `listenKeyExpired`, then nothing",
        run: |c, _| {
            c.engine().expire_key(c.now, true);
            Ok(json!({"expired": c.key.is_some()}))
        },
    },
    FaultSpec {
        name: "forget_key",
        params: "",
        effect: "the listen key silently stops existing: no event, connections stay open but get nothing, PUT gets `-1125`",
        run: |c, _| {
            c.engine().forget_key(c.now);
            Ok(json!({"forgotten": c.key.is_some()}))
        },
    },
    FaultSpec {
        name: "cut",
        params: "",
        effect: "the 24 h cut, now: close frame 1001 on every stream connection",
        run: |c, _| {
            let item = StreamItem::Close { code: 1001, reason: "24h cut".into() };
            Ok(json!({"connections": c.shared.hub.command(None, item)}))
        },
    },
    FaultSpec {
        name: "server_shutdown",
        params: "",
        effect: "a `serverShutdown` event on every stream connection",
        run: |c, _| {
            let event = format!("{{\"e\":\"serverShutdown\",\"E\":{}}}", c.now);
            Ok(json!({"connections": c.shared.hub.command(None, StreamItem::Event(Arc::from(event)))}))
        },
    },
    FaultSpec {
        name: "duplicate_trade",
        params: "[count=1]",
        effect: "the next `count` TRADE events are sent twice",
        run: |c, p| {
            let mut e = c.engine();
            e.faults.duplicate_trades += num(p, "count", 1)?.max(0) as u64;
            Ok(json!({"pending": e.faults.duplicate_trades}))
        },
    },
    FaultSpec {
        name: "drop_events",
        params: "[count=1]",
        effect: "the next `count` events reach no stream",
        run: |c, p| {
            let mut e = c.engine();
            e.faults.drop_events += num(p, "count", 1)?.max(0) as u64;
            Ok(json!({"pending": e.faults.drop_events}))
        },
    },
    FaultSpec {
        name: "garbage",
        params: "[kind=all|invalid_json|unknown_event|big|binary]",
        effect: "frames a client must survive",
        run: garbage,
    },
    FaultSpec {
        name: "burst_429",
        params: "[count=1, retry_after=1]",
        effect: "the next `count` REST requests get 429 with `Retry-After` seconds",
        run: |c, p| {
            let count = num(p, "count", 1)?.max(0) as u64;
            let retry = num(p, "retry_after", 1)?.max(0) as u64;
            c.rest_faults().burst_429 = Some((count, retry));
            Ok(json!({"count": count, "retry_after": retry}))
        },
    },
    FaultSpec {
        name: "clock_jump",
        params: "ms=N",
        effect: "the server clock jumps by N ms (negative: back)",
        run: |c, p| {
            c.shared.clock.jump(num(p, "ms", 0)?);
            Ok(json!({"server_time": c.shared.clock.now_ms()}))
        },
    },
    FaultSpec {
        name: "order_error",
        params: "[mode=503|504|reset, count=1, on=place|cancel|replace, lost=reply|request]",
        effect: "the next order placements (cancels, cancelReplaces) are answered with an error or a reset; `lost=reply`: carried out first, `lost=request`: never reach the engine",
        run: order_error,
    },
    FaultSpec {
        name: "lookup_lag",
        params: "[count=1]",
        effect: "the next `count` `GET /api/v3/order` lookups answer `-2013` although the order exists (the Memory => Database lag); `allOrders` still lists it",
        run: |c, p| {
            let mut f = c.rest_faults();
            f.lookup_lag = num(p, "count", 1)?.max(0) as u64;
            Ok(json!({"count": f.lookup_lag}))
        },
    },
    FaultSpec {
        name: "rest_delay",
        params: "ms=N [api_key=K]",
        effect: "every REST request and every answer takes N ms more each way (only those carrying API key K, if given); `ms=0` ends it",
        run: |c, p| {
            let ms = num(p, "ms", 0)?.max(0) as u64;
            let key = get(p, "api_key").map(str::to_string);
            c.rest_faults().delay = (ms > 0).then(|| (Duration::from_millis(ms), key));
            Ok(json!({"ms": ms}))
        },
    },
    FaultSpec {
        name: "hold_rest",
        params: "path=P [ms=30000]",
        effect: "REST requests to path P wait, unanswered, until `release_rest` (or `ms` pass); the report counts them as `rest_held`",
        run: |c, p| {
            let path = get(p, "path").ok_or("path is required")?;
            let ms = num(p, "ms", 30_000)?.max(0) as u64;
            c.shared.rest_hold.hold(path, Duration::from_millis(ms));
            Ok(json!({"path": path, "ms": ms}))
        },
    },
    FaultSpec {
        name: "release_rest",
        params: "",
        effect: "answer every held request and stop holding",
        run: |c, _| Ok(json!({"released": c.shared.rest_hold.release()})),
    },
    FaultSpec {
        name: "bad_trades",
        params: "symbol=S",
        effect: "the next `myTrades` answer for S also carries a row of another symbol, one with quantity 0 and one with trade id 2^64-1",
        run: |c, p| {
            let symbol = get(p, "symbol").ok_or("symbol is required")?;
            c.rest_faults().bad_trades = Some(symbol.to_string());
            Ok(json!({"symbol": symbol}))
        },
    },
    FaultSpec {
        name: "fill",
        params: "symbol=S [order_id=N, whole=false]",
        effect: "fill open orders now (partially about half the time, unless `whole=true`)",
        run: |c, p| {
            let symbol = get(p, "symbol").ok_or("symbol is required")?;
            let order = match get(p, "order_id") {
                Some(v) => Some(v.parse::<u64>().map_err(|_| format!("order_id={v:?} is not a number"))?),
                None => None,
            };
            let whole = get(p, "whole") == Some("true");
            Ok(json!({"filled": c.engine().fill_orders(symbol, c.now, Some(order), whole)}))
        },
    },
    FaultSpec {
        name: "touch",
        params: "symbol=S bid=P",
        effect: "move the market's bid to P (crossed orders fill)",
        run: |c, p| {
            let symbol = get(p, "symbol").ok_or("symbol is required")?;
            let bid = dec(p, "bid")?;
            let mut e = c.engine();
            e.set_touch(symbol, bid).map_err(|e| e.msg)?;
            Ok(json!({"filled": e.fill_crossed(symbol, c.now, None)}))
        },
    },
    FaultSpec {
        name: "tick",
        params: "[count=1]",
        effect: "advance the market now",
        run: |c, p| {
            let mut e = c.engine();
            for _ in 0..num(p, "count", 1)?.clamp(0, 100_000) {
                e.tick(c.now);
            }
            Ok(json!({}))
        },
    },
    FaultSpec {
        name: "deposit",
        params: "asset=A amount=X",
        effect: "a deposit: `balanceUpdate` + `outboundAccountPosition`",
        run: |c, p| {
            let asset = get(p, "asset").ok_or("asset is required")?;
            let amount = dec(p, "amount")?;
            c.engine().deposit(asset, amount, c.now);
            Ok(json!({}))
        },
    },
    FaultSpec {
        name: "quiesce",
        params: "",
        effect: "stop market moves and fills",
        run: |c, _| {
            c.engine().faults.quiesced = true;
            Ok(json!({}))
        },
    },
    FaultSpec {
        name: "resume",
        params: "",
        effect: "restart market moves and fills",
        run: |c, _| {
            c.engine().faults.quiesced = false;
            Ok(json!({}))
        },
    },
    FaultSpec {
        name: "external",
        params: "pct=N",
        effect: "the external trader acts on N % of market ticks",
        run: |c, p| {
            let pct = num(p, "pct", 0)?.clamp(0, 100) as u64;
            c.engine().set_external_pct(pct);
            Ok(json!({}))
        },
    },
    FaultSpec {
        name: "market_drop",
        params: "[mode=rst|fin, refuse_ms=0]",
        effect: "drop every market stream connection (no listen key) without a close frame; refuse new connections (any stream) for `refuse_ms`",
        run: |c, p| drop_connections(c, p, true),
    },
    FaultSpec {
        name: "market_refuse",
        params: "ms=N",
        effect: "refuse new stream connections for N ms (TCP refused); open ones go on",
        run: |c, p| {
            refuse(c, num(p, "ms", 0)?);
            Ok(json!({}))
        },
    },
    FaultSpec {
        name: "market_silent",
        params: "",
        effect: "market stream connections stay open and send nothing, pings and pongs included",
        run: |c, _| Ok(json!({"connections": c.shared.hub.command_market(StreamItem::Silence)})),
    },
    FaultSpec {
        name: "market_gap",
        params: "[symbol=S, count=1]",
        effect: "the next `count` diff events of each depth stream of S (default: every symbol) are not sent: a gap in the update ids",
        run: |c, p| {
            let symbols = c.engine().symbols();
            let count = num(p, "count", 1)?.clamp(0, 1_000_000) as u64;
            c.shared.hub.feed.lock_anyway().gap(get(p, "symbol"), count, &symbols);
            Ok(json!({}))
        },
    },
    FaultSpec {
        name: "stale_depth",
        params: "[symbol=S, count=1, back=64, lag_ms=0]",
        effect: "the next `count` `GET /api/v3/depth` answers (for S, default any) show the book as it was `back` updates ago (as far as 64 are kept), and arrive `lag_ms` late",
        run: |c, p| {
            let stale = StaleDepth {
                symbol: get(p, "symbol").map(str::to_string),
                count: num(p, "count", 1)?.max(0) as u64,
                back: num(p, "back", 64)?.clamp(0, 64) as usize,
                lag: Duration::from_millis(num(p, "lag_ms", 0)?.clamp(0, 600_000) as u64),
            };
            c.shared.rest_faults.lock_anyway().stale_depth = Some(stale);
            Ok(json!({}))
        },
    },
];

/// The fault called `name`, if there is one.
pub fn fault(name: &str) -> Option<&'static FaultSpec> {
    FAULTS.iter().find(|f| f.name == name)
}

fn fault_names() -> String {
    FAULTS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

/// `drop` (user-data connections) and `market_drop` (market-only connections).
fn drop_connections(c: &Ctx<'_>, p: &Params<'_>, market: bool) -> Result<Value, String> {
    let rst = match get(p, "mode").unwrap_or("rst") {
        "rst" => true,
        "fin" => false,
        other => return Err(format!("mode={other:?}: use rst or fin")),
    };
    // Close the door first: a client quick to reconnect must find it closed.
    refuse(c, num(p, "refuse_ms", 0)?);
    let item = StreamItem::Drop { rst };
    let reached = if market { c.shared.hub.command_market(item) } else { c.shared.hub.command(None, item) };
    Ok(json!({"connections": reached}))
}

/// New stream connections are refused for `ms` (the port is closed: one port serves both).
fn refuse(c: &Ctx<'_>, ms: i64) {
    if ms > 0 {
        if let Some(ws) = c.shared.ws.lock_anyway().as_ref() {
            ws.refuse_for(Duration::from_millis(ms as u64));
        }
    }
}

fn garbage(c: &Ctx<'_>, p: &Params<'_>) -> Result<Value, String> {
    let now = c.now;
    let kind = get(p, "kind").unwrap_or("all");
    let mut items = Vec::new();
    if matches!(kind, "all" | "invalid_json") {
        items.push(StreamItem::Text(Arc::from("{\"e\":\"executionReport\",\"E\":")));
    }
    if matches!(kind, "all" | "unknown_event") {
        items.push(StreamItem::Text(Arc::from(format!("{{\"e\":\"paperMysteryEvent\",\"E\":{now},\"z\":1}}"))));
    }
    if matches!(kind, "all" | "big") {
        let pad = "x".repeat(1 << 20);
        items.push(StreamItem::Text(Arc::from(format!("{{\"e\":\"paperPadding\",\"E\":{now},\"pad\":\"{pad}\"}}"))));
    }
    if matches!(kind, "all" | "binary") {
        items.push(StreamItem::Binary(Arc::from(vec![0u8, 159, 146, 150, 255, 1, 2, 3])));
    }
    if items.is_empty() {
        return Err(format!("kind={kind:?}: use all, invalid_json, unknown_event, big or binary"));
    }
    let mut reached = 0;
    for item in items {
        reached += c.shared.hub.command(c.key.as_deref(), item);
    }
    Ok(json!({"frames": reached}))
}

fn order_error(c: &Ctx<'_>, p: &Params<'_>) -> Result<Value, String> {
    let mode = match get(p, "mode").unwrap_or("503") {
        "503" => OrderFault::Status503,
        "504" => OrderFault::Status504,
        "reset" => OrderFault::Reset,
        other => return Err(format!("mode={other:?}: use 503, 504 or reset")),
    };
    let count = num(p, "count", 1)?.max(0) as u64;
    let request_lost = match get(p, "lost").unwrap_or("reply") {
        "reply" => false,
        "request" => true,
        other => return Err(format!("lost={other:?}: use reply or request")),
    };
    let armed = Some(ArmedFault { count, answer: mode, request_lost });
    let mut faults = c.rest_faults();
    match get(p, "on").unwrap_or("place") {
        "place" => faults.order_fault = armed,
        "cancel" => faults.cancel_fault = armed,
        "replace" => faults.replace_fault = armed,
        other => return Err(format!("on={other:?}: use place, cancel or replace")),
    }
    Ok(json!({"count": count}))
}

/// Applies one fault. The answer says what it reached.
pub fn apply(shared: &Shared, name: &str, params: &[(&str, &str)]) -> Result<Value, String> {
    let spec = fault(name).ok_or_else(|| format!("unknown fault {name:?}; known: {}", fault_names()))?;
    let now = shared.clock.now_ms();
    // Stream faults run without the engine lock: a connection mid-handshake needs it to check
    // its key, and `refuse_for` waits for the listener to close.
    let key = shared.engine.lock_anyway().current_key();
    let result = (spec.run)(&Ctx { shared, now, key }, params)?;
    shared.fault_log.lock_anyway().push(FaultRecord {
        time_ms: now,
        name: name.to_string(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    });
    Ok(result)
}

/// Everything that really happened, for grading a client.
pub fn report(shared: &Shared) -> Value {
    // Taken and let go before the other locks: the REST side takes it under `rate`.
    let rest_armed = {
        let f = shared.rest_faults.lock_anyway();
        let left = |a: &Option<ArmedFault>| a.map_or(0, |a| a.count);
        json!({
            "burst_429": f.burst_429.map_or(0, |(n, _)| n),
            "order_fault": left(&f.order_fault),
            "cancel_fault": left(&f.cancel_fault),
            "replace_fault": left(&f.replace_fault),
            "lookup_lag": f.lookup_lag,
            "stale_depth": f.stale_depth.as_ref().map_or(0, |s| s.count),
        })
    };
    let engine = shared.engine.lock_anyway();
    let rate = shared.rate.lock_anyway();
    let errors = shared.errors.lock_anyway();
    let faults = shared.fault_log.lock_anyway();
    json!({
        "server_time": shared.clock.now_ms(),
        "trades": engine.trades(),
        "errors": *errors,
        "http_429": rate.http_429,
        "http_418": rate.http_418,
        "in_hold": rate.in_hold,
        "peak_weight_1m": rate.peak_weight,
        "requests": rate.requests,
        "rest_held": shared.rest_hold.held(),
        "listen_keys": engine.key_history,
        "requests_by_path": rate.by_path,
        "sessions": shared.hub.sessions(),
        "market_sessions": shared.hub.market_sessions(),
        "book_update_ids": engine.book_update_ids(),
        "depth_events_skipped": shared.hub.feed.lock_anyway().skipped,
        "faults": *faults,
        // What injected faults have not fired yet: a test that injects one can check it did.
        "armed": {
            "rest": rest_armed,
            "duplicate_trades": engine.faults.duplicate_trades,
            "drop_events": engine.faults.drop_events,
        },
    })
}

fn query_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.replace("%2D", "-").replace("%2d", "-"))
        })
        .collect()
}

/// `/paper/*` on the REST port. Not rate-limited and not signed: it is the operator's handle.
pub fn handle(shared: &Shared, req: &Request) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/paper/report") => Response::json(200, report(shared).to_string()),
        ("POST", "/paper/fault") => {
            let mut pairs = query_pairs(&req.query);
            pairs.extend(query_pairs(&req.body));
            let Some(name) = pairs.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone()) else {
                return Response::json(400, json!({"error": "name is required"}).to_string());
            };
            let params: Vec<(&str, &str)> =
                pairs.iter().filter(|(k, _)| k != "name").map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match apply(shared, &name, &params) {
                Ok(v) => Response::json(200, json!({"fault": name, "result": v}).to_string()),
                Err(e) => Response::json(400, json!({"error": e}).to_string()),
            }
        }
        _ => Response::json(
            404,
            json!({"error": "unknown control endpoint; use POST /paper/fault or GET /paper/report"}).to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_parses_and_sorts() {
        let t =
            parse_timeline("# outage\n10s drop mode=rst refuse_ms=3000\n500ms fill symbol=BTCUSD\n\n2m cut\n").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].at, Duration::from_millis(500));
        assert_eq!(
            t[1].params,
            vec![("mode".to_string(), "rst".to_string()), ("refuse_ms".to_string(), "3000".to_string())]
        );
        assert_eq!(t[2].at, Duration::from_secs(120));
    }

    /// The fault table of `docs/paper-exchange.md` (first column, each backticked name) lists
    /// exactly [`FAULTS`].
    #[test]
    fn the_docs_list_exactly_the_faults() {
        let page = include_str!("../../docs/paper-exchange.md");
        let table = page.split("| name | effect |").nth(1).expect("docs/paper-exchange.md has a fault table");
        let mut listed: Vec<&str> = table
            .lines()
            .skip(1) // |---|---|
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split(" | ").next())
            .flat_map(|cell| cell.split('`').skip(1).step_by(2))
            .filter(|w| !w.contains('='))
            .collect();
        let mut known: Vec<&str> = FAULTS.iter().map(|f| f.name).collect();
        listed.sort_unstable();
        known.sort_unstable();
        assert_eq!(listed, known);
    }

    #[test]
    fn timeline_errors_name_the_line() {
        // Each case gets past every check before the one it is about, and the message says
        // which check refused it, so a case cannot pass by failing somewhere else.
        let err = parse_timeline("5s nosuchfault").unwrap_err();
        assert!(err.starts_with("line 1: unknown fault"), "{err}");
        let err = parse_timeline("ok").unwrap_err();
        assert!(err.starts_with("line 1: expected `<at> <fault>"), "{err}");
        let err = parse_timeline("5s drop\n5x drop").unwrap_err();
        assert!(err.starts_with("line 2: \"5x\" is not a time"), "{err}");
        let err = parse_timeline("5s drop\n1s drop mode").unwrap_err();
        assert!(err.starts_with("line 2: \"mode\" is not key=value"), "{err}");
    }
}
