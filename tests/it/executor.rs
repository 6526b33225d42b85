//! The executor against an in-process paper exchange: random intents never reach the exchange
//! as a filter, precision or malformed-request failure and never trade as taker; unknown
//! outcomes resolve to exactly one order; a 429 burst never escalates; one strategy over its
//! limits is refused while another trades; cancel-on-exit touches only our own orders.

use crate::faults::wait_until;
use crate::sync::{config, fast, fill_whole, read_log, temp_dir, wait_lines};
use crate::util::{init_log, paper_with};
use binance_syncd::config::Config;
use binance_syncd::daemon::Daemon;
use binance_syncd::executor::{Intent, Outcome, Reply, StrategyHandle};
use binance_syncd::model::Side;
use binance_syncd::rest::desk::OrderRef;
use binance_syncd::Decimal;
use binance_syncd_paper::trader::Trader;
use binance_syncd_paper::{PaperConfig, PaperExchange};
use crossbeam_channel::Receiver;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

struct Rig {
    ex: PaperExchange,
    cfg: Config,
    daemon: Daemon,
}

impl Rig {
    fn start(name: &str, paper: impl FnOnce(&mut PaperConfig), adjust: impl FnOnce(&mut Config)) -> Rig {
        init_log();
        let ex = paper_with(paper);
        let dir = temp_dir(name);
        let mut cfg = config(&ex, &dir);
        adjust(&mut cfg);
        let daemon = Daemon::start(&cfg, &fast()).unwrap();
        let rig = Rig { ex, cfg, daemon };
        rig.wait_ready();
        rig
    }

    /// [`Rig::start`] with `faults` set on the exchange before the daemon starts.
    fn start_faulted(name: &str, faults: &[(&str, &[(&str, &str)])]) -> Rig {
        init_log();
        let ex = paper_with(|_| {});
        for (fault, params) in faults {
            ex.fault(fault, params).unwrap();
        }
        let cfg = config(&ex, &temp_dir(name));
        let daemon = Daemon::start(&cfg, &fast()).unwrap();
        let rig = Rig { ex, cfg, daemon };
        rig.wait_ready();
        rig
    }

    fn wait_ready(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        while !self.daemon.executor().view().ready {
            assert!(Instant::now() < end, "the executor never built its book");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn strategy(&self, tag: &str) -> (StrategyHandle, Receiver<Reply>) {
        self.daemon.executor().strategy(tag).unwrap()
    }

    fn touch(&self, symbol: &str) -> (Decimal, Decimal) {
        self.ex.shared().engine.lock().unwrap().touch(symbol).unwrap()
    }

    fn report(&self) -> Value {
        self.ex.report()
    }
}

/// Waits for the final reply of each of `ids`; panics on a second final reply for one id.
fn finals(replies: &Receiver<Reply>, ids: &[u64], timeout: Duration) -> HashMap<u64, Outcome> {
    let mut out = HashMap::new();
    let end = Instant::now() + timeout;
    while out.len() < ids.len() {
        let left = end.saturating_duration_since(Instant::now());
        let r =
            replies.recv_timeout(left).unwrap_or_else(|_| panic!("{} of {} intents answered", out.len(), ids.len()));
        if r.outcome.is_final() {
            assert!(out.insert(r.request, r.outcome.clone()).is_none(), "request {} answered twice", r.request);
        }
    }
    // Nothing more may come: every answer was final and single.
    assert!(replies.recv_timeout(Duration::from_millis(200)).is_err(), "an extra reply arrived");
    out
}

fn place(symbol: &str, side: Side, price: Decimal, qty: &str) -> Intent {
    Intent::Place { symbol: symbol.into(), side, price, qty: d(qty) }
}

/// Codes that mean "we sent something the exchange could have told us was wrong".
fn is_our_mistake(code: i64) -> bool {
    code == -1013 || code == -1111 || (-1199..=-1100).contains(&code) || code == -1022 || code == -1021
}

fn our_errors(report: &Value) -> Vec<Value> {
    report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| p.starts_with("/api/v3/order")))
        .filter(|e| is_our_mistake(e["code"].as_i64().unwrap_or(0)))
        .cloned()
        .collect()
}

