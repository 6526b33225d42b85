//! `binance-syncd fills` on a log of a million lines (issue 9: "well under a second"): the
//! totals alone, the totals with a filter, and the table and JSON rows written to a sink.
//!
//! `cargo bench --bench fills` writes the log to a temporary file (about 330 MB), reads it once
//! to warm the page cache, then prints the median of 5 runs of each.

use binance_syncd::fills::{run, summarize, FillsOptions};
use std::io::Write;
use std::time::{Duration, Instant};

const LINES: u64 = 1_000_000;

fn write_log(path: &std::path::Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create the bench log"));
    let symbols = ["BTCUSD", "ETHUSD", "SOLUSD"];
    for i in 0..LINES {
        let symbol = symbols[(i % 3) as usize];
        let side = if i % 2 == 0 { "BUY" } else { "SELL" };
        // A taker fill now and then, so the maker share is not a constant.
        let maker = i % 1000 != 7;
        writeln!(
            out,
            "{{\"symbol\":\"{symbol}\",\"trade_id\":{},\"order_id\":{},\"client_order_id\":\"sd-grid-ab12-tn5mk0-{i}\",\
             \"side\":\"{side}\",\"price\":\"60{:03}.{:02}000000\",\"qty\":\"0.00{:03}000\",\"quote_qty\":\"{}.{:08}\",\
             \"commission\":\"0.00000{:03}\",\"commission_asset\":\"{}\",\"maker\":{maker},\"time\":{},\"seq\":{}}}",
            555_000 + i,
            123_456_789 + i / 4,
            i % 1000,
            i % 100,
            i % 1000,
            240 + i % 97,
            i * 7919 % 100_000_000,
            i % 1000,
            if side == "BUY" { "BTC" } else { "USD" },
            1_788_540_400_100 + i as i64 * 100,
            i + 1
        )
        .expect("write the bench log");
    }
    out.flush().expect("flush the bench log");
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("syncd-bench-fills-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("fills.jsonl");
    write_log(&path);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let all = FillsOptions { file: path.clone(), ..FillsOptions::default() };
    let first = summarize(&path, &all).expect("read the bench log");
    assert_eq!(first.lines, LINES);
    println!("fills: {LINES} lines, {:.0} MB", size as f64 / 1e6);
    for (symbol, t) in &first.per_symbol {
        println!("  {symbol}: {} fills, maker share {} bp", t.fills, t.maker_share_bp());
    }
    let totals = median(|| {
        std::hint::black_box(summarize(&path, &all).expect("read"));
    });
    let one =
        FillsOptions { symbol: Some("ETHUSD".into()), since_ms: Some(1_788_540_400_100 + 50_000_000), ..all.clone() };
    let filtered = median(|| {
        std::hint::black_box(summarize(&path, &one).expect("read"));
    });
    let table = median(|| {
        run(&all, &mut std::io::sink()).expect("table");
    });
    let json = median(|| {
        run(&FillsOptions { json: true, ..all.clone() }, &mut std::io::sink()).expect("json");
    });
    let per_line = |d: Duration| d.as_nanos() as f64 / LINES as f64;
    println!(
        "fills --totals (1M lines)            {:>8.1} ms  ({:.0} ns/line)",
        totals.as_secs_f64() * 1e3,
        per_line(totals)
    );
    println!("fills --totals --symbol --since      {:>8.1} ms", filtered.as_secs_f64() * 1e3);
    println!("fills (table rows to a sink)         {:>8.1} ms", table.as_secs_f64() * 1e3);
    println!("fills --json (rows to a sink)        {:>8.1} ms", json.as_secs_f64() * 1e3);
    let _ = std::fs::remove_dir_all(&dir);
}
