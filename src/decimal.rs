//! Exact decimals: the plugin SDK's [`Decimal`], so the daemon and every Rust strategy share one
//! type (its rules and tests live in `plugins/sdk/src/decimal.rs`).

pub use binance_syncd_plugin::decimal::{Decimal, ParseDecimalError, MAX_SCALE};
