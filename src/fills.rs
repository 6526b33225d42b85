//! `binance-syncd fills`: the fill log for people. Every (or every matching) fill as a table
//! row or as its own JSON line, then totals per symbol: fills, bought and sold quantity,
//! notional each way, fees by asset, and the maker share (the operator's proof that maker-only
//! holds). Exact decimals throughout, as the log has them.
//!
//! Speed: a line is parsed into borrowed fields (no allocation per line) and only the numbers
//! the totals need are turned into decimals, so a log of a million lines is read in a fraction
//! of a second (`cargo bench --bench fills`).

use crate::decimal::Decimal;
use crate::error::Error;
use crate::filllog::Reader;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct FillsOptions {
    pub file: PathBuf,
    /// Only this symbol (upper case).
    pub symbol: Option<String>,
    /// Only fills at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Each fill as its log line (JSON), then one `{"totals": ...}` line.
    pub json: bool,
    /// Totals only, no row per fill.
    pub totals_only: bool,
    /// After the totals, keep printing new fills as they are logged (through rotations).
    pub follow: bool,
}

/// A fill-log line as the totals need it; strings borrowed from the line.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    symbol: &'a str,
    trade_id: u64,
    #[serde(borrow)]
    side: &'a str,
    price: Decimal,
    qty: Decimal,
    quote_qty: Decimal,
    commission: Decimal,
    #[serde(borrow)]
    commission_asset: &'a str,
    maker: bool,
    time: i64,
    #[serde(default)]
    seq: u64,
}

impl<'a> From<&'a crate::filllog::FillRecord> for Line<'a> {
    fn from(f: &'a crate::filllog::FillRecord) -> Line<'a> {
        Line {
            symbol: &f.symbol,
            trade_id: f.trade_id,
            side: f.side.as_str(),
            price: f.price,
            qty: f.qty,
            quote_qty: f.quote_qty,
            commission: f.commission,
            commission_asset: &f.commission_asset,
            maker: f.maker,
            time: f.time,
            seq: f.seq,
        }
    }
}

/// One symbol's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub fills: u64,
    pub maker: u64,
    pub bought: Decimal,
    pub sold: Decimal,
    /// Quote spent on buys and received for sells (`quote_qty` summed).
    pub buy_notional: Decimal,
    pub sell_notional: Decimal,
    pub fees: BTreeMap<String, Decimal>,
}

impl Totals {
    /// Maker fills per ten thousand, rounded down (so 1 taker in a million never shows 100%).
    pub fn maker_share_bp(&self) -> u64 {
        (self.maker * 10_000).checked_div(self.fills).unwrap_or(0)
    }

    fn maker_share(&self) -> String {
        let bp = self.maker_share_bp();
        format!("{}.{:02}%", bp / 100, bp % 100)
    }

    fn fees_text(&self) -> String {
        if self.fees.is_empty() {
            return "-".into();
        }
        self.fees.iter().map(|(asset, fee)| format!("{fee} {asset}")).collect::<Vec<_>>().join(", ")
    }

    fn add(&mut self, line: &Line<'_>) -> Option<()> {
        self.fills += 1;
        self.maker += u64::from(line.maker);
        if line.side == "SELL" {
            self.sold = self.sold.checked_add(line.qty)?;
            self.sell_notional = self.sell_notional.checked_add(line.quote_qty)?;
        } else {
            self.bought = self.bought.checked_add(line.qty)?;
            self.buy_notional = self.buy_notional.checked_add(line.quote_qty)?;
        }
        if !line.commission.is_zero() || !line.commission_asset.is_empty() {
            match self.fees.get_mut(line.commission_asset) {
                Some(fee) => *fee = fee.checked_add(line.commission)?,
                None => {
                    self.fees.insert(line.commission_asset.to_string(), line.commission);
                }
            }
        }
        Some(())
    }
}

