//! grid-maker: a small maker-only grid on each symbol.
//!
//! On the first price of a symbol it quotes `levels` BUYs under the bid and `levels` SELLs over
//! the ask, `spacing` ticks apart, each worth about `quote` in the quote asset. When one of its
//! orders fills it quotes the other side `spacing` ticks away from the fill, so the grid keeps
//! capturing the spread. Every order goes through the daemon's executor, which rounds it onto
//! the exchange's grid, refuses anything that would cross the book, and holds the strategy to
//! its limits; all arithmetic here is exact ([`Decimal`]).
//!
//! It follows the touch as it moves (ABI 1.5 `on_book`: the best bid and ask of each book the
//! market stream brings, as they change, not once per tick; `on_price` where there is no
//! stream): once the touch has moved `spacing` ticks or more away from where the grid was laid,
//! it cancels its orders on the symbol and lays the grid again around the new touch, so its
//! quotes neither cross nor drift out of the market.
//!
//! Settings (`grid_maker.conf`): `levels` (3), `spacing` (ticks, 10), `quote` (20),
//! `symbols` (comma-separated; default: every symbol the daemon trades), `requote` (`true`;
//! `false` lays each grid once), `book_depth` (read by the daemon; one level is enough here).

use binance_syncd_plugin::{
    export_strategy, Book, Decimal, Fill, Host, Level, OrderUpdate, Price, Reason, Side, StartInfo, Strategy,
    UpdateKind,
};
use std::collections::{HashMap, HashSet};

struct Grid {
    host: Host,
    tag: String,
    levels: i64,
    spacing: i64,
    quote: Decimal,
    symbols: HashSet<String>,
    /// tickSize and stepSize per symbol, from the exchange rules.
    grids: HashMap<String, (Decimal, Decimal)>,
    quoted: HashSet<String>,
    /// Last best bid and ask per symbol.
    touch: HashMap<String, (Decimal, Decimal)>,
    /// The touch each symbol's grid was laid around.
    anchor: HashMap<String, (Decimal, Decimal)>,
    /// Lay the grid again when the touch moves a `spacing` away.
    requote: bool,
    /// Grids laid again.
    requotes: u64,
    placed: u64,
    /// What each request asked, so a refusal for pace can be tried again later.
    asked: HashMap<u64, (String, Side, Decimal)>,
    /// Orders refused for the strategy's order rate, retried on later ticks.
    retry: Vec<(String, Side, Decimal)>,
    /// Over its pace (an order-rate refusal or a busy answer): nothing goes out but one retry
    /// per tick, and no grid is laid again, until one is placed. Without this a touch that
    /// moves several times a second makes the grid cancel and re-place far beyond its order
    /// rate (80 placed, 919 refused in a 20 s demo).
    paced: bool,
    /// Symbols whose touch moved a grid step while paced: laid again once the pace is back.
    stale: HashSet<String>,
}

fn filter_value(rules: &serde_json::Value, filter: &str, field: &str) -> Option<Decimal> {
    rules["filters"].as_array()?.iter().find(|f| f["filterType"] == filter)?[field].as_str()?.parse().ok()
}

impl Grid {
    fn place(&mut self, symbol: &str, side: Side, price: Decimal) {
        let Some((_, step)) = self.grids.get(symbol).copied() else { return };
        let Some(qty) = self.quote.checked_div(price, step.significant_scale()) else { return };
        if price <= Decimal::ZERO || qty <= Decimal::ZERO {
            return;
        }
        match self.host.place(symbol, side, &price.to_string(), &qty.to_string()) {
            Ok(request) => {
                self.placed += 1;
                self.asked.insert(request, (symbol.to_string(), side, price));
            }
            Err(e) if e.busy() => self.slow_down(symbol, side, price),
            Err(e) => self.host.log(Level::Debug, &format!("{symbol}: intent not queued ({e:?})")),
        }
    }

    /// Over its pace: this quote waits (the newest two grids' worth per symbol are kept).
    fn slow_down(&mut self, symbol: &str, side: Side, price: Decimal) {
        self.paced = true;
        self.retry.push((symbol.to_string(), side, price));
        let keep = (2 * self.levels.max(1)) as usize;
        let mine = self.retry.iter().filter(|(s, _, _)| s == symbol).count();
        let mut drop = mine.saturating_sub(keep);
        self.retry.retain(|(s, _, _)| {
            let gone = drop > 0 && s == symbol;
            drop -= usize::from(gone);
            !gone
        });
    }

