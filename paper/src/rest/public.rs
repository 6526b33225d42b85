//! Public market data: tickers.

use super::params::{symbol_list_unlocked, Params};
use super::{fail, Dispatched, Failed};
use crate::http::Request;
use crate::Shared;
use serde_json::Value;

/// `ticker/bookTicker` and `ticker/price`: one symbol, a list, or all.
pub(super) fn tickers(shared: &Shared, req: &Request, params: &Params) -> Result<Dispatched, Failed> {
    let book = req.path.ends_with("bookTicker");
    let engine = shared.engine();
    let one = |s: &str| if book { engine.book_ticker(s) } else { engine.ticker_price(s) };
    match symbol_list_unlocked(&engine, params)? {
        Some(list) if params.get("symbol").is_some() => one(&list[0]).map(Dispatched::Body).map_err(fail),
        Some(list) => list
            .iter()
            .map(|s| one(s))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Dispatched::Body(Value::Array(v)))
            .map_err(fail),
        None => Ok(Dispatched::Body(if book { engine.book_tickers() } else { engine.ticker_prices() })),
    }
}

/// `ticker/24hr`: one symbol, a list, or all.
pub(super) fn ticker_24hr(shared: &Shared, params: &Params, now: i64) -> Result<Dispatched, Failed> {
    let engine = shared.engine();
    match symbol_list_unlocked(&engine, params)? {
        Some(list) if params.get("symbol").is_some() => {
            engine.ticker_24hr(&list[0], now).map(Dispatched::Body).map_err(fail)
        }
        Some(list) => list
            .iter()
            .map(|s| engine.ticker_24hr(s, now))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Dispatched::Body(Value::Array(v)))
            .map_err(fail),
        None => Ok(Dispatched::Body(engine.tickers_24hr(now))),
    }
}