/// What a read found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Whole lines read.
    pub lines: u64,
    /// Lines that are not fill records (or overflow a total), skipped.
    pub skipped: u64,
    /// The highest `seq` read (matching or not).
    pub last_seq: u64,
    /// Fills that matched the filters, per symbol.
    pub per_symbol: BTreeMap<String, Totals>,
}

impl FillsOptions {
    fn wants(&self, symbol: &str, time: i64) -> bool {
        self.symbol.as_deref().is_none_or(|s| s == symbol) && self.since_ms.is_none_or(|t| time >= t)
    }
}

/// Reads every whole line of `input`; each matching fill goes to `row` (its raw line and
/// parsed fields) and into the totals.
fn scan(
    input: impl BufRead,
    opts: &FillsOptions,
    mut row: impl FnMut(&[u8], &Line<'_>) -> io::Result<()>,
) -> Result<Summary, Error> {
    let mut input = input;
    let mut summary = Summary::default();
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let n = input.read_until(b'\n', &mut buf).map_err(|e| Error::io(&opts.file)(e))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break; // end, or a line still being written
        }
        summary.lines += 1;
        let Ok(line) = serde_json::from_slice::<Line<'_>>(&buf) else {
            summary.skipped += 1;
            continue;
        };
        summary.last_seq = summary.last_seq.max(line.seq);
        if !opts.wants(line.symbol, line.time) {
            continue;
        }
        let totals = match summary.per_symbol.get_mut(line.symbol) {
            Some(t) => t,
            None => summary.per_symbol.entry(line.symbol.to_string()).or_default(),
        };
        if totals.add(&line).is_none() {
            summary.skipped += 1;
            continue;
        }
        row(&buf, &line).map_err(|e| Error::Io { path: PathBuf::from("<stdout>"), source: e })?;
    }
    Ok(summary)
}

/// The totals of the fill log at `path` (no rows): what the bench measures.
pub fn summarize(path: &Path, opts: &FillsOptions) -> Result<Summary, Error> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    scan(io::BufReader::with_capacity(1 << 20, file), opts, |_, _| Ok(()))
}

/// The row layout, shared by the header and the rows.
macro_rules! row_format {
    () => {
        "{:<24} {:<10} {:<4} {:>14} {:>15} {:>16} {:>16} {:<6} {:<5}  {}"
    };
}

fn write_header(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        row_format!(),
        "time (UTC)", "symbol", "side", "qty", "price", "quote", "fee", "asset", "role", "trade id"
    )
}

/// `Decimal`'s `Display` ignores widths: pad its text instead (no allocation).
fn text<'a>(d: &Decimal, buf: &'a mut [u8; 48]) -> &'a str {
    d.format_into(buf)
}

fn write_row(out: &mut impl Write, l: &Line<'_>) -> io::Result<()> {
    let mut b = [[0u8; 48]; 4];
    let [b0, b1, b2, b3] = &mut b;
    writeln!(
        out,
        row_format!(),
        crate::utc::format_ms(l.time),
        l.symbol,
        l.side,
        text(&l.qty, b0),
        text(&l.price, b1),
        text(&l.quote_qty, b2),
        text(&l.commission, b3),
        l.commission_asset,
        if l.maker { "maker" } else { "TAKER" },
        l.trade_id
    )
}

/// The totals table: one line per symbol.
pub fn write_totals(out: &mut impl Write, summary: &Summary) -> io::Result<()> {
    writeln!(
        out,
        "{:<10} {:>8} {:>8} {:>16} {:>16} {:>18} {:>18}  fees",
        "symbol", "fills", "maker", "bought", "sold", "buy notional", "sell notional"
    )?;
    for (symbol, t) in &summary.per_symbol {
        writeln!(
            out,
            "{:<10} {:>8} {:>8} {:>16} {:>16} {:>18} {:>18}  {}",
            symbol,
            t.fills,
            t.maker_share(),
            t.bought.to_string(),
            t.sold.to_string(),
            t.buy_notional.to_string(),
            t.sell_notional.to_string(),
            t.fees_text()
        )?;
    }
    if summary.per_symbol.is_empty() {
        writeln!(out, "(no fills)")?;
    }
    if summary.skipped > 0 {
        writeln!(out, "{} of {} lines were not fill records and were skipped", summary.skipped, summary.lines)?;
    }
    Ok(())
}