    /// An order went through after a pace refusal: grids whose touch moved meanwhile are laid
    /// again around the touch as it is now.
    fn pace_back(&mut self) {
        self.paced = false;
        let stale: Vec<String> = self.stale.drain().collect();
        for symbol in stale {
            let Some(&(bid, ask)) = self.touch.get(&symbol) else { continue };
            if self.host.cancel_all(&symbol).is_err() {
                continue;
            }
            self.requotes += 1;
            self.retry.retain(|(s, _, _)| *s != symbol);
            self.quoted.remove(&symbol);
            self.touched(&symbol, &bid.to_string(), &ask.to_string());
        }
    }

    /// Whether `price` still rests on `side` of the last touch (a waiting quote the book moved
    /// through would be refused as crossing).
    fn passive(&self, symbol: &str, side: Side, price: Decimal) -> bool {
        match (self.touch.get(symbol), side) {
            (Some(&(_, ask)), Side::Buy) => price < ask,
            (Some(&(bid, _)), Side::Sell) => price > bid,
            (None, _) => true,
        }
    }

    /// A new best bid and ask of `symbol`: the first lays its grid, a move of `spacing` ticks
    /// or more lays it again around the new touch.
    fn touched(&mut self, symbol: &str, bid: &str, ask: &str) {
        let (Some(bid), Some(ask)) = (bid.parse::<Decimal>().ok(), ask.parse::<Decimal>().ok()) else { return };
        if bid >= ask {
            return; // a crossed or locked touch is no place to quote around
        }
        self.touch.insert(symbol.to_string(), (bid, ask));
        if !self.symbols.contains(symbol) {
            return;
        }
        if self.quoted.contains(symbol) {
            let (Some(&(was_bid, was_ask)), Some(step)) = (self.anchor.get(symbol), self.offset(symbol, self.spacing))
            else {
                return;
            };
            let moved = |now: Decimal, was: Decimal| now.checked_sub(was).is_some_and(|d| d.abs() >= step);
            if !self.requote || !(moved(bid, was_bid) || moved(ask, was_ask)) {
                return;
            }
            if self.paced {
                self.stale.insert(symbol.to_string());
                return;
            }
            if self.host.cancel_all(symbol).is_err() {
                return; // busy: the next move tries again
            }
            self.requotes += 1;
            // Answers to the old grid's orders no longer say anything about the new one.
            self.retry.retain(|(s, _, _)| s != symbol);
        }
        self.quoted.insert(symbol.to_string());
        self.anchor.insert(symbol.to_string(), (bid, ask));
        for k in 1..=self.levels {
            let Some(off) = self.offset(symbol, k * self.spacing) else { break };
            if let Some(p) = bid.checked_sub(off) {
                self.place(symbol, Side::Buy, p);
            }
            if let Some(p) = ask.checked_add(off) {
                self.place(symbol, Side::Sell, p);
            }
        }
    }

    fn offset(&self, symbol: &str, ticks: i64) -> Option<Decimal> {
        let (tick, _) = self.grids.get(symbol)?;
        tick.checked_mul(Decimal::from_int(ticks))
    }
}

impl Strategy for Grid {
    fn start(host: Host, start: &StartInfo<'_>) -> Result<Self, String> {
        let snapshot: serde_json::Value = serde_json::from_str(start.snapshot).map_err(|e| format!("snapshot: {e}"))?;
        let int = |key: &str, default: i64| start.setting(key).and_then(|v| v.parse().ok()).unwrap_or(default);
        let quote = start.setting("quote").and_then(|q| q.parse().ok()).unwrap_or(Decimal::from_int(20));
        let wanted: Option<HashSet<String>> = start
            .setting("symbols")
            .map(|s| s.split(',').map(|x| x.trim().to_uppercase()).filter(|x| !x.is_empty()).collect());
        let mut grids = HashMap::new();
        let mut symbols = HashSet::new();
        for (symbol, rules) in snapshot["symbols"].as_object().into_iter().flatten() {
            if wanted.as_ref().is_some_and(|w| !w.contains(symbol)) {
                continue;
            }
            let (Some(tick), Some(step)) =
                (filter_value(rules, "PRICE_FILTER", "tickSize"), filter_value(rules, "LOT_SIZE", "stepSize"))
            else {
                host.warn(&format!("{symbol}: no tick or step in its rules; not trading it"));
                continue;
            };
            grids.insert(symbol.clone(), (tick, step));
            symbols.insert(symbol.clone());
        }
        let tag = snapshot["tag"].as_str().unwrap_or("").to_string();
        host.info(&format!("grid-maker {} on {:?}", env!("CARGO_PKG_VERSION"), symbols));
        Ok(Grid {
            host,
            tag,
            levels: int("levels", 3),
            spacing: int("spacing", 10),
            quote,
            symbols,
            grids,
            quoted: HashSet::new(),
            touch: HashMap::new(),
            anchor: HashMap::new(),
            requote: start.setting("requote") != Some("false"),
            requotes: 0,
            placed: 0,
            asked: HashMap::new(),
            retry: Vec::new(),
            paced: false,
            stale: HashSet::new(),
        })
    }

