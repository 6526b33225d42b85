//! Fault injection and the ground-truth report: `POST /paper/fault?name=...`, `GET
//! /paper/report`, and the timeline file that schedules faults.
//!
//! Faults (parameters in brackets, defaults after `=`):
//!
//! | name | effect |
//! |---|---|
//! | `drop` [mode=rst\|fin, refuse_ms=0] | drop every stream connection without a close frame; refuse new connections for `refuse_ms` |
//! | `silent` | stream connections stay open and send nothing, pings included |
//! | `expire_key` | the listen key expires now: `listenKeyExpired`, then nothing |
//! | `forget_key` | the listen key silently stops existing: no event, connections stay open but get nothing, PUT gets `-1125` |
//! | `cut` | the 24 h cut, now: close frame 1001 on every stream connection |
//! | `server_shutdown` | a `serverShutdown` event (§3.6) on every stream connection |
//! | `duplicate_trade` [count=1] | the next `count` TRADE events are sent twice |
//! | `drop_events` [count=1] | the next `count` events reach no stream |
//! | `garbage` [kind=all\|invalid_json\|unknown_event\|big\|binary] | frames a client must survive |
//! | `burst_429` [count=1, retry_after=1] | the next `count` REST requests get 429 with `Retry-After` seconds |
//! | `clock_jump` ms=N | the server clock jumps by N ms (negative: back) |
//! | `order_error` [mode=503\|504\|reset, count=1, on=place\|cancel] | the next order placements (or cancels) are carried out but answered with an error or a reset |
//! | `rest_delay` ms=N [api_key=K] | every REST request and every answer takes N ms more each way (only those carrying API key K, if given); `ms=0` ends it |
//! | `hold_rest` path=P [ms=30000] | REST requests to path P wait, unanswered, until `release_rest` (or `ms` pass); the report counts them as `rest_held` |
//! | `release_rest` | answer every held request and stop holding |
//! | `fill` symbol=S [order_id=N, whole=false] | fill open orders now (partially about half the time, unless `whole=true`) |
//! | `touch` symbol=S bid=P | move the market's bid to P (crossed orders fill) |
//! | `tick` [count=1] | advance the market now |
//! | `deposit` asset=A amount=X | a deposit: `balanceUpdate` + `outboundAccountPosition` |
//! | `quiesce` / `resume` | stop / restart market moves and fills |
//! | `external` pct=N | the external trader acts on N % of market ticks |
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

use super::http::{Request, Response};
use super::hub::StreamItem;
use super::rest::OrderFault;
use super::Shared;
use crate::decimal::Decimal;
use crossbeam_channel::Receiver;
use serde::Serialize;
use serde_json::{json, Value};
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A fault that fired, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub time_ms: i64,
    pub name: String,
    pub params: Vec<(String, String)>,
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
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
            s = self.released.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        s.held -= 1;
    }
}

/// How long a REST request (and then its answer) is delayed on its way, by `rest_delay`.
pub fn rest_delay(shared: &Shared, req: &Request) -> Duration {
    let faults = shared.rest_faults.lock().unwrap_or_else(|p| p.into_inner());
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
        if !FAULTS.contains(&name) {
            return Err(format!("line {}: unknown fault {name:?}; known: {}", n + 1, FAULTS.join(", ")));
        }
        out.push(TimelineEntry { at, name: name.to_string(), params });
    }
    out.sort_by_key(|e| e.at);
    Ok(out)
}

pub const FAULTS: &[&str] = &[
    "drop",
    "silent",
    "expire_key",
    "forget_key",
    "cut",
    "server_shutdown",
    "duplicate_trade",
    "drop_events",
    "garbage",
    "burst_429",
    "clock_jump",
    "order_error",
    "rest_delay",
    "hold_rest",
    "release_rest",
    "fill",
    "touch",
    "tick",
    "deposit",
    "quiesce",
    "resume",
    "external",
];

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

