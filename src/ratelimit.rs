//! One rate-limit gate for the whole process.
//!
//! Binance limits request weight per IP per minute and new orders per account per 10 s and per
//! day, in fixed windows aligned to the clock. The limits come from `exchangeInfo.rateLimits` and
//! the live usage from the `X-MBX-USED-WEIGHT-*` / `X-MBX-ORDER-COUNT-*` response headers; nothing
//! here is a hard-coded number except the fallback used before `exchangeInfo` has been read.
//!
//! [`Budget`] is the pure part: it takes `now` (server-clock ms) and answers "go" or "wait this
//! long". [`RateGate`] wraps it for threads: a caller that must wait blocks on a condition
//! variable, which releases the lock, so no thread ever sleeps holding it.
//!
//! After a 429 nothing at all is sent from any thread until `Retry-After` has passed (the affected
//! class only is not enough: Binance escalates continued traffic to a 418 ban). A 418 is waited
//! out the same way, and logged as an error because an operator should know. When a hold ends,
//! one request goes first, alone (the *probe*): the others wait for its answer, so the REST
//! client's two lanes never both land in a hold the probe's 429 starts again.

use crate::clock::ServerClock;
use crate::lock::{LockAnyway, WaitAnyway};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `REQUEST_WEIGHT`: per IP, every request's weight.
    Weight,
    /// `ORDERS`: per account, each new order counts 1.
    Orders,
    /// `RAW_REQUESTS`: per IP, every request counts 1.
    Raw,
}

/// One limiter from `exchangeInfo.rateLimits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub kind: LimitKind,
    pub interval_ms: i64,
    pub limit: u64,
}

impl RateLimit {
    /// `("MINUTE", 1)` → 60000. Unknown interval names give `None` (the limiter is skipped).
    pub fn interval_ms(interval: &str, num: u64) -> Option<i64> {
        let unit: i64 = match interval {
            "SECOND" => 1_000,
            "MINUTE" => 60_000,
            "HOUR" => 3_600_000,
            "DAY" => 86_400_000,
            _ => return None,
        };
        unit.checked_mul(num as i64).filter(|&ms| ms > 0)
    }

    /// The header suffix Binance uses for this interval: 60000 → `1M`, 10000 → `10S`.
    fn header_suffix(&self) -> String {
        let ms = self.interval_ms;
        for (unit, letter) in [(86_400_000, 'D'), (3_600_000, 'H'), (60_000, 'M'), (1_000, 'S')] {
            if ms % unit == 0 {
                return format!("{}{}", ms / unit, letter);
            }
        }
        format!("{ms}MS")
    }
}

/// Limits assumed until `exchangeInfo` has been read: Binance.US's pre-2026-08-31 numbers, the
/// lower ones, so a daemon that cannot read them errs on the safe side.
pub fn fallback_limits() -> Vec<RateLimit> {
    vec![
        RateLimit { kind: LimitKind::Weight, interval_ms: 60_000, limit: 1200 },
        RateLimit { kind: LimitKind::Orders, interval_ms: 10_000, limit: 100 },
        RateLimit { kind: LimitKind::Orders, interval_ms: 86_400_000, limit: 200_000 },
    ]
}

#[derive(Debug, Clone)]
struct Window {
    limit: RateLimit,
    header: String,
    index: i64,
    used: u64,
}

// The window index never moves back. The exchange's clock does not, but our estimate of it
// does when the offset is resynced; stepping back into an older window would forget what was
// spent in it, and stepping forward again would forget the newer one (issue 12). So an older
// index counts as the newest window seen.
impl Window {
    fn used_at(&self, now_ms: i64) -> u64 {
        if now_ms.div_euclid(self.limit.interval_ms) <= self.index {
            self.used
        } else {
            0
        }
    }

    /// Moves to the window of `now_ms` if it is newer; the usage starts from zero there.
    fn roll(&mut self, now_ms: i64) {
        let idx = now_ms.div_euclid(self.limit.interval_ms);
        if idx > self.index {
            self.index = idx;
            self.used = 0;
        }
    }

    fn add(&mut self, now_ms: i64, amount: u64) {
        self.roll(now_ms);
        self.used = self.used.saturating_add(amount);
    }

    fn ms_to_next_window(&self, now_ms: i64) -> i64 {
        let len = self.limit.interval_ms;
        (now_ms.div_euclid(len).max(self.index) + 1) * len - now_ms
    }
}

/// The two clocks the budget needs: the exchange's (ms since the epoch, for windows aligned to
/// its minute) and a monotonic one (ms, for holds: a resync of the server offset or a step of
/// the wall clock must neither lift nor stretch a `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub server_ms: i64,
    pub mono_ms: i64,
}

impl Now {
    /// For tests and pure callers: both clocks read the same.
    pub fn at(ms: i64) -> Now {
        Now { server_ms: ms, mono_ms: ms }
    }
}

/// Longest hold we accept from a `Retry-After`: Binance bans last up to 3 days; anything longer
/// is garbage.
const MAX_HOLD_MS: i64 = 3 * 86_400_000;