/// A small deterministic generator: the test replays the same intents every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn a_thousand_random_intents_never_fail_a_filter_and_never_take() {
    let rig = Rig::start(
        "exec-random",
        |c| {
            c.engine.max_num_orders = 30;
            c.rest.orders_per_10s = 10_000;
        },
        |c| {
            c.strategy_limits.max_open = 10_000;
            c.strategy_limits.max_orders_10s = 100_000;
            c.strategy_limits.max_order_notional = None;
            c.strategy_limits.max_symbol_notional = None;
            c.strategy_queue = 1024;
        },
    );
    let (btc_bid, btc_ask) = rig.touch("BTCUSD");
    let (eth_bid, eth_ask) = rig.touch("ETHUSD");
    let (strategy, replies) = rig.strategy("fuzz");
    let mut rng = Lcg(20261201);
    let mut ids = Vec::new();
    for i in 0..1000u64 {
        let (symbol, bid, ask) =
            if rng.next(2) == 0 { ("BTCUSD", btc_bid, btc_ask) } else { ("ETHUSD", eth_bid, eth_ask) };
        let side = if rng.next(2) == 0 { Side::Buy } else { Side::Sell };
        let touch = if side == Side::Buy { bid } else { ask };
        // Prices: near the touch and off the tick, crossing, and far outside PERCENT_PRICE.
        let price = match rng.next(6) {
            0 => touch.checked_mul(d("1.5")).unwrap(),
            1 => touch.checked_mul(d("0.1")).unwrap(),
            2 => {
                if side == Side::Buy {
                    ask.checked_add(d("0.5")).unwrap()
                } else {
                    bid.checked_sub(d("0.5")).unwrap()
                }
            }
            _ => {
                let off = Decimal::new(rng.next(5000) as i128 + 1, 3); // 0.001 .. 5.000, mostly off-tick
                if side == Side::Buy {
                    bid.checked_sub(off).unwrap()
                } else {
                    ask.checked_add(off).unwrap()
                }
            }
        };
        // Quantities: dust, off-step, normal, more than the balance, more than maxQty.
        let qty = match rng.next(6) {
            0 => "0.000000011",
            1 => "0.0123456789",
            2 => "0.002",
            3 => "50000",
            4 => "12",
            _ => "0.00051",
        };
        let intent = place(symbol, side, price, qty);
        // Submitting faster than the executor serves: the queue (1024) holds them.
        ids.push(strategy.submit(intent).unwrap_or_else(|e| panic!("intent {i}: {e}")));
    }
    let outcomes = finals(&replies, &ids, Duration::from_secs(120));
    assert_eq!(outcomes.len(), 1000);
    let mut rules: HashMap<String, usize> = HashMap::new();
    let mut placed = 0;
    for o in outcomes.values() {
        match o {
            Outcome::Placed(p) => {
                placed += 1;
                assert!(p.client_order_id.starts_with("sd-fuzz-"), "{p:?}");
            }
            Outcome::Refused { rule, .. } => *rules.entry(rule.clone()).or_default() += 1,
            Outcome::Rejected { code, msg, .. } => panic!("the exchange rejected an intent: {code} {msg}"),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    // Each kind of bad intent was met, and refused here.
    for rule in ["MAX_NUM_ORDERS", "balance", "crosses book", "PERCENT_PRICE", "LOT_SIZE"] {
        assert!(rules.keys().any(|r| r.starts_with(rule)), "no {rule} refusal in {rules:?}");
    }
    assert!(placed >= 40, "only {placed} placed: {rules:?}");
    // Fill what rests, as maker, and check the exchange's own record.
    for symbol in ["BTCUSD", "ETHUSD"] {
        for o in rig.daemon.executor().view().open_orders.iter().filter(|o| o.symbol == symbol).take(5) {
            fill_whole(&rig.ex, symbol, o.order_id);
        }
    }
    let report = rig.report();
    assert_eq!(our_errors(&report), Vec::<Value>::new());
    let ours: Vec<&Value> = report["trades"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["client_order_id"].as_str().unwrap().starts_with("sd-"))
        .collect();
    assert!(!ours.is_empty(), "some of our orders traded");
    assert!(ours.iter().all(|t| t["maker"] == true), "a taker fill: {ours:?}");
    let view = rig.daemon.executor().view();
    assert_eq!((view.stats.filter_rejections, view.stats.taker_rejections), (0, 0));
    rig.daemon.stop(Duration::from_secs(5));
}

/// Every order on the exchange with this client id.
fn orders_with(report_orders: &[Value], client_id: &str) -> usize {
    report_orders.iter().filter(|o| o["clientOrderId"] == client_id).count()
}

fn all_orders(rig: &Rig, symbol: &str) -> Vec<Value> {
    let rest = crate::util::client(&rig.ex);
    rest.call_json(&binance_syncd::rest::ALL_ORDERS, &[("symbol", symbol), ("limit", "1000")]).unwrap()
}

#[test]
fn an_order_answered_503_or_reset_after_placing_is_resolved_once_and_its_fills_logged_once() {
    let rig = Rig::start("exec-unknown", |_| {}, |_| {});
    let (strategy, replies) = rig.strategy("unk");
    let (bid, _) = rig.touch("BTCUSD");
    for (n, mode) in ["503", "reset"].iter().enumerate() {
        rig.ex.fault("order_error", &[("mode", mode)]).unwrap();
        let price = bid.checked_sub(Decimal::new(n as i128 + 1, 2)).unwrap();
        let id = strategy.submit(place("BTCUSD", Side::Buy, price, "0.001")).unwrap();
        let first = replies.recv_timeout(Duration::from_secs(10)).unwrap();
        let client_id = match &first.outcome {
            Outcome::Unknown { client_order_id } => client_order_id.clone(),
            other => panic!("{mode}: expected Unknown first, got {other:?}"),
        };
        let resolved = replies.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(resolved.resolved && resolved.request == id, "{resolved:?}");
        let order_id = match &resolved.outcome {
            Outcome::Placed(p) => {
                assert_eq!(p.client_order_id, client_id);
                p.order_id
            }
            other => panic!("{mode}: expected the order found, got {other:?}"),
        };
        assert_eq!(orders_with(&all_orders(&rig, "BTCUSD"), &client_id), 1, "{mode}: exactly one order");
        fill_whole(&rig.ex, "BTCUSD", order_id);
    }
    let trades = rig.report()["trades"].as_array().unwrap().len();
    let fills = wait_lines(&rig.cfg.fill_log, trades, Duration::from_secs(10));
    let keys: HashSet<(String, u64)> = fills.iter().map(|f| (f.symbol.clone(), f.trade_id)).collect();
    assert_eq!((fills.len(), keys.len()), (trades, trades), "every fill logged once");
    assert!(fills.iter().all(|f| f.client_order_id.starts_with("sd-unk-")), "{fills:?}");
    // The same for a cancel: carried out, answered 503.
    let (bid, _) = rig.touch("BTCUSD");
    let id = strategy.submit(place("BTCUSD", Side::Buy, bid.checked_sub(d("1")).unwrap(), "0.001")).unwrap();
    let placed = match finals(&replies, &[id], Duration::from_secs(10)).remove(&id) {
        Some(Outcome::Placed(p)) => p,
        other => panic!("{other:?}"),
    };
    rig.ex.fault("order_error", &[("mode", "503"), ("on", "cancel")]).unwrap();
    let id = strategy.submit(Intent::Cancel { symbol: "BTCUSD".into(), order: OrderRef::Id(placed.order_id) }).unwrap();
    assert!(matches!(replies.recv_timeout(Duration::from_secs(10)).unwrap().outcome, Outcome::Unknown { .. }));
    match replies.recv_timeout(Duration::from_secs(10)).unwrap() {
        Reply { request, outcome: Outcome::Canceled(c), resolved: true, .. } if request == id => {
            assert_eq!(c.order_id, placed.order_id)
        }
        other => panic!("expected the cancel resolved as done, got {other:?}"),
    }
    let orders = all_orders(&rig, "BTCUSD");
    let order = orders.iter().find(|o| o["orderId"] == placed.order_id).unwrap();
    assert_eq!(order["status"], "CANCELED");
    assert!(rig.daemon.executor().view().open_orders.iter().all(|o| o.order_id != placed.order_id));
    rig.daemon.stop(Duration::from_secs(5));
}

/// Every reply until each of `ids` has its final one: (the Unknown client ids, the finals).
fn with_unknowns(replies: &Receiver<Reply>, ids: &[u64], timeout: Duration) -> (Vec<String>, HashMap<u64, Outcome>) {
    let (mut unknown, mut out) = (Vec::new(), HashMap::new());
    let end = Instant::now() + timeout;
    while out.len() < ids.len() {
        let left = end.saturating_duration_since(Instant::now());
        let r = replies
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{} of {} intents answered: {out:?}", out.len(), ids.len()));
        match r.outcome {
            Outcome::Unknown { client_order_id } => unknown.push(client_order_id),
            other => assert!(out.insert(r.request, other).is_none(), "request {} answered twice", r.request),
        }
    }
    (unknown, out)
}

/// The strategy's orders open on the exchange, over both symbols.
fn open_of(rig: &Rig, tag: &str) -> Vec<Value> {
    let rest = crate::util::client(&rig.ex);
    let mut open = Vec::new();
    for symbol in ["BTCUSD", "ETHUSD"] {
        let rows: Vec<Value> = rest.call_json(&binance_syncd::rest::OPEN_ORDERS, &[("symbol", symbol)]).unwrap();
        open.extend(
            rows.into_iter().filter(|o| o["clientOrderId"].as_str().unwrap().starts_with(&format!("sd-{tag}-"))),
        );
    }
    open
}

#[test]
fn an_unknown_cancel_replace_that_never_reached_the_exchange_leaves_one_live_order_within_limits() {
    let rig = Rig::start("exec-cr-lost", |_| {}, |c| c.strategy_limits.max_open = 1);
    let (s, replies) = rig.strategy("crl");
    let (bid, _) = rig.touch("BTCUSD");
    let (eth_bid, _) = rig.touch("ETHUSD");
    let r = s.submit(place("BTCUSD", Side::Buy, bid.checked_sub(d("3")).unwrap(), "0.001")).unwrap();
    let old = match finals(&replies, &[r], Duration::from_secs(10)).remove(&r) {
        Some(Outcome::Placed(p)) => p,
        other => panic!("{other:?}"),
    };
    // The cancelReplace is lost before the engine and answered 503: nothing changed.
    rig.ex.fault("order_error", &[("on", "replace"), ("lost", "request")]).unwrap();
    let new_price = bid.checked_sub(d("2")).unwrap();
    let replace = Intent::Replace {
        symbol: "BTCUSD".into(),
        order: OrderRef::Id(old.order_id),
        side: Side::Buy,
        price: new_price,
        qty: d("0.001"),
    };
    let r = s.submit(replace).unwrap();
    match replies.recv_timeout(Duration::from_secs(10)).unwrap().outcome {
        Outcome::Unknown { .. } => {}
        other => panic!("expected Unknown first, got {other:?}"),
    }
    // Meanwhile the strategy is at its limit of one open order, whichever of the two lives.
    let extra = s.submit(place("ETHUSD", Side::Buy, eth_bid.checked_sub(d("1")).unwrap(), "0.01")).unwrap();
    let (_, out) = with_unknowns(&replies, &[r, extra], Duration::from_secs(40));
    match &out[&extra] {
        Outcome::Refused { rule, .. } => assert_eq!(rule, "max open orders"),
        other => panic!("the strategy went over its limit of 1 open order: {other:?}"),
    }
    let open = open_of(&rig, "crl");
    assert_eq!(open.len(), 1, "exactly one live order: {open:?} ({:?})", out[&r]);
    let live = open[0]["orderId"].as_u64().unwrap();
    // Both orders were looked up and the old one found open: the same cancelReplace went again.
    let replaced = match &out[&r] {
        Outcome::Replaced { canceled, placed } => {
            assert_eq!((canceled.order_id, placed.order_id), (old.order_id, live));
            assert_eq!(orders_with(&all_orders(&rig, "BTCUSD"), &placed.client_order_id), 1);
            placed.clone()
        }
        other => panic!("expected the replace sent again and done, got {other:?}"),
    };
    // The view is published just after the reply: wait for it to show nothing pending.
    let mine = |rig: &Rig| -> Vec<u64> {
        let end = Instant::now() + Duration::from_secs(5);
        let view = loop {
            let view = rig.daemon.executor().view();
            if view.unresolved == 0 || Instant::now() > end {
                break view;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(view.unresolved, 0);
        view.open_orders.iter().filter(|o| o.client_order_id.starts_with("sd-crl-")).map(|o| o.order_id).collect()
    };
    assert_eq!(mine(&rig), [live], "the executor's book agrees");
    // Once more, carried out this time and only the answer lost: found, not sent again.
    rig.ex.fault("order_error", &[("on", "replace"), ("lost", "reply"), ("mode", "reset")]).unwrap();
    let replace = Intent::Replace {
        symbol: "BTCUSD".into(),
        order: OrderRef::Id(replaced.order_id),
        side: Side::Buy,
        price: bid.checked_sub(d("1.5")).unwrap(),
        qty: d("0.001"),
    };
    let r = s.submit(replace).unwrap();
    let (unknown, mut out) = with_unknowns(&replies, &[r], Duration::from_secs(40));
    let placed = match out.remove(&r) {
        Some(Outcome::Replaced { canceled, placed }) => {
            assert_eq!(canceled.order_id, replaced.order_id);
            placed
        }
        other => panic!("expected the replace found done, got {other:?}"),
    };
    assert_eq!(unknown, std::slice::from_ref(&placed.client_order_id));
    let open = open_of(&rig, "crl");
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["orderId"].as_u64().unwrap(), placed.order_id);
    assert_eq!(orders_with(&all_orders(&rig, "BTCUSD"), &placed.client_order_id), 1);
    assert_eq!(mine(&rig), [placed.order_id]);
    rig.daemon.stop(Duration::from_secs(5));
}

#[test]
fn a_placement_that_exists_is_never_sent_again_even_filled_while_the_stream_was_down() {
    // No report can settle it: the stream is down from the start (a stream that came up after
    // the order landed would have the executor rebuild its book and find it open, before the
    // fill below). The order lands, its answer is lost, and the by-id lookups lag (-2013) for
    // longer than they are asked.
    let rig = Rig::start_faulted("exec-no-resend", &[("drop", &[("refuse_ms", "20000")])]);
    let (s, replies) = rig.strategy("nrs");
    let (bid, _) = rig.touch("BTCUSD");
    rig.ex.fault("order_error", &[("mode", "503")]).unwrap();
    rig.ex.fault("lookup_lag", &[("count", "1000")]).unwrap();
    let id = s.submit(place("BTCUSD", Side::Buy, bid.checked_sub(d("1")).unwrap(), "0.001")).unwrap();
    let client_id = match replies.recv_timeout(Duration::from_secs(10)).unwrap().outcome {
        Outcome::Unknown { client_order_id } => client_order_id,
        other => panic!("expected Unknown first, got {other:?}"),
    };
    // It fills while nobody can hear of it; its client id may now be taken again.
    let landed = all_orders(&rig, "BTCUSD");
    let order = landed.iter().find(|o| o["clientOrderId"] == client_id.as_str()).expect("the order landed");
    let order_id = order["orderId"].as_u64().unwrap();
    fill_whole(&rig.ex, "BTCUSD", order_id);
    let resolved = replies.recv_timeout(Duration::from_secs(30)).unwrap();
    rig.ex.fault("lookup_lag", &[("count", "0")]).unwrap();
    assert_eq!(orders_with(&all_orders(&rig, "BTCUSD"), &client_id), 1, "exactly one order: {resolved:?}");
    match resolved {
        Reply { request, outcome: Outcome::Placed(p), resolved: true, .. } if request == id => {
            assert_eq!((p.order_id, p.status.as_str()), (order_id, "FILLED"));
        }
        other => panic!("expected the filled order found, got {other:?}"),
    }
    rig.daemon.stop(Duration::from_secs(5));
}

#[test]
fn lookups_that_give_up_answer_unresolved_and_the_order_counts_as_open() {
    let rig = Rig::start("exec-unresolved", |_| {}, |c| c.strategy_limits.max_open = 1);
    let (s, replies) = rig.strategy("unr");
    let (bid, _) = rig.touch("BTCUSD");
    let (eth_bid, _) = rig.touch("ETHUSD");
    // Every send is lost before the engine: no lookup can ever find it, nor say it is there.
    rig.ex.fault("order_error", &[("lost", "request"), ("count", "100")]).unwrap();
    let id = s.submit(place("BTCUSD", Side::Buy, bid.checked_sub(d("1")).unwrap(), "0.001")).unwrap();
    let (unknown, out) = with_unknowns(&replies, &[id], Duration::from_secs(40));
    assert_eq!(unknown.len(), 1);
    match &out[&id] {
        Outcome::Unresolved { client_order_id, .. } => assert_eq!(client_order_id, &unknown[0]),
        other => panic!("expected Unresolved (it may exist as far as we know), got {other:?}"),
    }
    rig.ex.fault("order_error", &[("count", "0")]).unwrap();
    // It still counts as open: at a limit of one, the next placement (another symbol) is refused.
    let r = s.submit(place("ETHUSD", Side::Buy, eth_bid.checked_sub(d("1")).unwrap(), "0.01")).unwrap();
    match finals(&replies, &[r], Duration::from_secs(10)).remove(&r) {
        Some(Outcome::Refused { rule, .. }) => assert_eq!(rule, "max open orders"),
        other => panic!("the unresolved order was not counted as open: {other:?}"),
    }
    assert_eq!(orders_with(&all_orders(&rig, "BTCUSD"), &unknown[0]), 0);
    rig.daemon.stop(Duration::from_secs(5));
}

/// Orders and background reads have a lane each (issue 22), so when the first 429 comes the
/// other lane may already have its one request on the wire: the exchange tolerates that one
/// (`hold_grace`), and the test counts that nothing more arrived inside any hold.
#[test]
fn a_429_burst_while_orders_flow_never_escalates_to_a_ban() {
    let rig = Rig::start(
        "exec-429",
        |p| p.rest.hold_grace = 1,
        |c| {
            c.strategy_limits.max_orders_10s = 1000;
            c.strategy_limits.max_open = 1000;
        },
    );
    let (strategy, replies) = rig.strategy("burst");
    let (bid, _) = rig.touch("BTCUSD");
    let mut ids = Vec::new();
    for i in 0..30 {
        if i == 5 {
            rig.ex.fault("burst_429", &[("count", "3"), ("retry_after", "1")]).unwrap();
        }
        let price = bid.checked_sub(Decimal::new(i + 1, 2)).unwrap();
        ids.push(strategy.submit(place("BTCUSD", Side::Buy, price, "0.001")).unwrap());
    }
    let outcomes = finals(&replies, &ids, Duration::from_secs(60));
    let report = rig.report();
    crate::util::assert_fired(&report, "rest/burst_429");
    assert!(report["http_429"].as_u64().unwrap() >= 1, "the burst fired");
    assert_eq!(report["http_418"], 0, "nothing was sent inside a hold");
    // The first hold may meet the other lane's request in flight; after it the gate lets one
    // request go alone until it is answered, so no later hold meets another.
    assert!(report["in_hold"].as_u64() <= Some(1), "requests inside holds: {}", report["in_hold"]);
    let placed = outcomes.values().filter(|o| matches!(o, Outcome::Placed(_))).count();
    assert!(placed >= 27, "orders waited out the hold and went: {outcomes:?}");
    rig.daemon.stop(Duration::from_secs(5));
}

/// Issue 22: orders have a lane of their own. A reconciliation page held open by the exchange
/// (as a far exchange's round trip would keep it) does not hold up an order.
#[test]
fn an_order_goes_out_while_a_held_reconciliation_request_waits() {
    // The held request must outlive every wait below: only `release_rest` ends it.
    let rig = Rig::start("lane-held", |_| {}, |c| c.http_timeout = Duration::from_secs(60));
    rig.ex.fault("hold_rest", &[("path", "/api/v3/myTrades"), ("ms", "60000")]).unwrap();
    wait_until("a held myTrades request", Duration::from_secs(15), || rig.report()["rest_held"].as_u64() >= Some(1));
    let (strategy, replies) = rig.strategy("lane");
    let (bid, _) = rig.touch("BTCUSD");
    let id = strategy.submit(place("BTCUSD", Side::Buy, bid.checked_sub(d("1")).unwrap(), "0.001")).unwrap();
    // Bounded well below the hold: an order queued behind the held page fails here.
    let outcome = finals(&replies, &[id], Duration::from_secs(10)).remove(&id);
    let held = rig.report()["rest_held"].as_u64().unwrap_or(0);
    rig.ex.fault("release_rest", &[]).unwrap();
    assert!(matches!(outcome, Some(Outcome::Placed(_))), "the order did not go: {outcome:?}");
    assert!(held >= 1, "the reconciliation request was no longer held when the order was acknowledged");
    rig.daemon.stop(Duration::from_secs(5));
}

/// Issue 22: the lanes share one gate. A 429 answered to a background request (a held
/// reconciliation page, released into a 429) holds the order lane too: an order submitted
/// after it waits the hold out (the paper exchange bans anything that arrives inside it).
#[test]
fn a_429_on_a_background_request_holds_orders_too() {
    init_log();
    let ex = paper_with(|_| {});
    let dir = temp_dir("lane-429");
    let mut cfg = config(&ex, &dir);
    cfg.http_timeout = Duration::from_secs(60);
    let rest = binance_syncd::daemon::rest_client(&cfg);
    let rig = Rig { daemon: Daemon::start_with(&cfg, &fast(), rest.clone()).unwrap(), ex, cfg };
    rig.wait_ready();
    rig.ex.fault("hold_rest", &[("path", "/api/v3/myTrades"), ("ms", "60000")]).unwrap();
    wait_until("a held myTrades request", Duration::from_secs(15), || rig.report()["rest_held"].as_u64() >= Some(1));
    // The background lane is the held page's; the order lane is idle: the 429 is the page's.
    rig.ex.fault("burst_429", &[("count", "1"), ("retry_after", "2")]).unwrap();
    rig.ex.fault("release_rest", &[]).unwrap();
    wait_until("the daemon to see the 429", Duration::from_secs(10), || rest.gate().stats().http_429 >= 1);
    let errors = rig.report()["errors"].as_array().cloned().unwrap_or_default();
    let too_many: Vec<&Value> = errors.iter().filter(|e| e["status"] == 429).collect();
    assert_eq!(too_many.len(), 1, "{errors:?}");
    assert_eq!(too_many[0]["path"], "/api/v3/myTrades", "the 429 hit another request: {errors:?}");
    let (strategy, replies) = rig.strategy("lane");
    let (bid, _) = rig.touch("BTCUSD");
    let id = strategy.submit(place("BTCUSD", Side::Buy, bid.checked_sub(d("1")).unwrap(), "0.001")).unwrap();
    let outcome = finals(&replies, &[id], Duration::from_secs(20)).remove(&id);
    assert!(matches!(outcome, Some(Outcome::Placed(_))), "the order did not go after the hold: {outcome:?}");
    assert_eq!(rig.report()["http_418"], 0, "the order went inside the hold the page's 429 started");
    rig.daemon.stop(Duration::from_secs(5));
}

#[test]
fn a_strategy_over_its_limits_is_refused_while_another_trades() {
    let rig = Rig::start(
        "exec-limits",
        |_| {},
        |c| {
            c.strategy_limits.max_orders_10s = 5;
            c.strategy_limits.max_open = 8;
            c.strategy_limits.max_order_notional = Some(d("200"));
        },
    );
    let (flood, flood_replies) = rig.strategy("flood");
    let (calm, calm_replies) = rig.strategy("calm");
    let (bid, _) = rig.touch("BTCUSD");
    let price = |i: i128| bid.checked_sub(Decimal::new(i + 1, 2)).unwrap();
    let flood_ids: Vec<u64> =
        (0..40).map(|i| flood.submit(place("BTCUSD", Side::Buy, price(i), "0.001")).unwrap()).collect();
    let calm_ids: Vec<u64> =
        (0..4).map(|i| calm.submit(place("BTCUSD", Side::Buy, price(100 + i), "0.001")).unwrap()).collect();
    let big = calm.submit(place("BTCUSD", Side::Buy, price(200), "0.01")).unwrap(); // ~600 USD
    let mut all_calm = calm_ids.clone();
    all_calm.push(big);
    let calm_out = finals(&calm_replies, &all_calm, Duration::from_secs(30));
    let flood_out = finals(&flood_replies, &flood_ids, Duration::from_secs(30));
    for id in &calm_ids {
        assert!(matches!(calm_out[id], Outcome::Placed(_)), "calm was starved: {:?}", calm_out[id]);
    }
    match &calm_out[&big] {
        Outcome::Refused { rule, .. } => assert_eq!(rule, "max order notional"),
        other => panic!("{other:?}"),
    }
    let placed = flood_out.values().filter(|o| matches!(o, Outcome::Placed(_))).count();
    assert_eq!(placed, 5, "flood gets its 5 per 10 s");
    let refused_by_rate = flood_out
        .values()
        .filter(|o| matches!(o, Outcome::Refused { rule, .. } if rule == "max orders per 10 s"))
        .count();
    assert_eq!(refused_by_rate, 35);
    rig.daemon.stop(Duration::from_secs(5));
}

#[test]
fn replace_and_cancel_all_touch_only_the_strategys_own_orders() {
    let rig = Rig::start("exec-own", |_| {}, |c| c.cancel_on_exit = true);
    let (bid, _) = rig.touch("BTCUSD");
    // Someone else's order on the same account.
    let other = crate::util::place_maker(
        &rig.ex,
        "BTCUSD",
        "BUY",
        "0.001",
        &bid.checked_sub(d("2")).unwrap().to_string(),
        "web_1",
    )
    .unwrap();
    let other_id = other["orderId"].as_u64().unwrap();
    let (a, a_replies) = rig.strategy("a");
    let (b, b_replies) = rig.strategy("b");
    let ids: Vec<u64> = (0..3)
        .map(|i| {
            a.submit(place("BTCUSD", Side::Buy, bid.checked_sub(Decimal::new(i + 3, 1)).unwrap(), "0.001")).unwrap()
        })
        .collect();
    let mine: Vec<u64> = finals(&a_replies, &ids, Duration::from_secs(10))
        .values()
        .map(|o| match o {
            Outcome::Placed(p) => p.order_id,
            other => panic!("{other:?}"),
        })
        .collect();
    // b may not cancel a's order, nor the other user's.
    let r1 = b.submit(Intent::Cancel { symbol: "BTCUSD".into(), order: OrderRef::Id(mine[0]) }).unwrap();
    let r2 = b.submit(Intent::Cancel { symbol: "BTCUSD".into(), order: OrderRef::Id(other_id) }).unwrap();
    let out = finals(&b_replies, &[r1, r2], Duration::from_secs(10));
    assert!(out.values().all(|o| matches!(o, Outcome::Refused { rule, .. } if rule == "not its order")), "{out:?}");
    // a replaces one of its orders, then cancels all of its own.
    let new_price = bid.checked_sub(d("0.9")).unwrap();
    let r = a
        .submit(Intent::Replace {
            symbol: "BTCUSD".into(),
            order: OrderRef::Id(mine[0]),
            side: Side::Buy,
            price: new_price,
            qty: d("0.002"),
        })
        .unwrap();
    match finals(&a_replies, &[r], Duration::from_secs(10)).remove(&r) {
        Some(Outcome::Replaced { canceled, placed }) => {
            assert_eq!(canceled.order_id, mine[0]);
            assert_eq!((placed.price, placed.qty), (new_price, d("0.002")));
        }
        other => panic!("{other:?}"),
    }
    let r = a.submit(Intent::CancelAll { symbol: "BTCUSD".into() }).unwrap();
    match finals(&a_replies, &[r], Duration::from_secs(10)).remove(&r) {
        Some(Outcome::CanceledAll { canceled, failed, .. }) => assert_eq!((canceled.len(), failed.len()), (3, 0)),
        other => panic!("{other:?}"),
    }
    // One more of b's, then shutdown with SYNCD_CANCEL_ON_EXIT: b's goes, the other user's stays.
    let r = b.submit(place("BTCUSD", Side::Buy, bid.checked_sub(d("1.5")).unwrap(), "0.001")).unwrap();
    assert!(matches!(finals(&b_replies, &[r], Duration::from_secs(10))[&r], Outcome::Placed(_)));
    rig.daemon.stop(Duration::from_secs(8));
    let open: Vec<Value> =
        crate::util::client(&rig.ex).call_json(&binance_syncd::rest::OPEN_ORDERS, &[("symbol", "BTCUSD")]).unwrap();
    let open_ids: Vec<u64> = open.iter().map(|o| o["orderId"].as_u64().unwrap()).collect();
    assert_eq!(open_ids, [other_id], "only the other user's order is left");
    let _ = Trader::new(&rig.ex).cancel_all("BTCUSD");
    let _ = read_log(&rig.cfg.fill_log);
}

#[test]
fn a_second_daemon_on_the_account_never_touches_the_firsts_orders_even_with_the_same_tag() {
    let rig = Rig::start("exec-twin-a", |_| {}, |_| {});
    let mut cfg = config(&rig.ex, &temp_dir("exec-twin-b"));
    cfg.cancel_on_exit = true;
    let twin = Daemon::start(&cfg, &fast()).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !twin.executor().view().ready {
        assert!(Instant::now() < end, "the second executor never built its book");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (bid, _) = rig.touch("BTCUSD");
    let (a, a_replies) = rig.strategy("same");
    let ids: Vec<u64> = (0..2)
        .map(|i| {
            a.submit(place("BTCUSD", Side::Buy, bid.checked_sub(Decimal::new(i + 3, 1)).unwrap(), "0.001")).unwrap()
        })
        .collect();
    let firsts: Vec<u64> = finals(&a_replies, &ids, Duration::from_secs(10))
        .values()
        .map(|o| match o {
            Outcome::Placed(p) => p.order_id,
            other => panic!("{other:?}"),
        })
        .collect();
    // The twin hears those orders on its stream too, with ids that start `sd-same-`.
    let end = Instant::now() + Duration::from_secs(10);
    while twin.executor().view().open_orders.len() < 2 {
        assert!(Instant::now() < end, "the twin never saw the first daemon's orders");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (b, b_replies) = twin.executor().strategy("same").unwrap();
    let r1 = b.submit(Intent::Cancel { symbol: "BTCUSD".into(), order: OrderRef::Id(firsts[0]) }).unwrap();
    let r2 = b.submit(Intent::CancelAll { symbol: "BTCUSD".into() }).unwrap();
    let out = finals(&b_replies, &[r1, r2], Duration::from_secs(10));
    assert!(matches!(&out[&r1], Outcome::Refused { rule, .. } if rule == "not its order"), "{out:?}");
    match &out[&r2] {
        Outcome::CanceledAll { canceled, failed, .. } => assert_eq!((canceled.len(), failed.len()), (0, 0), "{out:?}"),
        other => panic!("{other:?}"),
    }
    // And its SYNCD_CANCEL_ON_EXIT leaves them alone.
    twin.stop(Duration::from_secs(8));
    let open: Vec<Value> =
        crate::util::client(&rig.ex).call_json(&binance_syncd::rest::OPEN_ORDERS, &[("symbol", "BTCUSD")]).unwrap();
    let mut open_ids: Vec<u64> = open.iter().map(|o| o["orderId"].as_u64().unwrap()).collect();
    let mut want = firsts.clone();
    open_ids.sort();
    want.sort();
    assert_eq!(open_ids, want, "the first daemon's orders are all still open");
    rig.daemon.stop(Duration::from_secs(8));
    let _ = read_log(&rig.cfg.fill_log);
}

#[test]
fn a_replace_on_a_symbol_without_cancel_replace_is_a_cancel_then_a_new_order() {
    let rig = Rig::start(
        "exec-no-cr",
        |p| {
            for s in &mut p.engine.symbols {
                s.cancel_replace_allowed = false;
            }
        },
        |_| {},
    );
    let (bid, _) = rig.touch("BTCUSD");
    let (a, replies) = rig.strategy("nocr");
    let r = a.submit(place("BTCUSD", Side::Buy, bid.checked_sub(d("3")).unwrap(), "0.001")).unwrap();
    let old = match finals(&replies, &[r], Duration::from_secs(10)).remove(&r) {
        Some(Outcome::Placed(p)) => p,
        other => panic!("{other:?}"),
    };
    let new_price = bid.checked_sub(d("2")).unwrap();
    let r = a
        .submit(Intent::Replace {
            symbol: "BTCUSD".into(),
            order: OrderRef::Id(old.order_id),
            side: Side::Buy,
            price: new_price,
            qty: d("0.002"),
        })
        .unwrap();
    let placed = match finals(&replies, &[r], Duration::from_secs(10)).remove(&r) {
        Some(Outcome::Replaced { canceled, placed }) => {
            assert_eq!(canceled.order_id, old.order_id);
            placed
        }
        other => panic!("the exchange takes no cancelReplace here, so the executor must not send one: {other:?}"),
    };
    let open: Vec<Value> =
        crate::util::client(&rig.ex).call_json(&binance_syncd::rest::OPEN_ORDERS, &[("symbol", "BTCUSD")]).unwrap();
    let open: Vec<(u64, String)> =
        open.iter().map(|o| (o["orderId"].as_u64().unwrap(), o["price"].as_str().unwrap().to_string())).collect();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].0, placed.order_id);
    assert_eq!(open[0].1.parse::<Decimal>().unwrap(), new_price);
    assert!(our_errors(&rig.report()).is_empty(), "{:?}", our_errors(&rig.report()));
    rig.daemon.stop(Duration::from_secs(8));
    let _ = Trader::new(&rig.ex).cancel_all("BTCUSD");
}

/// The embedding example (`tests/embed/trader.rs`), which `cargo test` builds beside this binary.
fn trader_exe() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(|deps| deps.parent()).unwrap();
    debug.join("examples").join(format!("trader{}", std::env::consts::EXE_SUFFIX))
}

fn spawn_trader(ex: &PaperExchange, dir: &std::path::Path) -> crate::util::Killed {
    let mut cmd = std::process::Command::new(trader_exe());
    crate::util::daemon_env(&mut cmd, ex, dir, binance_syncd_paper::DEMO_API_KEY)
        .env("SYNCD_STRATEGY_MAX_ORDERS_10S", "1000")
        .env("SYNCD_STRATEGY_MAX_OPEN", "1000")
        .env("SYNCD_STRATEGY_MAX_SYMBOL_NOTIONAL", "0")
        .env("SYNCD_PRICE_POLL_S", "0.2")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map(crate::util::Killed)
        .expect("spawn the trader example (built by cargo test)")
}

#[test]
fn sigkill_and_restart_never_reuse_a_client_id_and_rebuild_the_book_from_rest() {
    init_log();
    let ex = paper_with(|c| c.rest.orders_per_10s = 10_000);
    let dir = temp_dir("exec-kill");
    let seed = std::env::var("SYNCD_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Lcg(seed);
    let mut seen_ids: Vec<String> = Vec::new();
    for run in 0..4 {
        let mut child = spawn_trader(&ex, &dir);
        let lines = crate::util::lines_of(child.stdout.take().unwrap());
        let book = lines.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("run {run}: no book line"));
        let mut rebuilt: Vec<u64> =
            book.strip_prefix("book").unwrap().split_whitespace().map(|t| t.parse().unwrap()).collect();
        rebuilt.sort_unstable();
        let mut open: Vec<u64> = Vec::new();
        for symbol in ["BTCUSD", "ETHUSD"] {
            let rows: Vec<Value> = crate::util::paper_client(&ex, true)
                .unwrap()
                .call_json(&binance_syncd::rest::OPEN_ORDERS, &[("symbol", symbol)])
                .unwrap();
            open.extend(rows.iter().map(|o| o["orderId"].as_u64().unwrap()));
        }
        open.sort_unstable();
        assert_eq!(rebuilt, open, "run {run} (seed {seed}): the rebuilt book is the exchange's");
        if let Some(stdin) = child.0.stdin.as_mut() {
            std::io::Write::write_all(stdin, b"go\n").unwrap();
        }
        // Let it place a few orders, then kill it at a random moment after that.
        let want = 3 + rng.next(6) as usize;
        let mut placed = 0;
        while placed < want {
            let line = lines.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("run {run}: stalled"));
            if let Some(rest) = line.strip_prefix("placed ") {
                seen_ids.push(rest.split_whitespace().next().unwrap().to_string());
                placed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.next(60)));
        drop(child); // SIGKILL
                     // Fill some of what rests, so ids of filled orders (which Binance would accept again)
                     // are part of the history too.
                     // Bound first: the engine lock must be released before the fault asks for it.
        let open_now = ex.shared().engine.lock().unwrap().open_orders(Some("BTCUSD")).unwrap();
        if let Some(id) = open_now.as_array().and_then(|a| a.first()).and_then(|o| o["orderId"].as_u64()) {
            fill_whole(&ex, "BTCUSD", id);
        }
    }
    let mut all: Vec<String> = Vec::new();
    for symbol in ["BTCUSD", "ETHUSD"] {
        let rows: Vec<Value> = crate::util::paper_client(&ex, true)
            .unwrap()
            .call_json(&binance_syncd::rest::ALL_ORDERS, &[("symbol", symbol), ("limit", "1000")])
            .unwrap();
        all.extend(rows.iter().map(|o| o["clientOrderId"].as_str().unwrap().to_string()));
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "seed {seed}: a client order id was used twice: {all:?}");
    assert!(seen_ids.iter().all(|id| all.contains(id)), "seed {seed}");
    assert!(all.len() >= 12, "seed {seed}: only {} orders in 4 runs", all.len());
    let duplicates =
        ex.report()["errors"].as_array().unwrap().iter().filter(|e| e["msg"] == "Duplicate order sent.").count();
    assert_eq!(duplicates, 0, "seed {seed}");
}
