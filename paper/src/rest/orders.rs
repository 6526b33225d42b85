//! The order endpoints (place, cancel, cancelReplace, myTrades) and the order faults they act
//! out.

use super::params::{limit_param, parse_new_order, time_range, Params};
use super::{fail, Dispatched, Failed};
use crate::control::{ArmedFault, OrderFault, RestFaults};
use crate::engine::{ApiError, Origin};
use crate::http::Request;
use crate::lock::LockAnyway;
use crate::Shared;
use serde_json::{json, Value};

/// What an order request answers under an injected fault.
pub(super) fn fault_answer(fault: OrderFault) -> Dispatched {
    match fault {
        OrderFault::Status503 => Dispatched::Raw(
            503,
            json!({"code": -1007, "msg": "Timeout waiting for response from backend server. Send status unknown; execution status unknown."}).to_string(),
        ),
        OrderFault::Status504 => Dispatched::Raw(504, "<html>504 Gateway Time-out</html>".into()),
        OrderFault::Reset => Dispatched::Hangup,
    }
}

/// `POST /api/v3/order` and `order/test`: validated in full (test mode) before the order is
/// counted and before an injected fault fires, so a rejected order never consumes a fault.
pub(super) fn place_order(
    shared: &Shared,
    req: &Request,
    params: &Params,
    now: i64,
    headers: &mut Vec<(String, String)>,
) -> Result<Dispatched, Failed> {
    let test = req.path.ends_with("/test");
    let order = parse_new_order(params, test)?;
    let mut check = order.clone();
    check.test = true;
    shared.engine().new_order(check, now, Origin::Api).map_err(fail)?;
    if test {
        return Ok(Dispatched::Body(json!({})));
    }
    let (c10, c1d) = match shared.count_order() {
        Ok(counts) => counts,
        Err((e, retry)) => {
            headers.push(("Retry-After".into(), retry.to_string()));
            return Err(fail(e));
        }
    };
    if let Some(lost) = take_fault(shared, |f| &mut f.order_fault, true) {
        return Ok(fault_answer(lost));
    }
    let fault = take_fault(shared, |f| &mut f.order_fault, false);
    let result = shared.engine().new_order(order, now, Origin::Api).map_err(fail)?;
    headers.push(("X-MBX-ORDER-COUNT-10S".into(), c10.to_string()));
    headers.push(("X-MBX-ORDER-COUNT-1D".into(), c1d.to_string()));
    Ok(fault.map_or(Dispatched::Body(result), fault_answer))
}

/// `DELETE /api/v3/order`: carried out (unless an `order_error on=cancel lost=request` fault
/// loses it first), then (under an `order_error on=cancel` fault) answered with an error or a
/// reset.
pub(super) fn cancel_order(shared: &Shared, params: &Params, now: i64) -> Result<Dispatched, Failed> {
    let symbol = params.required("symbol").map_err(fail)?;
    let order_id = params.uint("orderId").map_err(fail)?;
    let orig = params.get("origClientOrderId").map(str::to_string);
    let new_id = params.client_id("newClientOrderId").map_err(fail)?;
    if let Some(r) = params.get("cancelRestrictions") {
        if r != "ONLY_NEW" && r != "ONLY_PARTIALLY_FILLED" {
            return Err(fail(ApiError::bad(-1145, "Invalid cancelRestrictions")));
        }
    }
    if let Some(lost) = take_fault(shared, |f| &mut f.cancel_fault, true) {
        return Ok(fault_answer(lost));
    }
    let canceled = shared.engine().cancel_order(symbol, order_id, orig.as_deref(), new_id, now).map_err(fail)?;
    let fault = take_fault(shared, |f| &mut f.cancel_fault, false);
    Ok(fault.map_or(Dispatched::Body(canceled), fault_answer))
}

/// `GET /api/v3/myTrades`, with only the documented parameter combinations.
pub(super) fn my_trades(shared: &Shared, params: &Params) -> Result<Dispatched, Failed> {
    let symbol = params.required("symbol").map_err(fail)?;
    let limit = limit_param(params)?;
    let (start, end) = time_range(params)?;
    let order_id = params.uint("orderId").map_err(fail)?;
    let from_id = params.uint("fromId").map_err(fail)?;
    // Only the documented combinations ("Account Trade List").
    let combo = (order_id.is_some(), start.is_some(), end.is_some(), from_id.is_some());
    let allowed = matches!(
        combo,
        (false, false, false, false)
            | (true, false, false, false)
            | (false, true, false, false)
            | (false, false, true, false)
            | (false, false, false, true)
            | (false, true, true, false)
            | (true, false, false, true)
    );
    if !allowed {
        return Err((
            ApiError::bad(-1128, "Combination of optional parameters invalid."),
            format!("myTrades combination orderId/startTime/endTime/fromId = {combo:?}"),
        ));
    }
    if let (Some(s), Some(e)) = (start, end) {
        if e - s > 86_400_000 {
            return Err(fail(ApiError::bad(-1127, "More than 24 hours between startTime and endTime.")));
        }
    }
    let mut rows = shared.engine().my_trades(symbol, order_id, from_id, start, end, limit).map_err(fail)?;
    let forge = {
        let mut f = shared.rest_faults.lock_anyway();
        if f.bad_trades.as_deref() == Some(symbol) {
            f.bad_trades.take()
        } else {
            None
        }
    };
    if let (Some(_), Value::Array(list)) = (forge, &mut rows) {
        let other = if symbol == "BTCUSD" { "ETHUSD" } else { "BTCUSD" };
        list.extend(crate::control::bad_trade_rows(symbol, other, shared.clock.now_ms()));
    }
    Ok(Dispatched::Body(rows))
}