/// Why a request may not go yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// After a 429: nothing goes until then.
    RateLimited { wait_ms: i64 },
    /// After a 418: nothing goes until the ban ends.
    Banned { wait_ms: i64 },
    /// The request would pass a limit's budget in the current window.
    Budget { wait_ms: i64 },
}

impl Hold {
    pub fn wait_ms(self) -> i64 {
        match self {
            Hold::RateLimited { wait_ms } | Hold::Banned { wait_ms } | Hold::Budget { wait_ms } => wait_ms,
        }
    }
}

/// The pure accounting behind the gate. Times are server-clock ms.
#[derive(Debug, Clone)]
pub struct Budget {
    windows: Vec<Window>,
    /// Share of each limit we allow ourselves, in percent: the IP's weight is shared with
    /// anything else on the machine, and Binance advises headroom.
    headroom_pct: u64,
    /// Holds, in monotonic ms (see [`Now`]).
    blocked_until: i64,
    banned_until: i64,
    orders_blocked_until: i64,
    /// Kept here for [`RateGate`], under the same lock; the pure checks ignore it.
    probe: Probe,
    pub stats: GateStats,
}

/// After a 429, 418 or 403: the next request admitted goes alone, and the others wait for its
/// answer; an answer that is none of those ends it.
#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    pending: bool,
    out: bool,
}

/// What the gate has seen, for logs, `/metrics`-style reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateStats {
    pub http_429: u64,
    pub http_418: u64,
    pub waits: u64,
    pub peak_weight: u64,
}

impl Budget {
    pub fn new(limits: Vec<RateLimit>) -> Budget {
        let mut b = Budget {
            windows: Vec::new(),
            headroom_pct: 80,
            blocked_until: 0,
            banned_until: 0,
            orders_blocked_until: 0,
            probe: Probe::default(),
            stats: GateStats::default(),
        };
        b.set_limits(limits);
        b
    }