/// The totals as one JSON object (decimals as exact strings, as in the log).
pub fn totals_json(summary: &Summary) -> serde_json::Value {
    let per: serde_json::Map<String, serde_json::Value> = summary
        .per_symbol
        .iter()
        .map(|(symbol, t)| {
            let fees: serde_json::Map<String, serde_json::Value> =
                t.fees.iter().map(|(a, f)| (a.clone(), f.to_string().into())).collect();
            let bp = t.maker_share_bp();
            let v = serde_json::json!({
                "fills": t.fills,
                "maker_fills": t.maker,
                "maker_share": format!("{}.{:04}", bp / 10_000, bp % 10_000),
                "bought_qty": t.bought.to_string(),
                "sold_qty": t.sold.to_string(),
                "buy_notional": t.buy_notional.to_string(),
                "sell_notional": t.sell_notional.to_string(),
                "fees": fees,
            });
            (symbol.clone(), v)
        })
        .collect();
    serde_json::json!({"totals": per, "lines": summary.lines, "skipped": summary.skipped})
}

/// The whole command: rows (unless `totals_only`), totals, then, with `follow`, new fills as
/// they come until `out` fails (the reader went away) or the process is stopped.
pub fn run(opts: &FillsOptions, out: &mut impl Write) -> Result<Summary, Error> {
    let file = std::fs::File::open(&opts.file).map_err(Error::io(&opts.file))?;
    let input = io::BufReader::with_capacity(1 << 20, file);
    let stdout_err = |e: io::Error| Error::Io { path: PathBuf::from("<stdout>"), source: e };
    if !opts.json && !opts.totals_only {
        write_header(out).map_err(stdout_err)?;
    }
    let summary = scan(input, opts, |raw, line| match (opts.json, opts.totals_only) {
        (_, true) => Ok(()),
        (true, false) => out.write_all(raw),
        (false, false) => write_row(out, line),
    })?;
    if opts.json {
        writeln!(out, "{}", totals_json(&summary)).map_err(stdout_err)?;
    } else {
        if !opts.totals_only {
            writeln!(out).map_err(stdout_err)?;
        }
        write_totals(out, &summary).map_err(stdout_err)?;
    }
    out.flush().map_err(stdout_err)?;
    if opts.follow {
        follow(opts, out, summary.last_seq)?;
    }
    Ok(summary)
}

