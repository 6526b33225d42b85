//! The integration tests' plugin. Settings (`NAME.conf`):
//! - `record = PATH`: append `start V`, `fill V SEQ REPLAYED`, `stop V` lines to PATH (V is the
//!   version this build was made with: `SYNCD_TEST_PLUGIN_VERSION` at build time, else `1`);
//! - `mode = normal | panic | sleep | fail`: what `on_fill` does besides recording;
//! - `sleep_ms = N`: how long `sleep` sleeps;
//! - `mode = stamp`: record `stamp SEQ UNIX_NS` at the entry of each `on_fill`, and
//!   `bookstamp SYMBOL UPDATE_ID UNIX_NS` at the entry of each `on_book` (benchmarks);
//! - `place_one = true`: on the first price of BTCUSD, one maker BUY a dollar under the bid;
//!   every stream report of its orders is recorded as `report STATUS ORDER_ID`;
//! - `flood = N`: on the first price of BTCUSD, submit N maker BUYs under the bid at once and
//!   record `busy B` (submits answered `STATUS_BUSY`) after the loop and `flood N NS` once all
//!   N are placed, NS from the first submit to the last answer;
//! - `flood_ms = M`: on every tick, submit maker BUYs under the last BTCUSD bid in a loop for M
//!   ms (the brief's "submit in a loop for 400 ms of each tick"), recording `flooded N BUSY`;
//! - `probe = true`: at start, record what a prying plugin could find: `getenv NAME VALUE` for
//!   the secrets' variables and `PATH`, `child-env ...` (what `env` run as a child prints),
//!   `self-environ ...` (the process's `/proc/self/environ`), `dumpable N` (`PR_GET_DUMPABLE`),
//!   `pid N ppid M` and one `fd N TARGET` line per open descriptor;
//! - `hang_in_start = true`: `start` sleeps for ten minutes (a plugin that never answers);
//! - `market = record`: record `book SYMBOL UPDATE_ID SKIPPED NBIDS NASKS BID0 ASK0` for each
//!   `on_book` (`-` for a missing level) and `trade SYMBOL ID PRICE QTY BUYER_MAKER DROPPED` for
//!   each `on_trade`; `book_hold = PATH`: `on_book` then waits (up to 20 s) until PATH exists: a strategy as
//!   slow as a test needs it. It
//!   exports both callbacks, so it is sent books and trades whatever these say.

use binance_syncd_plugin::{
    export_strategy, Book, Decimal, Fill, Host, OrderUpdate, Price, Side, StartInfo, Strategy, Trade, UpdateKind,
};
use std::io::Write;

const VERSION: &str = match option_env!("SYNCD_TEST_PLUGIN_VERSION") {
    Some(v) => v,
    None => "1",
};

struct Recorder {
    host: Host,
    record: Option<std::fs::File>,
    mode: String,
    sleep_ms: u64,
    flood: u64,
    flood_started: Option<std::time::Instant>,
    flood_placed: u64,
    flood_ms: u64,
    last_bid: Option<Decimal>,
    place_one: bool,
    placed_one: bool,
    record_market: bool,
    book_hold: Option<std::path::PathBuf>,
}

fn unix_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

impl Recorder {
    fn line(&mut self, text: &str) {
        if let Some(f) = self.record.as_mut() {
            let _ = writeln!(f, "{text}");
            let _ = f.flush();
        }
    }
}

