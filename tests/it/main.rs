//! One integration-test binary, a module per area.

mod conformance;
mod docs;
mod exec_plugins;
mod executor;
mod faults;
mod hardening;
mod isolation;
mod market;
mod market_feed;
mod metrics;
mod mock;
mod ops;
mod paper_rest;
mod paper_stream;
mod plugins;
mod process;
mod py_plugins;
mod python;
mod reconcile;
mod rest;
mod structure;
mod sync;
mod tls;
mod util;
