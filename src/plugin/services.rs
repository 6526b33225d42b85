//! The host functions a plugin calls (`submit`, `log`, `rules`), from its thread or, for an
//! isolated one, as frames its process sends.

use super::ffi::{HostServices, IntentIn};
use crate::decimal::Decimal;
use crate::executor::{Intent, StrategyHandle};
use crate::model::{OrderRef, Side};
use crate::rules::LiveRules;
use binance_syncd_plugin::abi;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// What the plugin's host callbacks reach.
pub(super) struct Services {
    pub(super) name: String,
    pub(super) handle: StrategyHandle,
    pub(super) rules: LiveRules,
    /// The plugin's declared ABI minor, once loaded: whether it knows `STATUS_BUSY`.
    pub(super) abi_minor: Arc<AtomicU32>,
}

/// The status `submit` answers for `e`. "Try again from a later call" is BUSY, whatever holds
/// the intent back: the plugin's own budget, the executor's queue (full while the daemon is
/// busy or held by a 429), a pause while the plugin is over its stall limit. Only a handle
/// that is closed (the plugin stopping, the daemon shutting down) is REFUSED, as a malformed
/// intent is: a plugin must be able to tell "later" from "never" (docs/plugin-protocol.md,
/// back-pressure). Below minor 3 a plugin does not know BUSY: REFUSED for all.
pub(super) fn refusal_status(e: &crate::executor::SubmitError, abi_minor: u32) -> i32 {
    use crate::executor::SubmitError;
    match e {
        SubmitError::Busy | SubmitError::Full | SubmitError::Paused if abi_minor >= 3 => abi::STATUS_BUSY,
        _ => abi::STATUS_REFUSED,
    }
}

pub(super) fn parse_side(v: u8) -> Result<Side, i32> {
    match v {
        abi::SIDE_BUY => Ok(Side::Buy),
        abi::SIDE_SELL => Ok(Side::Sell),
        _ => Err(abi::STATUS_REFUSED),
    }
}

/// The intent `i` says, or why the daemon refuses it at once (`submit` answers
/// `STATUS_REFUSED`): an unknown kind, a side or decimal it cannot read, no order named. The
/// conformance run judges a plugin's intents with it too.
pub(super) fn intent_of(i: &IntentIn<'_>) -> Result<Intent, String> {
    let dec = |what: &str, s: &str| {
        s.parse::<Decimal>().map_err(|_| format!("with {what} {:?}: not a decimal", super::proto::cut(s, 40)))
    };
    let side = || parse_side(i.side).map_err(|_| format!("with side {}: sides are 0 (buy) and 1 (sell)", i.side));
    let order = || {
        if i.order_id != 0 {
            Ok(OrderRef::Id(i.order_id))
        } else if !i.client_order_id.is_empty() {
            Ok(OrderRef::ClientId(i.client_order_id.to_string()))
        } else {
            Err("naming no order: a cancel or replace needs order_id or client_order_id".to_string())
        }
    };
    let symbol = i.symbol.to_string();
    Ok(match i.kind {
        abi::INTENT_PLACE => {
            Intent::Place { symbol, side: side()?, price: dec("price", i.price)?, qty: dec("qty", i.qty)? }
        }
        abi::INTENT_CANCEL => Intent::Cancel { symbol, order: order()? },
        abi::INTENT_CANCEL_ALL => Intent::CancelAll { symbol },
        abi::INTENT_REPLACE => Intent::Replace {
            symbol,
            order: order()?,
            side: side()?,
            price: dec("price", i.price)?,
            qty: dec("qty", i.qty)?,
        },
        kind => return Err(format!("of kind {kind}: kinds are 0 (place) to 3 (replace)")),
    })
}

impl HostServices for Services {
    fn submit(&self, i: IntentIn<'_>) -> Result<u64, i32> {
        let intent = intent_of(&i).map_err(|why| {
            log::debug!("plugin {}: intent refused: {why}", self.name);
            abi::STATUS_REFUSED
        })?;
        self.handle.submit(intent).map_err(|e| {
            log::debug!("plugin {}: intent refused: {e}", self.name);
            refusal_status(&e, self.abi_minor.load(Ordering::Relaxed))
        })
    }

    fn log(&self, level: i32, msg: &str) {
        let level = match level {
            abi::LOG_ERROR => log::Level::Error,
            abi::LOG_WARN => log::Level::Warn,
            abi::LOG_INFO => log::Level::Info,
            _ => log::Level::Debug,
        };
        // Bounded: a plugin must not be able to flood the daemon's log with one call.
        let msg: String = msg.chars().take(2000).collect();
        log::log!(target: "binance_syncd::plugin", level, "plugin {}: {msg}", self.name);
    }

    fn rules(&self, symbol: &str) -> Option<String> {
        self.rules.snapshot().raw_symbols.get(symbol).map(|v| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::SubmitError;

    #[test]
    fn later_is_busy_and_never_is_refused_from_minor_3() {
        for e in [SubmitError::Busy, SubmitError::Full, SubmitError::Paused] {
            assert_eq!(refusal_status(&e, 3), abi::STATUS_BUSY, "{e}");
            assert_eq!(refusal_status(&e, 5), abi::STATUS_BUSY, "{e}");
            assert_eq!(refusal_status(&e, 2), abi::STATUS_REFUSED, "{e}: minor 2 knows no BUSY");
        }
        assert_eq!(refusal_status(&SubmitError::Closed, 5), abi::STATUS_REFUSED);
    }
}
