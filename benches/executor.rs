//! Executor figures, in one run:
//!
//! - intent → signed request bytes: rounding and every filter (`prepare_maker`), a fresh client
//!   id, the LIMIT_MAKER query as the desk writes it, `recvWindow`/`timestamp` and the
//!   signature (target < 20 µs);
//! - filter check + rounding of one intent alone;
//! - intent → exchange ACK on loopback: a strategy handle's `submit` to its reply, through the
//!   executor thread, the rate gate and a paper exchange in this process, p50/p99/max.
//!
//! `cargo bench --bench executor` (about 20 s).

mod common;
use common::percentile;

use binance_syncd::config::{Config, Needs};
use binance_syncd::daemon::{Daemon, Tuning};
use binance_syncd::executor::ids::ClientIds;
use binance_syncd::executor::{Intent, Outcome};
use binance_syncd::filters::{ExchangeRules, MarketContext};
use binance_syncd::model::Side;
use binance_syncd::rest::desk::{MakerOrder, OrderDesk};
use binance_syncd::rest::sign::Signer;
use binance_syncd::secret::Secret;
use binance_syncd::Decimal;
use binance_syncd_paper::{PaperConfig, PaperExchange, DEMO_API_SECRET};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Runs `f` `n` times and returns the median of 5 batches, per call.
fn measure(n: u32, mut f: impl FnMut(u32)) -> Duration {
    let mut batches: Vec<Duration> = (0..5)
        .map(|b| {
            let start = Instant::now();
            for i in 0..n {
                f(b * n + i);
            }
            start.elapsed() / n
        })
        .collect();
    batches.sort();
    batches[2]
}

fn report(name: &str, per_op: Duration, target: Option<Duration>) {
    let verdict = match target {
        Some(t) if per_op <= t => format!("  (target < {t:?}: met)"),
        Some(t) => format!("  (target < {t:?}: MISSED)"),
        None => String::new(),
    };
    println!("{name:<44} {:>10.3} µs/op{verdict}", per_op.as_nanos() as f64 / 1000.0);
}

fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

fn main() {
    let body: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/exchange_info_btcusd.json")).expect("fixture");
    let rules = ExchangeRules::from_json(&body).expect("rules");
    let btc = rules.symbols["BTCUSD"].clone();
    let ctx = MarketContext { avg_price: Some(d("60000")), open_orders_symbol: 12, ..MarketContext::default() };
    let signer = Signer::new(&Secret::new(DEMO_API_SECRET));
    let dir = std::env::temp_dir().join(format!("syncd-bench-exec-{}", std::process::id()));
    let mut ids = ClientIds::open(&dir, 1_788_540_400_000).expect("ids");

    let check = measure(200_000, |i| {
        let price = Decimal::new(6_000_001_234 + i64::from(i % 1000) as i128, 5);
        black_box(btc.prepare_maker(Side::Buy, price, d("0.0123456"), &ctx, &rules.exchange_filters).ok());
    });
    let to_bytes = measure(100_000, |i| {
        let price = Decimal::new(6_000_001_234 + i64::from(i % 1000) as i128, 5);
        let Ok(p) = btc.prepare_maker(Side::Buy, price, d("0.0123456"), &ctx, &rules.exchange_filters) else {
            return;
        };
        let id = ids.next("bench");
        let order = MakerOrder {
            symbol: "BTCUSD",
            side: Side::Buy,
            price: p.price,
            quantity: p.quantity,
            client_order_id: &id,
        };
        let mut q = OrderDesk::placement_query(&order);
        q.push_str(&format!("&recvWindow=5000&timestamp={}", 1_788_540_400_000u64 + u64::from(i)));
        let s = signer.sign(&q, "");
        q.push_str("&signature=");
        q.push_str(&s);
        black_box(q);
    });
    report("intent -> signed request bytes", to_bytes, Some(Duration::from_micros(20)));
    report("filter check + rounding of one intent", check, None);

    let (p50, p99, max, n) = loopback_acks(&dir);
    println!(
        "intent -> exchange ACK on loopback ({n} orders)  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Places orders one at a time through a running daemon and times each reply.
fn loopback_acks(dir: &std::path::Path) -> (Duration, Duration, Duration, usize) {
    let ex = PaperExchange::start(PaperConfig::unthrottled()).expect("paper exchange");
    let vars: HashMap<&str, String> = common::daemon_env(&ex, dir, "BTCUSD")
        .into_iter()
        .chain([
            ("SYNCD_STRATEGY_MAX_OPEN", "100000".into()),
            ("SYNCD_STRATEGY_MAX_ORDERS_10S", "100000".into()),
            ("SYNCD_STRATEGY_MAX_SYMBOL_NOTIONAL", "0".into()),
        ])
        .collect();
    let config =
        Config::from_lookup(|k| vars.get(k).cloned(), Needs { credentials: true, symbols: true }).expect("config");
    let daemon = Daemon::start(&config, &Tuning::from_config(&config)).expect("daemon");
    while !daemon.executor().view().ready {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (bid, _) = ex.shared().engine.lock().expect("engine").touch("BTCUSD").expect("touch");
    let (strategy, replies) = daemon.executor().strategy("bench").expect("handle");
    let mut times = Vec::new();
    for i in 0..2000i128 {
        let price = bid.checked_sub(Decimal::new(i % 500 + 1, 2)).expect("price");
        let start = Instant::now();
        strategy
            .submit(Intent::Place { symbol: "BTCUSD".into(), side: Side::Buy, price, qty: d("0.0001") })
            .expect("submit");
        let reply = replies.recv_timeout(Duration::from_secs(10)).expect("reply");
        let took = start.elapsed();
        match reply.outcome {
            Outcome::Placed(_) => times.push(took),
            other => panic!("order {i}: {other:?}"),
        }
    }
    daemon.stop(Duration::from_secs(5));
    times.sort();
    let n = times.len();
    (percentile(&times, 0.5), percentile(&times, 0.99), times[n - 1], n)
}
