//! Paper exchange throughput: sustained signed REST requests/s (2 client threads on keep-alive
//! connections) and user-data events/s delivered to one stream connection.
//!
//! `cargo bench --bench paper`. Targets on the 2-core machine: ≥ 2,000 signed REST requests/s,
//! ≥ 20,000 events/s to one stream.

mod common;

use binance_syncd::rest::{RestClient, ACCOUNT, LISTEN_KEY_NEW};
use binance_syncd_paper::{PaperConfig, PaperExchange};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn client(ex: &PaperExchange) -> RestClient {
    common::paper_client(ex, true).expect("clock sync")
}

fn rest_bench(ex: &PaperExchange) {
    let threads = 2;
    let per_thread = 6000;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let rest = client(ex);
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    rest.call(&ACCOUNT, &[]).expect("signed request");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    let secs = start.elapsed().as_secs_f64();
    let n = threads * per_thread;
    let rate = n as f64 / secs;
    let verdict = if rate >= 2000.0 { "met" } else { "MISSED" };
    println!("paper REST: {n} signed GET /api/v3/account in {secs:.2} s = {rate:.0} req/s (target >= 2000: {verdict})");
}

fn stream_bench(ex: &PaperExchange) {
    let rest = client(ex);
    let key: serde_json::Value = rest.call_json(&LISTEN_KEY_NEW, &[]).expect("listen key");
    let key = key["listenKey"].as_str().expect("key").to_string();
    let (mut ws, _) = tungstenite::connect(format!("{}/ws/{key}", ex.ws_url())).expect("ws connect");
    let n = 1_000_000u64;
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let producer = {
        let hub = ex.shared().hub.clone();
        let key = key.clone();
        let received = received.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                // Stay well inside the hub's per-connection queue, which cuts a client that lags
                // by more than it holds.
                while i - received.load(std::sync::atomic::Ordering::Relaxed) > 30_000 {
                    std::thread::yield_now();
                }
                let ev = format!(r#"{{"e":"balanceUpdate","E":{i},"a":"BTC","d":"0.00000001","T":{i}}}"#);
                while hub.publish(&key, &ev) == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    let mut got = 0u64;
    while got < n {
        match ws.read() {
            Ok(tungstenite::Message::Text(_)) => {
                got += 1;
                received.store(got, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => panic!("stream bench: {e}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    producer.join().expect("producer");
    let rate = n as f64 / secs;
    let verdict = if rate >= 20_000.0 { "met" } else { "MISSED" };
    println!(
        "paper stream: {n} events to one connection in {secs:.2} s = {rate:.0} events/s (target >= 20000: {verdict})"
    );
}

fn main() {
    let mut config = PaperConfig::default();
    config.rest.weight_limit = u64::MAX / 2;
    config.market_tick = Duration::from_secs(3600);
    let ex = PaperExchange::start(config).expect("paper exchange");
    rest_bench(&ex);
    stream_bench(&ex);
}
