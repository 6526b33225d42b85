//! The exchange's clock as seen from here, shared by every thread that signs or schedules by
//! server time; a leaf, so that the rate gate and the REST client below it both read one clock.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Local wall-clock milliseconds since the epoch.
pub fn local_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The exchange's clock as seen from here: local time plus a measured offset. Shared by every
/// thread; reads are lock-free.
#[derive(Debug, Default)]
pub struct ServerClock {
    offset_ms: AtomicI64,
    synced: AtomicBool,
    /// Local ms of the last sync, so a stale offset can be re-measured.
    synced_at_ms: AtomicI64,
}

/// One `GET /api/v3/time` round trip, all in ms.
#[derive(Debug, Clone, Copy)]
pub struct TimeSample {
    pub sent_local: i64,
    pub server: i64,
    pub received_local: i64,
}

impl ServerClock {
    pub fn new() -> ServerClock {
        ServerClock::default()
    }

    pub fn now_ms(&self) -> i64 {
        local_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub fn set_offset(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
        self.synced.store(true, Ordering::Relaxed);
        self.synced_at_ms.store(local_ms(), Ordering::Relaxed);
    }

    /// Never synced, or synced longer ago than `max_age`.
    pub fn is_stale(&self, max_age: std::time::Duration) -> bool {
        !self.is_synced() || local_ms() - self.synced_at_ms.load(Ordering::Relaxed) > max_age.as_millis() as i64
    }

    /// The offset from the sample with the shortest round trip: the server read its clock
    /// somewhere inside the trip, and the midpoint is the best guess the shortest trip allows.
    pub fn estimate(samples: &[TimeSample]) -> Option<i64> {
        let best = samples
            .iter()
            .filter(|s| s.received_local >= s.sent_local)
            .min_by_key(|s| s.received_local - s.sent_local)?;
        Some(best.server - (best.sent_local + best.received_local) / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_comes_from_the_fastest_round_trip() {
        let samples = [
            TimeSample { sent_local: 1000, server: 6000, received_local: 1400 }, // rtt 400
            TimeSample { sent_local: 2000, server: 7010, received_local: 2020 }, // rtt 20, mid 2010
            TimeSample { sent_local: 3000, server: 0, received_local: 2990 },    // clock stepped back: ignored
        ];
        assert_eq!(ServerClock::estimate(&samples), Some(5000));
        assert_eq!(ServerClock::estimate(&[]), None);
        let clock = ServerClock::new();
        assert!(!clock.is_synced());
        clock.set_offset(-2500);
        let diff = local_ms() - 2500 - clock.now_ms();
        assert!(diff.abs() < 1000, "{diff}");
    }
}