    /// Replaces the limits (after each `exchangeInfo`), keeping usage already counted for
    /// limiters that did not change.
    pub fn set_limits(&mut self, limits: Vec<RateLimit>) {
        let old = std::mem::take(&mut self.windows);
        self.windows = limits
            .into_iter()
            .filter(|l| l.limit > 0 && l.interval_ms > 0)
            .map(|limit| {
                let prefix = match limit.kind {
                    LimitKind::Weight => "x-mbx-used-weight-",
                    LimitKind::Orders => "x-mbx-order-count-",
                    LimitKind::Raw => "",
                };
                let header = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}{}", limit.header_suffix().to_ascii_lowercase())
                };
                let (index, used) = old
                    .iter()
                    .find(|w| w.limit.kind == limit.kind && w.limit.interval_ms == limit.interval_ms)
                    .map(|w| (w.index, w.used))
                    .unwrap_or((i64::MIN, 0));
                Window { limit, header, index, used }
            })
            .collect();
    }

    pub fn limits(&self) -> Vec<RateLimit> {
        self.windows.iter().map(|w| w.limit.clone()).collect()
    }

    /// Whether a request of `weight` that places `orders` new orders may go at `now`.
    pub fn check(&self, now: Now, weight: u64, orders: u64) -> Result<(), Hold> {
        self.check_share(now, weight, orders, self.headroom_pct)
    }

    /// [`check`](Self::check) against only `share_pct` % of each limit, so a background task
    /// (reconciliation) leaves room for the requests that keep the stream alive.
    pub fn check_share(&self, now: Now, weight: u64, orders: u64, share_pct: u64) -> Result<(), Hold> {
        let (mono, now_ms) = (now.mono_ms, now.server_ms);
        if mono < self.banned_until {
            return Err(Hold::Banned { wait_ms: self.banned_until - mono });
        }
        if mono < self.blocked_until {
            return Err(Hold::RateLimited { wait_ms: self.blocked_until - mono });
        }
        if orders > 0 && mono < self.orders_blocked_until {
            return Err(Hold::RateLimited { wait_ms: self.orders_blocked_until - mono });
        }
        let mut wait = 0;
        for w in &self.windows {
            let amount = match w.limit.kind {
                LimitKind::Weight => weight,
                LimitKind::Orders => orders,
                LimitKind::Raw => 1,
            };
            if amount == 0 {
                continue;
            }
            let budget = (w.limit.limit / 100 * share_pct.min(self.headroom_pct)
                + w.limit.limit % 100 * share_pct.min(self.headroom_pct) / 100)
                .max(1);
            let used = w.used_at(now_ms);
            // A request bigger than the whole budget may still go into an empty window, or it
            // could never go at all.
            // Saturating: a usage header is the server's number and may be anything (issue 12).
            if used > 0 && used.saturating_add(amount) > budget {
                wait = wait.max(w.ms_to_next_window(now_ms));
            }
        }
        if wait > 0 {
            return Err(Hold::Budget { wait_ms: wait });
        }
        Ok(())
    }

    /// Counts a request that is about to be sent.
    pub fn commit(&mut self, now: Now, weight: u64, orders: u64) {
        let now_ms = now.server_ms;
        for w in &mut self.windows {
            let amount = match w.limit.kind {
                LimitKind::Weight => weight,
                LimitKind::Orders => orders,
                LimitKind::Raw => 1,
            };
            w.add(now_ms, amount);
            if w.limit.kind == LimitKind::Weight {
                self.stats.peak_weight = self.stats.peak_weight.max(w.used);
            }
        }
    }

    /// Takes the server's own count from a usage header (name lower-cased). The server counts
    /// everything from this IP, so it wins when it says more than we counted.
    pub fn observe_header(&mut self, now: Now, name: &str, value: &str) {
        let now_ms = now.server_ms;
        let Ok(value) = value.trim().parse::<u64>() else { return };
        let name = name.to_ascii_lowercase();
        for w in &mut self.windows {
            if !w.header.is_empty() && w.header == name {
                w.roll(now_ms);
                w.used = w.used.max(value);
                if w.limit.kind == LimitKind::Weight {
                    self.stats.peak_weight = self.stats.peak_weight.max(w.used);
                }
            }
        }
    }

    /// HTTP 429. With no `Retry-After`, wait for the window to roll: the weight window for a
    /// `-1003`, the shortest order window for a `-1015`.
    pub fn on_429(&mut self, now: Now, retry_after_ms: Option<i64>, orders_only: bool) {
        self.stats.http_429 += 1;
        self.probe.pending = true;
        let fallback = |kind: LimitKind| {
            self.windows
                .iter()
                .filter(|w| w.limit.kind == kind)
                .map(|w| w.ms_to_next_window(now.server_ms))
                .min()
                .unwrap_or(60_000)
        };
        let kind = if orders_only { LimitKind::Orders } else { LimitKind::Weight };
        let hold = retry_after_ms.unwrap_or_else(|| fallback(kind)).clamp(0, MAX_HOLD_MS);
        let until = now.mono_ms + hold;
        if orders_only {
            self.orders_blocked_until = self.orders_blocked_until.max(until);
        } else {
            self.blocked_until = self.blocked_until.max(until);
        }
    }

    /// HTTP 403: a firewall rule tripped. Binance gives no `Retry-After`; back off for minutes.
    pub fn on_403(&mut self, now: Now) {
        self.probe.pending = true;
        self.blocked_until = self.blocked_until.max(now.mono_ms + 5 * 60_000);
    }

    /// Each limiter's usage at `now`: (interval like `1m`, (used, limit), a weight limiter).
    pub fn usage(&self, now: Now) -> Vec<(String, (u64, u64), bool)> {
        let used = |w: &Window| (w.used_at(now.server_ms), w.limit.limit);
        self.windows
            .iter()
            .map(|w| (w.limit.header_suffix().to_ascii_lowercase(), used(w), w.limit.kind == LimitKind::Weight))
            .collect()
    }

    /// What is left of a 418 ban at `now`.
    pub fn banned_ms(&self, now: Now) -> Option<i64> {
        (now.mono_ms < self.banned_until).then(|| self.banned_until - now.mono_ms)
    }

    /// HTTP 418: banned. Binance bans start at 2 minutes; without `Retry-After` assume that.
    pub fn on_418(&mut self, now: Now, retry_after_ms: Option<i64>) {
        self.stats.http_418 += 1;
        self.probe.pending = true;
        let until = now.mono_ms + retry_after_ms.unwrap_or(120_000).clamp(0, MAX_HOLD_MS);
        self.banned_until = self.banned_until.max(until);
    }
}

/// Why [`RateGate::try_acquire`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The gate is closed: the process is stopping, so the request must not go at all.
    Closed,
    /// The budget (or a 429/418 hold) would let it go after this long.
    Wait(Duration),
}

/// A request the gate let through. Say what the exchange answered with [`Pass::answered`]
/// (dropping it unanswered counts as "no answer"): if it was the probe after a hold, the
/// others wait for that.
#[derive(Debug)]
#[must_use = "the gate waits for the probe's answer"]
pub struct Pass<'a> {
    gate: &'a RateGate,
    probe: bool,
    status: Option<u16>,
}

impl Pass<'_> {
    /// The HTTP status the exchange answered; call it after the 429/418/403 was reported to
    /// the gate, so no waiter goes before the new hold is known.
    pub fn answered(mut self, status: u16) {
        self.status = Some(status);
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if !self.probe {
            return;
        }
        let mut budget = self.gate.lock();
        budget.probe.out = false;
        if self.status.is_some_and(|s| !matches!(s, 429 | 418 | 403)) {
            budget.probe.pending = false;
        }
        drop(budget);
        self.gate.changed.notify_all();
    }
}

/// How long a request that may not wait in the gate is told to come back while the probe
/// after a hold is out.
const PROBE_RETRY: Duration = Duration::from_millis(50);

