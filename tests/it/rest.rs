//! The REST client against a scripted server: signing layout, recvWindow/timestamp, -1021
//! resync, the 429 gate, unknown outcomes, and the API-key-only listen-key calls.

use crate::mock::{Mock, Reply, Request};
use binance_syncd::clock::{local_ms, ServerClock};
use binance_syncd::ratelimit::{fallback_limits, RateGate};
use binance_syncd::rest::sign::Signer;
use binance_syncd::rest::{RestClient, RestConfig, ACCOUNT, LISTEN_KEY_KEEPALIVE, LISTEN_KEY_NEW};
use binance_syncd::secret::Secret;
use binance_syncd::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

fn client(mock: &Mock) -> RestClient {
    let clock = Arc::new(ServerClock::new());
    let gate = Arc::new(RateGate::new(fallback_limits(), clock.clone()));
    RestClient::new(
        RestConfig {
            base_url: mock.url.clone(),
            api_key: Some(Secret::new(KEY)),
            api_secret: Some(Secret::new(SECRET)),
            recv_window_ms: 5000,
            timeout: Duration::from_secs(5),
            clock_resync: Duration::from_secs(600),
            tls: binance_syncd::tls::client_config(&[]).unwrap(),
        },
        clock,
        gate,
    )
}

/// The server's clock in these tests runs `skew` ms ahead of ours.
fn time_reply(skew: i64) -> Reply {
    Reply::json(200, &format!("{{\"serverTime\":{}}}", local_ms() + skew))
}

fn verify(req: &Request) -> bool {
    let (unsigned, sig) = req.query.rsplit_once("&signature=").expect("signature last in the query");
    Signer::new(&Secret::new(SECRET)).verify(unsigned, &req.body, sig)
}

#[test]
fn signed_request_layout() {
    let mock = Mock::start(|req, _| match req.path.as_str() {
        "/api/v3/time" => time_reply(0),
        _ => Reply::json(200, "{}"),
    });
    let rest = client(&mock);
    rest.sync_clock().unwrap();
    rest.call(&ACCOUNT, &[("omitZeroBalances", "true")]).unwrap();
    let req = mock.requests().into_iter().find(|r| r.path == "/api/v3/account").unwrap();
    assert_eq!(req.method, "GET");
    assert_eq!(req.header("X-MBX-APIKEY"), Some(KEY));
    assert_eq!(req.param_names(), ["omitZeroBalances", "recvWindow", "timestamp", "signature"]);
    assert_eq!(req.param("recvWindow").as_deref(), Some("5000"));
    let ts: i64 = req.param("timestamp").unwrap().parse().unwrap();
    assert!((ts - local_ms()).abs() < 5000, "timestamp {ts} is not near now");
    assert!(verify(&req), "signature does not verify");
}

#[test]
fn timestamp_follows_the_server_clock() {
    // The server is 30 s ahead; a client signing with local time would be outside recvWindow.
    let mock = Mock::start(|req, _| match req.path.as_str() {
        "/api/v3/time" => time_reply(30_000),
        _ => Reply::json(200, "{}"),
    });
    let rest = client(&mock);
    let offset = rest.sync_clock().unwrap();
    assert!((offset - 30_000).abs() < 1000, "offset {offset}");
    rest.call(&ACCOUNT, &[]).unwrap();
    let req = mock.requests().into_iter().find(|r| r.path == "/api/v3/account").unwrap();
    let ts: i64 = req.param("timestamp").unwrap().parse().unwrap();
    assert!((ts - (local_ms() + 30_000)).abs() < 2000, "timestamp {ts} ignores the server clock");
}

#[test]
fn minus_1021_resyncs_and_retries_with_a_fresh_timestamp() {
    // The server jumped 20 s ahead after our first sync; the first signed call fails once.
    let mock = Mock::start(|req, _| match req.path.as_str() {
        "/api/v3/time" => time_reply(20_000),
        "/api/v3/account" => {
            let ts: i64 = req.param("timestamp").unwrap().parse().unwrap();
            if (local_ms() + 20_000) - ts > 5000 {
                Reply::json(400, r#"{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}"#)
            } else {
                Reply::json(200, "{}")
            }
        }
        _ => Reply::json(404, "{}"),
    });
    let rest = client(&mock);
    rest.clock().set_offset(0); // synced long ago, before the jump
    rest.call(&ACCOUNT, &[]).unwrap();
    let paths: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.iter().filter(|p| *p == "/api/v3/account").count(), 2, "{paths:?}");
    assert_eq!(paths.iter().filter(|p| *p == "/api/v3/time").count(), 3, "one resync of three samples");
}

