//! The checks, in the order a daemon would meet them: negotiation (an unknown protocol, then
//! this one), every call with every outcome kind, the answers a plugin must cope with (BUSY,
//! REFUSED, rules of a symbol not traded), silence between calls, `stop` and the end of the
//! channel, a restart from the cursor with the fill it died on replayed, and the end of the
//! channel without a `stop`. Every message to the plugin carries a field it cannot know
//! (`x_conformance`): later minors add fields, and a plugin must ignore them.

use super::message::{doubtful, kind_name, malformed, name_of, now_ms, same, typed, unknown_field, Sent};
use super::peer::{Got, Peer, Target};
use super::sample::{rules_of, snapshot};
use super::{Check, Verdict};
use crate::plugin::proto::{self, Up};
use binance_syncd_plugin::abi;
use binance_syncd_plugin::Decimal;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long a plugin has to answer `hello` (the daemon's load wait).
const READY_WAIT: Duration = Duration::from_secs(10);
/// How long after the end of its channel a plugin may take to exit before the daemon kills it.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// How long after each `done` the run listens for frames sent unasked.
const QUIET: Duration = Duration::from_millis(10);
/// Intents a plugin may still send in the call in which it was told BUSY (the page says none:
/// it returns and tries again from a later call).
const AFTER_BUSY: usize = 0;

/// How the conformance run answers the plugin's intents in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accept,
    Busy,
    Refuse,
}

impl Answer {
    fn word(self) -> &'static str {
        match self {
            Answer::Accept => "accepted",
            Answer::Busy => "BUSY",
            Answer::Refuse => "REFUSED",
        }
    }
}

/// What one call brought.
#[derive(Debug, Default)]
struct CallOut {
    intents: Vec<Sent>,
    /// Wrong but not fatal (a malformed intent, a log level out of range): the first few.
    soft: Vec<String>,
    elapsed: Duration,
}

impl CallOut {
    /// Notes a soft error; past [`SOFT_KEPT`] only their count grows (a plugin sending
    /// thousands must not grow the report, nor the checker's memory).
    fn note(&mut self, what: String) {
        match self.soft.len() {
            n if n < SOFT_KEPT => self.soft.push(what),
            SOFT_KEPT => self.soft.push("and more".into()),
            _ => {}
        }
    }
}

/// Soft errors kept per call.
const SOFT_KEPT: usize = 5;

/// What the plugin sent over the whole run, for the summary checks.
#[derive(Debug, Default)]
struct Seen {
    intents: [usize; 4],
    rules_known: bool,
    rules_unknown: bool,
    log_levels: BTreeSet<i32>,
    slowest: Option<(Duration, String)>,
    /// Bytes it sent between calls, and after which call.
    noise: Option<String>,
    calls: usize,
}

struct Script<'a> {
    t: &'a Target,
    checks: Vec<Check>,
    seen: Seen,
    next_request: u64,
    minor: u32,
    /// `books`, `trades` as its `ready` said.
    asked: (bool, bool),
    /// Its accepted intents, waiting for their `order` outcome.
    accepted: Vec<Sent>,
    /// The last fill's `seq` the first process acknowledged.
    seq: u64,
    /// Price moves made to provoke intents.
    moves: u64,
}

/// Runs every check against `t`.
pub(super) fn run(t: &Target) -> Vec<Check> {
    let mut s = Script {
        t,
        checks: Vec::new(),
        seen: Seen::default(),
        next_request: 1,
        minor: 0,
        asked: (false, false),
        accepted: Vec::new(),
        seq: 2,
        moves: 0,
    };
    s.unknown_protocol();
    match s.negotiate() {
        Some(mut peer) => {
            // The call that broke it is a failed check already.
            if let Err(why) = s.calls(&mut peer) {
                s.skip("the calls after it", format!("not run: the daemon would have killed it ({why})"));
            }
            drop(peer);
            s.restart();
        }
        None => s.skip("calls", "not run: it did not answer ready"),
    }
    s.summary();
    s.checks
}

