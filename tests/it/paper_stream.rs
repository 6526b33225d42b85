//! The paper exchange's user-data stream pinned to the documented events ("User Data Streams"): each event type
//! carries exactly the documented field set; cancel-replace follows the documented outcomes.

use crate::util::{client, paper, place_maker, raw, signed_query};
use binance_syncd::rest::LISTEN_KEY_NEW;
use binance_syncd_paper::trader::Trader;
use binance_syncd_paper::{PaperExchange, DEMO_API_KEY};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn connect(ex: &PaperExchange) -> Ws {
    let rest = client(ex);
    let key: Value = rest.call_json(&LISTEN_KEY_NEW, &[]).unwrap();
    let (ws, _) = tungstenite::connect(format!("{}/ws/{}", ex.ws_url(), key["listenKey"].as_str().unwrap())).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    ws
}

/// The next event of type `kind` (others are skipped).
fn next(ws: &mut Ws, kind: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Message::Text(t)) = ws.read() {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["e"] == kind {
                return v;
            }
        }
    }
    panic!("no {kind} event");
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// Field sets of the documented samples ("User Data Streams" in the Binance.US API docs).
fn documented(sample: &str) -> BTreeSet<String> {
    keys(&serde_json::from_str(sample).unwrap())
}

const EXECUTION_REPORT: &str = r#"{"e":"executionReport","E":1499405658658,"s":"ETHBTC","c":"mUvoqJxFIILMdfAW5iGSOW","S":"BUY","o":"LIMIT","f":"GTC","q":"1.00000000","p":"0.10264410","P":"0.00000000","F":"0.00000000","g":-1,"C":"","x":"NEW","X":"NEW","r":"NONE","i":4293153,"l":"0.00000000","z":"0.00000000","L":"0.00000000","n":"0","N":null,"T":1499405658657,"t":-1,"I":8641984,"w":true,"m":false,"M":false,"O":1499405658657,"Z":"0.00000000","Y":"0.00000000","Q":"0.00000000","W":1499405658657,"V":"NONE"}"#;
const POSITION: &str = r#"{"e":"outboundAccountPosition","E":1564034571105,"u":1564034571073,"B":[{"a":"ETH","f":"10000.000000","l":"0.000000"}]}"#;
const BALANCE_UPDATE: &str =
    r#"{"e":"balanceUpdate","E":1573200697110,"a":"BTC","d":"100.00000000","T":1573200697068}"#;
const KEY_EXPIRED: &str = r#"{"e":"listenKeyExpired","E":1699596037418,"listenKey":"OfYGbUzi3PraNagEkdKuFwUHn48brFsItTdsuiIXrucEvD0rhRXZ7I6URWfE8YE8"}"#;

