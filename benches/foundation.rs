//! Foundation figures: signing, filter check + rounding, fill-log append (with and without
//! fsync, and a page of fills made durable by one commit) beside the machine's raw
//! `fdatasync` cost, all measured in one run.
//!
//! `cargo bench --bench foundation` prints one line per figure. Targets (2-core machine):
//! signing < 5 µs, check + round < 1 µs, append without fsync < 10 µs.

use binance_syncd::config::FsyncPolicy;
use binance_syncd::filllog::{FillLog, FillRecord};
use binance_syncd::filters::{ExchangeRules, MarketContext};
use binance_syncd::model::Side;
use binance_syncd::rest::encode_params;
use binance_syncd::rest::sign::Signer;
use binance_syncd::secret::Secret;
use binance_syncd::Decimal;
use std::hint::black_box;
use std::io::Write;
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
    println!("{name:<40} {:>10.3} µs/op{verdict}", per_op.as_nanos() as f64 / 1000.0);
}

fn main() {
    let signer = Signer::new(&Secret::new("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"));
    let sign = measure(200_000, |i| {
        let ts = (1_788_540_400_000u64 + i as u64).to_string();
        let mut q = encode_params(&[
            ("symbol", "BTCUSD"),
            ("side", "BUY"),
            ("type", "LIMIT_MAKER"),
            ("quantity", "0.01234"),
            ("price", "60000.01"),
            ("newClientOrderId", "syncd-7f3a-000041"),
            ("newOrderRespType", "RESULT"),
            ("recvWindow", "5000"),
            ("timestamp", &ts),
        ]);
        let s = signer.sign(&q, "");
        q.push_str("&signature=");
        q.push_str(&s);
        black_box(q);
    });
    report("sign one order request (encode + hmac)", sign, Some(Duration::from_micros(5)));

    let body: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/exchange_info_btcusd.json")).expect("fixture");
    let rules = ExchangeRules::from_json(&body).expect("rules");
    let btc = &rules.symbols["BTCUSD"];
    let ctx = MarketContext { avg_price: Some("60000".parse().expect("dec")), ..MarketContext::default() };
    let price: Decimal = "60000.019".parse().expect("dec");
    let qty: Decimal = "0.0123456".parse().expect("dec");
    let check = measure(200_000, |i| {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        black_box(btc.prepare_maker(side, black_box(price), black_box(qty), &ctx, &rules.exchange_filters).is_ok());
    });
    report("filter check + rounding (LIMIT_MAKER)", check, Some(Duration::from_micros(1)));

    let dir = std::env::temp_dir().join(format!("syncd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fill = |trade_id: u64| FillRecord {
        symbol: "BTCUSD".into(),
        trade_id,
        order_id: 123456789,
        client_order_id: "syncd-7f3a-000041".into(),
        side: Side::Buy,
        price: "60000.00000000".parse().expect("dec"),
        qty: "0.00400000".parse().expect("dec"),
        quote_qty: "240.00000000".parse().expect("dec"),
        commission: "0.00000400".parse().expect("dec"),
        commission_asset: "BTC".into(),
        maker: true,
        time: 1788540400100,
        seq: 0,
    };
    let (mut log, _) = FillLog::open(&dir.join("nosync.jsonl"), FsyncPolicy::Never).expect("open");
    let mut fills: Vec<FillRecord> = (0..250_000u64).map(fill).collect();
    let append = measure(50_000, |i| {
        black_box(log.append(&mut fills[i as usize]).expect("append"));
    });
    report("format + append one fill (no fsync)", append, Some(Duration::from_micros(10)));

    let (mut log, _) = FillLog::open(&dir.join("sync.jsonl"), FsyncPolicy::Always).expect("open");
    let append_sync = measure(200, |i| {
        black_box(log.append(&mut fills[i as usize]).expect("append"));
    });
    report("format + append one fill (fsync)", append_sync, None);
    // A page of reconciled fills (100) staged and made durable by one commit, per fill.
    let (mut log, _) = FillLog::open(&dir.join("page.jsonl"), FsyncPolicy::Always).expect("open");
    let page_sync = measure(20, |i| {
        for f in &mut fills[(i * 100) as usize..(i * 100 + 100) as usize] {
            black_box(log.stage(f).expect("stage"));
        }
        log.commit().expect("commit");
    }) / 100;
    report("  ... in a page of 100, one commit", page_sync, None);
    println!(
        "fsync per fill / in a page of 100 = {:.1}x",
        append_sync.as_nanos() as f64 / page_sync.as_nanos().max(1) as f64
    );

    let mut raw = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("raw")).expect("open raw");
    let line = vec![b'x'; 260];
    let raw_sync = measure(200, |_| {
        raw.write_all(&line).expect("write");
        raw.sync_data().expect("fdatasync");
    });
    report("raw write + fdatasync of 260 bytes", raw_sync, None);
    println!("fsync append / raw fdatasync = {:.2}", append_sync.as_nanos() as f64 / raw_sync.as_nanos().max(1) as f64);
    let _ = std::fs::remove_dir_all(&dir);
}
