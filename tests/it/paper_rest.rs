//! The paper exchange's REST side pinned to the Binance.US API docs (<https://docs.binance.us/>): the documented signature
//! vectors, each error code with its documented message, weights and limits.

use crate::util::{client, paper, paper_with, place_maker, raw, signed_query};
use binance_syncd::rest::MY_TRADES;
use binance_syncd_paper::trader::Trader;
use binance_syncd_paper::DEMO_API_KEY;
use serde_json::Value;

const V_PARAMS: &str =
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
const V1: &str = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
const V3: &str = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77";

/// Moves the paper server's clock to the documented vectors' timestamp (plus 100 ms).
fn at_vector_time(ex: &binance_syncd_paper::PaperExchange) {
    let now = ex.shared().clock.now_ms();
    ex.fault("clock_jump", &[("ms", &(1_499_827_319_659 - now).to_string())]).unwrap();
}

#[test]
fn documented_signature_vectors_are_accepted_and_a_flipped_char_is_not() {
    let ex = paper();
    at_vector_time(&ex);
    let url = format!("{}/api/v3/order", ex.rest_url());
    // V1 all in the body, V2 all in the query, V3 split: the signature passes, so the request
    // gets as far as the symbol check (LTCBTC is not listed here).
    let v1 = raw("POST", &url, "", &format!("{V_PARAMS}&signature={V1}"), Some(DEMO_API_KEY));
    let v2 = raw("POST", &url, &format!("{V_PARAMS}&signature={V1}"), "", Some(DEMO_API_KEY));
    let v3 = raw(
        "POST",
        &url,
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC",
        &format!("quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559&signature={V3}"),
        Some(DEMO_API_KEY),
    );
    for r in [&v1, &v2, &v3] {
        assert_eq!((r.status, r.code(), r.msg()), (400, -1121, "Invalid symbol."), "{:?}", r.body);
    }
    let flipped = format!("d{}", &V1[1..]);
    let bad = raw("POST", &url, "", &format!("{V_PARAMS}&signature={flipped}"), Some(DEMO_API_KEY));
    assert_eq!((bad.status, bad.code(), bad.msg()), (400, -1022, "Signature for this request is not valid."));
}