impl Recorder {
    fn probe(&mut self) {
        for name in ["BINANCE_API_SECRET", "BINANCE_API_KEY", "SYNCD_ALERT_WEBHOOK", "CREDENTIALS_DIRECTORY", "PATH"] {
            let value = std::env::var(name).unwrap_or_else(|_| "-".into());
            self.line(&format!("getenv {name} {value}"));
        }
        let child = std::process::Command::new("env").output().map(|o| o.stdout).unwrap_or_default();
        self.line(&format!("child-env {}", String::from_utf8_lossy(&child).replace('\n', " ")));
        let environ = std::fs::read("/proc/self/environ").unwrap_or_default();
        self.line(&format!("self-environ {}", String::from_utf8_lossy(&environ).replace('\0', " ")));
        self.line(&format!("pid {} ppid {}", std::process::id(), std::os::unix::process::parent_id()));
        // Capability sets as the kernel shows them: `caps CapEff:... CapPrm:... CapBnd:...`.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let caps: Vec<String> = status
            .lines()
            .filter(|l| ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"].iter().any(|c| l.starts_with(c)))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(""))
            .collect();
        self.line(&format!("caps {}", caps.join(" ")));
        // Every open descriptor and what it is (the listing's own descriptor shows too).
        let mut fds: Vec<(u32, String)> = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let fd = e.file_name().to_str()?.parse().ok()?;
                        Some((fd, std::fs::read_link(e.path()).ok()?.display().to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        fds.sort();
        for (fd, target) in fds {
            self.line(&format!("fd {fd} {target}"));
        }
        // SAFETY: PR_GET_DUMPABLE reads a flag of this process; no pointers are passed.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        self.line(&format!("dumpable {dumpable}"));
    }
}

impl Strategy for Recorder {
    fn start(host: Host, start: &StartInfo<'_>) -> Result<Self, String> {
        let record = match start.setting("record") {
            Some(path) => Some(
                std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("{path}: {e}"))?,
            ),
            None => None,
        };
        let mode = start.setting("mode").unwrap_or("normal").to_string();
        let sleep_ms = start.setting("sleep_ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
        let flood = start.setting("flood").and_then(|v| v.parse().ok()).unwrap_or(0);
        let place_one = start.setting("place_one") == Some("true");
        let mut r = Recorder {
            host,
            record,
            mode,
            sleep_ms,
            flood,
            flood_started: None,
            flood_placed: 0,
            flood_ms: start.setting("flood_ms").and_then(|v| v.parse().ok()).unwrap_or(0),
            last_bid: None,
            place_one,
            placed_one: false,
            record_market: start.setting("market") == Some("record"),
            book_hold: start.setting("book_hold").map(std::path::PathBuf::from),
        };
        r.line(&format!("start {VERSION}"));
        if start.setting("probe") == Some("true") {
            r.probe();
        }
        if start.setting("hang_in_start") == Some("true") {
            // Never answers: only a kill ends this process.
            std::thread::sleep(std::time::Duration::from_secs(600));
        }
        r.host.info(&format!("test plugin {VERSION} started in mode {}", r.mode));
        Ok(r)
    }

    fn on_fill(&mut self, fill: &Fill<'_>) -> Result<(), String> {
        if self.mode == "stamp" {
            let now = unix_ns();
            self.line(&format!("stamp {} {now}", fill.seq));
            return Ok(());
        }
        self.line(&format!("fill {VERSION} {} {}", fill.seq, u8::from(fill.replayed)));
        match self.mode.as_str() {
            "panic" => panic!("test plugin panics on fill {}", fill.seq),
            "fail" => Err(format!("test plugin fails on fill {}", fill.seq)),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_price(&mut self, price: &Price<'_>) -> Result<(), String> {
        if self.place_one && !self.placed_one && price.symbol == "BTCUSD" {
            if let Some(p) = price.bid.parse::<Decimal>().ok().and_then(|b| b.checked_sub(Decimal::ONE)) {
                self.placed_one = self.host.place("BTCUSD", Side::Buy, &p.to_string(), "0.001").is_ok();
            }
        }
        if price.symbol == "BTCUSD" {
            self.last_bid = price.bid.parse::<Decimal>().ok();
        }
        if self.flood == 0 || self.flood_started.is_some() || price.symbol != "BTCUSD" {
            return Ok(());
        }
        let Ok(bid) = price.bid.parse::<Decimal>() else { return Ok(()) };
        self.flood_started = Some(std::time::Instant::now());
        let mut busy = 0u64;
        for i in 0..self.flood {
            let Some(p) = Decimal::new(1, 2)
                .checked_mul(Decimal::from_int(i as i64 % 400 + 1))
                .and_then(|off| bid.checked_sub(off))
            else {
                continue;
            };
            if self.host.place("BTCUSD", Side::Buy, &p.to_string(), "0.0002").is_err_and(|r| r.busy()) {
                busy += 1;
            }
        }
        self.line(&format!("busy {busy}"));
        Ok(())
    }

    fn on_order(&mut self, update: &OrderUpdate<'_>) -> Result<(), String> {
        if update.kind == UpdateKind::Report {
            self.line(&format!("report {} {}", update.status, update.order_id));
        }
        if update.kind == UpdateKind::Placed {
            self.flood_placed += 1;
            if self.flood_placed == self.flood {
                if let Some(t) = self.flood_started {
                    let ns = t.elapsed().as_nanos();
                    self.line(&format!("flood {} {ns}", self.flood));
                }
            }
        }
        Ok(())
    }

    fn on_tick(&mut self, _now_ms: i64) -> Result<(), String> {
        let Some(bid) = self.last_bid.filter(|_| self.flood_ms > 0) else { return Ok(()) };
        let until = std::time::Instant::now() + std::time::Duration::from_millis(self.flood_ms);
        let (mut sent, mut busy) = (0u64, 0u64);
        while std::time::Instant::now() < until {
            let off = Decimal::new(1, 2).checked_mul(Decimal::from_int((sent % 400 + 1) as i64));
            let Some(p) = off.and_then(|off| bid.checked_sub(off)) else { break };
            if self.host.place("BTCUSD", Side::Buy, &p.to_string(), "0.0002").is_err_and(|r| r.busy()) {
                busy += 1;
            }
            sent += 1;
        }
        self.line(&format!("flooded {sent} {busy}"));
        Ok(())
    }

    fn stop(&mut self) {
        self.line(&format!("stop {VERSION}"));
    }

    const WANTS_BOOKS: bool = true;
    const WANTS_TRADES: bool = true;

    fn on_book(&mut self, book: &Book<'_>) -> Result<(), String> {
        if self.mode == "stamp" {
            let now = unix_ns();
            self.line(&format!("bookstamp {} {} {now}", book.symbol, book.update_id));
            return Ok(());
        }
        if self.record_market {
            let bid = book.bids.get(0).map_or("-", |l| l.0);
            let ask = book.asks.get(0).map_or("-", |l| l.0);
            let (symbol, id, skipped) = (book.symbol, book.update_id, book.skipped);
            let (nb, na) = (book.bids.len(), book.asks.len());
            self.line(&format!("book {symbol} {id} {skipped} {nb} {na} {bid} {ask}"));
        }
        if let Some(gate) = &self.book_hold {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !gate.exists() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        Ok(())
    }

    fn on_trade(&mut self, t: &Trade<'_>) -> Result<(), String> {
        if self.record_market {
            let line = format!(
                "trade {} {} {} {} {} {}",
                t.symbol,
                t.trade_id,
                t.price,
                t.qty,
                u8::from(t.buyer_maker),
                t.dropped
            );
            self.line(&line);
        }
        Ok(())
    }
}

export_strategy!(Recorder, VERSION);
