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
    #[serde(borrow, default)]
    client_order_id: &'a str,
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
            client_order_id: &f.client_order_id,
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
    /// Fills of the daemon's own orders (client id `sd-...`) and how many were maker: the
    /// account's other clients may take, the daemon never should.
    pub own: u64,
    pub own_maker: u64,
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
        share_bp(self.maker, self.fills)
    }

    /// The same for the daemon's own orders.
    pub fn own_maker_share_bp(&self) -> u64 {
        share_bp(self.own_maker, self.own)
    }

    fn maker_share(&self) -> String {
        percent(self.maker_share_bp())
    }

    fn own_share(&self) -> String {
        if self.own == 0 {
            return "-".into();
        }
        percent(self.own_maker_share_bp())
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
        // Any daemon's ids (any instance, any strategy): the log is the account's.
        if crate::executor::ids::tag_in(line.client_order_id, None).is_some() {
            self.own += 1;
            self.own_maker += u64::from(line.maker);
        }
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

/// The log's own lines, read without serde: a flat object of strings (no escapes), integers
/// and booleans, which is all the writer makes. Anything else (an escape, nesting, a missing
/// field) answers `None` and the line goes through serde instead, so this is a fast path,
/// never a second opinion on what a line means. One pass over the bytes.
fn fast_line(b: &[u8]) -> Option<Line<'_>> {
    let mut end = b.len();
    while end > 0 && b[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    if end < 2 || b[0] != b'{' || b[end - 1] != b'}' {
        return None;
    }
    let end = end - 1;
    let find = |from: usize, byte: u8| b[from..end].iter().position(|&c| c == byte).map(|p| from + p);
    let (mut symbol, mut trade_id, mut side, mut asset, mut maker, mut time, mut seq) =
        (None, None, None, None, None, None, 0u64);
    let mut client_order_id = "";
    let (mut price, mut qty, mut quote, mut commission) = (None, None, None, None);
    let mut i = 1;
    while i < end {
        if b[i] != b'"' {
            return None;
        }
        let key_end = find(i + 1, b'"')?;
        let key = &b[i + 1..key_end];
        if b.get(key_end + 1) != Some(&b':') {
            return None;
        }
        let v = key_end + 2;
        let (value, quoted, next) = if b.get(v) == Some(&b'"') {
            let close = find(v + 1, b'"')?;
            (&b[v + 1..close], true, close + 1)
        } else {
            let close = find(v, b',').unwrap_or(end);
            (&b[v..close], false, close)
        };
        if value.iter().any(|&c| matches!(c, b'\\' | b'{' | b'[' | b'"')) {
            return None;
        }
        i = match b.get(next) {
            Some(b',') if next < end => next + 1,
            _ if next == end => end,
            _ => return None,
        };
        match (key, quoted) {
            (b"symbol", true) => symbol = Some(std::str::from_utf8(value).ok()?),
            (b"trade_id", false) => trade_id = Some(int(value)?),
            (b"side", true) => side = Some(std::str::from_utf8(value).ok()?),
            (b"price", true) => price = Some(decimal(value)?),
            (b"qty", true) => qty = Some(decimal(value)?),
            (b"quote_qty", true) => quote = Some(decimal(value)?),
            (b"commission", true) => commission = Some(decimal(value)?),
            (b"commission_asset", true) => asset = Some(std::str::from_utf8(value).ok()?),
            (b"maker", false) => {
                maker = Some(match value {
                    b"true" => true,
                    b"false" => false,
                    _ => return None,
                })
            }
            (b"time", false) => time = Some(i64::try_from(int(value)?).ok()?),
            (b"seq", false) => seq = int(value)?,
            (b"client_order_id", true) => client_order_id = std::str::from_utf8(value).ok()?,
            (b"order_id", false) => {}
            // A known field of an unexpected type: serde decides.
            (
                b"symbol" | b"trade_id" | b"side" | b"price" | b"qty" | b"quote_qty" | b"commission"
                | b"commission_asset" | b"maker" | b"time" | b"seq" | b"order_id" | b"client_order_id",
                _,
            ) => return None,
            // A field a later version added: fine.
            _ => {}
        }
    }
    Some(Line {
        symbol: symbol?,
        trade_id: trade_id?,
        client_order_id,
        side: side?,
        price: price?,
        qty: qty?,
        quote_qty: quote?,
        commission: commission?,
        commission_asset: asset?,
        maker: maker?,
        time: time?,
        seq,
    })
}

/// A non-negative integer of at most 19 digits.
fn int(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &c| c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0')))
}

/// `digits[.digits]` of at most 18 digits in all, exactly as `Decimal::from_str` reads it;
/// anything else (a sign, more digits) goes to `from_str` itself.
fn decimal(v: &[u8]) -> Option<Decimal> {
    let slow = || std::str::from_utf8(v).ok()?.parse::<Decimal>().ok();
    let (mut mantissa, mut digits, mut scale, mut dot) = (0u64, 0usize, 0u8, None);
    for (at, &c) in v.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                digits += 1;
                if dot.is_some() {
                    scale += 1;
                }
            }
            b'.' if dot.is_none() => dot = Some(at),
            _ => return slow(),
        }
        if digits > 18 {
            return slow();
        }
    }
    match dot {
        // Both sides of the dot need digits.
        Some(at) if at == 0 || at + 1 == v.len() => None,
        None if v.is_empty() => None,
        _ if scale > crate::decimal::MAX_SCALE => slow(),
        _ => Some(Decimal::new(i128::from(mantissa), scale)),
    }
}