#[test]
fn timing_rules_and_messages() {
    let ex = paper();
    let url = format!("{}/api/v3/account", ex.rest_url());
    let now = ex.shared().clock.now_ms();
    let ahead = raw("GET", &url, &signed_query("", now + 1500), "", Some(DEMO_API_KEY));
    assert_eq!(
        (ahead.code(), ahead.msg()),
        (-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    );
    let behind = raw("GET", &url, &signed_query("recvWindow=5000", now - 6000), "", Some(DEMO_API_KEY));
    assert_eq!((behind.code(), behind.msg()), (-1021, "Timestamp for this request is outside of the recvWindow."));
    let wide = raw("GET", &url, &signed_query("recvWindow=60001", now), "", Some(DEMO_API_KEY));
    assert_eq!(wide.code(), -1131);
    let ok = raw("GET", &url, &signed_query("recvWindow=60000", now - 30_000), "", Some(DEMO_API_KEY));
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let missing = raw("GET", &url, "", "", Some(DEMO_API_KEY));
    assert_eq!(
        (missing.code(), missing.msg()),
        (-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
    );
}

#[test]
fn api_key_errors_are_401() {
    let ex = paper();
    let url = format!("{}/api/v3/account", ex.rest_url());
    let now = ex.shared().clock.now_ms();
    let none = raw("GET", &url, &signed_query("", now), "", None);
    assert_eq!((none.status, none.code(), none.msg()), (401, -2014, "API-key format invalid."));
    let wrong = raw("GET", &url, &signed_query("", now), "", Some("abcdef"));
    assert_eq!(
        (wrong.status, wrong.code(), wrong.msg()),
        (401, -2015, "Invalid API-key, IP, or permissions for action.")
    );
}

#[test]
fn listen_key_endpoints_refuse_signing_and_follow_the_lifecycle() {
    let ex = paper();
    let url = format!("{}/api/v3/userDataStream", ex.rest_url());
    let now = ex.shared().clock.now_ms();
    let signed = raw("POST", &url, &signed_query("recvWindow=5000", now), "", Some(DEMO_API_KEY));
    assert_eq!((signed.code(), signed.msg()), (-1101, "Too many parameters; expected '0' and received '3'."));
    let first = raw("POST", &url, "", "", Some(DEMO_API_KEY));
    let key = first.body["listenKey"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 60);
    let second = raw("POST", &url, "", "", Some(DEMO_API_KEY));
    assert_eq!(second.body["listenKey"], first.body["listenKey"], "POST returns the live key");
    // PUT and DELETE with the key in the body (python-binance, ccxt) and in the query (connector).
    assert_eq!(raw("PUT", &url, "", &format!("listenKey={key}"), Some(DEMO_API_KEY)).status, 200);
    assert_eq!(raw("PUT", &url, &format!("listenKey={key}"), "", Some(DEMO_API_KEY)).status, 200);
    let unknown = raw("PUT", &url, "listenKey=nosuchkey", "", Some(DEMO_API_KEY));
    assert_eq!((unknown.code(), unknown.msg()), (-1125, "This listenKey does not exist."));
    assert_eq!(raw("DELETE", &url, &format!("listenKey={key}"), "", Some(DEMO_API_KEY)).status, 200);
    let again = raw("PUT", &url, &format!("listenKey={key}"), "", Some(DEMO_API_KEY));
    assert_eq!(again.code(), -1125, "a closed key is gone");
    let third = raw("POST", &url, "", "", Some(DEMO_API_KEY));
    assert_ne!(third.body["listenKey"], first.body["listenKey"], "a new key after DELETE");
}

fn order(ex: &binance_syncd_paper::PaperExchange, params: &str) -> crate::util::RawReply {
    let now = ex.shared().clock.now_ms();
    raw("POST", &format!("{}/api/v3/order", ex.rest_url()), &signed_query(params, now), "", Some(DEMO_API_KEY))
}

#[test]
fn order_rejections_use_the_documented_codes() {
    let ex = paper();
    let (bid, ask) = ex.shared().engine.lock().unwrap().touch("BTCUSD").unwrap();
    let cases: Vec<(String, i64, &str)> = vec![
        (
            format!("symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&timeInForce=GTC&quantity=0.001&price={bid}"),
            -1106,
            "Parameter 'timeInForce' sent when not required.",
        ),
        (
            format!("symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.001&price={ask}"),
            -2010,
            "Order would immediately match and take.",
        ),
        (
            format!("symbol=BTCUSD&side=SELL&type=LIMIT_MAKER&quantity=0.001&price={bid}"),
            -2010,
            "Order would immediately match and take.",
        ),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.001&price=50000.000000001".into(),
            -1111,
            "Precision is over the maximum defined for this asset.",
        ),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.0010000001&price=50000".into(),
            -1111,
            "Precision is over the maximum defined for this asset.",
        ),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.001&price=50000.005".into(),
            -1013,
            "Filter failure: PRICE_FILTER",
        ),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.0000101&price=50000".into(),
            -1013,
            "Filter failure: LOT_SIZE",
        ),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.00001&price=50000".into(),
            -1013,
            "Filter failure: MIN_NOTIONAL",
        ),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.001&price=1000001".into(),
            -1013,
            "Filter failure: PRICE_FILTER",
        ),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.001&price=1e5".into(),
            -1100,
            "Illegal characters found in parameter 'price'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        ),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.001".into(),
            -1102,
            "Mandatory parameter 'price' was not sent, was empty/null, or malformed.",
        ),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT&quantity=0.001&price=50000".into(),
            -1102,
            "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.",
        ),
        ("symbol=BTCUSD&side=UP&type=LIMIT_MAKER&quantity=0.001&price=50000".into(), -1117, "Invalid side."),
        ("symbol=BTCUSD&side=BUY&type=LIMITED&quantity=0.001&price=50000".into(), -1116, "Invalid orderType."),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=DAY&quantity=0.001&price=50000".into(),
            -1115,
            "Invalid timeInForce.",
        ),
        ("symbol=NOPE&side=BUY&type=LIMIT_MAKER&quantity=0.001&price=50000".into(), -1121, "Invalid symbol."),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.001&price=50000&newClientOrderId=bad%20id".into(),
            -1100,
            "Illegal characters found in parameter 'newClientOrderId'; legal range is '^[a-zA-Z0-9-_]{1,36}$'.",
        ),
        (
            "symbol=BTCUSD&symbol=ETHUSD&side=BUY&type=LIMIT_MAKER&quantity=0.001&price=50000".into(),
            -1101,
            "Duplicate values for a parameter detected.",
        ),
        (
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=1000&price=50000".into(),
            -2010,
            "Account has insufficient balance for requested action.",
        ),
    ];
    for (params, code, msg) in cases {
        let r = order(&ex, &params);
        assert_eq!((r.status, r.code(), r.msg()), (400, code, msg), "{params}");
    }
    let report = ex.report();
    assert!(report["trades"].as_array().unwrap().is_empty(), "no rejected order traded");
    assert!(report["errors"].as_array().unwrap().len() >= 18);
}

