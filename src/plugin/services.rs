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

pub(super) fn parse_side(v: u8) -> Result<Side, i32> {
    match v {
        abi::SIDE_BUY => Ok(Side::Buy),
        abi::SIDE_SELL => Ok(Side::Sell),
        _ => Err(abi::STATUS_REFUSED),
    }
}

impl HostServices for Services {
    fn submit(&self, i: IntentIn<'_>) -> Result<u64, i32> {
        let refused = abi::STATUS_REFUSED;
        let dec = |s: &str| s.parse::<Decimal>().map_err(|_| refused);
        let order = || {
            if i.order_id != 0 {
                Ok(OrderRef::Id(i.order_id))
            } else if !i.client_order_id.is_empty() {
                Ok(OrderRef::ClientId(i.client_order_id.to_string()))
            } else {
                Err(refused)
            }
        };
        let symbol = i.symbol.to_string();
        let intent = match i.kind {
            abi::INTENT_PLACE => {
                Intent::Place { symbol, side: parse_side(i.side)?, price: dec(i.price)?, qty: dec(i.qty)? }
            }
            abi::INTENT_CANCEL => Intent::Cancel { symbol, order: order()? },
            abi::INTENT_CANCEL_ALL => Intent::CancelAll { symbol },
            abi::INTENT_REPLACE => Intent::Replace {
                symbol,
                order: order()?,
                side: parse_side(i.side)?,
                price: dec(i.price)?,
                qty: dec(i.qty)?,
            },
            _ => return Err(refused),
        };
        self.handle.submit(intent).map_err(|e| {
            log::debug!("plugin {}: intent refused: {e}", self.name);
            match e {
                crate::executor::SubmitError::Busy if self.abi_minor.load(Ordering::Relaxed) >= 3 => abi::STATUS_BUSY,
                _ => refused,
            }
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