/// Counts down an order fault knob; the answer, if a fault is due. `request_lost`: only a fault
/// that loses the request (asked before the engine), or only one that loses the reply (after).
pub(super) fn take_fault(
    shared: &Shared,
    slot: impl FnOnce(&mut RestFaults) -> &mut Option<ArmedFault>,
    request_lost: bool,
) -> Option<OrderFault> {
    let mut f = shared.rest_faults.lock_anyway();
    match slot(&mut f) {
        Some(armed) if armed.count > 0 && armed.request_lost == request_lost => {
            armed.count -= 1;
            Some(armed.answer)
        }
        _ => None,
    }
}

/// `POST /api/v3/order/cancelReplace` ("Cancel an Existing Order and Send a New Order"): filters and the order count before the cancel
/// (and an `order_error on=replace` fault: before the engine or after it),
/// then the documented outcome table, with `-2021` (409) and `-2022` (400) carrying `data`.
pub(super) fn cancel_replace(
    shared: &Shared,
    params: &Params,
    now: i64,
    headers: &mut Vec<(String, String)>,
) -> Result<Dispatched, Failed> {
    let mode = params.required("cancelReplaceMode").map_err(fail)?;
    let allow_failure = match mode {
        "STOP_ON_FAILURE" => false,
        "ALLOW_FAILURE" => true,
        _ => return Err(fail(ApiError::bad(-1130, "Data sent for parameter 'cancelReplaceMode' is not valid."))),
    };
    let cancel_id = params.uint("cancelOrderId").map_err(fail)?;
    let cancel_orig = params.get("cancelOrigClientOrderId").map(str::to_string);
    if cancel_id.is_none() && cancel_orig.is_none() {
        return Err(fail(ApiError::bad(
            -1102,
            "Param 'cancelOrigClientOrderId' or 'cancelOrderId' must be sent, but both were empty/null!",
        )));
    }
    let cancel_new_id = params.client_id("cancelNewClientOrderId").map_err(fail)?;
    let order = parse_new_order(params, false)?;
    {
        let engine = shared.engine();
        if engine.has_symbol(&order.symbol) && !engine.cancel_replace_allowed(&order.symbol) {
            // Checked before anything else of the order: the symbol's switch, not the order.
            return Err(fail(ApiError::rejected("Order cancel-replace is not supported for this symbol.")));
        }
    }
    let mut check = order.clone();
    check.test = true;
    // A new order that fails its filters is refused before anything is canceled; one that
    // would only fail in the engine (balance, crossing) is decided after the cancel.
    if let Err(e) = shared.engine().new_order(check, now, Origin::Api) {
        if e.code != -2010 {
            return Err(fail(e));
        }
    }
    let counts = shared.count_order().map_err(|(e, retry)| {
        headers.push(("Retry-After".into(), retry.to_string()));
        fail(e)
    })?;
    let symbol = order.symbol.clone();
    if let Some(lost) = take_fault(shared, |f| &mut f.replace_fault, true) {
        return Ok(fault_answer(lost));
    }
    let mut engine = shared.engine();
    let canceled = engine.cancel_order(&symbol, cancel_id, cancel_orig.as_deref(), cancel_new_id, now);
    let err_json = |e: &ApiError| json!({"code": e.code, "msg": e.msg});
    let (status, body) = match canceled {
        Err(ce) if !allow_failure => (
            400,
            json!({"code": -2022, "msg": "Order cancel-replace failed.", "data": {
                "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                "cancelResponse": err_json(&ce), "newOrderResponse": null}}),
        ),
        Err(ce) => match engine.new_order(order, now, Origin::Api) {
            Ok(placed) => (
                409,
                json!({"code": -2021, "msg": "Order cancel-replace partially failed.", "data": {
                    "cancelResult": "FAILURE", "newOrderResult": "SUCCESS",
                    "cancelResponse": err_json(&ce), "newOrderResponse": placed}}),
            ),
            Err(ne) => (
                400,
                json!({"code": -2022, "msg": "Order cancel-replace failed.", "data": {
                    "cancelResult": "FAILURE", "newOrderResult": "FAILURE",
                    "cancelResponse": err_json(&ce), "newOrderResponse": err_json(&ne)}}),
            ),
        },
        Ok(cancel_response) => match engine.new_order(order.clone(), now, Origin::Api) {
            Ok(placed) => (
                200,
                json!({"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS",
                       "cancelResponse": cancel_response, "newOrderResponse": placed}),
            ),
            Err(ne) => {
                // The one case Binance reports x=REJECTED on the stream ("Order Update", execution types).
                engine.publish_rejected(&order, &ne.msg, now);
                (
                    409,
                    json!({"code": -2021, "msg": "Order cancel-replace partially failed.", "data": {
                        "cancelResult": "SUCCESS", "newOrderResult": "FAILURE",
                        "cancelResponse": cancel_response, "newOrderResponse": err_json(&ne)}}),
                )
            }
        },
    };
    drop(engine);
    headers.push(("X-MBX-ORDER-COUNT-10S".into(), counts.0.to_string()));
    headers.push(("X-MBX-ORDER-COUNT-1D".into(), counts.1.to_string()));
    let fault = take_fault(shared, |f| &mut f.replace_fault, false);
    Ok(fault.map_or(Dispatched::Raw(status, body.to_string()), fault_answer))
}