#[test]
fn a_resting_maker_order_fills_and_shows_in_my_trades_with_from_id_inclusive() {
    let ex = paper();
    let rest = client(&ex);
    let (bid, _) = ex.shared().engine.lock().unwrap().touch("BTCUSD").unwrap();
    let price = bid.to_string();
    let placed = place_maker(&ex, "BTCUSD", "BUY", "0.01", &price, "t-maker-1").unwrap();
    assert_eq!(placed["status"], "NEW");
    assert_eq!(placed["type"], "LIMIT_MAKER");
    assert_eq!(placed["timeInForce"], "GTC");
    let order_id = placed["orderId"].as_u64().unwrap();
    // Fill it completely, in however many partial fills the market gives.
    for _ in 0..20 {
        ex.fault("fill", &[("symbol", "BTCUSD"), ("order_id", &order_id.to_string())]).unwrap();
    }
    let trades: Vec<Value> = rest.call_json(&MY_TRADES, &[("symbol", "BTCUSD")]).unwrap();
    assert!(!trades.is_empty());
    let total: binance_syncd::Decimal = trades.iter().fold(binance_syncd::Decimal::ZERO, |acc, t| {
        acc.checked_add(t["qty"].as_str().unwrap().parse().unwrap()).unwrap()
    });
    assert_eq!(total, "0.01".parse().unwrap());
    for t in &trades {
        assert_eq!(t["isMaker"], true);
        assert_eq!(t["isBuyer"], true);
        assert_eq!(t["orderId"].as_u64(), Some(order_id));
        assert_eq!(t["price"].as_str().unwrap().parse::<binance_syncd::Decimal>().unwrap(), bid);
    }
    let last_id = trades.last().unwrap()["id"].as_u64().unwrap().to_string();
    let from: Vec<Value> = rest.call_json(&MY_TRADES, &[("symbol", "BTCUSD"), ("fromId", &last_id)]).unwrap();
    assert_eq!(from.len(), 1, "fromId is inclusive");
    let now = ex.shared().clock.now_ms();
    let combo = raw(
        "GET",
        &format!("{}/api/v3/myTrades", ex.rest_url()),
        &signed_query(&format!("symbol=BTCUSD&fromId={last_id}&startTime=1"), now),
        "",
        Some(DEMO_API_KEY),
    );
    assert_eq!((combo.code(), combo.msg()), (-1128, "Combination of optional parameters invalid."));
}

#[test]
fn cancel_and_query_errors() {
    let ex = paper();
    let now = ex.shared().clock.now_ms();
    let base = ex.rest_url();
    let none = raw(
        "DELETE",
        &format!("{base}/api/v3/openOrders"),
        &signed_query("symbol=BTCUSD", now),
        "",
        Some(DEMO_API_KEY),
    );
    assert_eq!((none.code(), none.msg()), (-2011, "Unknown order sent."));
    let q = raw(
        "GET",
        &format!("{base}/api/v3/order"),
        &signed_query("symbol=BTCUSD&orderId=1", now),
        "",
        Some(DEMO_API_KEY),
    );
    assert_eq!((q.code(), q.msg()), (-2013, "Order does not exist."));
    let c = raw(
        "DELETE",
        &format!("{base}/api/v3/order"),
        &signed_query("symbol=BTCUSD&orderId=1", now),
        "",
        Some(DEMO_API_KEY),
    );
    assert_eq!((c.code(), c.msg()), (-2011, "Unknown order sent."));
}