/// Prints fills logged after `after`; the `Reader` carries on through a rotation.
fn follow(opts: &FillsOptions, out: &mut impl Write, mut after: u64) -> Result<(), Error> {
    let stdout_err = |e: io::Error| Error::Io { path: PathBuf::from("<stdout>"), source: e };
    let mut reader = Reader::new(&opts.file);
    loop {
        let batch = reader.read_after(after, u64::MAX, 10_000)?;
        for fill in &batch {
            after = after.max(fill.seq);
            let line = Line::from(fill);
            if !opts.wants(line.symbol, line.time) {
                continue;
            }
            if opts.json {
                serde_json::to_writer(&mut *out, fill).map_err(|e| Error::Decode(e.to_string()))?;
                out.write_all(b"\n").map_err(stdout_err)?;
            } else {
                write_row(out, &line).map_err(stdout_err)?;
            }
        }
        out.flush().map_err(stdout_err)?;
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        symbol: &str,
        id: u64,
        side: &str,
        qty: &str,
        quote: &str,
        (fee, asset): (&str, &str),
        maker: bool,
    ) -> String {
        format!(
            "{{\"symbol\":\"{symbol}\",\"trade_id\":{id},\"order_id\":1,\"client_order_id\":\"\",\"side\":\"{side}\",\
             \"price\":\"1.00\",\"qty\":\"{qty}\",\"quote_qty\":\"{quote}\",\"commission\":\"{fee}\",\
             \"commission_asset\":\"{asset}\",\"maker\":{maker},\"time\":{},\"seq\":{id}}}\n",
            1_788_540_400_000 + id as i64 * 1000
        )
    }

    fn sample() -> (PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("syncd-fills-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fills.jsonl");
        let text = [
            line("BTCUSD", 1, "BUY", "0.00400000", "240.00000000", ("0.00000400", "BTC"), true),
            line("BTCUSD", 2, "BUY", "0.1", "6000.1", ("0.0001", "BTC"), true),
            line("BTCUSD", 3, "SELL", "0.05000000", "3000.50000000", ("3.0005", "USD"), false),
            "not a fill\n".to_string(),
            line("ETHUSD", 4, "SELL", "1.5", "4500", ("0", ""), true),
            // A torn last line: not counted.
            "{\"symbol\":\"BTCUSD\",\"trade_id\":5".to_string(),
        ]
        .concat();
        std::fs::write(&path, &text).unwrap();
        (path, text)
    }

    #[test]
    fn totals_are_exact_per_symbol_with_fees_by_asset_and_maker_share() {
        let (path, _) = sample();
        let s = summarize(&path, &FillsOptions { file: path.clone(), ..FillsOptions::default() }).unwrap();
        assert_eq!((s.lines, s.skipped), (5, 1));
        let btc = &s.per_symbol["BTCUSD"];
        assert_eq!((btc.fills, btc.maker, btc.maker_share_bp()), (3, 2, 6666));
        assert_eq!(btc.bought.to_string(), "0.10400000");
        assert_eq!(btc.sold.to_string(), "0.05000000");
        assert_eq!(btc.buy_notional.to_string(), "6240.10000000");
        assert_eq!(btc.sell_notional.to_string(), "3000.50000000");
        assert_eq!(btc.fees["BTC"].to_string(), "0.00010400");
        assert_eq!(btc.fees["USD"].to_string(), "3.0005");
        let eth = &s.per_symbol["ETHUSD"];
        assert_eq!((eth.fills, eth.maker_share_bp(), eth.sold.to_string()), (1, 10_000, "1.5".to_string()));
        assert!(eth.fees.is_empty(), "no fee, no asset: nothing to total");
    }

    #[test]
    fn filters_and_outputs() {
        let (path, text) = sample();
        let opts = FillsOptions {
            file: path.clone(),
            symbol: Some("BTCUSD".into()),
            since_ms: Some(1_788_540_402_000),
            ..FillsOptions::default()
        };
        let mut out = Vec::new();
        let s = run(&opts, &mut out).unwrap();
        assert_eq!(s.per_symbol.keys().collect::<Vec<_>>(), ["BTCUSD"]);
        assert_eq!(s.per_symbol["BTCUSD"].fills, 2, "trade 1 is before --since");
        let shown = String::from_utf8(out).unwrap();
        assert!(shown.contains("2026-09-04T16:46:42.000Z") && shown.contains("TAKER"), "{shown}");
        assert!(!shown.contains("ETHUSD"), "{shown}");
        assert!(shown.contains("50.00%"), "{shown}");

        let mut out = Vec::new();
        run(&FillsOptions { json: true, ..opts }, &mut out).unwrap();
        let shown = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            format!("{}\n", lines[0]),
            text.lines().nth(1).unwrap().to_string() + "\n",
            "rows are the log's lines"
        );
        let totals: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(totals["totals"]["BTCUSD"]["maker_share"], "0.5000");
        assert_eq!(totals["totals"]["BTCUSD"]["buy_notional"], "6000.1");
        assert_eq!(totals["totals"]["BTCUSD"]["fees"]["USD"], "3.0005");
    }
}
