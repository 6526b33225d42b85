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

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(crate::proptest_config(256))]

            /// Every delay is inside its jitter bounds [ceiling/2, ceiling], where the ceiling is
            /// min·2^attempt capped at max; so no delay ever exceeds max. Attempts count from the
            /// last healthy spell (a connection that stayed up `reset_after`).
            #[test]
            fn delays_stay_inside_the_jitter_bounds_and_under_the_max(
                min_ms in 1u64..5_000,
                extra_ms in 0u64..120_000,
                reset_s in 1u64..120,
                steps in prop::collection::vec((0u64..200_000, any::<bool>()), 1..60),
            ) {
                let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(min_ms + extra_ms));
                let reset_after = Duration::from_secs(reset_s);
                let mut b = Backoff::new(min, max, reset_after);
                let mut now = Instant::now();
                let mut attempt = 0u32; // the model's count
                let mut up_since = None;
                for (gap_ms, connects) in steps {
                    now += Duration::from_millis(gap_ms);
                    if connects {
                        b.connected(now);
                        up_since = Some(now);
                        continue;
                    }
                    if let Some(since) = up_since.take() {
                        if now - since >= reset_after {
                            attempt = 0;
                        }
                    }
                    let ceiling = min.saturating_mul(1u32 << attempt.min(20)).min(max);
                    attempt += 1;
                    let d = b.next_delay(now);
                    prop_assert!(d <= max, "{:?} above max {:?}", d, max);
                    prop_assert!(d >= ceiling / 2 && d <= ceiling, "{:?} outside [{:?}, {:?}]", d, ceiling / 2, ceiling);
                }
            }

            /// A caller that waits what `wait` says and records only when it says zero never has
            /// more than `limit` events in any window, and never waits longer than the window
            /// requires: a moment before the wait ends it is still full, at its end it is not.
            #[test]
            fn window_cap_never_passes_the_limit_nor_waits_too_long(
                limit in 1usize..20,
                window_ms in 1u64..20_000,
                gaps in prop::collection::vec(0u64..5_000, 1..120),
            ) {
                let window = Duration::from_millis(window_ms);
                let mut cap = WindowCap::new(limit, window);
                let t0 = Instant::now();
                let mut now = t0;
                let mut events: Vec<Instant> = Vec::new();
                for gap in gaps {
                    now += Duration::from_millis(gap);
                    let wait = cap.wait(now);
                    let in_window = |at: Instant, events: &[Instant]| {
                        events.iter().filter(|&&e| at.duration_since(e) < window).count()
                    };
                    if wait.is_zero() {
                        prop_assert!(in_window(now, &events) < limit);
                    } else {
                        prop_assert!(wait <= window, "waits {:?}, longer than the window", wait);
                        prop_assert_eq!(in_window(now + wait - Duration::from_nanos(1), &events), limit);
                        prop_assert!(in_window(now + wait, &events) < limit);
                        now += wait;
                        prop_assert_eq!(cap.wait(now), Duration::ZERO);
                    }
                    cap.record(now);
                    events.push(now);
                    let n = events.iter().filter(|&&e| now.duration_since(e) < window).count();
                    prop_assert!(n <= limit, "{} events within {:?}", n, window);
                }
            }
        }
    }
}