#[test]
fn usage_headers_on_every_response_and_429_then_418_inside_the_hold() {
    let ex = paper_with(|c| c.rest.weight_limit = 30);
    let url = format!("{}/api/v3/exchangeInfo", ex.rest_url());
    let first = raw("GET", &url, "", "", None);
    assert_eq!(first.header("x-mbx-used-weight-1m"), Some("20"));
    assert_eq!(first.header("x-mbx-used-weight"), Some("20"));
    let limits = &first.body["rateLimits"][0];
    assert_eq!((limits["rateLimitType"].as_str(), limits["limit"].as_u64()), (Some("REQUEST_WEIGHT"), Some(30)));
    let over = raw("GET", &url, "", "", None);
    if over.status == 200 {
        // The minute rolled over between the two calls; the next one must trip the limit.
        let again = raw("GET", &url, "", "", None);
        assert_eq!(again.status, 429);
        return;
    }
    assert_eq!(over.status, 429);
    assert_eq!(over.code(), -1003);
    assert!(over.msg().starts_with("Too much request weight used; current limit is 30 request weight per 1 MINUTE."));
    let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let banned = raw("GET", &format!("{}/api/v3/ping", ex.rest_url()), "", "", None);
    assert_eq!(banned.status, 418);
    assert!(banned.msg().starts_with("Way too much request weight used; IP banned until"));
    assert!(banned.header("retry-after").is_some());
    let report = ex.report();
    assert_eq!((report["http_429"].as_u64(), report["http_418"].as_u64()), (Some(1), Some(1)));
}

#[test]
fn bad_http_never_crashes_it() {
    use std::io::{Read, Write};
    let ex = paper();
    let addr = ex.rest_url().trim_start_matches("http://").to_string();
    let inputs: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET /api/v3/ping HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n".to_vec(),
        b"POST /api/v3/order HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        [b"GET /".to_vec(), vec![b'a'; 100_000], b" HTTP/1.1\r\n\r\n".to_vec()].concat(),
        vec![0xff, 0xfe, 0x00, 0x13, 0x10, b'\n', b'\n'],
        b"GET /api/v3/ping HTTP/1.1\r\nNoColonHeader\r\n\r\n".to_vec(),
    ];
    for input in inputs {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&input);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    }
    // Still serving.
    assert_eq!(raw("GET", &format!("{}/api/v3/ping", ex.rest_url()), "", "", None).status, 200);
}

#[test]
fn order_errors_after_placing_are_outcome_unknown_and_the_order_exists() {
    use binance_syncd::rest::ORDER_QUERY;
    use binance_syncd_paper::trader::Trader;
    let ex = paper();
    let rest = client(&ex);
    let trader = Trader::new(&ex);
    let (bid, _) = ex.shared().engine.lock().unwrap().touch("BTCUSD").unwrap();
    let price = bid.to_string();
    for (mode, id) in [("503", "unknown-503"), ("504", "unknown-504"), ("reset", "unknown-reset")] {
        ex.fault("order_error", &[("mode", mode)]).unwrap();
        let params = [
            ("symbol", "BTCUSD"),
            ("side", "BUY"),
            ("type", "LIMIT_MAKER"),
            ("quantity", "0.001"),
            ("price", price.as_str()),
            ("newClientOrderId", id),
            ("newOrderRespType", "RESULT"),
        ];
        // The answer says nothing certain: a 5xx (with -1007 for 503) or no answer at all.
        match (mode, trader.order(&params)) {
            ("503", Ok(r)) => assert_eq!((r.status, r.code()), (503, -1007), "{mode}"),
            ("504", Ok(r)) => assert_eq!(r.status, 504, "{mode}"),
            ("reset", Err(_)) => {}
            (_, other) => panic!("{mode}: {other:?}"),
        }
        // The documented procedure: look it up by client id before doing anything else.
        let found: Value = rest.call_json(&ORDER_QUERY, &[("symbol", "BTCUSD"), ("origClientOrderId", id)]).unwrap();
        assert_eq!(found["status"], "NEW", "{mode}");
    }
}

