//! A REST client for a paper exchange: the demo's, and the tests' and benches' (which include
//! this file with `#[path]`), since it is neither the daemon library's nor the paper crate's.

use binance_syncd::clock::ServerClock;
use binance_syncd::error::Error;
use binance_syncd::ratelimit::{fallback_limits, LimitKind, RateGate, RateLimit};
use binance_syncd::rest::{RestClient, RestConfig};
use binance_syncd_paper::{PaperExchange, DEMO_API_KEY, DEMO_API_SECRET};
use std::sync::Arc;
use std::time::Duration;

/// A REST client for a paper exchange with its demo key pair, clock synced. `unlimited` lifts
/// the client-side weight budget (benchmarks measure the exchange, not our gate).
pub fn paper_client(ex: &PaperExchange, unlimited: bool) -> Result<RestClient, Error> {
    let clock = Arc::new(ServerClock::new());
    let limits = if unlimited {
        vec![RateLimit { kind: LimitKind::Weight, interval_ms: 60_000, limit: u64::MAX / 2 }]
    } else {
        fallback_limits()
    };
    let gate = Arc::new(RateGate::new(limits, clock.clone()));
    let rest = RestClient::new(
        RestConfig {
            base_url: ex.rest_url(),
            api_key: Some(binance_syncd::secret::Secret::new(DEMO_API_KEY)),
            api_secret: Some(binance_syncd::secret::Secret::new(DEMO_API_SECRET)),
            recv_window_ms: 5000,
            timeout: Duration::from_secs(10),
            clock_resync: Duration::from_secs(600),
            tls: binance_syncd::tls::client_config(&ex.trust()).map_err(Error::Config)?,
        },
        clock,
        gate,
    );
    rest.sync_clock()?;
    Ok(rest)
}
