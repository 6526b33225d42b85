//! Public market data: tickers and the order book.

use super::params::{symbol_list_unlocked, Params};
use super::{fail, Dispatched, Failed};
use crate::http::Request;
use crate::lock::LockAnyway;
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

/// `GET /api/v3/depth` ("Order Book", <https://docs.binance.us/#order-book>): `limit` 1-5000,
/// default 100, its weight charged by tier before this runs. Under `stale_depth` the answer
/// shows an older book and may arrive late.
pub(super) fn depth(shared: &Shared, params: &Params) -> Result<Dispatched, Failed> {
    let symbol = params.required("symbol").map_err(fail)?;
    let limit = params.uint("limit").map_err(fail)?.unwrap_or(100) as usize;
    let stale = {
        let mut faults = shared.rest_faults.lock_anyway();
        match &mut faults.stale_depth {
            Some(s) if s.count > 0 && s.symbol.as_deref().is_none_or(|want| want == symbol) => {
                s.count -= 1;
                Some((s.back, s.lag))
            }
            _ => None,
        }
    };
    let (back, lag) = stale.unwrap_or_default();
    let body = shared.engine().depth(symbol, limit, back).map_err(fail)?;
    // Taken now, answered late: the stream moves on meanwhile.
    std::thread::sleep(lag);
    Ok(Dispatched::Body(body))
}