#[test]
fn a_timeline_fires_its_faults_on_schedule() {
    let timeline = binance_syncd_paper::control::parse_timeline(
        "# two faults\n100ms deposit asset=BTC amount=1\n300ms clock_jump ms=5000\n",
    )
    .unwrap();
    let ex = paper_with(|c| c.timeline = timeline);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let faults = ex.report()["faults"].as_array().unwrap().len();
        if faults == 2 {
            break;
        }
        assert!(std::time::Instant::now() < end, "timeline fired {faults} of 2 faults");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let report = ex.report();
    assert_eq!(report["faults"][0]["name"], "deposit");
    assert_eq!(report["faults"][1]["name"], "clock_jump");
    let skew = report["server_time"].as_i64().unwrap() - binance_syncd::clock::local_ms();
    assert!((4000..6000).contains(&skew), "clock jumped by {skew}");
}

#[test]
fn market_ioc_and_fok_orders_and_response_types() {
    let ex = paper();
    let trader = Trader::new(&ex);
    let (bid, ask) = ex.shared().engine.lock().unwrap().touch("BTCUSD").unwrap();
    // MARKET by quote quantity, FULL by default for MARKET: filled at the touch, as taker.
    let market: Value = trader
        .order(&[("symbol", "BTCUSD"), ("side", "BUY"), ("type", "MARKET"), ("quoteOrderQty", "100")])
        .unwrap()
        .body;
    assert_eq!(market["status"], "FILLED");
    assert_eq!(market["origQuoteOrderQty"], "100.00000000");
    let fills = market["fills"].as_array().unwrap();
    assert_eq!(fills.len(), 1);
    assert_eq!(fills[0]["price"].as_str().unwrap().parse::<binance_syncd::Decimal>().unwrap(), ask);
    let executed: binance_syncd::Decimal = market["executedQty"].as_str().unwrap().parse().unwrap();
    let spent = executed.checked_mul(ask).unwrap();
    assert!(spent <= "100".parse().unwrap(), "spent {spent} of a 100 quote order");
    // A LIMIT IOC that cannot fill expires at once; RESULT shows it.
    let below = bid.checked_sub("10".parse().unwrap()).unwrap().to_string();
    let ioc: Value = trader
        .order(&[
            ("symbol", "BTCUSD"),
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "IOC"),
            ("quantity", "0.001"),
            ("price", &below),
            ("newOrderRespType", "RESULT"),
        ])
        .unwrap()
        .body;
    assert_eq!((ioc["status"].as_str(), ioc["timeInForce"].as_str()), (Some("EXPIRED"), Some("IOC")));
    assert!(ioc.get("fills").is_none(), "RESULT has no fills");
    // ACK is the bare acknowledgement.
    let ack: Value = trader
        .order(&[
            ("symbol", "BTCUSD"),
            ("side", "SELL"),
            ("type", "LIMIT"),
            ("timeInForce", "FOK"),
            ("quantity", "0.001"),
            ("price", &bid.to_string()),
            ("newOrderRespType", "ACK"),
        ])
        .unwrap()
        .body;
    let keys: Vec<&str> = ack.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
    // MARKET with both quantity kinds, or a price, is refused as Binance refuses it.
    let now = ex.shared().clock.now_ms();
    let url = format!("{}/api/v3/order", ex.rest_url());
    let both = raw(
        "POST",
        &url,
        &signed_query("symbol=BTCUSD&side=BUY&type=MARKET&quantity=0.001&quoteOrderQty=10", now),
        "",
        Some(DEMO_API_KEY),
    );
    assert_eq!(both.code(), -1106);
    let neither = raw("POST", &url, &signed_query("symbol=BTCUSD&side=BUY&type=MARKET", now), "", Some(DEMO_API_KEY));
    assert_eq!(
        (neither.code(), neither.msg()),
        (-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
    );
}