    fn on_price(&mut self, price: &Price<'_>) -> Result<(), String> {
        self.touched(price.symbol, price.bid, price.ask);
        Ok(())
    }

    const WANTS_BOOKS: bool = true;

    fn on_book(&mut self, book: &Book<'_>) -> Result<(), String> {
        if let Some((bid, ask)) = book.touch() {
            self.touched(book.symbol, bid, ask);
        }
        Ok(())
    }

    fn on_fill(&mut self, fill: &Fill<'_>) -> Result<(), String> {
        // This daemon's order (the daemon decides, knowing its instance), and of this tag.
        let ours = fill.own && !self.tag.is_empty() && fill.client_order_id.starts_with(&format!("sd-{}-", self.tag));
        if !ours || fill.replayed || !self.symbols.contains(fill.symbol) {
            return Ok(());
        }
        let (Some(price), Some(off)) = (fill.price.parse::<Decimal>().ok(), self.offset(fill.symbol, self.spacing))
        else {
            return Ok(());
        };
        // The other side, `spacing` ticks from the fill, but never through the touch: the
        // executor would refuse a price that takes.
        let touch = self.touch.get(fill.symbol).copied();
        let next = match fill.side {
            Side::Buy => price.checked_add(off).map(|p| touch.map_or(p, |(_, ask)| p.max(ask))),
            Side::Sell => price.checked_sub(off).map(|p| touch.map_or(p, |(bid, _)| p.min(bid))),
        };
        if let Some(p) = next {
            if self.paced {
                self.slow_down(fill.symbol, fill.side.opposite(), p);
            } else {
                self.place(fill.symbol, fill.side.opposite(), p);
            }
        }
        Ok(())
    }

    fn on_order(&mut self, update: &OrderUpdate<'_>) -> Result<(), String> {
        if update.kind == UpdateKind::Unknown {
            // A second update for this request follows: keep what it asked until then.
            return Ok(());
        }
        let asked = self.asked.remove(&update.request);
        if update.kind == UpdateKind::Unresolved {
            // The quote may be resting or not; quoting it again could double it. The daemon
            // counts it as open and its reports show it if it exists, so the grid just goes on
            // with one level fewer.
            let what = asked.map_or(String::new(), |(symbol, side, price)| format!(" ({symbol} {side:?} at {price})"));
            self.host.warn(&format!(
                "request {}{what}: {} unresolved: {}; not quoted again",
                update.request, update.client_order_id, update.reason
            ));
            return Ok(());
        }
        if matches!(update.kind, UpdateKind::Refused | UpdateKind::Rejected) {
            self.host.log(Level::Debug, &format!("request {}: {} ({})", update.request, update.status, update.reason));
            // Over its pace: the same quote, a little later. Anything else is not retried.
            if update.reason_code == Reason::OrderRate {
                if let Some((symbol, side, price)) = asked {
                    self.slow_down(&symbol, side, price);
                }
            }
        } else if update.kind == UpdateKind::Placed && self.paced {
            self.pace_back();
        }
        Ok(())
    }

    fn on_tick(&mut self, _now_ms: i64) -> Result<(), String> {
        if self.paced && self.retry.is_empty() {
            self.pace_back(); // nothing left to probe the pace with
        }
        // One retry a tick, newest first; those the book moved through are dropped.
        while let Some((symbol, side, price)) = self.retry.pop() {
            if self.passive(&symbol, side, price) {
                self.place(&symbol, side, price);
                break;
            }
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.host
            .info(&format!("grid-maker stopping after {} orders, {} grids laid again", self.placed, self.requotes));
    }
}

export_strategy!(Grid, env!("CARGO_PKG_VERSION"));