impl Script<'_> {
    /// Whether it is sent books and trades: asked for in its `ready`, with a minor that has them.
    fn market_sent(&self) -> (bool, bool) {
        (self.asked.0 && self.minor >= 5, self.asked.1 && self.minor >= 5)
    }

    fn ok(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check { verdict: Verdict::Ok, name: name.into(), detail: detail.into() });
    }

    fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check { verdict: Verdict::Fail, name: name.into(), detail: detail.into() });
    }

    fn skip(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check { verdict: Verdict::Skip, name: name.into(), detail: detail.into() });
    }

    fn start_peer(&mut self, name: &str) -> Option<Peer> {
        match Peer::start(self.t) {
            Ok(p) => Some(p),
            Err(why) => {
                self.fail(name, format!("cannot start it: {why}"));
                None
            }
        }
    }

    /// A first frame of protocol 2, which it cannot speak: the answer is `refused`.
    fn unknown_protocol(&mut self) {
        const NAME: &str = "refuses protocol 2";
        let Some(mut peer) = self.start_peer(NAME) else { return };
        let mut first = Peer::first_frame(self.t, proto::PROTO + 1);
        unknown_field(&mut first);
        if let Err(why) = peer.send(&first, READY_WAIT) {
            return self.fail(NAME, why);
        }
        match peer.recv(Instant::now() + READY_WAIT) {
            Ok(Got::Frame(v)) => match typed(&v) {
                Ok(Up::Refused { why }) => self.ok(NAME, format!("answered refused ({why:?})")),
                Ok(Up::Ready { proto: p, .. }) => self.fail(
                    NAME,
                    format!("answered ready (proto {p}) to protocol 2: a plugin answers refused {{why}} to a protocol it does not speak"),
                ),
                Ok(other) => self.fail(NAME, format!("answered {} to hello: out of turn", name_of(&other))),
                Err(why) => self.fail(NAME, why),
            },
            Ok(Got::End) => {
                let how = peer.exits_within(EXIT_WAIT).unwrap_or_default();
                self.fail(NAME, format!("closed its channel with no answer (its process {how}): it should answer refused {{why}}, which the daemon shows"))
            }
            Ok(Got::Late) => self.fail(NAME, "no answer within 10 s"),
            Err(why) => self.fail(NAME, why),
        }
    }

    /// `hello` of this protocol: `ready`, within the load wait.
    fn negotiate(&mut self) -> Option<Peer> {
        const NAME: &str = "answers hello with ready";
        let mut peer = self.start_peer(NAME)?;
        let mut first = Peer::first_frame(self.t, proto::PROTO);
        unknown_field(&mut first);
        let began = Instant::now();
        if let Err(why) = peer.send(&first, READY_WAIT) {
            self.fail(NAME, why);
            return None;
        }
        let answer = match peer.recv(began + READY_WAIT) {
            Ok(Got::Frame(v)) => typed(&v),
            Ok(Got::End) => Err(format!("closed its channel instead (its process {})", exit_of(&mut peer))),
            Ok(Got::Late) => Err("no answer within 10 s: the daemon kills it and refuses the file".into()),
            Err(why) => Err(why),
        };
        match answer {
            Ok(Up::Ready { proto: p, version, abi_minor, books, trades }) if p == proto::PROTO => {
                self.minor = abi_minor.min(abi::ABI_MINOR);
                self.asked = (books, trades);
                let mut detail = format!(
                    "in {} ms: version {version:?}, abi_minor {abi_minor}, books {books}, trades {trades}",
                    began.elapsed().as_millis()
                );
                if abi_minor > abi::ABI_MINOR {
                    detail
                        .push_str(&format!(" (this daemon knows minor {}: it is sent what that has)", abi::ABI_MINOR));
                }
                if (books || trades) && abi_minor < 5 {
                    detail.push_str(" (books and trades need minor 5: none are sent)");
                }
                self.ok(NAME, detail);
                Some(peer)
            }
            Ok(Up::Ready { proto: p, .. }) => {
                self.fail(NAME, format!("ready with proto {p}: the daemon speaks {} and refuses it", proto::PROTO));
                None
            }
            Ok(Up::Refused { why }) => {
                self.fail(NAME, format!("refused protocol {}: {why:?}", proto::PROTO));
                None
            }
            Ok(other) => {
                self.fail(NAME, format!("answered {} to hello: out of turn", name_of(&other)));
                None
            }
            Err(why) => {
                self.fail(NAME, why);
                None
            }
        }
    }

    /// Every call, in a daemon's order, on the process that answered `ready`. `Err` once the
    /// conversation is broken (the daemon would have killed it): the checks after are not run.
    fn calls(&mut self, peer: &mut Peer) -> Result<(), String> {
        let (snapshot, count) = snapshot(&self.t.tag);
        let name = format!("call start (a snapshot of {count} symbols, {} kB)", snapshot.len() / 1000);
        let start = json!({"c": "start", "name": self.t.name, "settings": self.t.settings, "snapshot": snapshot});
        self.checked(peer, name, start, Answer::Accept, 0)?;
        let calls = [
            ("call price", json!({"c": "price", "symbol": "BTCUSD", "bid": "59999.99", "ask": "60000.01"})),
            ("call balance", json!({"c": "balance", "asset": "USD", "free": "400.00000000", "locked": "600.00000000"})),
            ("call tick", json!({"c": "tick", "now_ms": now_ms()})),
        ];
        for (name, call) in calls {
            self.checked(peer, name.into(), call, Answer::Accept, 0)?;
        }
        // Replayed fills come only first in a process (the restart below has one).
        for (seq, own) in [(1, true), (2, false)] {
            let name = if own { "call fill (its own order)" } else { "call fill (another client's order)" };
            self.checked(peer, format!("{name}, seq {seq}"), self.fill(seq, false, own), Answer::Accept, seq)?;
        }
        self.outcomes(peer)?;
        self.market(peer)?;
        self.back_pressure(peer)?;
        match peer.unread_within(Duration::from_millis(200)) {
            Ok(0) => {}
            Ok(n) => {
                self.seen.noise.get_or_insert_with(|| format!("{n} bytes after its last done, unasked"));
            }
            Err(why) => return Err(why),
        }
        self.checked(peer, "call stop".into(), json!({"c": "stop"}), Answer::Accept, 0)?;
        self.closes("exits at the end of its channel, after stop", peer);
        Ok(())
    }

    /// A fill of the test's, `seq`, as the daemon sends it to this plugin's minor.
    fn fill(&self, seq: u64, replayed: bool, own: bool) -> Value {
        json!({
            "c": "fill", "seq": seq, "trade_id": 5488 + seq, "order_id": 1411 + seq, "time_ms": now_ms(),
            "symbol": "BTCUSD",
            "client_order_id": if own { format!("sd-{}-7f3a-1-{seq}", self.t.tag) } else { format!("web_{seq:06}") },
            "price": "59999.94000000", "qty": "0.01000000", "quote_qty": "599.99940000",
            "commission": "0.00000000", "commission_asset": "BTC", "side": seq % 2, "maker": true,
            "replayed": replayed, "own": own && self.minor >= 4,
        })
    }

    /// An `order` call of every kind this plugin's minor knows, each with the fields the
    /// daemon fills for that kind: first the outcomes of the intents it sent so far (under
    /// their request ids), then the kinds not yet shown, then two outcomes that were unknown
    /// resolved (`resolved` true: once placed, once given up as unresolved).
    fn outcomes(&mut self, peer: &mut Peer) -> Result<(), String> {
        let mut kinds = BTreeSet::new();
        let accepted = std::mem::take(&mut self.accepted);
        for sent in accepted.iter().take(8) {
            let kind = match sent.kind {
                abi::INTENT_PLACE => abi::UPDATE_PLACED,
                abi::INTENT_CANCEL => abi::UPDATE_CANCELED,
                abi::INTENT_CANCEL_ALL => abi::UPDATE_CANCELED_ALL,
                _ => abi::UPDATE_REPLACED,
            };
            let call = self.update(kind, sent.request, sent, false);
            kinds.insert(kind);
            let name = format!("call order, {} of its request {}", kind_name(kind), sent.request);
            self.checked(peer, name, call, Answer::Accept, 0)?;
        }
        let blank = Sent {
            kind: abi::INTENT_PLACE,
            side: abi::SIDE_BUY,
            order_id: 0,
            symbol: "BTCUSD".into(),
            price: "59000.00".into(),
            qty: "0.001".into(),
            client_order_id: String::new(),
            request: 0,
            status: 0,
        };
        for kind in 0..=abi::UPDATE_UNRESOLVED {
            if kinds.contains(&kind)
                || (kind == abi::UPDATE_REPORT && self.minor < 1)
                || (kind == abi::UPDATE_UNRESOLVED && self.minor < 2)
            {
                continue;
            }
            let request = if kind == abi::UPDATE_REPORT { 0 } else { 900 + u64::from(kind) };
            let resolved = kind == abi::UPDATE_UNRESOLVED; // always the resolution of an unknown
            let call = self.update(kind, request, &blank, resolved);
            self.checked(peer, format!("call order, {}", kind_name(kind)), call, Answer::Accept, 0)?;
        }
        // An unknown outcome, then its resolution: the order was placed after all.
        let call = self.update(abi::UPDATE_PLACED, 900 + u64::from(abi::UPDATE_UNKNOWN), &blank, true);
        self.checked(peer, "call order, placed (resolving an unknown, resolved true)".into(), call, Answer::Accept, 0)
    }

    /// One `order` call of `kind` for `request`, with the fields the daemon fills for that kind
    /// (`src/plugin/marshal.rs`), the others empty or 0. Below minor 2 an unresolved outcome
    /// is an unknown one, below minor 4 `reason_code` is 0.
    fn update(&self, kind: u8, request: u64, sent: &Sent, resolved: bool) -> Value {
        let made_id = format!("sd-{}-7f3a-1-{}", self.t.tag, 100 + request);
        let order_id = if sent.order_id != 0 { sent.order_id } else { 7000 + request };
        let named_id = if sent.client_order_id.is_empty() { made_id.clone() } else { sent.client_order_id.clone() };
        let mut u = json!({
            "c": "order", "request": request, "order_id": 0, "code": 0, "symbol": "",
            "client_order_id": "", "price": "", "qty": "", "status": "", "reason": "", "kind": kind,
            "side": 0, "resolved": resolved, "reason_code": abi::REASON_NONE,
        });
        let placed = |order_id: u64| -> Vec<(&str, Value)> {
            vec![
                ("symbol", json!(sent.symbol)),
                ("order_id", json!(order_id)),
                ("client_order_id", json!(made_id)),
                ("side", json!(sent.side.min(abi::SIDE_SELL))),
                ("price", json!(sent.price)),
                ("qty", json!(sent.qty)),
                ("status", json!("NEW")),
            ]
        };
        let fields: Vec<(&str, Value)> = match kind {
            abi::UPDATE_PLACED => placed(order_id),
            abi::UPDATE_REPLACED => placed(8000 + request),
            abi::UPDATE_REPORT => {
                let mut f = placed(order_id);
                let executed = format!("TRADE; executed 0.0005 of {}", sent.qty);
                f.extend([("status", json!("PARTIALLY_FILLED")), ("reason", json!(executed))]);
                f
            }
            abi::UPDATE_CANCELED => vec![
                ("symbol", json!(sent.symbol)),
                ("order_id", json!(order_id)),
                ("client_order_id", json!(named_id)),
            ],
            abi::UPDATE_CANCELED_ALL => vec![("symbol", json!(sent.symbol)), ("reason", json!("2 canceled, 0 failed"))],
            abi::UPDATE_REFUSED => vec![
                ("status", json!("NOTIONAL")),
                ("reason", json!("notional 5.90 is below the symbol's minimum 10.00")),
                ("reason_code", json!(abi::REASON_FILTER)),
            ],
            abi::UPDATE_REJECTED => vec![
                ("code", json!(-2010)),
                ("reason", json!("Order would immediately match and take.")),
                ("reason_code", json!(abi::REASON_CROSSES_BOOK)),
            ],
            abi::UPDATE_UNKNOWN => vec![("client_order_id", json!(made_id))],
            abi::UPDATE_NOT_DONE => vec![
                ("client_order_id", json!(made_id)),
                ("reason", json!("not sent: the daemon is stopping")),
                ("reason_code", json!(abi::REASON_NOT_SENT)),
            ],
            _ => vec![
                ("kind", json!(if self.minor >= 2 { abi::UPDATE_UNRESOLVED } else { abi::UPDATE_UNKNOWN })),
                ("client_order_id", json!(made_id)),
                ("reason", json!("the exchange could not be asked for 2 minutes")),
                ("reason_code", json!(abi::REASON_UNRESOLVED)),
            ],
        };
        if let Some(map) = u.as_object_mut() {
            map.extend(fields.into_iter().map(|(k, v)| (k.to_string(), v)));
            if self.minor < 4 {
                map.insert("reason_code".into(), json!(abi::REASON_NONE));
            }
        }
        u
    }

    /// `book` and `trade`, if it asked for them.
    fn market(&mut self, peer: &mut Peer) -> Result<(), String> {
        let now = now_ms();
        if self.market_sent().0 {
            let book = json!({
                "c": "book", "symbol": "BTCUSD", "update_id": 991, "event_time_ms": now - 3,
                "received_ms": now, "skipped": 2,
                "bids": [["59999.94", "0.5"], ["59999.00", "1.25"]], "asks": [["60000.06", "0.2"]],
            });
            self.checked(peer, "call book".into(), book, Answer::Accept, 0)?;
        } else {
            self.skip(
                "call book",
                format!(
                    "not sent: it asked for none (books {}, abi_minor {}; books need true and 5)",
                    self.asked.0, self.minor
                ),
            );
        }
        if self.market_sent().1 {
            let trade = json!({
                "c": "trade", "symbol": "BTCUSD", "trade_id": 88, "price": "60000.00", "qty": "0.01",
                "time_ms": now - 2, "event_time_ms": now - 1, "received_ms": now, "buyer_maker": true, "dropped": 0,
            });
            self.checked(peer, "call trade".into(), trade, Answer::Accept, 0)?;
        } else {
            self.skip(
                "call trade",
                format!(
                    "not sent: it asked for none (trades {}, abi_minor {}; trades need true and 5)",
                    self.asked.1, self.minor
                ),
            );
        }
        Ok(())
    }

    /// Calls in which every intent is answered BUSY, then calls in which every intent is
    /// refused: it must retry neither in a loop inside the call.
    fn back_pressure(&mut self, peer: &mut Peer) -> Result<(), String> {
        let name = "BUSY is not retried in the call";
        let busy = if self.minor >= 3 { self.provoke(peer, Answer::Busy)? } else { None };
        match busy {
            None if self.minor < 3 => {
                self.skip(name, format!("not sent: below minor 3 (it declared {}) the daemon never answers BUSY", self.minor))
            }
            None => self.skip(name, "not exercised: it sent no intent in a tick, a price move, a fill or a book"),
            Some((what, out)) if out.intents.len() - 1 > AFTER_BUSY => self.fail(
                name,
                format!(
                    "it sent {} more intents after BUSY in one {what} call: it should return and try again from a later call",
                    out.intents.len() - 1
                ),
            ),
            Some((what, out)) => {
                self.ok(name, format!("answered BUSY in a {what} call, then {} more intents in it", out.intents.len() - 1))
            }
        }
        let name = "a refused intent is not sent again";
        match self.provoke(peer, Answer::Refuse)? {
            None => self.skip(name, "not exercised: it sent no intent in a tick, a price move, a fill or a book"),
            Some((what, out)) => {
                let sent = &out.intents;
                let again = sent.iter().enumerate().filter(|(i, s)| sent[..*i].iter().any(|e| same(e, s))).count();
                if again == 0 {
                    self.ok(name, format!("{} intents refused in a {what} call, none sent again", sent.len()))
                } else {
                    self.fail(name, format!("{again} refused intents sent again unchanged in one {what} call: a refused intent is wrong, not late"))
                }
            }
        }
        Ok(())
    }

    /// The first of a tick, a price move, a fill and a book in which it sends an intent,
    /// each answered as `answer` says: the call's kind and what it brought.
    fn provoke(&mut self, peer: &mut Peer, answer: Answer) -> Result<Option<(&'static str, CallOut)>, String> {
        self.moves += 1;
        let up = Decimal::from_int(100 * i64::try_from(self.moves).unwrap_or(0));
        let price = |p: &str| p.parse::<Decimal>().ok().and_then(|d| d.checked_add(up)).map(|d| d.to_string());
        let (bid, ask) = (price("59999.99").unwrap_or_default(), price("60000.01").unwrap_or_default());
        let mut calls: Vec<(&'static str, Value)> = vec![
            ("tick", json!({"c": "tick", "now_ms": now_ms()})),
            ("price", json!({"c": "price", "symbol": "BTCUSD", "bid": bid, "ask": ask})),
        ];
        let next = self.seq + 1;
        calls.push(("fill", self.fill(next, false, true)));
        if self.market_sent().0 {
            let now = now_ms();
            let book = json!({
                "c": "book", "symbol": "BTCUSD", "update_id": 1000 + self.moves, "event_time_ms": now,
                "received_ms": now, "skipped": 0, "bids": [[bid, "0.5"]], "asks": [[ask, "0.2"]],
            });
            calls.push(("book", book));
        }
        for (what, call) in calls {
            let seq = if what == "fill" { next } else { 0 };
            let name = format!("call {what}, its intents answered {}", answer.word());
            let out = match self.call(peer, call, answer, seq) {
                Ok(out) => out,
                Err(why) => {
                    self.fail(name, why.clone());
                    return Err(why);
                }
            };
            if !out.soft.is_empty() {
                self.fail(name, out.soft.join("; "));
            }
            if what == "fill" {
                self.seq = next;
            }
            if !out.intents.is_empty() {
                return Ok(Some((what, out)));
            }
        }
        Ok(None)
    }

    /// A new process, as after a daemon crash whose cursor save lagged: `start`, the last
    /// fill the first process acknowledged, again (replayed: it has seen it), then the next;
    /// then its channel closed without a `stop`.
    fn restart(&mut self) {
        const NAME: &str = "a new process goes on from the cursor";
        let Some(mut peer) = self.start_peer(NAME) else { return };
        let steps = |s: &mut Script, peer: &mut Peer| -> Result<(), String> {
            peer.send(&Peer::first_frame(s.t, proto::PROTO), READY_WAIT)?;
            match peer.recv(Instant::now() + READY_WAIT)? {
                Got::Frame(v) if matches!(typed(&v)?, Up::Ready { .. }) => {}
                other => return Err(format!("hello answered {other:?}")),
            }
            let (snapshot, _) = snapshot(&s.t.tag);
            let start = json!({"c": "start", "name": s.t.name, "settings": s.t.settings, "snapshot": snapshot});
            let last = s.seq;
            for (call, seq) in [(start, 0), (s.fill(last, true, true), last), (s.fill(last + 1, false, true), last + 1)]
            {
                let out = s.call(peer, call, Answer::Accept, seq)?;
                if !out.soft.is_empty() {
                    return Err(out.soft.join("; "));
                }
            }
            Ok(())
        };
        let last = self.seq;
        match steps(self, &mut peer) {
            Ok(()) => self.ok(
                NAME,
                format!(
                    "started again; acknowledged fill {last} again (replayed: the first process had it) and fill {}",
                    last + 1
                ),
            ),
            Err(why) => return self.fail(NAME, why),
        }
        self.closes("exits at the end of its channel, without stop", &mut peer);
    }

    /// Closes the channel: the process must exit within the daemon's wait.
    fn closes(&mut self, name: &str, peer: &mut Peer) {
        let began = Instant::now();
        peer.close();
        match peer.exits_within(EXIT_WAIT) {
            Some(how) => self.ok(name, format!("{how} in {} ms", began.elapsed().as_millis())),
            None => self.fail(
                name,
                format!("process {} still running 2 s after the end of its stdin: the daemon kills it", peer.pid()),
            ),
        }
    }

    /// What it sent over the run.
    fn summary(&mut self) {
        for (kind, what) in ["place", "cancel", "cancel all", "replace"].into_iter().enumerate() {
            let name = format!("intent {what}");
            match self.seen.intents[kind] {
                0 => self.skip(name, "not exercised: it sent none"),
                n => self.ok(name, format!("{n} sent, each well formed")),
            }
        }
        match (self.seen.rules_known, self.seen.rules_unknown) {
            (false, false) => self.skip("rules_of", "not exercised: it asked for none"),
            (known, unknown) => {
                let mut asked = Vec::new();
                if known {
                    asked.push("a traded symbol (answered its rules)");
                }
                if unknown {
                    asked.push("a symbol not traded (answered null)");
                }
                self.ok("rules_of", format!("asked for {}", asked.join(" and ")));
            }
        }
        if self.seen.log_levels.is_empty() {
            self.skip("log", "not exercised: it logged nothing through the daemon");
        } else {
            let levels: Vec<String> = self.seen.log_levels.iter().map(i32::to_string).collect();
            self.ok("log", format!("levels {} used", levels.join(", ")));
        }
        match self.seen.noise.take() {
            Some(what) => self.fail("silent between calls", what),
            None if self.seen.calls > 0 => {
                self.ok("silent between calls", format!("nothing unasked after {} calls", self.seen.calls))
            }
            None => {}
        }
        if let Some((slowest, what)) = self.seen.slowest.take() {
            let detail = format!("the slowest, {what}, took {:.1} ms", slowest.as_secs_f64() * 1e3);
            self.ok(format!("calls within the stall limit ({})", secs(self.t.stall)), detail);
        }
        if self.seen.calls > 0 {
            self.ok("unknown fields are ignored", "every message to it had an x_conformance field");
        }
    }

    /// [`Script::call`] as a check of its own, named `name`.
    fn checked(&mut self, peer: &mut Peer, name: String, call: Value, answer: Answer, seq: u64) -> Result<(), String> {
        match self.call(peer, call, answer, seq) {
            Ok(out) if out.soft.is_empty() => {
                let mut detail = format!("done in {:.1} ms", out.elapsed.as_secs_f64() * 1e3);
                if !out.intents.is_empty() {
                    detail.push_str(&format!(", {} intents", out.intents.len()));
                }
                self.ok(name, detail);
                Ok(())
            }
            Ok(out) => {
                self.fail(name, out.soft.join("; "));
                Ok(())
            }
            Err(why) => {
                self.fail(name.clone(), why);
                Err(format!("at {name}"))
            }
        }
    }

    /// Sends one call and serves the plugin until its `done`: each intent answered as
    /// `answer` says (a malformed one REFUSED, as the daemon does), each `rules_of` with the
    /// symbol's rules or null. `Err` where the daemon would kill it.
    fn call(&mut self, peer: &mut Peer, mut call: Value, answer: Answer, seq: u64) -> Result<CallOut, String> {
        let what = call.get("c").and_then(Value::as_str).unwrap_or("?").to_string();
        unknown_field(&mut call);
        let mut msg = json!({"t": "call", "call": call});
        unknown_field(&mut msg);
        let began = Instant::now();
        let deadline = began + self.t.stall;
        peer.send(&msg, self.t.stall)?;
        let mut out = CallOut::default();
        loop {
            let v = match peer.recv(deadline)? {
                Got::Frame(v) => v,
                Got::End => {
                    return Err(format!("it closed its channel inside the call (its process {})", exit_of(peer)))
                }
                Got::Late => {
                    return Err(format!(
                        "no done within {}: the daemon kills a plugin whose call runs over SYNCD_PLUGIN_STALL_S",
                        secs(self.t.stall)
                    ))
                }
            };
            match typed(&v)? {
                Up::Done { status, seq: got } => {
                    if got != seq {
                        return Err(format!(
                            "done with seq {got}, the call's is {seq}: the daemon takes that for a broken protocol"
                        ));
                    }
                    if status != abi::STATUS_OK {
                        return Err(format!(
                            "done with status {status}: the daemon disables the plugin until its file changes"
                        ));
                    }
                    out.elapsed = began.elapsed();
                    break;
                }
                Up::Ready { .. } | Up::Refused { .. } => {
                    return Err(format!("{} inside a call: out of turn", name_of(&typed(&v)?)))
                }
                Up::Log { level, msg: _ } => {
                    if !(1..=4).contains(&level) {
                        out.note(format!("a log of level {level}: levels are 1 (error) to 4 (debug)"));
                    } else {
                        self.seen.log_levels.insert(level);
                    }
                }
                Up::RulesOf { symbol } => {
                    let json = rules_of(&symbol);
                    match json {
                        Some(_) => self.seen.rules_known = true,
                        None => self.seen.rules_unknown = true,
                    }
                    let mut reply = json!({"t": "rules", "json": json});
                    unknown_field(&mut reply);
                    peer.send(&reply, self.t.stall)?;
                }
                Up::Intent { kind, side, order_id, symbol, price, qty, client_order_id } => {
                    let mut sent =
                        Sent { kind, side, order_id, symbol, price, qty, client_order_id, request: 0, status: 0 };
                    let wrong = malformed(&sent);
                    if let Some(why) = doubtful(&sent) {
                        out.note(format!("intent {why}"));
                    }
                    sent.status = match (&wrong, answer) {
                        (Some(why), _) => {
                            out.note(format!("intent {why}: the daemon answers -3"));
                            abi::STATUS_REFUSED
                        }
                        (None, Answer::Accept) => abi::STATUS_OK,
                        (None, Answer::Busy) if self.minor >= 3 => abi::STATUS_BUSY,
                        (None, Answer::Busy | Answer::Refuse) => abi::STATUS_REFUSED,
                    };
                    if sent.status == abi::STATUS_OK {
                        sent.request = self.next_request;
                        self.next_request += 1;
                        // Only the first few get their outcome sent back (`outcomes`).
                        if self.accepted.len() < 8 {
                            self.accepted.push(sent.clone());
                        }
                    }
                    if wrong.is_none() {
                        self.seen.intents[usize::from(sent.kind)] += 1;
                    }
                    let mut reply = json!({"t": "submitted", "request": sent.request, "status": sent.status});
                    unknown_field(&mut reply);
                    peer.send(&reply, self.t.stall)?;
                    out.intents.push(sent);
                }
            }
        }
        self.seen.calls += 1;
        if self.seen.slowest.as_ref().is_none_or(|(d, _)| out.elapsed > *d) {
            self.seen.slowest = Some((out.elapsed, what.clone()));
        }
        // Anything that comes soon after its done was sent unasked (what comes later is
        // read inside the next call, where it cannot be told from an answer).
        match peer.unread_within(QUIET)? {
            0 => {}
            n => {
                self.seen.noise.get_or_insert_with(|| format!("{n} bytes after its done of a {what} call, unasked"));
            }
        }
        Ok(out)
    }
}

/// `5 s`, `2.5 s`.
fn secs(d: Duration) -> String {
    format!("{} s", d.as_millis() as f64 / 1000.0)
}

fn exit_of(peer: &mut Peer) -> String {
    peer.exits_within(Duration::from_millis(500)).unwrap_or_else(|| "is still running".into())
}
