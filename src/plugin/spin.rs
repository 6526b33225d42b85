//! Whether a plugin thread, told that a fill is being written (`FillTap::expect`), stays awake
//! for it (spinning, up to `SYNCD_PLUGIN_SPIN_US`) or sleeps until it is durable.
//!
//! Staying awake only pays when the line lands within the budget: a write that takes longer
//! (an `fdatasync` on a slow disk) burns the whole budget and then pays the wake-up anyway.
//! So the thread remembers how long the last few announced lines took to become durable,
//! whether it was awake for them or not, and stays awake only while most of them came within
//! the budget; once writes speed up again, the waits it keeps recording turn it back on.

use std::time::{Duration, SystemTime};

/// Waits remembered: a few, so a change of disk speed is followed within a few fills.
const KEPT: usize = 8;
/// Below this many waits remembered, the thread stays awake (nothing says it would not pay).
const TRUSTED: usize = 4;

#[derive(Debug)]
pub struct SpinPolicy {
    budget: Duration,
    waits: [Duration; KEPT],
    recorded: usize,
    /// When the heads-up for the line still awaited came (the first of several).
    announced: Option<SystemTime>,
    pub counts: SpinCounts,
}

/// What the policy did, for the status (and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpinCounts {
    /// Heads-ups the thread stayed awake for.
    pub spins: u64,
    /// Of those, the ones whose line came while it was awake.
    pub hits: u64,
    /// Heads-ups slept through because recent lines took longer than the budget.
    pub skips: u64,
    /// Heads-ups found only after their line was delivered (the thread woke late), dropped.
    pub late: u64,
}

impl SpinPolicy {
    pub fn new(budget: Duration) -> SpinPolicy {
        SpinPolicy {
            budget,
            waits: [Duration::ZERO; KEPT],
            recorded: 0,
            announced: None,
            counts: SpinCounts::default(),
        }
    }

    /// A heads-up came at `at`: true when the thread should stay awake for the line.
    pub fn announced(&mut self, at: SystemTime) -> bool {
        self.announced.get_or_insert(at);
        let kept = self.recorded.min(KEPT);
        let within = self.waits[..kept].iter().filter(|w| **w <= self.budget).count();
        let spin = kept < TRUSTED || within * 2 >= kept;
        if spin {
            self.counts.spins += 1;
        } else {
            self.counts.skips += 1;
        }
        spin
    }

    /// The thread stayed awake and the line came (`hit`) or the budget ran out.
    pub fn spun(&mut self, hit: bool) {
        if hit {
            self.counts.hits += 1;
        }
    }

    /// A heads-up was dropped after a delivery (see [`delivered`](Self::delivered)).
    pub fn late(&mut self) {
        self.counts.late += 1;
    }

    /// A line was delivered that became durable at `published`: the wait for the announced
    /// line, if one was awaited, is what the next heads-ups are judged by.
    ///
    /// A heads-up still queued behind this line was almost surely this line's (the channel
    /// is taken first when both are ready): the caller drops it, or the thread would stay
    /// awake for a line it already has.
    pub fn delivered(&mut self, published: Option<SystemTime>) {
        let Some(announced) = self.announced.take() else { return };
        let Some(published) = published else { return };
        let wait = published.duration_since(announced).unwrap_or(Duration::ZERO);
        self.waits[self.recorded % KEPT] = wait;
        self.recorded += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(p: &mut SpinPolicy, wait: Duration, n: usize) {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        for _ in 0..n {
            p.announced(t0);
            p.delivered(Some(t0 + wait));
        }
    }

    #[test]
    fn it_stays_awake_until_lines_are_seen_to_take_longer_than_the_budget_and_comes_back_when_they_speed_up() {
        let mut p = SpinPolicy::new(Duration::from_millis(1));
        let t0 = SystemTime::UNIX_EPOCH;
        assert!(p.announced(t0), "no waits known yet: awake");
        p.delivered(Some(t0 + Duration::from_millis(3)));
        feed(&mut p, Duration::from_millis(3), 7);
        assert!(!p.announced(t0), "eight slow writes: asleep");
        p.delivered(Some(t0 + Duration::from_micros(200)));
        feed(&mut p, Duration::from_micros(200), 2);
        assert!(!p.announced(t0), "three fast among eight: still asleep");
        p.delivered(Some(t0 + Duration::from_micros(200)));
        assert!(p.announced(t0), "four fast among eight: awake again");
        assert_eq!((p.counts.spins, p.counts.skips), (5, 8));
    }

    #[test]
    fn a_line_nobody_announced_or_whose_time_is_unknown_teaches_nothing() {
        let mut p = SpinPolicy::new(Duration::from_millis(1));
        for _ in 0..10 {
            p.delivered(Some(SystemTime::UNIX_EPOCH + Duration::from_secs(9)));
        }
        let t0 = SystemTime::UNIX_EPOCH;
        for _ in 0..10 {
            assert!(p.announced(t0));
            p.delivered(None);
        }
        assert_eq!(p.recorded, 0);
        // Only the first of several heads-ups before a line counts.
        p.announced(t0);
        p.announced(t0 + Duration::from_millis(5));
        p.delivered(Some(t0 + Duration::from_millis(6)));
        assert_eq!(p.waits[0], Duration::from_millis(6));
    }
}