#[test]
fn persistent_minus_1021_is_bounded() {
    let mock = Mock::start(|req, _| match req.path.as_str() {
        "/api/v3/time" => time_reply(0),
        _ => Reply::json(
            400,
            r#"{"code":-1021,"msg":"Timestamp for this request was 1000ms ahead of the server's time."}"#,
        ),
    });
    let rest = client(&mock);
    let err = rest.call(&ACCOUNT, &[]).unwrap_err();
    assert_eq!(err.api_code(), Some(-1021));
    let tries = mock.requests().iter().filter(|r| r.path == "/api/v3/account").count();
    assert_eq!(tries, 2, "one try and one retry after a resync, no more");
}

#[test]
fn http_429_holds_every_later_request_until_retry_after() {
    let mock = Mock::start(|req, i| {
        match (req.path.as_str(), i) {
        (_, 0) => Reply::json(429, r#"{"code":-1003,"msg":"Too much request weight used; current limit is 1200 request weight per 1 MINUTE."}"#)
            .header("Retry-After", "1"),
        _ => time_reply(0),
    }
    });
    let rest = Arc::new(client(&mock));
    match rest.call(&binance_syncd::rest::TIME, &[]) {
        Err(Error::RateLimited { retry_after }) => assert_eq!(retry_after, Duration::from_secs(1)),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    let hit = Instant::now();
    // Another thread's request must wait for Retry-After, not go out at once.
    let other = {
        let rest = rest.clone();
        std::thread::spawn(move || rest.call(&binance_syncd::rest::PING, &[]).map(|_| Instant::now()))
    };
    let sent_at = other.join().unwrap().unwrap();
    assert!(sent_at - hit >= Duration::from_millis(900), "sent after {:?}", sent_at - hit);
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(rest.gate().stats().http_429, 1);
}

// The order endpoints' unknown-outcome mapping is tested beside the only code that can call
// them, `rest::desk` (the daemon's client refuses them here).

#[test]
fn the_public_client_refuses_order_endpoints() {
    let mock = Mock::start(|_, _| Reply::json(200, "{}"));
    let rest = client(&mock);
    rest.clock().set_offset(0);
    let disguised = binance_syncd::rest::Endpoint {
        method: binance_syncd::rest::Method::Post,
        path: "/api/v3/order",
        security: binance_syncd::rest::Security::Signed,
        weight: 1,
        orders: 1,
        mutates: false,
    };
    match rest.call(&disguised, &[("symbol", "BTCUSD")]) {
        Err(Error::Config(why)) => assert!(why.contains("executor"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(mock.requests().is_empty(), "nothing was sent");
}

#[test]
fn listen_key_calls_carry_the_key_header_only() {
    let mock = Mock::start(|_, _| {
        Reply::json(200, r#"{"listenKey":"pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"}"#)
    });
    let rest = client(&mock);
    rest.call(&LISTEN_KEY_NEW, &[]).unwrap();
    rest.call(&LISTEN_KEY_KEEPALIVE, &[("listenKey", "abc")]).unwrap();
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2, "no clock sync is needed for unsigned calls");
    assert_eq!(reqs[0].method, "POST");
    assert!(reqs[0].param_names().is_empty(), "{:?}", reqs[0]);
    assert_eq!(reqs[1].method, "PUT");
    assert_eq!(reqs[1].param_names(), ["listenKey"]);
    for r in &reqs {
        assert_eq!(r.header("X-MBX-APIKEY"), Some(KEY));
    }
}

#[test]
fn api_errors_are_typed() {
    let mock = Mock::start(|_, _| {
        Reply::json(401, r#"{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}"#)
    });
    let rest = client(&mock);
    rest.clock().set_offset(0);
    let err = rest.call(&ACCOUNT, &[]).unwrap_err();
    assert!(err.is_auth_failure(), "{err:?}");
    assert!(matches!(err, Error::Api { status: 401, code: -2015, .. }));
    assert!(!format!("{err} {err:?}").contains(SECRET));
}
