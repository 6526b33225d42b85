//! What the conformance run shows a plugin of the exchange and the account: made-up but
//! well-formed `exchangeInfo` entries (the filters `run` meets on Binance.US), balances and an
//! open order, in the shapes the daemon sends them.

use serde_json::{json, Value};

/// Filler symbols in the `start` snapshot: a frame larger than a socket buffer, which a
/// plugin must read whole over several reads.
const FILLER_SYMBOLS: usize = 400;

/// A symbol's `exchangeInfo` entry, as the daemon has it.
fn symbol_entry(symbol: &str, base: &str, tick: &str, step: &str) -> Value {
    json!({
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": "USD", "quotePrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "isSpotTradingAllowed": true, "cancelReplaceAllowed": true,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000", "stepSize": step},
            {"filterType": "NOTIONAL", "minNotional": "10.00000000", "applyMinToMarket": true,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": false, "avgPriceMins": 5},
            {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
             "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
    })
}

/// The rules `rules_of` answers: BTCUSD and ETHUSD are traded.
pub(super) fn rules_of(symbol: &str) -> Option<String> {
    match symbol {
        "BTCUSD" => Some(symbol_entry("BTCUSD", "BTC", "0.01000000", "0.00001000").to_string()),
        "ETHUSD" => Some(symbol_entry("ETHUSD", "ETH", "0.01000000", "0.00010000").to_string()),
        _ => None,
    }
}

/// The `start` snapshot (a JSON string, as the daemon sends it) and its number of symbols:
/// BTCUSD, ETHUSD and [`FILLER_SYMBOLS`] more, balances, one open order of its own.
pub(super) fn snapshot(name: &str) -> (String, usize) {
    let mut symbols = serde_json::Map::new();
    symbols.insert("BTCUSD".into(), symbol_entry("BTCUSD", "BTC", "0.01000000", "0.00001000"));
    symbols.insert("ETHUSD".into(), symbol_entry("ETHUSD", "ETH", "0.01000000", "0.00010000"));
    for i in 0..FILLER_SYMBOLS {
        let base = format!("X{i:04}");
        let symbol = format!("{base}USD");
        symbols.insert(symbol.clone(), symbol_entry(&symbol, &base, "0.00010000", "1.00000000"));
    }
    let count = symbols.len();
    let snapshot = json!({
        "tag": name,
        "symbols": symbols,
        "balances": [
            {"asset": "USD", "free": "1000.00000000", "locked": "590.00000000"},
            {"asset": "BTC", "free": "0.05000000", "locked": "0.00000000"},
        ],
        "open_orders": [{
            "symbol": "BTCUSD", "order_id": 1400, "client_order_id": format!("sd-{name}-7f3a-0-1"), "side": "BUY",
            "price": "59000.00000000", "orig_qty": "0.01000000", "executed_qty": "0.00000000",
        }],
        "x_conformance": true,
    });
    (snapshot.to_string(), count)
}