fn share_bp(part: u64, whole: u64) -> u64 {
    (part * 10_000).checked_div(whole).unwrap_or(0)
}

fn percent(bp: u64) -> String {
    format!("{}.{:02}%", bp / 100, bp % 100)
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

impl Summary {
    /// Adds another part of the same log; `None` if a total overflows.
    fn merge(&mut self, other: Summary) -> Option<()> {
        self.lines += other.lines;
        self.skipped += other.skipped;
        self.last_seq = self.last_seq.max(other.last_seq);
        for (symbol, t) in other.per_symbol {
            let mine = self.per_symbol.entry(symbol).or_default();
            mine.fills += t.fills;
            mine.maker += t.maker;
            mine.own += t.own;
            mine.own_maker += t.own_maker;
            mine.bought = mine.bought.checked_add(t.bought)?;
            mine.sold = mine.sold.checked_add(t.sold)?;
            mine.buy_notional = mine.buy_notional.checked_add(t.buy_notional)?;
            mine.sell_notional = mine.sell_notional.checked_add(t.sell_notional)?;
            for (asset, fee) in t.fees {
                let sum = match mine.fees.get(&asset) {
                    Some(f) => f.checked_add(fee)?,
                    None => fee,
                };
                mine.fees.insert(asset, sum);
            }
        }
        Some(())
    }
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
        let Some(line) = fast_line(&buf).or_else(|| serde_json::from_slice::<Line<'_>>(&buf).ok()) else {
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
///
/// A big log is cut at line boundaries into one part per core, read in parallel, and the parts'
/// totals added up (totals are sums, so the order of the parts does not matter).
pub fn summarize(path: &Path, opts: &FillsOptions) -> Result<Summary, Error> {
    use std::io::{Read, Seek, SeekFrom};
    let len = std::fs::metadata(path).map_err(Error::io(path))?.len();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8) as u64;
    let parts = if len < 16 << 20 { 1 } else { cores };
    // Part k starts after the first newline at or past k * len / parts.
    let mut starts = vec![0u64];
    for k in 1..parts {
        let mut file = std::fs::File::open(path).map_err(Error::io(path))?;
        let mut at = k * len / parts;
        file.seek(SeekFrom::Start(at)).map_err(Error::io(path))?;
        let mut reader = io::BufReader::new(file);
        let mut skipped = Vec::new();
        at += reader.read_until(b'\n', &mut skipped).map_err(Error::io(path))? as u64;
        starts.push(at.max(*starts.last().unwrap_or(&0)));
    }
    starts.push(len);
    let summaries: Vec<Result<Summary, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = starts
            .windows(2)
            .map(|w| {
                let (from, to) = (w[0], w[1]);
                scope.spawn(move || {
                    let mut file = std::fs::File::open(path).map_err(Error::io(path))?;
                    file.seek(SeekFrom::Start(from)).map_err(Error::io(path))?;
                    scan(io::BufReader::with_capacity(1 << 20, file.take(to - from)), opts, |_, _| Ok(()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a fills reader panicked".into()))))
            .collect()
    });
    let mut total = Summary::default();
    for part in summaries {
        total.merge(part?).ok_or_else(|| Error::Decode("a total overflows".into()))?;
    }
    Ok(total)
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
        crate::utc::Utc(l.time),
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
        "{:<10} {:>8} {:>8} {:>8} {:>8} {:>16} {:>16} {:>18} {:>18}  fees",
        "symbol", "fills", "maker", "own", "own mkr", "bought", "sold", "buy notional", "sell notional"
    )?;
    for (symbol, t) in &summary.per_symbol {
        writeln!(
            out,
            "{:<10} {:>8} {:>8} {:>8} {:>8} {:>16} {:>16} {:>18} {:>18}  {}",
            symbol,
            t.fills,
            t.maker_share(),
            t.own,
            t.own_share(),
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
            let ratio = |bp: u64| format!("{}.{:04}", bp / 10_000, bp % 10_000);
            let v = serde_json::json!({
                "fills": t.fills,
                "maker_fills": t.maker,
                "maker_share": ratio(t.maker_share_bp()),
                "own_fills": t.own,
                "own_maker_fills": t.own_maker,
                "own_maker_share": ratio(t.own_maker_share_bp()),
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
    let summary = if opts.totals_only {
        drop(input);
        summarize(&opts.file, opts)?
    } else {
        scan(input, opts, |raw, line| if opts.json { out.write_all(raw) } else { write_row(out, line) })?
    };
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
        // A log just rotated has no line yet: its last fill is in the rotated file.
        let after = if summary.last_seq > 0 { summary.last_seq } else { crate::filllog::last_rotated_seq(&opts.file) };
        follow(opts, out, after)?;
    }
    Ok(summary)
}

/// Prints fills logged after `after`; the `Reader` carries on through a rotation.
fn follow(opts: &FillsOptions, out: &mut impl Write, mut after: u64) -> Result<(), Error> {
    let stdout_err = |e: io::Error| Error::Io { path: PathBuf::from("<stdout>"), source: e };
    let mut reader = Reader::new(&opts.file);
    // Nothing readable when following began (an empty log whose rotated files are all
    // compressed): the lines before the first new one were never asked for.
    let from_nothing = after == 0;
    loop {
        let batch = reader.read_after(after, u64::MAX, 10_000)?;
        for (first, last) in reader.take_gaps().into_iter().filter(|(first, _)| !(from_nothing && *first == 1)) {
            eprintln!(
                "fills #{first}..#{last} are in no readable file of the log (rotated away compressed, or deleted)"
            );
        }
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
            "{{\"symbol\":\"{symbol}\",\"trade_id\":{id},\"order_id\":1,\"client_order_id\":\"{}\",\"side\":\"{side}\",\
             \"price\":\"1.00\",\"qty\":\"{qty}\",\"quote_qty\":\"{quote}\",\"commission\":\"{fee}\",\
             \"commission_asset\":\"{asset}\",\"maker\":{maker},\"time\":{},\"seq\":{id}}}\n",
            // Odd ids are the daemon's own orders, even ones another client's.
            if id % 2 == 1 { format!("sd-grid-ab12-1-{id}") } else { "web_1".to_string() },
            1_788_540_400_000 + id as i64 * 1000
        )
    }

    /// A small log (one file per test: they run in parallel).
    fn sample(test: &str) -> (PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("syncd-fills-{}-{test}", std::process::id()));
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
        let (path, _) = sample("totals");
        let s = summarize(&path, &FillsOptions { file: path.clone(), ..FillsOptions::default() }).unwrap();
        assert_eq!((s.lines, s.skipped), (5, 1));
        let btc = &s.per_symbol["BTCUSD"];
        assert_eq!((btc.fills, btc.maker, btc.maker_share_bp()), (3, 2, 6666));
        assert_eq!((btc.own, btc.own_maker, btc.own_maker_share_bp()), (2, 1, 5000), "trades 1 and 3 are ours");
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
    fn the_fast_path_reads_what_serde_reads_and_leaves_the_rest_to_it() {
        let (_, text) = sample("fast");
        let mut fast_count = 0;
        for raw in text.lines() {
            let slow = serde_json::from_str::<Line<'_>>(raw).ok();
            match fast_line(raw.as_bytes()) {
                Some(f) => {
                    fast_count += 1;
                    let s = slow.expect("serde reads every line the fast path reads");
                    assert_eq!(
                        (f.symbol, f.trade_id, f.side, f.price, f.qty, f.quote_qty, f.commission),
                        (s.symbol, s.trade_id, s.side, s.price, s.qty, s.quote_qty, s.commission)
                    );
                    assert_eq!(
                        (f.commission_asset, f.maker, f.time, f.seq),
                        (s.commission_asset, s.maker, s.time, s.seq)
                    );
                }
                None => assert!(slow.is_none() || raw.contains('\\'), "fast path missed {raw}"),
            }
        }
        assert_eq!(fast_count, 4);
        // An escaped string or a field of another type: serde's call.
        let escaped = text.lines().next().unwrap().replace("\"BTC\"", "\"B\\u0054C\"");
        assert!(fast_line(escaped.as_bytes()).is_none());
        assert_eq!(
            serde_json::from_str::<Line<'_>>(&escaped).ok().map(|l| l.commission_asset),
            None,
            "borrowed: serde refuses escapes too"
        );
        let odd = text.lines().next().unwrap().replace("\"maker\":true", "\"maker\":\"yes\"");
        assert!(fast_line(odd.as_bytes()).is_none() && serde_json::from_str::<Line<'_>>(&odd).is_err());
    }

    #[test]
    fn fast_decimals_are_from_str_exactly() {
        for v in [
            "0",
            "0.1",
            "60000.00000000",
            "0.00400000",
            "123456789012345678",
            "1234567890123456789",
            "0.000000000000000000001",
            "-1.5",
            "1.",
            ".5",
            "",
            "1.2.3",
            "1e5",
            "+1",
            "00.10",
        ] {
            assert_eq!(decimal(v.as_bytes()), v.parse::<Decimal>().ok(), "{v:?}");
            if let (Some(a), Ok(b)) = (decimal(v.as_bytes()), v.parse::<Decimal>()) {
                assert_eq!(a.scale(), b.scale(), "{v:?} keeps its scale");
            }
        }
        assert_eq!(int(b"18446744073709551615"), None, "20 digits: serde's call");
        assert_eq!(int(b"555001"), Some(555001));
    }

    #[test]
    fn a_log_read_in_parallel_parts_has_the_totals_of_one_read() {
        let dir = std::env::temp_dir().join(format!("syncd-fills-{}-parts", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fills.jsonl");
        let mut text = String::new();
        // Over the 16 MiB threshold, with a foreign line and a torn tail.
        let mut id = 0;
        while text.len() < 17 << 20 {
            id += 1;
            let (symbol, side) = if id % 3 == 0 { ("ETHUSD", "SELL") } else { ("BTCUSD", "BUY") };
            text += &line(symbol, id, side, "0.001", "60.12345678", ("0.00000100", "BTC"), id % 7 != 0);
            if id == 5000 {
                text += "not a fill\n";
            }
        }
        text += "{\"symbol\":\"BTC";
        std::fs::write(&path, &text).unwrap();
        let opts = FillsOptions { file: path.clone(), ..FillsOptions::default() };
        let parallel = summarize(&path, &opts).unwrap();
        let one = scan(io::BufReader::new(std::fs::File::open(&path).unwrap()), &opts, |_, _| Ok(())).unwrap();
        assert_eq!(parallel, one);
        assert_eq!((one.lines, one.skipped), (id + 1, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn filters_and_outputs() {
        let (path, text) = sample("filters");
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
        assert_eq!(totals["totals"]["BTCUSD"]["own_maker_share"], "0.0000", "trade 3, ours, took");
        assert_eq!(totals["totals"]["BTCUSD"]["buy_notional"], "6000.1");
        assert_eq!(totals["totals"]["BTCUSD"]["fees"]["USD"], "3.0005");
    }
}
