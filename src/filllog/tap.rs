//! The fill log's followers: what the writer offers each durable line to.

use super::*;

/// The fill log's followers (plugins): every line the writer makes durable is offered to each
/// with `try_send`, and [`durable`](Self::durable) says how far the log is. A follower whose
/// channel was full sees a gap in the sequence numbers (or `durable` ahead of it) and reads
/// what it missed with a [`Reader`]: the writer never waits for a follower, and no follower
/// misses a line.
#[derive(Debug, Clone, Default)]
pub struct FillTap {
    pub(super) followers: std::sync::Arc<std::sync::Mutex<Vec<crossbeam_channel::Sender<FillRecord>>>>,
    /// Woken as a fill is about to be written, so a follower is on a CPU when it lands.
    pub(super) heads_up: std::sync::Arc<std::sync::Mutex<Vec<crossbeam_channel::Sender<()>>>>,
    pub(super) durable: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// When the last lines became durable (bounded), for latency figures and the status line.
    /// Both clocks: the wall clock for figures against other processes' stamps, the monotonic
    /// one for waits measured inside the daemon (a clock step must not look like a slow disk).
    pub(super) published: std::sync::Arc<std::sync::Mutex<Published>>,
}

/// `(seq, wall clock, monotonic clock)` of the last lines made durable.
pub(super) type Published = std::collections::VecDeque<(u64, std::time::SystemTime, std::time::Instant)>;

/// Publish times kept by a [`FillTap`].
pub(super) const PUBLISHED_KEPT: usize = 4096;

impl FillTap {
    /// A new follower with room for `capacity` lines before it must read the file.
    pub fn follow(&self, capacity: usize) -> crossbeam_channel::Receiver<FillRecord> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        self.followers.lock_anyway().push(tx);
        rx
    }

    /// A signal, sent before a fill is written, that a line is on its way: a follower that
    /// waits for it spinning instead of asleep does not pay the wake-up (tens to hundreds of
    /// µs on a small VM) after the line is durable, only while it is being written.
    pub fn heads_up(&self) -> crossbeam_channel::Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.heads_up.lock_anyway().push(tx);
        rx
    }

    /// Called when a fill is on its way to the writer (the stream, on a trade report; it may
    /// still turn out to be a duplicate: a follower's wait for it is bounded).
    pub fn expect(&self) {
        let mut heads_up = self.heads_up.lock_anyway();
        heads_up.retain(|h| !matches!(h.try_send(()), Err(crossbeam_channel::TrySendError::Disconnected(_))));
    }

    /// The sequence number of the last durable line.
    pub fn durable(&self) -> u64 {
        self.durable.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called by the writer once `fill` (numbered) is durable.
    pub fn publish(&self, fill: &FillRecord) {
        {
            let mut published = self.published.lock_anyway();
            if published.len() >= PUBLISHED_KEPT {
                published.pop_front();
            }
            published.push_back((fill.seq, std::time::SystemTime::now(), std::time::Instant::now()));
        }
        // Followers first, the durable mark after: a follower that wakes in between must find
        // the line in its channel, not take the slow road through the file for it.
        let mut followers = self.followers.lock_anyway();
        followers
            .retain(|f| !matches!(f.try_send(fill.clone()), Err(crossbeam_channel::TrySendError::Disconnected(_))));
        drop(followers);
        self.durable.fetch_max(fill.seq, std::sync::atomic::Ordering::Release);
    }

    /// When line `seq` became durable, if it was one of the last few thousand.
    pub fn published_at(&self, seq: u64) -> Option<std::time::SystemTime> {
        self.published(seq).map(|(wall, _)| wall)
    }

    /// [`published_at`](Self::published_at) on the monotonic clock.
    pub fn published_instant(&self, seq: u64) -> Option<std::time::Instant> {
        self.published(seq).map(|(_, mono)| mono)
    }

    pub(super) fn published(&self, seq: u64) -> Option<(std::time::SystemTime, std::time::Instant)> {
        let published = self.published.lock_anyway();
        published.iter().rev().find(|(s, _, _)| *s == seq).map(|&(_, wall, mono)| (wall, mono))
    }

    /// Where the log stood when it was opened.
    pub fn set_durable(&self, seq: u64) {
        self.durable.fetch_max(seq, std::sync::atomic::Ordering::Release);
    }
}
