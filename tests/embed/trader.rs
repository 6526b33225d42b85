//! A program that embeds the daemon and trades through its executor, for the SIGKILL test
//! (`tests/it/executor.rs`): the shape of any Rust program built on the library.
//!
//! Configuration is the daemon's own environment. It prints, one line each and flushed:
//! `book <order ids>` once the executor's book is built from REST, then (after a line on stdin)
//! `placed <client id> <order id>` for every order the exchange accepted, until it is killed.

use binance_syncd::config::{Config, Needs};
use binance_syncd::daemon::{Daemon, Tuning};
use binance_syncd::executor::{Intent, Outcome};
use binance_syncd::model::Side;
use binance_syncd::rest::BOOK_TICKER;
use binance_syncd::Decimal;
use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let config = match Config::from_env(Needs { credentials: true, symbols: true }) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("trader: {}", problems.join("; "));
            std::process::exit(2);
        }
    };
    let daemon = match Daemon::start(&config, &Tuning::from_config(&config)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("trader: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    while !daemon.executor().view().ready {
        if started.elapsed() > Duration::from_secs(20) {
            eprintln!("trader: the executor never built its book");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = std::io::stdout();
    let mut ids: Vec<u64> = daemon.executor().view().open_orders.iter().map(|o| o.order_id).collect();
    ids.sort_unstable();
    let listed: Vec<String> = ids.iter().map(u64::to_string).collect();
    let _ = writeln!(out, "book {}", listed.join(" "));
    let _ = out.flush();
    // The test compares the book with the exchange before any order of this run exists.
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    let (strategy, replies) = match daemon.executor().strategy("kill") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("trader: {e}");
            std::process::exit(1);
        }
    };
    let reads = binance_syncd::daemon::rest_client(&config);
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Book {
        bid_price: Decimal,
    }
    for n in 0u64.. {
        let symbol = config.symbols[(n as usize) % config.symbols.len()].clone();
        let book = match reads.call_json::<Book>(&BOOK_TICKER, &[("symbol", symbol.as_str())]) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("trader: bookTicker: {e}");
                None
            }
        };
        if let Some(book) = book {
            let price = book.bid_price.checked_sub(Decimal::new((n % 50 + 1) as i128, 2)).unwrap_or(book.bid_price);
            let _ = strategy.submit(Intent::Place { symbol, side: Side::Buy, price, qty: Decimal::new(1, 3) });
        }
        // One order at a time, about 30 a second: a kill then lands between orders as well as
        // in the middle of one.
        if let Ok(reply) = replies.recv_timeout(Duration::from_secs(5)) {
            match reply.outcome {
                Outcome::Placed(p) => {
                    let _ = writeln!(out, "placed {} {}", p.client_order_id, p.order_id);
                    let _ = out.flush();
                }
                other => eprintln!("trader: {other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}