/// Applies one fault. The answer says what it reached.
pub fn apply(shared: &Shared, name: &str, params: &[(&str, &str)]) -> Result<Value, String> {
    let now = shared.clock.now_ms();
    // Stream faults run without the engine lock: a connection mid-handshake needs it to check
    // its key, and `refuse_for` waits for the listener to close.
    let key = shared.engine.lock().unwrap_or_else(|p| p.into_inner()).current_key();
    let engine = || shared.engine.lock().unwrap_or_else(|p| p.into_inner());
    let result = match name {
        "drop" => {
            let rst = match get(params, "mode").unwrap_or("rst") {
                "rst" => true,
                "fin" => false,
                other => return Err(format!("mode={other:?}: use rst or fin")),
            };
            let refuse = num(params, "refuse_ms", 0)?;
            // Close the door first: a client quick to reconnect must find it closed.
            if refuse > 0 {
                if let Some(ws) = shared.ws.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    ws.refuse_for(Duration::from_millis(refuse as u64));
                }
            }
            let reached = shared.hub.control(None, StreamItem::Drop { rst });
            json!({"connections": reached})
        }
        "silent" => json!({"connections": shared.hub.control(None, StreamItem::Silence)}),
        "expire_key" => {
            engine().expire_key(now, true);
            json!({"expired": key.is_some()})
        }
        "forget_key" => {
            engine().forget_key(now);
            json!({"forgotten": key.is_some()})
        }
        "server_shutdown" => {
            let event = format!("{{\"e\":\"serverShutdown\",\"E\":{now}}}");
            json!({"connections": shared.hub.control(None, StreamItem::Event(Arc::from(event)))})
        }
        "cut" => {
            let item = StreamItem::Close { code: 1001, reason: "24h cut".into() };
            json!({"connections": shared.hub.control(None, item)})
        }
        "duplicate_trade" => {
            let mut e = engine();
            e.faults.duplicate_trades += num(params, "count", 1)?.max(0) as u64;
            json!({"pending": e.faults.duplicate_trades})
        }
        "drop_events" => {
            let mut e = engine();
            e.faults.drop_events += num(params, "count", 1)?.max(0) as u64;
            json!({"pending": e.faults.drop_events})
        }
        "garbage" => {
            let kind = get(params, "kind").unwrap_or("all");
            let mut items = Vec::new();
            if matches!(kind, "all" | "invalid_json") {
                items.push(StreamItem::Text(Arc::from("{\"e\":\"executionReport\",\"E\":")));
            }
            if matches!(kind, "all" | "unknown_event") {
                items.push(StreamItem::Text(Arc::from(format!("{{\"e\":\"paperMysteryEvent\",\"E\":{now},\"z\":1}}"))));
            }
            if matches!(kind, "all" | "big") {
                let pad = "x".repeat(1 << 20);
                items.push(StreamItem::Text(Arc::from(format!(
                    "{{\"e\":\"paperPadding\",\"E\":{now},\"pad\":\"{pad}\"}}"
                ))));
            }
            if matches!(kind, "all" | "binary") {
                items.push(StreamItem::Binary(Arc::from(vec![0u8, 159, 146, 150, 255, 1, 2, 3])));
            }
            if items.is_empty() {
                return Err(format!("kind={kind:?}: use all, invalid_json, unknown_event, big or binary"));
            }
            let mut reached = 0;
            for item in items {
                reached += shared.hub.control(key.as_deref(), item);
            }
            json!({"frames": reached})
        }
        "burst_429" => {
            let count = num(params, "count", 1)?.max(0) as u64;
            let retry = num(params, "retry_after", 1)?.max(0) as u64;
            shared.rest_faults.lock().unwrap_or_else(|p| p.into_inner()).burst_429 = Some((count, retry));
            json!({"count": count, "retry_after": retry})
        }
        "clock_jump" => {
            let ms = num(params, "ms", 0)?;
            shared.clock.jump(ms);
            json!({"server_time": shared.clock.now_ms()})
        }
        "order_error" => {
            let mode = match get(params, "mode").unwrap_or("503") {
                "503" => OrderFault::Status503,
                "504" => OrderFault::Status504,
                "reset" => OrderFault::Reset,
                other => return Err(format!("mode={other:?}: use 503, 504 or reset")),
            };
            let count = num(params, "count", 1)?.max(0) as u64;
            let mut faults = shared.rest_faults.lock().unwrap_or_else(|p| p.into_inner());
            match get(params, "on").unwrap_or("place") {
                "place" => faults.order_fault = Some((count, mode)),
                "cancel" => faults.cancel_fault = Some((count, mode)),
                other => return Err(format!("on={other:?}: use place or cancel")),
            }
            json!({"count": count})
        }
        "rest_delay" => {
            let ms = num(params, "ms", 0)?.max(0) as u64;
            let key = get(params, "api_key").map(str::to_string);
            let delay = (ms > 0).then(|| (Duration::from_millis(ms), key));
            shared.rest_faults.lock().unwrap_or_else(|p| p.into_inner()).delay = delay;
            json!({"ms": ms})
        }
        "hold_rest" => {
            let path = get(params, "path").ok_or("path is required")?;
            let ms = num(params, "ms", 30_000)?.max(0) as u64;
            shared.rest_hold.hold(path, Duration::from_millis(ms));
            json!({"path": path, "ms": ms})
        }
        "release_rest" => json!({"released": shared.rest_hold.release()}),
        "fill" => {
            let symbol = get(params, "symbol").ok_or("symbol is required")?;
            let order = match get(params, "order_id") {
                Some(v) => Some(v.parse::<u64>().map_err(|_| format!("order_id={v:?} is not a number"))?),
                None => None,
            };
            let whole = get(params, "whole") == Some("true");
            json!({"filled": engine().fill_orders(symbol, now, Some(order), whole)})
        }
        "touch" => {
            let symbol = get(params, "symbol").ok_or("symbol is required")?;
            let bid = dec(params, "bid")?;
            let mut e = engine();
            e.set_touch(symbol, bid).map_err(|e| e.msg)?;
            json!({"filled": e.fill_crossed(symbol, now, None)})
        }
        "tick" => {
            let mut e = engine();
            for _ in 0..num(params, "count", 1)?.clamp(0, 100_000) {
                e.tick(now);
            }
            json!({})
        }
        "deposit" => {
            let asset = get(params, "asset").ok_or("asset is required")?;
            let amount = dec(params, "amount")?;
            engine().deposit(asset, amount, now);
            json!({})
        }
        "quiesce" => {
            engine().faults.quiesced = true;
            json!({})
        }
        "resume" => {
            engine().faults.quiesced = false;
            json!({})
        }
        "external" => {
            let pct = num(params, "pct", 0)?.clamp(0, 100) as u64;
            engine().set_external_pct(pct);
            json!({})
        }
        other => return Err(format!("unknown fault {other:?}; known: {}", FAULTS.join(", "))),
    };
    shared.fault_log.lock().unwrap_or_else(|p| p.into_inner()).push(FaultRecord {
        time_ms: now,
        name: name.to_string(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    });
    Ok(result)
}

/// Everything that really happened, for grading a client.
pub fn report(shared: &Shared) -> Value {
    let engine = shared.engine.lock().unwrap_or_else(|p| p.into_inner());
    let rate = shared.rate.lock().unwrap_or_else(|p| p.into_inner());
    let errors = shared.errors.lock().unwrap_or_else(|p| p.into_inner());
    let faults = shared.fault_log.lock().unwrap_or_else(|p| p.into_inner());
    json!({
        "server_time": shared.clock.now_ms(),
        "trades": engine.trades(),
        "errors": *errors,
        "http_429": rate.http_429,
        "http_418": rate.http_418,
        "peak_weight_1m": rate.peak_weight,
        "requests": rate.requests,
        "rest_held": shared.rest_hold.held(),
        "listen_keys": engine.key_history,
        "sessions": shared.hub.sessions(),
        "faults": *faults,
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