#[test]
fn events_carry_exactly_the_documented_fields() {
    let ex = paper();
    let mut ws = connect(&ex);
    let (bid, _) = ex.shared().engine.lock().unwrap().touch("BTCUSD").unwrap();
    let price = bid.to_string();
    let trader = Trader::new(&ex);
    let placed: Value = trader
        .order(&[
            ("symbol", "BTCUSD"),
            ("side", "BUY"),
            ("type", "LIMIT_MAKER"),
            ("quantity", "0.01"),
            ("price", &price),
        ])
        .unwrap()
        .body;
    let new = next(&mut ws, "executionReport");
    assert_eq!(keys(&new), documented(EXECUTION_REPORT), "NEW: {new}");
    assert_eq!(
        (new["x"].as_str(), new["o"].as_str(), new["f"].as_str()),
        (Some("NEW"), Some("LIMIT_MAKER"), Some("GTC"))
    );
    assert_eq!(keys(&next(&mut ws, "outboundAccountPosition")), documented(POSITION));
    let pos = next_position_balance_keys(&mut ws, &ex, placed["orderId"].as_u64().unwrap());
    assert_eq!(pos, documented(r#"{"a":"ETH","f":"1","l":"0"}"#));
    // A cancel: `c` is the cancel request's id, `C` the order's own.
    let second = place_maker(&ex, "BTCUSD", "BUY", "0.01", &price, "to-cancel").unwrap();
    next(&mut ws, "executionReport");
    let id = second["orderId"].as_u64().unwrap().to_string();
    let cancel = trader.cancel(&[("symbol", "BTCUSD"), ("orderId", &id), ("newClientOrderId", "the-cancel")]).unwrap();
    assert!(cancel.ok(), "{cancel:?}");
    let canceled = next(&mut ws, "executionReport");
    assert_eq!(keys(&canceled), documented(EXECUTION_REPORT));
    assert_eq!(
        (canceled["x"].as_str(), canceled["c"].as_str(), canceled["C"].as_str()),
        (Some("CANCELED"), Some("the-cancel"), Some("to-cancel"))
    );
    ex.fault("deposit", &[("asset", "BTC"), ("amount", "1.5")]).unwrap();
    assert_eq!(keys(&next(&mut ws, "balanceUpdate")), documented(BALANCE_UPDATE));
    ex.fault("expire_key", &[]).unwrap();
    assert_eq!(keys(&next(&mut ws, "listenKeyExpired")), documented(KEY_EXPIRED));
}

/// Fills the order and checks the TRADE report's fields; returns the key set of one balance.
fn next_position_balance_keys(ws: &mut Ws, ex: &PaperExchange, order_id: u64) -> BTreeSet<String> {
    crate::sync::fill_whole(ex, "BTCUSD", order_id);
    let trade = next(ws, "executionReport");
    assert_eq!(keys(&trade), documented(EXECUTION_REPORT), "TRADE: {trade}");
    assert_eq!(
        (trade["x"].as_str(), trade["X"].as_str(), trade["m"].as_bool()),
        (Some("TRADE"), Some("FILLED"), Some(true))
    );
    assert!(trade["t"].as_i64().unwrap() > 0 && trade["N"].is_string());
    let pos = next(ws, "outboundAccountPosition");
    keys(&pos["B"][0])
}

#[test]
fn cancel_replace_follows_the_documented_outcomes() {
    let ex = paper();
    let (bid, ask) = ex.shared().engine.lock().unwrap().touch("BTCUSD").unwrap();
    let (bid, ask) = (bid.to_string(), ask.to_string());
    let placed: Value = Trader::new(&ex)
        .order(&[("symbol", "BTCUSD"), ("side", "BUY"), ("type", "LIMIT_MAKER"), ("quantity", "0.01"), ("price", &bid)])
        .unwrap()
        .body;
    let id = placed["orderId"].as_u64().unwrap();
    let url = format!("{}/api/v3/order/cancelReplace", ex.rest_url());
    let send = |params: String| {
        let now = ex.shared().clock.now_ms();
        raw("POST", &url, &signed_query(&params, now), "", Some(DEMO_API_KEY))
    };
    let base = "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.01";
    // Both succeed.
    let ok = send(format!("{base}&price={bid}&cancelReplaceMode=STOP_ON_FAILURE&cancelOrderId={id}"));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        (ok.body["cancelResult"].as_str(), ok.body["newOrderResult"].as_str()),
        (Some("SUCCESS"), Some("SUCCESS"))
    );
    let new_id = ok.body["newOrderResponse"]["orderId"].as_u64().unwrap();
    // Cancel fails (unknown order), STOP_ON_FAILURE: 400 -2022, new order not attempted.
    let stop = send(format!("{base}&price={bid}&cancelReplaceMode=STOP_ON_FAILURE&cancelOrderId={id}"));
    assert_eq!((stop.status, stop.code(), stop.msg()), (400, -2022, "Order cancel-replace failed."));
    assert_eq!(stop.body["data"]["newOrderResult"], "NOT_ATTEMPTED");
    assert_eq!(stop.body["data"]["cancelResponse"]["code"], -2011);
    assert!(stop.body["data"]["newOrderResponse"].is_null());
    // Cancel succeeds, the new order would take: 409 -2021.
    let partial = send(format!("{base}&price={ask}&cancelReplaceMode=STOP_ON_FAILURE&cancelOrderId={new_id}"));
    assert_eq!((partial.status, partial.code(), partial.msg()), (409, -2021, "Order cancel-replace partially failed."));
    assert_eq!(partial.body["data"]["cancelResult"], "SUCCESS");
    assert_eq!(partial.body["data"]["newOrderResponse"]["code"], -2010);
    // Cancel fails, ALLOW_FAILURE, new order succeeds: 409 -2021.
    let allow = send(format!("{base}&price={bid}&cancelReplaceMode=ALLOW_FAILURE&cancelOrderId={new_id}"));
    assert_eq!((allow.status, allow.code()), (409, -2021));
    assert_eq!(allow.body["data"]["newOrderResult"], "SUCCESS");
    // A filter failure is refused before anything is canceled.
    let open_before = ex.shared().engine.lock().unwrap().open_orders(Some("BTCUSD")).unwrap();
    let filtered = send(format!("{base}&price=1000001&cancelReplaceMode=STOP_ON_FAILURE&cancelOrderId={new_id}"));
    assert_eq!((filtered.status, filtered.code(), filtered.msg()), (400, -1013, "Filter failure: PRICE_FILTER"));
    assert_eq!(ex.shared().engine.lock().unwrap().open_orders(Some("BTCUSD")).unwrap(), open_before);
}