/// The shared, thread-safe gate. Clone the `Arc`, not the gate.
#[derive(Debug)]
pub struct RateGate {
    budget: Mutex<Budget>,
    changed: Condvar,
    clock: Arc<ServerClock>,
    started: std::time::Instant,
    closed: AtomicBool,
}

impl RateGate {
    pub fn new(limits: Vec<RateLimit>, clock: Arc<ServerClock>) -> RateGate {
        RateGate {
            budget: Mutex::new(Budget::new(limits)),
            changed: Condvar::new(),
            clock,
            started: std::time::Instant::now(),
            closed: AtomicBool::new(false),
        }
    }

    fn now(&self) -> Now {
        Now { server_ms: self.clock.now_ms(), mono_ms: self.started.elapsed().as_millis() as i64 }
    }

    /// Counts the request and lets it through if it may go now within `share_pct` % of each
    /// limit; otherwise says why not. Never blocks.
    pub fn try_acquire(&self, weight: u64, orders: u64, share_pct: u64) -> Result<Pass<'_>, Denied> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Denied::Closed);
        }
        let now = self.now();
        let mut budget = self.lock();
        match budget.check_share(now, weight, orders, share_pct) {
            Ok(()) if budget.probe.out => Err(Denied::Wait(PROBE_RETRY)),
            Ok(()) => Ok(self.admit(&mut budget, now, weight, orders)),
            Err(hold) => Err(Denied::Wait(Duration::from_millis(hold.wait_ms().max(1) as u64))),
        }
    }

    /// Counts an admitted request; the first after a hold is the probe.
    fn admit(&self, budget: &mut Budget, now: Now, weight: u64, orders: u64) -> Pass<'_> {
        budget.commit(now, weight, orders);
        let probe = budget.probe.pending;
        budget.probe.out |= probe;
        Pass { gate: self, probe, status: None }
    }

    fn lock(&self) -> MutexGuard<'_, Budget> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way
        // that matters more than stopping all traffic would.
        self.budget.lock_anyway()
    }

    /// Blocks until a request of `weight` placing `orders` orders may go, then counts it.
    /// Returns `None` if the gate was closed (shutdown) while waiting.
    pub fn acquire(&self, weight: u64, orders: u64) -> Option<Pass<'_>> {
        self.acquire_within(weight, orders, None)
    }

    /// Like [`acquire`](Self::acquire), but gives up (`None`) once `limit` has passed.
    pub fn acquire_within(&self, weight: u64, orders: u64, limit: Option<Duration>) -> Option<Pass<'_>> {
        let deadline = limit.map(|l| std::time::Instant::now() + l);
        let mut budget = self.lock();
        let mut announced = false;
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            let now = self.now();
            match budget.check(now, weight, orders) {
                // The probe after a hold is out: its answer wakes us.
                Ok(()) if budget.probe.out => {
                    if !announced {
                        budget.stats.waits += 1;
                        announced = true;
                    }
                    let left = deadline.map_or(Duration::from_millis(250), |d| {
                        d.saturating_duration_since(std::time::Instant::now()).min(Duration::from_millis(250))
                    });
                    if left.is_zero() {
                        return None;
                    }
                    budget = self.changed.wait_timeout_anyway(budget, left);
                }
                Ok(()) => return Some(self.admit(&mut budget, now, weight, orders)),
                Err(hold) => {
                    if !announced {
                        budget.stats.waits += 1;
                        match hold {
                            Hold::Banned { wait_ms } => {
                                log::error!("ip banned by the exchange: holding all requests for {wait_ms} ms")
                            }
                            Hold::RateLimited { wait_ms } => {
                                log::warn!("rate limited: holding requests for {wait_ms} ms")
                            }
                            Hold::Budget { wait_ms } => log::debug!("weight budget spent: waiting {wait_ms} ms"),
                        }
                        announced = true;
                    }
                    if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                        return None;
                    }
                    // Wake at least every 250 ms so a close() or a limit change is seen promptly.
                    let wait = Duration::from_millis(hold.wait_ms().clamp(1, 250) as u64);
                    budget = self.changed.wait_timeout_anyway(budget, wait);
                }
            }
        }
    }

    pub fn observe_header(&self, name: &str, value: &str) {
        let now = self.now();
        self.lock().observe_header(now, name, value);
    }

    pub fn on_429(&self, retry_after: Option<Duration>, orders_only: bool) {
        let now = self.now();
        self.lock().on_429(now, retry_after.map(|d| d.as_millis().min(i64::MAX as u128) as i64), orders_only);
    }

    pub fn on_418(&self, retry_after: Option<Duration>) {
        let now = self.now();
        log::error!("http 418: the exchange banned this ip for {retry_after:?}; all requests wait");
        self.lock().on_418(now, retry_after.map(|d| d.as_millis().min(i64::MAX as u128) as i64));
    }

    pub fn on_403(&self) {
        let now = self.now();
        log::error!("http 403: a firewall rule of the exchange tripped; holding all requests for 5 minutes");
        self.lock().on_403(now);
    }

    pub fn set_limits(&self, limits: Vec<RateLimit>) {
        self.lock().set_limits(limits);
        self.changed.notify_all();
    }

    pub fn stats(&self) -> GateStats {
        self.lock().stats.clone()
    }

    /// See [`Budget::usage`]; for `/metrics`.
    pub fn usage(&self) -> Vec<(String, (u64, u64), bool)> {
        let now = self.now();
        self.lock().usage(now)
    }

    /// What is left of a 418 ban, if one holds.
    pub fn banned_for(&self) -> Option<Duration> {
        let now = self.now();
        self.lock().banned_ms(now).map(|ms| Duration::from_millis(ms.max(0) as u64))
    }

    /// Wakes every waiter and makes further `acquire`s fail: the process is stopping.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.changed.notify_all();
    }

    /// Whether [`close`](Self::close) was called (and not undone).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Opens a closed gate again, for the last requests of a shutdown (closing the listen key)
    /// once every other thread has stopped.
    pub fn reopen(&self) {
        self.closed.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn limits(weight: u64, orders_10s: u64) -> Vec<RateLimit> {
        vec![
            RateLimit { kind: LimitKind::Weight, interval_ms: 60_000, limit: weight },
            RateLimit { kind: LimitKind::Orders, interval_ms: 10_000, limit: orders_10s },
        ]
    }

    #[test]
    fn interval_names() {
        assert_eq!(RateLimit::interval_ms("MINUTE", 1), Some(60_000));
        assert_eq!(RateLimit::interval_ms("SECOND", 10), Some(10_000));
        assert_eq!(RateLimit::interval_ms("FORTNIGHT", 1), None);
        let l = RateLimit { kind: LimitKind::Orders, interval_ms: 10_000, limit: 1 };
        assert_eq!(l.header_suffix(), "10S");
    }

    #[test]
    fn weight_budget_keeps_headroom_and_rolls_with_the_window() {
        let mut b = Budget::new(limits(100, 10)); // budget 80
        let t0 = 120_000; // start of a minute
        for _ in 0..4 {
            assert!(b.check(Now::at(t0), 20, 0).is_ok());
            b.commit(Now::at(t0), 20, 0);
        }
        assert_eq!(b.check(Now::at(t0 + 1_000), 1, 0), Err(Hold::Budget { wait_ms: 59_000 }));
        assert!(b.check(Now::at(t0 + 60_000), 20, 0).is_ok(), "a new minute starts empty");
    }

    #[test]
    fn usage_header_raises_our_count() {
        let mut b = Budget::new(limits(100, 10));
        b.observe_header(Now::at(0), "X-MBX-USED-WEIGHT-1M", "79");
        assert!(b.check(Now::at(0), 1, 0).is_ok());
        assert!(b.check(Now::at(0), 2, 0).is_err());
        b.observe_header(Now::at(0), "x-mbx-used-weight-1m", "3"); // lower than we know: ignored
        assert!(b.check(Now::at(0), 2, 0).is_err());
        assert_eq!(b.stats.peak_weight, 79);
    }

    #[test]
    fn order_windows_count_orders_only() {
        let mut b = Budget::new(limits(6000, 10)); // 8 orders per 10 s with headroom
        for _ in 0..8 {
            b.commit(Now::at(0), 1, 1);
        }
        assert!(b.check(Now::at(5_000), 1, 0).is_ok(), "a query still goes");
        assert_eq!(b.check(Now::at(5_000), 1, 1), Err(Hold::Budget { wait_ms: 5_000 }));
    }

    #[test]
    fn after_429_nothing_goes_until_retry_after() {
        let mut b = Budget::new(limits(6000, 100));
        b.on_429(Now::at(1_000), Some(3_000), false);
        assert_eq!(b.check(Now::at(1_500), 1, 0), Err(Hold::RateLimited { wait_ms: 2_500 }));
        assert!(b.check(Now::at(4_000), 1, 0).is_ok());
        // An order-count 429 without Retry-After holds orders to the end of the 10 s window.
        b.on_429(Now::at(12_000), None, true);
        assert!(b.check(Now::at(13_000), 1, 0).is_ok());
        assert_eq!(b.check(Now::at(13_000), 1, 1), Err(Hold::RateLimited { wait_ms: 7_000 }));
    }

    #[test]
    fn holds_follow_the_monotonic_clock_not_the_server_clock() {
        let mut b = Budget::new(limits(6000, 100));
        b.on_429(Now { server_ms: 1_000_000, mono_ms: 0 }, Some(30_000), false);
        // The server offset was resynced 60 s forward: the hold must still stand.
        let later = Now { server_ms: 1_070_000, mono_ms: 10_000 };
        assert_eq!(b.check(later, 1, 0), Err(Hold::RateLimited { wait_ms: 20_000 }));
        assert!(b.check(Now { server_ms: 1_000_000, mono_ms: 30_000 }, 1, 0).is_ok());
    }

    #[test]
    fn a_share_leaves_room_for_others_and_garbage_retry_after_is_clamped() {
        let mut b = Budget::new(limits(100, 10));
        b.commit(Now::at(0), 50, 0);
        assert!(b.check_share(Now::at(0), 1, 0, 50).is_err(), "half is spent");
        assert!(b.check(Now::at(0), 1, 0).is_ok(), "the rest of the 80 % is still there");
        b.on_418(Now::at(0), Some(i64::MAX));
        assert_eq!(b.check(Now::at(0), 1, 0), Err(Hold::Banned { wait_ms: MAX_HOLD_MS }));
    }

    #[test]
    fn a_ban_holds_everything() {
        let mut b = Budget::new(limits(6000, 100));
        b.on_418(Now::at(0), None);
        assert_eq!(b.check(Now::at(60_000), 1, 0), Err(Hold::Banned { wait_ms: 60_000 }));
        assert!(b.check(Now::at(120_000), 1, 0).is_ok());
        assert_eq!(b.stats.http_418, 1);
    }

    #[test]
    fn second_thread_really_waits_after_a_429() {
        let clock = Arc::new(ServerClock::new());
        let gate = Arc::new(RateGate::new(limits(6000, 100), clock));
        assert!(gate.acquire(1, 0).is_some());
        let (tx, rx) = crossbeam_channel::bounded(1);
        let hit = Instant::now();
        let first = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                // This thread "received" a 429 with Retry-After 400 ms.
                gate.on_429(Some(Duration::from_millis(400)), false);
                let _ = tx.send(());
            })
        };
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let second = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let ok = gate.acquire(1, 0).is_some();
                (ok, hit.elapsed())
            })
        };
        first.join().unwrap();
        let (ok, waited) = second.join().unwrap();
        assert!(ok);
        // A lower bound only: a gate that let the request through at once fails this.
        assert!(waited >= Duration::from_millis(390), "second thread went after {waited:?}");
        assert_eq!(gate.stats().http_429, 1);
        assert_eq!(gate.stats().waits, 1);
    }

    #[test]
    fn close_releases_waiters() {
        let gate = Arc::new(RateGate::new(limits(6000, 100), Arc::new(ServerClock::new())));
        gate.on_418(Some(Duration::from_secs(3600)));
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let _ = done_tx.send(gate.acquire(1, 0).is_some());
            });
        }
        // `waits` is counted under the lock just before the condvar wait, which gives the lock
        // up atomically: once we see it, the waiter is parked inside `acquire`, so `close`
        // below has to wake it (not merely be seen by a waiter that has not started yet).
        let deadline = Instant::now() + Duration::from_secs(5);
        while gate.stats().waits == 0 {
            assert!(Instant::now() < deadline, "the waiter never reached acquire's wait");
            std::thread::yield_now();
        }
        gate.close();
        // Bounded: a close that wakes nobody fails here instead of hanging for the 1 h ban.
        let got = done_rx.recv_timeout(Duration::from_secs(5)).expect("close did not release the waiter");
        assert!(!got);
    }

    #[test]
    fn after_a_hold_one_request_goes_alone_until_it_is_answered() {
        let gate = RateGate::new(limits(6000, 100), Arc::new(ServerClock::new()));
        let (a, b) = (gate.try_acquire(1, 0, 100), gate.try_acquire(1, 0, 100));
        assert!(a.is_ok() && b.is_ok(), "no hold yet: both lanes go");
        drop((a, b));
        // A 429 whose hold is already over: the next request is the probe, and goes alone.
        gate.on_429(Some(Duration::ZERO), false);
        let probe = gate.try_acquire(1, 0, 100).expect("the probe goes");
        assert_eq!(gate.try_acquire(1, 0, 100).err(), Some(Denied::Wait(PROBE_RETRY)), "the other waits");
        // Answered 429 again (reported to the gate first, as the client does): still one at a time.
        gate.on_429(Some(Duration::ZERO), false);
        probe.answered(429);
        let probe = gate.try_acquire(1, 0, 100).expect("the next probe");
        assert!(gate.try_acquire(1, 0, 100).is_err());
        // A waiter in `acquire` is woken by the answer, not by a timer.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| gate.acquire(1, 0).map(|p| p.probe));
            while gate.stats().waits == 0 && !waiter.is_finished() {
                std::thread::yield_now();
            }
            probe.answered(200);
            assert_eq!(waiter.join().unwrap(), Some(false), "after a good answer nobody is a probe");
        });
        let (a, b) = (gate.try_acquire(1, 0, 100), gate.try_acquire(1, 0, 100));
        assert!(a.is_ok() && b.is_ok(), "both lanes go again");
    }

    #[test]
    fn try_acquire_says_closed_or_how_long() {
        let gate = RateGate::new(limits(10, 100), Arc::new(ServerClock::new()));
        assert!(gate.try_acquire(10, 0, 100).is_ok());
        assert!(matches!(gate.try_acquire(10, 0, 100), Err(Denied::Wait(d)) if d > Duration::ZERO));
        gate.close();
        assert!(matches!(gate.try_acquire(1, 0, 100), Err(Denied::Closed)));
    }

    /// Shrunk cases the property below found (issue 12).
    #[test]
    fn a_huge_usage_header_holds_instead_of_overflowing() {
        let mut b = Budget::new(vec![RateLimit { kind: LimitKind::Weight, interval_ms: 1000, limit: 1 }]);
        b.observe_header(Now::at(0), "X-MBX-USED-WEIGHT-1S", "18446744073709551615");
        // `used + amount` overflowed: a panic in debug, a wrap to "admitted" in release.
        assert_eq!(b.check(Now::at(0), 1, 0), Err(Hold::Budget { wait_ms: 1000 }));
    }

    #[test]
    fn a_server_clock_stepping_back_does_not_forget_what_was_spent() {
        let mut b = Budget::new(vec![RateLimit { kind: LimitKind::Weight, interval_ms: 1000, limit: 1 }]);
        // Spent the budget at 1999 ms; a resync moves the server clock to 2000, a weight-0
        // request rolls the window, then the offset moves back to 1999.
        b.commit(Now::at(1_999), 1, 0);
        b.commit(Now::at(2_000), 0, 0);
        b.commit(Now::at(1_999), 1, 0);
        // Stepping back used to start a fresh window at 1999, and forward again another at
        // 2000: the weight spent at "1999" after the step was forgotten.
        assert!(b.check(Now::at(2_000), 1, 0).is_err());
    }

    /// The budget against a small model (issue 12): what the model knows was spent in each
    /// window is a lower bound on what the exchange counts, so an admitted request must fit
    /// under it, and every hold the model knows of must have passed.
    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            Request {
                weight: u64,
                orders: u64,
            },
            Header {
                limit: usize,
                value: u64,
            },
            TooMany {
                retry_after_ms: Option<i64>,
                orders_only: bool,
            },
            Banned {
                retry_after_ms: Option<i64>,
            },
            Advance {
                ms: i64,
            },
            /// The server-time offset is resynced: the server clock jumps, the monotonic does not.
            Offset {
                delta_ms: i64,
            },
        }

        fn limit() -> impl Strategy<Value = RateLimit> {
            prop_oneof![
                (prop::sample::select(vec![1_000i64, 10_000, 60_000]), 1u64..300)
                    .prop_map(|(interval_ms, limit)| RateLimit { kind: LimitKind::Weight, interval_ms, limit }),
                (prop::sample::select(vec![10_000i64, 60_000, 86_400_000]), 1u64..50)
                    .prop_map(|(interval_ms, limit)| RateLimit { kind: LimitKind::Orders, interval_ms, limit }),
                (1u64..100).prop_map(|limit| RateLimit { kind: LimitKind::Raw, interval_ms: 60_000, limit }),
            ]
        }

        fn step() -> impl Strategy<Value = Step> {
            let retry = prop::option::of(prop_oneof![0i64..120_000, Just(-5), Just(i64::MAX / 4)]);
            prop_oneof![
                6 => (prop_oneof![0u64..40, 100u64..400], 0u64..3).prop_map(|(weight, orders)| Step::Request { weight, orders }),
                2 => (0usize..4, prop_oneof![0u64..400, Just(u64::MAX), Just(u64::MAX / 2)])
                    .prop_map(|(limit, value)| Step::Header { limit, value }),
                1 => (retry.clone(), any::<bool>()).prop_map(|(retry_after_ms, orders_only)| Step::TooMany { retry_after_ms, orders_only }),
                1 => retry.prop_map(|retry_after_ms| Step::Banned { retry_after_ms }),
                3 => prop_oneof![0i64..2_000, 0i64..70_000].prop_map(|ms| Step::Advance { ms }),
                1 => (-3_000i64..3_000).prop_map(|delta_ms| Step::Offset { delta_ms }),
            ]
        }

        /// What the model knows: per limit, per window index, the usage lower bound; and holds.
        struct Model {
            limits: Vec<RateLimit>,
            used: Vec<std::collections::HashMap<i64, u128>>,
            blocked_until: i64,
            orders_blocked_until: i64,
            banned_until: i64,
        }

        impl Model {
            fn amount(l: &RateLimit, weight: u64, orders: u64) -> u64 {
                match l.kind {
                    LimitKind::Weight => weight,
                    LimitKind::Orders => orders,
                    LimitKind::Raw => 1,
                }
            }

            fn budget(l: &RateLimit) -> u128 {
                (l.limit as u128 * 80 / 100).max(1)
            }

            /// From `server_ms` to the end of the newest window seen (`high`'s).
            fn next_window(l: &RateLimit, high: i64, server_ms: i64) -> i64 {
                (high.div_euclid(l.interval_ms) + 1) * l.interval_ms - server_ms
            }
        }

        proptest! {
            #![proptest_config(crate::proptest_config(256))]

            #[test]
            fn never_admits_past_a_limit_or_a_hold_and_never_waits_longer_than_needed(
                limits in prop::collection::vec(limit(), 1..4),
                start in 0i64..1_000_000_000_000,
                steps in prop::collection::vec(step(), 1..80),
            ) {
                let mut b = Budget::new(limits.clone());
                let mut m = Model {
                    used: vec![Default::default(); limits.len()],
                    limits,
                    blocked_until: 0,
                    orders_blocked_until: 0,
                    banned_until: 0,
                };
                let (mut mono, mut offset) = (start, 0i64);
                // The exchange's clock never goes back, though our estimate of it may: the model
                // counts in the newest window seen.
                // Per limiter, the newest time the budget counted at.
                let mut high = vec![i64::MIN; m.limits.len()];
                for step in steps {
                    let now = Now { server_ms: mono + offset, mono_ms: mono };
                    let newest = |h: i64| h.max(now.server_ms);
                    match step {
                        Step::Request { weight, orders } => match b.check(now, weight, orders) {
                            Ok(()) => {
                                prop_assert!(mono >= m.banned_until && mono >= m.blocked_until, "admitted inside a hold");
                                prop_assert!(orders == 0 || mono >= m.orders_blocked_until, "order admitted inside a hold");
                                for ((l, used), h) in m.limits.iter().zip(&mut m.used).zip(&mut high) {
                                    *h = newest(*h); // a commit counts in every limiter
                                    let amount = Model::amount(l, weight, orders) as u128;
                                    let u = used.entry(h.div_euclid(l.interval_ms)).or_default();
                                    // An empty window takes one request of any size (else it never goes).
                                    prop_assert!(
                                        amount == 0 || *u == 0 || *u + amount <= Model::budget(l),
                                        "{:?}: {} used + {} is over the budget {}", l, u, amount, Model::budget(l)
                                    );
                                    *u += amount;
                                }
                                b.commit(now, weight, orders);
                            }
                            Err(hold) => {
                                let wait = hold.wait_ms();
                                prop_assert!(wait > 0);
                                // Not longer than needed: one ms before the end it still holds.
                                let before = Now { server_ms: now.server_ms + wait - 1, mono_ms: mono + wait - 1 };
                                prop_assert!(b.check(before, weight, orders).is_err(), "{:?} was longer than needed", hold);
                                match hold {
                                    Hold::Budget { .. } => {
                                        let longest = m.limits.iter().zip(&high).map(|(l, h)| Model::next_window(l, newest(*h), now.server_ms)).max();
                                        prop_assert!(Some(wait) <= longest);
                                        let after = Now { server_ms: now.server_ms + wait, mono_ms: mono + wait };
                                        prop_assert_eq!(b.check(after, weight, orders), Ok(()));
                                    }
                                    Hold::Banned { .. } => prop_assert_eq!(mono + wait, m.banned_until),
                                    Hold::RateLimited { .. } => {
                                        prop_assert!(mono + wait == m.blocked_until || mono + wait == m.orders_blocked_until)
                                    }
                                }
                            }
                        },
                        Step::Header { limit, value } => {
                            let Some(l) = m.limits.get(limit) else { continue };
                            if l.kind == LimitKind::Raw {
                                continue;
                            }
                            let prefix = if l.kind == LimitKind::Weight { "X-MBX-USED-WEIGHT-" } else { "X-MBX-ORDER-COUNT-" };
                            let name = format!("{prefix}{}", l.header_suffix());
                            b.observe_header(now, &name, &value.to_string());
                            // Every limiter with that header (a duplicate limit shares it).
                            for ((l2, used), h) in m.limits.iter().zip(&mut m.used).zip(&mut high) {
                                if l2.kind == l.kind && l2.interval_ms == l.interval_ms {
                                    *h = newest(*h);
                                    let u = used.entry(h.div_euclid(l2.interval_ms)).or_default();
                                    *u = (*u).max(value as u128);
                                }
                            }
                        }
                        Step::TooMany { retry_after_ms, orders_only } => {
                            b.on_429(now, retry_after_ms, orders_only);
                            let kind = if orders_only { LimitKind::Orders } else { LimitKind::Weight };
                            let fallback = m.limits.iter().zip(&high).filter(|(l, _)| l.kind == kind).map(|(l, h)| Model::next_window(l, newest(*h), now.server_ms)).min().unwrap_or(60_000);
                            let until = mono + retry_after_ms.unwrap_or(fallback).clamp(0, MAX_HOLD_MS);
                            let hold = if orders_only { &mut m.orders_blocked_until } else { &mut m.blocked_until };
                            *hold = (*hold).max(until);
                        }
                        Step::Banned { retry_after_ms } => {
                            b.on_418(now, retry_after_ms);
                            m.banned_until = m.banned_until.max(mono + retry_after_ms.unwrap_or(120_000).clamp(0, MAX_HOLD_MS));
                        }
                        Step::Advance { ms } => mono += ms,
                        Step::Offset { delta_ms } => offset += delta_ms,
                    }
                }
            }
        }
    }
}
