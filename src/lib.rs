//! binance-syncd: keeps a Binance.US spot account's fills flowing into a JSON Lines log and to
//! strategy plugins, without missing or repeating one.
//!
//! Module map (see `ARCHITECTURE.md` for threads and channels):
//!
//! | Module | Role |
//! |---|---|
//! | [`config`] | environment → validated [`config::Config`]; one message per problem |
//! | [`limits`] | per-strategy limits: read by `config`, checked by the executor; pure |
//! | [`secret`] | [`secret::Secret`]: redacted `Debug`, no `Display`, one `expose()` |
//! | [`error`] | the one [`error::Error`] enum, grouped by what the caller should do |
//! | [`exit`] | why the daemon stops, and the one mapping from error or exit reason to exit code |
//! | [`decimal`] | exact decimals for every price and quantity; no `f64` on those paths |
//! | [`model`] | domain enums: side, order type |
//! | [`wire`] | serde types spelled like Binance's JSON; no logic |
//! | [`clock`] | the exchange's clock as seen from here: a measured offset, read lock-free |
//! | [`rest`] | blocking REST client: signing, server clock, usage headers, error mapping |
//! | [`ratelimit`] | the process-wide gate: weight and order budgets, 429/418 holds |
//! | [`backoff`] | reconnect pacing: exponential backoff with jitter, a cap per window; pure |
//! | [`filters`] | `exchangeInfo` rules and pure check/round functions (the paper exchange has its own reading) |
//! | [`rules`] | the one owner of the live exchange rules: read at start, refreshed, snapshots |
//! | [`market`] | market data: the local order book kept as Binance documents it ([`market::book`]); pure so far |
//! | [`filllog`] | the append-only fill log with torn-tail repair |
//! | [`tls`] | the one TLS client configuration (roots, versions, provider) for REST and the stream |
//! | [`fills`] | `binance-syncd fills`: the fill log as a table and totals per symbol |
//! | [`stream`] | THREAD `stream`: the user-data WebSocket, reconnects; parsed events → the executor, then `state` |
//! | [`keepalive`] | THREAD `keepalive`: renews the listen key; tells `stream` when it is lost |
//! | [`statedir`] | the state directory's lock (one daemon per directory) and private files (0700/0600) |
//! | [`trust`] | whether a file or folder may be believed (kind, owner, mode): the one verdict of the plugin and fill-log trust checks; a leaf |
//! | [`sys`] | `euid()` from `/proc/self/status` (no `unsafe`), for the plugin and fill-log trust checks |
//! | [`lock`] | the one rule for a poisoned lock: take the guard anyway (`LockAnyway` and its siblings) |
//! | [`state`] | THREAD `state`: the fill log's one writer; cursors; no network I/O |
//! | [`reconcile`] | THREAD `reconcile`: REST `myTrades` pages → the writer; [`reconcile::cursor`] holds its decisions |
//! | [`executor`] | THREAD `executor`: the only path to the order endpoints |
//! | [`plugin`] | THREAD `plugins` (the watcher: trust checks, hot swap) and THREAD `plugin:NAME` per strategy plugin; the crate's only `unsafe` (loading, `prctl`, the environment) |
//! | [`registry`] | the metrics registry: atomics every thread bumps; a leaf the REST client carries |
//! | [`metrics`] | the registry rendered with what it reads from the roles, THREAD `metrics` (`/metrics`, `/healthz`), THREAD `alerts` (webhook) |
//! | [`check`] | `binance-syncd check`: clock, key, symbols, state, fill log, plugins as a table |
//! | [`daemon`] | `run`: starts the roles, waits for a signal or a failure, stops them all |
//! | [`notify`] | systemd's notify protocol: `READY=1`, `WATCHDOG=1`, `STATUS=`, `STOPPING=1`; std only |
//! | [`utc`] | UTC timestamps printed and parsed, for the CLI and the log |
#![deny(unsafe_code)]

pub mod backoff;
pub mod check;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod decimal;
pub mod error;
pub mod executor;
pub mod exit;
pub mod filllog;
pub mod fills;
pub mod filters;
pub mod keepalive;
pub mod limits;
pub mod lock;
pub mod market;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod plugin;
pub mod ratelimit;
pub mod reconcile;
pub mod registry;
pub mod rest;
pub mod rules;
pub mod secret;
pub mod state;
pub mod statedir;
pub mod stream;
pub mod sys;
pub mod tls;
pub mod trust;
pub mod utc;
pub mod wire;

pub use decimal::Decimal;
pub use error::Error;

/// Case counts for the property tests (issue 12), sized so that all of them together add well
/// under 30 s to `cargo test` on the 2-core CI machine.
///
/// `PROPTEST_CASES=N` sets every property's count to N, as proptest itself does;
/// `SYNCD_PROPTEST_SCALE=K` multiplies each property's own default by K instead, which keeps
/// the cheap and the expensive ones in proportion for a long run (`docs/testing.md`, "Long property runs").
/// Failures are not persisted to files: a shrunk case that found a bug is kept as a plain
/// example test beside the property.
#[cfg(test)]
pub(crate) fn proptest_config(default_cases: u32) -> proptest::test_runner::Config {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u32>().ok());
    let cases = match (env("PROPTEST_CASES"), env("SYNCD_PROPTEST_SCALE")) {
        (Some(n), _) => n,
        (None, Some(k)) => default_cases.saturating_mul(k),
        (None, None) => default_cases,
    };
    proptest::test_runner::Config { cases, failure_persistence: None, ..proptest::test_runner::Config::default() }
}
