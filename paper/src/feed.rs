//! The diff depth streams' cadence: book changes wait here and go out as one `depthUpdate` per
//! symbol and stream every 100 ms (`<s>@depth@100ms`) or 1000 ms (`<s>@depth`,
//! `<s>@depth@1000ms`), each event carrying the first and last update id it covers (`U`, `u`)
//! and the final quantity of every level that changed (`0`: removed), so that consecutive
//! events of a stream satisfy `U == previous u + 1` ("Diff. Depth Stream",
//! <https://docs.binance.us/#websocket-market-streams>). The `market_gap` fault skips events.

use binance_syncd_plugin::Decimal;
use serde_json::json;
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// One committed change of a symbol's book: its update id and the levels it set (quantity
/// zero: removed), bids and asks.
#[derive(Debug, Clone)]
pub struct Commit {
    pub update_id: u64,
    pub bids: Vec<(Decimal, Decimal)>,
    pub asks: Vec<(Decimal, Decimal)>,
}

/// Eight decimals, as every amount the exchange sends (the engine's `fmt8`; this module is
/// below the engine and may not name it).
fn fmt8(d: Decimal) -> String {
    d.with_scale(8).unwrap_or(d).to_string()
}

/// Changes merged since a stream's last event.
#[derive(Debug, Clone)]
struct Pending {
    first: u64,
    last: u64,
    bids: BTreeMap<Reverse<Decimal>, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
}

impl Pending {
    fn new(first: u64) -> Pending {
        Pending { first, last: first, bids: BTreeMap::new(), asks: BTreeMap::new() }
    }

    fn merge(&mut self, c: &Commit) {
        self.last = c.update_id;
        for &(p, q) in &c.bids {
            self.bids.insert(Reverse(p), q);
        }
        for &(p, q) in &c.asks {
            self.asks.insert(p, q);
        }
    }

    fn event(&self, symbol: &str, now_ms: i64) -> String {
        let b: Vec<_> = self.bids.iter().map(|(p, q)| json!([fmt8(p.0), fmt8(*q)])).collect();
        let a: Vec<_> = self.asks.iter().map(|(p, q)| json!([fmt8(*p), fmt8(*q)])).collect();
        json!({"e": "depthUpdate", "E": now_ms, "s": symbol, "U": self.first, "u": self.last, "b": b, "a": a})
            .to_string()
    }
}

/// One symbol's pending changes: `[100 ms, 1000 ms]`, and events still to skip of each.
#[derive(Debug, Default)]
struct SymbolFeed {
    pending: [Option<Pending>; 2],
    skip: [u64; 2],
}

/// Book changes per symbol, waiting for their streams' next event.
#[derive(Debug, Default)]
pub struct DepthFeed {
    symbols: BTreeMap<String, SymbolFeed>,
    /// Events skipped by `market_gap`, for the report.
    pub skipped: u64,
}

impl DepthFeed {
    pub fn add(&mut self, symbol: &str, commit: &Commit) {
        let feed = self.symbols.entry(symbol.to_string()).or_default();
        for slot in feed.pending.iter_mut() {
            slot.get_or_insert_with(|| Pending::new(commit.update_id)).merge(commit);
        }
    }

    /// The next `count` events of each depth stream of `symbol` (all symbols: `None`) are not
    /// sent: their update ids are gone, as after a lost message.
    pub fn gap(&mut self, symbol: Option<&str>, count: u64, known: &[String]) {
        for s in known {
            if symbol.is_none_or(|want| want == s) {
                let feed = self.symbols.entry(s.clone()).or_default();
                feed.skip = [feed.skip[0] + count, feed.skip[1] + count];
            }
        }
    }

    /// The events due now, as (stream name, JSON): every symbol's 100 ms event, and with
    /// `slow` its 1000 ms event too. Pending changes of a stream nobody `wants` are dropped.
    pub fn take(&mut self, now_ms: i64, slow: bool, wants: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
        let mut due = Vec::new();
        for (symbol, feed) in self.symbols.iter_mut() {
            let lower = symbol.to_ascii_lowercase();
            let speeds: &[(usize, &[&str])] = if slow {
                &[(0, &["@depth@100ms"]), (1, &["@depth", "@depth@1000ms"])]
            } else {
                &[(0, &["@depth@100ms"])]
            };
            for &(i, suffixes) in speeds {
                let Some(p) = feed.pending[i].take() else { continue };
                if feed.skip[i] > 0 {
                    feed.skip[i] -= 1;
                    self.skipped += 1;
                    continue;
                }
                let names: Vec<String> = suffixes.iter().map(|s| format!("{lower}{s}")).filter(|n| wants(n)).collect();
                if names.is_empty() {
                    continue;
                }
                let json = p.event(symbol, now_ms);
                due.extend(names.into_iter().map(|n| (n, json.clone())));
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn change(id: u64, bid: &str, qty: &str) -> Commit {
        Commit { update_id: id, bids: vec![(d(bid), d(qty))], asks: vec![] }
    }

    #[test]
    fn events_chain_their_update_ids_and_carry_the_last_quantity_of_a_level() {
        let mut f = DepthFeed::default();
        f.add("BTCUSD", &change(5, "10", "1"));
        f.add("BTCUSD", &change(6, "10", "0"));
        f.add("BTCUSD", &change(7, "9", "2"));
        let due = f.take(1, false, &|_| true);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "btcusd@depth@100ms");
        let ev: serde_json::Value = serde_json::from_str(&due[0].1).unwrap();
        assert_eq!((ev["U"].as_u64(), ev["u"].as_u64()), (Some(5), Some(7)));
        assert_eq!(ev["b"], json!([["10.00000000", "0.00000000"], ["9.00000000", "2.00000000"]]));
        f.add("BTCUSD", &change(8, "9", "3"));
        let due = f.take(2, true, &|_| true);
        let fast: serde_json::Value = serde_json::from_str(&due[0].1).unwrap();
        assert_eq!((fast["U"].as_u64(), fast["u"].as_u64()), (Some(8), Some(8)));
        let slow: serde_json::Value = serde_json::from_str(&due[1].1).unwrap();
        assert_eq!((slow["U"].as_u64(), slow["u"].as_u64()), (Some(5), Some(8)), "the 1000 ms stream covers both");
        assert_eq!(due.len(), 3, "@depth and @depth@1000ms are the same stream: {due:?}");
    }

    #[test]
    fn a_gap_skips_the_next_event_of_each_stream() {
        let mut f = DepthFeed::default();
        f.gap(Some("BTCUSD"), 1, &["BTCUSD".to_string()]);
        f.add("BTCUSD", &change(5, "10", "1"));
        assert!(f.take(1, true, &|_| true).is_empty());
        f.add("BTCUSD", &change(6, "10", "2"));
        let due = f.take(2, false, &|_| true);
        let ev: serde_json::Value = serde_json::from_str(&due[0].1).unwrap();
        assert_eq!(ev["U"].as_u64(), Some(6), "5 is gone");
        assert_eq!(f.skipped, 2);
    }
}
