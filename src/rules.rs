//! The one owner of the live exchange rules.
//!
//! `exchangeInfo` for the configured symbols is read at start, re-read every
//! `SYNCD_RULES_REFRESH_S` and right after the exchange rejected an order for a filter or
//! precision (`-1013`, `-1111`: our copy may be out of date). Readers take a cheap snapshot
//! (an `Arc`), so a refresh never blocks them and never changes rules under a check in
//! progress. A refresh that fails keeps the last good rules.

use crate::filters::ExchangeRules;
use crate::lock::RwLockAnyway;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Shared, read-mostly rules. Clones share the same rules.
#[derive(Debug, Clone)]
pub struct LiveRules {
    current: Arc<RwLock<Arc<ExchangeRules>>>,
    stale: Arc<AtomicBool>,
}

impl LiveRules {
    pub fn new(rules: ExchangeRules) -> LiveRules {
        LiveRules { current: Arc::new(RwLock::new(Arc::new(rules))), stale: Arc::new(AtomicBool::new(false)) }
    }

    /// The rules as they are now; later refreshes do not change this copy.
    pub fn snapshot(&self) -> Arc<ExchangeRules> {
        self.current.read_anyway().clone()
    }

    /// Installs a fresh read and clears a pending refresh request.
    pub fn install(&self, rules: ExchangeRules) {
        *self.current.write_anyway() = Arc::new(rules);
        self.stale.store(false, Ordering::SeqCst);
    }

    /// Asks the owner to re-read the rules as soon as it can.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_survives_a_refresh_and_a_refresh_clears_the_request() {
        let live = LiveRules::new(ExchangeRules::default());
        let before = live.snapshot();
        live.mark_stale();
        assert!(live.is_stale());
        let mut next = ExchangeRules::default();
        next.exchange_filters.push(crate::filters::Filter::MaxNumOrders { max: 3 });
        live.install(next);
        assert!(!live.is_stale());
        assert!(before.exchange_filters.is_empty(), "the old snapshot is unchanged");
        assert_eq!(live.snapshot().exchange_filters.len(), 1);
    }
}
