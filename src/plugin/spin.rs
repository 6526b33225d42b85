//! Whether a plugin thread, told that a fill is being written (`FillTap::expect`), stays awake
//! for it (spinning, up to `SYNCD_PLUGIN_SPIN_US`) or sleeps until it is durable.
//!
//! Staying awake only pays when the line lands within the budget: a write that takes longer
//! (an `fdatasync` on a slow disk) burns the whole budget and then pays the wake-up anyway.
//! So the thread remembers how long the last few announced lines took to become durable,
//! counted from when it got the heads-up (what a spin started then would have waited), whether
//! it was awake for them or not, and stays awake only while at least half of them came within
//! the budget; once writes speed up again, the waits it keeps recording turn it back on.

use std::time::{Duration, Instant};

/// Waits remembered: a few, so a change of disk speed is followed within a few fills.
const KEPT: usize = 8;
/// Below this many waits remembered, the thread stays awake (nothing says it would not pay).
const TRUSTED: usize = 4;
/// A heads-up older than this was not for the line now delivered (its trade was a duplicate,
/// or its line came through the file): no write takes this long while fills flow, and a
/// disk that slow is not waited for awake anyway.
const STALE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct SpinPolicy {
    budget: Duration,
    waits: [Duration; KEPT],
    recorded: usize,
    /// When the heads-up for the line still awaited came (the first of several).
    announced: Option<Instant>,
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
    /// Heads-ups found still queued after their line was delivered (the thread woke after
    /// the line was there, and took the line first), dropped.
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
    pub fn announced(&mut self, at: Instant) -> bool {
        match self.announced {
            Some(earlier) if at.saturating_duration_since(earlier) < STALE => {}
            _ => self.announced = Some(at),
        }
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

    /// A line that became durable at `published` was delivered from the channel: the wait for
    /// it, if a heads-up was awaiting one, is what the next heads-ups are judged by.
    ///
    /// Returns whether a heads-up still queued now is this line's (none was awaiting it: the
    /// thread took the line before its heads-up, both being ready when it woke). The caller
    /// drops that one, or the thread would stay awake for a line it already has; when one was
    /// awaiting, a queued heads-up is the next line's and stays.
    pub fn delivered(&mut self, published: Option<Instant>) -> bool {
        let Some(announced) = self.announced.take() else { return true };
        let Some(published) = published else { return false };
        let wait = published.saturating_duration_since(announced);
        if wait < STALE {
            self.waits[self.recorded % KEPT] = wait;
            self.recorded += 1;
        }
        false
    }

    /// Lines were delivered from the file (the thread fell behind): an awaited heads-up was
    /// for one of them, or for a line not yet read; neither says how long a write takes.
    pub fn forget(&mut self) {
        self.announced = None;
    }

    /// A queued heads-up was dropped (see [`delivered`](Self::delivered)).
    pub fn late(&mut self) {
        self.counts.late += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(p: &mut SpinPolicy, t0: Instant, wait: Duration, n: usize) {
        for _ in 0..n {
            p.announced(t0);
            p.delivered(Some(t0 + wait));
        }
    }

    #[test]
    fn it_stays_awake_until_lines_are_seen_to_take_longer_than_the_budget_and_comes_back_when_they_speed_up() {
        let mut p = SpinPolicy::new(Duration::from_millis(1));
        let t0 = Instant::now();
        assert!(p.announced(t0), "no waits known yet: awake");
        p.delivered(Some(t0 + Duration::from_millis(3)));
        feed(&mut p, t0, Duration::from_millis(3), 7);
        assert!(!p.announced(t0), "eight slow writes: asleep");
        p.delivered(Some(t0 + Duration::from_micros(200)));
        feed(&mut p, t0, Duration::from_micros(200), 2);
        assert!(!p.announced(t0), "three fast among eight: still asleep");
        p.delivered(Some(t0 + Duration::from_micros(200)));
        assert!(p.announced(t0), "four fast among eight: awake again");
        assert_eq!((p.counts.spins, p.counts.skips), (5, 8));
    }

    #[test]
    fn a_queued_heads_up_is_the_delivered_lines_only_when_none_was_awaiting_it() {
        let mut p = SpinPolicy::new(Duration::from_millis(1));
        let t0 = Instant::now();
        assert!(p.delivered(Some(t0)), "no heads-up taken before the line: a queued one is its");
        p.announced(t0);
        assert!(
            !p.delivered(Some(t0 + Duration::from_micros(300))),
            "its heads-up was taken: a queued one is the next's"
        );
        p.announced(t0);
        assert!(!p.delivered(None), "the same when its publish time is not known");
        assert!(p.delivered(Some(t0)), "and nothing is awaited after either");
    }

    #[test]
    fn a_heads_up_that_no_line_followed_teaches_nothing() {
        let mut p = SpinPolicy::new(Duration::from_millis(1));
        let t0 = Instant::now();
        // A duplicate's heads-up, then a real one 5 s later: the wait runs from the real one.
        p.announced(t0);
        p.announced(t0 + Duration::from_secs(5));
        p.delivered(Some(t0 + Duration::from_secs(5) + Duration::from_micros(400)));
        assert_eq!(&p.waits[..p.recorded], [Duration::from_micros(400)]);
        // Several heads-ups close together: the first counts.
        p.announced(t0 + Duration::from_secs(10));
        p.announced(t0 + Duration::from_secs(10) + Duration::from_millis(5));
        p.delivered(Some(t0 + Duration::from_secs(10) + Duration::from_millis(6)));
        assert_eq!(p.waits[1], Duration::from_millis(6));
        // A line delivered long after its heads-up, or after lines read from the file: no wait.
        p.announced(t0 + Duration::from_secs(20));
        p.delivered(Some(t0 + Duration::from_secs(30)));
        p.announced(t0 + Duration::from_secs(40));
        p.forget();
        p.delivered(Some(t0 + Duration::from_secs(40) + Duration::from_micros(1)));
        assert_eq!(p.recorded, 2);
    }
}
