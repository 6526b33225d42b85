//! What the benches share (they cannot import `tests/it/util.rs`).

use binance_syncd_paper::{PaperExchange, DEMO_API_KEY, DEMO_API_SECRET};
use std::path::Path;

// The binary's paper REST client (src/paper_client.rs), included as the tests do.
#[path = "../../src/paper_client.rs"]
#[allow(dead_code)] // only the benches that need a daemon client call it
mod paper_client;
#[allow(unused_imports)]
pub use paper_client::paper_client;

/// The environment every bench's daemon needs against `ex`, with its state and fill log in
/// `dir`; each bench adds its own settings.
#[allow(dead_code)] // the sync bench builds its own environment
pub fn daemon_env(ex: &PaperExchange, dir: &Path, symbols: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BINANCE_API_KEY", DEMO_API_KEY.to_string()),
        ("BINANCE_API_SECRET", DEMO_API_SECRET.to_string()),
        ("SYNCD_REST_URL", ex.rest_url()),
        ("SYNCD_WS_URL", ex.ws_url()),
        ("SYNCD_SYMBOLS", symbols.to_string()),
        ("SYNCD_STATE_DIR", dir.join("state").display().to_string()),
        ("SYNCD_FILL_LOG", dir.join("fills.jsonl").display().to_string()),
    ]
}

/// The `q` percentile of `sorted` by the project's one rank rule
/// ([`binance_syncd::registry::nearest_rank`], as `/metrics` histograms use); zero for an empty
/// sample, so a bench row that measured nothing prints 0 instead of panicking.
#[allow(dead_code)] // not every bench prints percentiles
pub fn percentile(sorted: &[std::time::Duration], q: f64) -> std::time::Duration {
    binance_syncd::registry::percentile(sorted, q).unwrap_or_default()
}
