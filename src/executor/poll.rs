//! THREAD `executor-poll`: the executor's periodic reads, off the order thread (issue 22).
//!
//! `ticker/bookTicker` (only for symbols the market stream does not confirm within
//! `market_stale`), `avgPrice` every `SYNCD_AVG_PRICE_POLL_S` and `exchangeInfo` every
//! `SYNCD_RULES_REFRESH_S` are background reads on the REST client's background lane: they never
//! wait in the gate and use at most [`READ_SHARE`] % of it, and while one is on the wire the
//! executor thread keeps serving intents on the order lane. What they find goes to the executor
//! as [`Polled`] messages; rules are installed in the shared [`LiveRules`] here.
//!
//! Reads an order needs on the spot stay on the executor thread, on the order lane: rules
//! re-read after a `-1013`/`-1111` and an `avgPrice` for a price near a band's edge.

use super::READ_SHARE;
use crate::decimal::Decimal;
use crate::market::MarketView;
use crate::rest::{RestClient, AVG_PRICE, BOOK_TICKER};
use crate::rules::LiveRules;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Deserialize;
use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// What a poll found, for the executor.
#[derive(Debug, Clone)]
pub(super) enum Polled {
    /// `ticker/bookTicker` of a symbol the market stream did not confirm.
    Quote { symbol: String, bid: Decimal, ask: Decimal },
    /// `avgPrice`, read at `at`.
    Avg { symbol: String, price: Decimal, at: Instant },
    /// `exchangeInfo` was read and installed.
    Rules,
}

/// Messages the executor may have waiting; past that a poll's result is dropped (the next poll
/// brings a fresher one).
pub(super) const POLLED_QUEUED: usize = 256;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BookTicker {
    bid_price: Decimal,
    ask_price: Decimal,
}

#[derive(Deserialize)]
pub(super) struct AvgPrice {
    pub(super) price: Decimal,
}

/// The poller's settings (the executor's, copied).
pub(super) struct Poller {
    pub rest: Arc<RestClient>,
    pub symbols: Vec<String>,
    pub price_poll: Duration,
    pub avg_price_poll: Duration,
    pub rules_refresh: Duration,
    pub market: Option<MarketView>,
    pub market_stale: Duration,
    pub rules: LiveRules,
    pub out: Sender<Polled>,
    pub stop: Receiver<()>,
}

/// How `run` ends: the daemon stops, or the executor is gone.
struct Gone;

/// How soon a poll that could not be made (its lane busy with a reconciliation page, the gate
/// holding) is tried again, rather than a whole period later.
const RETRY: Duration = Duration::from_secs(1);

impl Poller {
    /// Runs until `stop` closes or the executor drops its receiver; not joined (a request in
    /// flight at shutdown is left behind, as the reconciler's is).
    pub fn spawn(self) -> io::Result<()> {
        thread::Builder::new().name("executor-poll".into()).spawn(move || {
            let _ = self.run();
        })?;
        Ok(())
    }

    fn run(&self) -> Result<(), Gone> {
        let now = Instant::now();
        let (mut next_prices, mut next_avg, mut next_rules) = (now, now, now + self.rules_refresh);
        loop {
            let now = Instant::now();
            if now >= next_prices {
                let done = self.poll_quotes()?;
                next_prices = now + if done { self.price_poll } else { RETRY.min(self.price_poll) };
            }
            if now >= next_avg {
                let done = self.poll_avgs()?;
                next_avg = now + if done { self.avg_price_poll } else { RETRY.min(self.avg_price_poll) };
            }
            if now >= next_rules {
                next_rules = match self.refresh_rules()? {
                    true => Instant::now() + self.rules_refresh,
                    // The last good rules stay; try again soon.
                    false => Instant::now() + Duration::from_secs(5).min(self.rules_refresh),
                };
            }
            let wait = next_prices.min(next_avg).min(next_rules).saturating_duration_since(Instant::now());
            crossbeam_channel::select! {
                recv(self.stop) -> _ => return Err(Gone),
                default(wait) => {}
            }
        }
    }

    fn stopped(&self) -> bool {
        !matches!(self.stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty))
    }

    fn send(&self, msg: Polled) -> Result<(), Gone> {
        match self.out.try_send(msg) {
            Err(TrySendError::Disconnected(_)) => Err(Gone),
            // A busy executor: this result is dropped, the next poll brings a fresher one.
            Ok(()) | Err(TrySendError::Full(_)) => Ok(()),
        }
    }

    /// True if every symbol that needed a poll got one.
    fn poll_quotes(&self) -> Result<bool, Gone> {
        let mut done = true;
        for symbol in &self.symbols {
            if self.stopped() {
                return Err(Gone);
            }
            if let Some(m) = &self.market {
                if m.fresh_top(symbol, self.market_stale).is_some() {
                    continue;
                }
                m.count_rest_quote();
            }
            match self.rest.call_background::<BookTicker>(&BOOK_TICKER, &[("symbol", symbol)], READ_SHARE) {
                Ok(t) => self.send(Polled::Quote { symbol: symbol.clone(), bid: t.bid_price, ask: t.ask_price })?,
                Err(e) => {
                    done = false;
                    log::debug!("executor-poll: bookTicker {symbol}: {e}");
                }
            }
        }
        Ok(done)
    }

    /// True if every symbol's `avgPrice` was read.
    fn poll_avgs(&self) -> Result<bool, Gone> {
        let mut done = true;
        for symbol in &self.symbols {
            if self.stopped() {
                return Err(Gone);
            }
            match self.rest.call_background::<AvgPrice>(&AVG_PRICE, &[("symbol", symbol)], READ_SHARE) {
                Ok(a) => self.send(Polled::Avg { symbol: symbol.clone(), price: a.price, at: Instant::now() })?,
                Err(e) => {
                    done = false;
                    log::debug!("executor-poll: avgPrice {symbol}: {e}");
                }
            }
        }
        Ok(done)
    }

    /// True if the rules were read and installed.
    fn refresh_rules(&self) -> Result<bool, Gone> {
        match self.rest.exchange_info_background(&self.symbols, READ_SHARE) {
            Ok(rules) => {
                self.rules.install(rules);
                self.send(Polled::Rules)?;
                Ok(true)
            }
            Err(e) => {
                log::warn!("executor-poll: exchangeInfo refresh failed ({e}); keeping the last rules");
                Ok(false)
            }
        }
    }
}
