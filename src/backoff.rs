//! Reconnect pacing: exponential backoff with jitter, and a hard cap on attempts per window.
//!
//! Pure: callers pass `now`, so the policy is tested without sleeping. The cap exists apart from
//! the backoff because a backoff that resets after a "healthy" connection could otherwise let a
//! flapping stream reconnect in a tight loop; the cap holds whatever the backoff says.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// Exponential backoff: `min`, doubling to `max`, with equal jitter (half fixed, half random, so
/// a herd of clients spreads out and no delay collapses to zero). It resets once a connection has
/// stayed up for `reset_after`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    reset_after: Duration,
    attempt: u32,
    up_since: Option<Instant>,
    seed: std::collections::hash_map::RandomState,
    draws: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, reset_after: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            reset_after,
            attempt: 0,
            up_since: None,
            seed: std::collections::hash_map::RandomState::new(),
            draws: 0,
        }
    }

    /// A random fraction in [0, 1) as parts per 2^32, from the process's random hash keys.
    fn jitter(&mut self) -> u64 {
        self.draws += 1;
        let mut h = self.seed.build_hasher();
        h.write_u64(self.draws);
        h.finish() >> 32
    }

    /// The delay before the next attempt after a failure or a lost connection.
    pub fn next_delay(&mut self, now: Instant) -> Duration {
        if let Some(since) = self.up_since.take() {
            if now.duration_since(since) >= self.reset_after {
                self.attempt = 0;
            }
        }
        let ceiling = self.min.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let random = (half.as_nanos() as u64).saturating_mul(self.jitter()) >> 32;
        half + Duration::from_nanos(random)
    }

    /// A connection succeeded; if it lasts `reset_after`, the next delay starts from `min`.
    pub fn connected(&mut self, now: Instant) {
        self.up_since = Some(now);
    }
}

/// At most `limit` events in any sliding `window`.
#[derive(Debug, Clone)]
pub struct WindowCap {
    limit: usize,
    window: Duration,
    times: VecDeque<Instant>,
}

impl WindowCap {
    pub fn new(limit: usize, window: Duration) -> WindowCap {
        WindowCap { limit: limit.max(1), window, times: VecDeque::new() }
    }

    /// How long to wait before one more event may happen (zero: now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        while self.times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            self.times.pop_front();
        }
        if self.times.len() < self.limit {
            return Duration::ZERO;
        }
        self.times.front().map(|t| (*t + self.window).saturating_duration_since(now)).unwrap_or(Duration::ZERO)
    }

    pub fn record(&mut self, now: Instant) {
        self.times.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_never_below_half() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(8), Duration::from_secs(60));
        let now = Instant::now();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay(now)).collect();
        let ceilings = [200u64, 400, 800, 1600, 3200, 6400, 8000, 8000, 8000, 8000];
        for (d, c) in delays.iter().zip(ceilings) {
            let c = Duration::from_millis(c);
            assert!(*d >= c / 2 && *d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
        }
    }

    #[test]
    fn resets_only_after_a_healthy_spell() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(8), Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..5 {
            b.next_delay(t0);
        }
        b.connected(t0);
        assert!(b.next_delay(t0 + Duration::from_secs(1)) >= Duration::from_millis(800), "a short spell keeps growing");
        b.connected(t0);
        assert!(b.next_delay(t0 + Duration::from_secs(61)) <= Duration::from_millis(100));
    }

    #[test]
    fn window_cap_holds_the_sixteenth_attempt() {
        let mut cap = WindowCap::new(15, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..15 {
            assert_eq!(cap.wait(t0 + Duration::from_millis(i)), Duration::ZERO);
            cap.record(t0 + Duration::from_millis(i));
        }
        assert_eq!(cap.wait(t0 + Duration::from_secs(1)), Duration::from_secs(9));
        assert_eq!(cap.wait(t0 + Duration::from_secs(10)), Duration::ZERO);
    }
}
