use super::*;
use crate::hub::SessionRecord;
use crate::lock::LockAnyway;
use std::sync::Mutex;
use tungstenite::error::ProtocolError;

const KEY: &str = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1";
const OTHER_KEY: &str = "OfYGbUzi3PraNagEkdKuFwUHn48brFsItTdsuiIXrucEvD0rhRXZ7I6URWfE8YE8";
const EVENT: &str = r#"{"e":"outboundAccountPosition","E":1564034571105,"u":1564034571073,"B":[]}"#;

struct Keys(Mutex<Vec<String>>);

impl KeyCheck for Keys {
    fn live_key(&self, key: &str) -> Option<String> {
        let live = self.0.lock_anyway();
        live.iter().any(|k| k == key).then(|| format!("key:{}", &key[..4]))
    }
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }
}

/// Nothing fires unless a test shortens it.
fn quiet() -> WsSettings {
    WsSettings {
        ping_interval: Duration::from_secs(3600),
        pong_timeout: Duration::from_secs(3600),
        max_connection_life: Duration::from_secs(3600),
        incoming_per_second: 5,
        max_frame: 1024,
    }
}

fn start(settings: WsSettings) -> (WsServer, StreamHub) {
    let hub = StreamHub::new();
    let keys = Arc::new(Keys(Mutex::new(vec![KEY.to_string(), OTHER_KEY.to_string()])));
    let server =
        WsServer::start("127.0.0.1:0".parse().unwrap(), settings, None, hub.clone(), keys).expect("bind loopback");
    (server, hub)
}

type Client = WebSocket<TcpStream>;

fn try_connect(server: &WsServer, path: &str) -> Result<Client, tungstenite::Error> {
    let stream = TcpStream::connect(server.local_addr()).map_err(tungstenite::Error::Io)?;
    let url = format!("ws://{}{path}", server.local_addr());
    let (ws, _) = tungstenite::client(url.as_str(), stream).map_err(|e| match e {
        HandshakeError::Failure(e) => e,
        HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
    })?;
    // Reads poll, so a test never hangs on a server that says nothing.
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    Ok(ws)
}

fn connect(server: &WsServer, path: &str) -> Client {
    try_connect(server, path).expect("websocket handshake")
}

fn raw_path() -> String {
    format!("/ws/{KEY}")
}

/// The next message, or the error that ended the connection. Panics after `within`.
fn next(ws: &mut Client, within: Duration) -> Result<Message, tungstenite::Error> {
    let deadline = Instant::now() + within;
    loop {
        match ws.read() {
            Err(tungstenite::Error::Io(e)) if would_block(&e) => {
                assert!(Instant::now() < deadline, "no message within {within:?}");
            }
            other => return other,
        }
    }
}

/// The next data or close message, skipping pings and pongs.
fn next_data(ws: &mut Client) -> Message {
    loop {
        match next(ws, Duration::from_secs(2)) {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(msg) => return msg,
            Err(e) => panic!("connection ended: {e}"),
        }
    }
}

fn next_text(ws: &mut Client) -> String {
    match next_data(ws) {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// The close frame the server sends, skipping anything before it.
fn next_close(ws: &mut Client) -> CloseFrame {
    loop {
        match next(ws, Duration::from_secs(2)) {
            Ok(Message::Close(Some(frame))) => return frame,
            Ok(Message::Close(None)) => panic!("close frame without a code"),
            Ok(_) => {}
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

/// Polls the hub's one session until `cond` holds.
fn wait_session(hub: &StreamHub, what: &str, cond: impl Fn(&SessionRecord) -> bool) -> SessionRecord {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(s) = hub.sessions().into_iter().find(|s| cond(s)) {
            return s;
        }
        assert!(Instant::now() < deadline, "no session with {what}: {:?}", hub.sessions());
        thread::sleep(Duration::from_millis(2));
    }
}

fn closed_with(hub: &StreamHub) -> String {
    wait_session(hub, "a close reason", |s| s.close_reason.is_some()).close_reason.unwrap_or_default()
}

#[test]
fn raw_events_arrive_as_published() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &raw_path());
    // Attached before the upgrade completed: nothing published from now on is lost.
    assert_eq!(hub.publish(KEY, EVENT), 1);
    assert_eq!(hub.publish(KEY, r#"{"e":"second"}"#), 1);
    assert_eq!(next_text(&mut ws), EVENT);
    assert_eq!(next_text(&mut ws), r#"{"e":"second"}"#);
    let s = wait_session(&hub, "2 events", |s| s.events_sent == 2);
    assert_eq!(s.format, StreamFormat::Raw);
    assert_eq!(s.key, "key:pqia");
    assert!(s.close_reason.is_none());
}

#[test]
fn client_close_is_answered() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &raw_path());
    ws.close(None).unwrap();
    match next(&mut ws, Duration::from_secs(2)) {
        Ok(Message::Close(_)) => {}
        other => panic!("expected the close reply, got {other:?}"),
    }
    assert!(matches!(next(&mut ws, Duration::from_secs(2)), Err(tungstenite::Error::ConnectionClosed)));
    assert_eq!(closed_with(&hub), reason::CLIENT_CLOSED);
    // The close frame is not a message for the rate limit.
    assert_eq!(hub.sessions()[0].messages_received, 0);
}

#[test]
fn combined_events_are_wrapped() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &format!("/stream?streams={KEY}"));
    hub.publish(KEY, EVENT);
    assert_eq!(next_text(&mut ws), format!(r#"{{"stream":"{KEY}","data":{EVENT}}}"#));
    assert_eq!(hub.sessions()[0].format, StreamFormat::Combined);
}

#[test]
fn combined_url_with_market_streams_picks_the_listen_key() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &format!("/stream?streams=btcusd@bookTicker/{KEY}"));
    hub.publish(KEY, "{}");
    assert_eq!(next_text(&mut ws), format!(r#"{{"stream":"{KEY}","data":{{}}}}"#));
    ws.send(Message::text(r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#)).unwrap();
    assert_eq!(next_text(&mut ws), format!(r#"{{"result":["btcusd@bookTicker","{KEY}"],"id":1}}"#));
}

#[test]
fn market_streams_need_no_key_and_follow_subscribe_and_unsubscribe() {
    let (server, hub) = start(quiet());
    let mut raw = connect(&server, "/ws/btcusd@trade");
    let mut combined = connect(&server, "/stream?streams=btcusd@trade/btcusd@depth@100ms");
    let mut user = connect(&server, &raw_path());
    assert_eq!(hub.publish_market("btcusd@trade", r#"{"e":"trade"}"#), 2);
    assert_eq!(next_text(&mut raw), r#"{"e":"trade"}"#);
    assert_eq!(next_text(&mut combined), r#"{"stream":"btcusd@trade","data":{"e":"trade"}}"#);
    // The user stream gets no market event it did not ask for.
    user.send(Message::text(r#"{"method":"SUBSCRIBE","params":["ethusd@bookTicker"],"id":7}"#)).unwrap();
    assert_eq!(next_text(&mut user), r#"{"result":null,"id":7}"#);
    raw.send(Message::text(r#"{"method":"SUBSCRIBE","params":["ethusd@bookTicker"],"id":1}"#)).unwrap();
    assert_eq!(next_text(&mut raw), r#"{"result":null,"id":1}"#);
    assert_eq!(hub.publish_market("ethusd@bookTicker", "{}"), 2);
    assert_eq!(next_text(&mut raw), "{}");
    assert_eq!(next_text(&mut user), "{}");
    raw.send(Message::text(r#"{"method":"UNSUBSCRIBE","params":["btcusd@trade"],"id":2}"#)).unwrap();
    assert_eq!(next_text(&mut raw), r#"{"result":null,"id":2}"#);
    raw.send(Message::text(r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#)).unwrap();
    assert_eq!(next_text(&mut raw), r#"{"result":["ethusd@bookTicker"],"id":3}"#);
    assert_eq!(hub.publish_market("btcusd@trade", "{}"), 1, "only the combined connection still has it");
    assert_eq!(hub.market_sessions().len(), 2);
    assert_eq!(hub.sessions().len(), 1, "market sessions are reported apart");
    // A market fault reaches the market connections only.
    assert_eq!(hub.command_market(StreamItem::Drop { rst: false }), 2);
    assert!(matches!(next(&mut raw, Duration::from_secs(2)), Err(_) | Ok(Message::Close(_))));
}

#[test]
fn unknown_key_or_path_is_rejected_at_handshake() {
    let (server, hub) = start(quiet());
    for path in ["/ws/notakey", "/stream?streams=btcusd@bookTicker/notakey", "/ws/", "/stream", "/api/v3/time"] {
        match try_connect(&server, path) {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{path}");
                let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
                if path.starts_with("/ws/") || path.starts_with("/stream") {
                    assert_eq!(body, r#"{"code":-1125,"msg":"This listenKey does not exist."}"#, "{path}");
                } else {
                    assert!(body.starts_with(r#"{"code":-1,"msg":"Unknown path"#), "{path}: {body}");
                }
            }
            Err(e) => panic!("{path}: expected an HTTP rejection, got {e}"),
            Ok(_) => panic!("{path}: accepted"),
        }
    }
    assert!(hub.sessions().is_empty());
    connect(&server, &raw_path()); // still serving
}

#[test]
fn pings_carry_a_payload_and_pongs_keep_the_connection() {
    let settings = WsSettings {
        ping_interval: Duration::from_millis(20),
        pong_timeout: Duration::from_millis(100),
        // 50 pongs a second: compressed time needs a compressed rate limit too.
        incoming_per_second: 1000,
        ..quiet()
    };
    let (server, hub) = start(settings);
    let mut ws = connect(&server, &raw_path());
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(400);
    // Reading answers each ping (tungstenite flushes the pong on the next read), for four
    // pong timeouts' worth of time.
    while Instant::now() < until {
        match ws.read() {
            Ok(Message::Ping(payload)) => {
                let ms: i64 = std::str::from_utf8(&payload).unwrap().parse().expect("ms payload");
                assert!(ms > 1_600_000_000_000);
                pings += 1;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if would_block(&e) => {}
            Err(e) => panic!("connection ended: {e}"),
        }
    }
    assert!(pings >= 5, "{pings} pings in 400 ms");
    let s = wait_session(&hub, "pongs counted", |s| s.pongs_received >= 5);
    assert!(s.pings_sent >= s.pongs_received);
    assert_eq!(s.messages_received, s.pongs_received);
    assert!(s.close_reason.is_none(), "{s:?}");
}

#[test]
fn client_that_does_not_pong_is_cut() {
    let settings =
        WsSettings { ping_interval: Duration::from_millis(20), pong_timeout: Duration::from_millis(100), ..quiet() };
    let (server, hub) = start(settings);
    let opened = Instant::now();
    // By hand: a tungstenite client would answer the pings as it reads the close frame.
    let s = hand_upgrade(&server);
    assert_eq!(closed_with(&hub), reason::PONG_TIMEOUT);
    assert!(opened.elapsed() >= Duration::from_millis(120));
    let pings = hub.sessions()[0].pings_sent as usize;
    assert!(pings >= 5, "{pings} pings");
    let rest = read_to_end(s);
    assert_eq!(rest[0], 0x89, "a ping frame first");
    assert!(rest.ends_with(b"\x88\x0e\x03\xf0pong timeout"), "close 1008 last: {rest:?}");
}

#[test]
fn unsolicited_pongs_do_not_count_as_answers() {
    let settings = WsSettings {
        ping_interval: Duration::from_millis(30),
        pong_timeout: Duration::from_millis(150),
        incoming_per_second: 1000,
        ..quiet()
    };
    let (server, hub) = start(settings);
    let mut ws = connect(&server, &raw_path());
    // Pongs that echo nothing, often, and no reads, so the real pings go unanswered.
    let started = Instant::now();
    while hub.sessions()[0].close_reason.is_none() {
        assert!(started.elapsed() < Duration::from_secs(2), "never cut");
        if ws.send(Message::Pong(Bytes::from_static(b"mine"))).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(closed_with(&hub), reason::PONG_TIMEOUT);
    assert!(hub.sessions()[0].pongs_received >= 10);
}

#[test]
fn five_messages_a_second_are_allowed() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &raw_path());
    for n in 0..5u8 {
        ws.send(Message::Ping(Bytes::from(vec![n]))).unwrap();
    }
    for n in 0..5u8 {
        match next(&mut ws, Duration::from_secs(2)) {
            Ok(Message::Pong(payload)) => assert_eq!(&payload[..], &[n]),
            other => panic!("expected pong {n}, got {other:?}"),
        }
    }
    hub.publish(KEY, EVENT);
    assert_eq!(next_text(&mut ws), EVENT);
    let s = wait_session(&hub, "5 messages", |s| s.messages_received == 5);
    assert!(s.close_reason.is_none());
}

#[test]
fn sixth_message_within_a_second_cuts() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &raw_path());
    for n in 0..6 {
        ws.send(Message::text(format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{n}}}"#))).unwrap();
    }
    let frame = next_close(&mut ws);
    assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Policy, "too many messages"));
    assert_eq!(closed_with(&hub), reason::TOO_MANY_MESSAGES);
    assert_eq!(hub.sessions()[0].messages_received, 6);
}

#[test]
fn connection_is_cut_at_max_life() {
    let settings = WsSettings { max_connection_life: Duration::from_millis(150), ..quiet() };
    let (server, hub) = start(settings);
    let opened = Instant::now();
    let mut ws = connect(&server, &raw_path());
    let frame = next_close(&mut ws);
    assert!(opened.elapsed() >= Duration::from_millis(150));
    assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Away, "24h cut"));
    // The client's close reply completes the handshake; then the server shuts TCP.
    assert!(matches!(next(&mut ws, Duration::from_secs(2)), Err(tungstenite::Error::ConnectionClosed)));
    assert_eq!(closed_with(&hub), reason::LIFETIME_CUT);
}

#[test]
fn rst_fault_resets_the_connection() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &raw_path());
    assert_eq!(hub.command(Some(KEY), StreamItem::Drop { rst: true }), 1);
    loop {
        match next(&mut ws, Duration::from_secs(2)) {
            Ok(Message::Ping(_)) => {} // the probe whose pong makes close() send RST
            Err(tungstenite::Error::Io(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
                break;
            }
            other => panic!("expected a reset, got {other:?}"),
        }
    }
    assert_eq!(closed_with(&hub), reason::FAULT_RST);
}

#[test]
fn fin_fault_drops_without_close_frame() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &raw_path());
    hub.command(Some(KEY), StreamItem::Drop { rst: false });
    match next(&mut ws, Duration::from_secs(2)) {
        Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {}
        other => panic!("expected EOF without close frame, got {other:?}"),
    }
    assert_eq!(closed_with(&hub), reason::FAULT_FIN);
}

#[test]
fn close_fault_sends_code_and_reason_after_queued_events() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &raw_path());
    hub.publish(KEY, EVENT);
    hub.command(Some(KEY), StreamItem::Close { code: 4001, reason: "bye".into() });
    assert_eq!(next_text(&mut ws), EVENT);
    let frame = next_close(&mut ws);
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4001, "bye"));
    assert_eq!(closed_with(&hub), reason::FAULT_CLOSE);
}

#[test]
fn silence_stops_pings_events_and_pongs() {
    let settings = WsSettings {
        ping_interval: Duration::from_millis(20),
        pong_timeout: Duration::from_millis(100),
        max_connection_life: Duration::from_millis(200),
        ..quiet()
    };
    let (server, hub) = start(settings);
    let mut ws = connect(&server, &raw_path());
    assert!(matches!(next(&mut ws, Duration::from_secs(2)), Ok(Message::Ping(_))));
    hub.command(Some(KEY), StreamItem::Silence);
    let silenced = Instant::now();
    hub.publish(KEY, EVENT);
    ws.send(Message::Ping(Bytes::from_static(b"anyone?"))).unwrap();
    // Longer than the pong timeout and the max life: neither may fire while silent.
    while silenced.elapsed() < Duration::from_millis(400) {
        match ws.read() {
            // One ping may have been on its way when the fault was queued.
            Ok(Message::Ping(_)) if silenced.elapsed() < Duration::from_millis(15) => {}
            Ok(msg) => panic!("silent server sent {msg:?}"),
            Err(tungstenite::Error::Io(e)) if would_block(&e) => {}
            Err(e) => panic!("silent server ended the connection: {e}"),
        }
    }
    let s = &hub.sessions()[0];
    assert!(s.close_reason.is_none(), "{s:?}");
    assert_eq!(s.events_sent, 0);
    drop(ws);
    assert_eq!(closed_with(&hub), reason::CLIENT_CLOSED);
}

#[test]
fn refuse_for_refuses_then_accepts_on_the_same_port() {
    let (server, hub) = start(quiet());
    let mut open = connect(&server, &raw_path());
    let asked = Instant::now();
    server.refuse_for(Duration::from_millis(300));
    match TcpStream::connect(server.local_addr()) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
        Ok(_) => panic!("connected during the refusal"),
    }
    // Open connections are untouched.
    hub.publish(KEY, EVENT);
    assert_eq!(next_text(&mut open), EVENT);
    let deadline = Instant::now() + Duration::from_secs(3);
    while TcpStream::connect(server.local_addr()).is_err() {
        assert!(Instant::now() < deadline, "never accepted again");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(asked.elapsed() >= Duration::from_millis(300));
    let mut again = connect(&server, &raw_path());
    assert_eq!(hub.publish(KEY, EVENT), 2);
    assert_eq!(next_text(&mut again), EVENT);
    assert_eq!(next_text(&mut open), EVENT);
}

#[test]
fn garbage_items_are_sent_as_is() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &raw_path());
    hub.command(Some(KEY), StreamItem::Text(Arc::from("{\"e\":\"executionRep")));
    hub.command(Some(KEY), StreamItem::Binary(Arc::from(&[0x00u8, 0x9f, 0x92, 0x96][..])));
    assert_eq!(next_text(&mut ws), "{\"e\":\"executionRep");
    match next_data(&mut ws) {
        Message::Binary(bytes) => assert_eq!(&bytes[..], &[0x00, 0x9f, 0x92, 0x96]),
        other => panic!("expected binary, got {other:?}"),
    }
    // Garbage is not an event.
    assert_eq!(hub.sessions()[0].events_sent, 0);
}

#[test]
fn text_messages_get_binance_replies() {
    let (server, hub) = start(quiet());
    let mut ws = connect(&server, &raw_path());
    let exchanges = [
        ("ping", r#"{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}"#.to_string()),
        (r#"{"method":"SUBSCRIBE","params":["btcusd@aggTrade"],"id":1}"#, r#"{"result":null,"id":1}"#.into()),
        (r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#, format!(r#"{{"result":["{KEY}","btcusd@aggTrade"],"id":3}}"#)),
        (r#"{"method":"GET_PROPERTY","params":["combined"],"id":4}"#, r#"{"result":false,"id":4}"#.into()),
        (
            r#"{"method":"SUBSCRIBE","id":"x"}"#,
            r#"{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"}"#.into(),
        ),
    ];
    for (ask, want) in &exchanges {
        ws.send(Message::text(*ask)).unwrap();
        assert_eq!(&next_text(&mut ws), want, "for {ask}");
    }
    hub.publish(KEY, EVENT);
    assert_eq!(next_text(&mut ws), EVENT);
}

#[test]
fn subscribe_reply_covers_the_documented_errors() {
    let mut streams = vec![KEY.to_string()];
    let mut ask = |text: &str| subscribe_reply(text, &mut streams, StreamFormat::Combined);
    assert!(
        ask(r#"{"method":"NOPE","id":1}"#).starts_with(r#"{"code":2,"msg":"Invalid request: unknown variant `NOPE`"#)
    );
    assert!(ask(r#"{"id":1}"#).starts_with(r#"{"code":2,"msg":"Invalid request: missing field `method`"#));
    assert_eq!(
        ask(r#"{"method":"SET_PROPERTY","params":["colour",true],"id":7}"#),
        r#"{"code":0,"msg":"Unknown property","id":7}"#
    );
    assert_eq!(
        ask(r#"{"method":"SET_PROPERTY","params":["combined",1],"id":7}"#),
        r#"{"code":1,"msg":"Invalid value type: expected Boolean"}"#
    );
    assert_eq!(ask(r#"{"method":"SET_PROPERTY","params":["combined",true],"id":8}"#), r#"{"result":null,"id":8}"#);
    assert_eq!(ask(r#"{"method":"GET_PROPERTY","params":["combined"],"id":9}"#), r#"{"result":true,"id":9}"#);
    let unsubscribe = format!(r#"{{"method":"UNSUBSCRIBE","params":["{KEY}"],"id":10}}"#);
    assert_eq!(ask(&unsubscribe), r#"{"result":null,"id":10}"#);
    assert_eq!(ask(r#"{"method":"LIST_SUBSCRIPTIONS","id":11}"#), r#"{"result":[],"id":11}"#);
    assert!(ask("{\"method\":").starts_with(r#"{"code":3,"msg":"Invalid JSON: EOF while parsing"#));
}

#[test]
fn oversized_frame_is_closed_with_1009() {
    let (server, hub) = start(quiet()); // max_frame 1024
    let mut ws = connect(&server, &raw_path());
    ws.send(Message::binary(vec![7u8; 1025])).unwrap();
    let frame = next_close(&mut ws);
    assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Size, "frame too large"));
    assert_eq!(closed_with(&hub), reason::FRAME_TOO_LARGE);
}

/// Upgrades by hand, so the test can then send bytes no WebSocket client would.
fn hand_upgrade(server: &WsServer) -> TcpStream {
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    let request = format!(
        "GET /ws/{KEY} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(request.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

fn read_to_end(mut s: TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all); // a reset after the answer is fine
    all
}

#[test]
fn bad_input_never_takes_the_server_down() {
    let (server, hub) = start(quiet());

    // Plain HTTP gets a plain answer.
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let answer = read_to_end(s);
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.contains("\r\nContent-Length: 49\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n{\"code\":-1,\"msg\":\"Expected a WebSocket upgrade.\"}"), "{answer}");

    // Not HTTP at all; a request cut off mid-line; a connection that says nothing.
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(&[0xff; 300]).unwrap();
    drop(s);
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(b"GET /ws/").unwrap();
    drop(s);
    drop(TcpStream::connect(server.local_addr()).unwrap());

    // An unmasked frame breaks RFC 6455: close 1002.
    let mut s = hand_upgrade(&server);
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let rest = read_to_end(s);
    assert_eq!(&rest[..], b"\x88\x10\x03\xeaprotocol error", "close frame, 1002");
    // A frame header announcing 2^63 bytes.
    let mut s = hand_upgrade(&server);
    s.write_all(&[0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).unwrap();
    let rest = read_to_end(s);
    assert_eq!(&rest[..], b"\x88\x11\x03\xf1frame too large", "close frame, 1009");
    // A client that vanishes mid-session.
    drop(hand_upgrade(&server));

    // A binary frame from a client is ignored.
    let mut ws = connect(&server, &raw_path());
    ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    hub.publish(KEY, EVENT);
    assert_eq!(next_text(&mut ws), EVENT);

    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let reasons: Vec<_> = hub.sessions().into_iter().filter_map(|s| s.close_reason).collect();
        if reasons.len() == 3 {
            assert_eq!(reasons, [reason::PROTOCOL_ERROR, reason::FRAME_TOO_LARGE, reason::CLIENT_CLOSED]);
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", hub.sessions());
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(hub.sessions().len(), 4, "rejected handshakes must not create sessions");
}

#[test]
fn slow_consumer_is_cut() {
    let (server, hub) = start(quiet());
    let _ws = connect(&server, &raw_path()); // never reads
    let event = format!(r#"{{"e":"executionReport","pad":"{}"}}"#, "x".repeat(200));
    let mut published = 0;
    while hub.publish(KEY, &event) == 1 {
        published += 1;
        assert!(published < 2_000_000, "never cut");
    }
    assert_eq!(closed_with(&hub), reason::SLOW_CONSUMER);
}

#[test]
fn drop_closes_connections_and_stops_listening() {
    let settings = WsSettings { ping_interval: Duration::from_millis(10), incoming_per_second: 1000, ..quiet() };
    let (server, hub) = start(settings);
    let addr = server.local_addr();
    // By hand: a tungstenite client would try to answer the queued pings and fail.
    let raw = hand_upgrade(&server);
    let mut silent = connect(&server, &format!("/ws/{OTHER_KEY}"));
    hub.command(Some(OTHER_KEY), StreamItem::Silence);
    // Stopping wins over a queued fault, so wait until the pings stop: silence is in effect.
    let (mut last_ping, deadline) = (Instant::now(), Instant::now() + Duration::from_secs(2));
    while last_ping.elapsed() < Duration::from_millis(50) {
        match silent.read() {
            Ok(Message::Ping(_)) => last_ping = Instant::now(),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if would_block(&e) => {}
            Err(e) => panic!("connection ended: {e}"),
        }
        assert!(Instant::now() < deadline, "pings never stopped");
    }
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(2), "drop took {:?}", started.elapsed());
    let rest = read_to_end(raw);
    assert!(rest.ends_with(b"\x88\x10\x03\xe9server stopped"), "close 1001 last: {rest:?}");
    // A silent connection just ends: no close frame.
    match next(&mut silent, Duration::from_secs(2)) {
        Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {}
        other => panic!("expected EOF without close frame, got {other:?}"),
    }
    let reasons: Vec<_> = hub.sessions().into_iter().map(|s| s.close_reason).collect();
    assert_eq!(reasons, [Some(reason::SERVER_STOPPED.into()), Some(reason::SERVER_STOPPED.into())]);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn drop_does_not_wait_for_a_stalled_handshake() {
    let (server, _hub) = start(quiet());
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(b"GET /ws/").unwrap(); // and never the rest
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(1), "drop took {:?}", started.elapsed());
}

#[test]
fn drop_does_not_wait_for_a_client_dribbling_its_tls_hello() {
    let hub = StreamHub::new();
    let keys = Arc::new(Keys(Mutex::new(vec![KEY.to_string()])));
    let tls = crate::tls::PaperTls::generate(&["localhost"]).unwrap();
    let server = WsServer::start("127.0.0.1:0".parse().unwrap(), quiet(), Some(tls.server_config().clone()), hub, keys)
        .expect("bind loopback");
    let client = crate::tls::tests::dribble(TcpStream::connect(server.local_addr()).unwrap(), Duration::from_secs(8));
    std::thread::sleep(Duration::from_millis(300)); // the handshake is under way
    let started = Instant::now();
    drop(server);
    let took = started.elapsed();
    drop(client);
    assert!(took < Duration::from_secs(1), "drop took {took:?}");
}

/// Pushes `events` events of about `event_len` bytes from the hub through a server on
/// loopback to one tungstenite client, and returns the delivery rate in events per second.
/// Test-only: `cargo bench --bench paper` measures the same path through the whole exchange.
fn bench_delivery(events: usize, event_len: usize) -> io::Result<f64> {
    struct AnyKey;
    impl KeyCheck for AnyKey {
        fn live_key(&self, _: &str) -> Option<String> {
            Some("bench".into())
        }
        fn now_ms(&self) -> i64 {
            0
        }
    }
    let hub = StreamHub::new();
    let server = WsServer::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        WsSettings::default(),
        None,
        hub.clone(),
        Arc::new(AnyKey),
    )?;
    let stream = TcpStream::connect(server.local_addr())?;
    let url = format!("ws://{}/ws/benchkey", server.local_addr());
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).map_err(|e| io::Error::other(e.to_string()))?;
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = received.clone();
    let pad = "x".repeat(event_len.saturating_sub(30));
    let started = Instant::now();
    let publisher = thread::spawn(move || {
        for n in 0..events {
            // Stay well below the queue depth, which would cut the connection.
            while n - seen.load(std::sync::atomic::Ordering::Relaxed) > QUEUE_DEPTH / 2 {
                thread::yield_now();
            }
            hub.publish("benchkey", &format!(r#"{{"e":"bench","E":{n},"p":"{pad}"}}"#));
        }
    });
    let mut count = 0;
    while count < events {
        match ws.read() {
            Ok(Message::Text(_)) => {
                count += 1;
                received.store(count, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => return Err(io::Error::other(format!("after {count} events: {e}"))),
        }
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let _ = publisher.join();
    Ok(rate)
}

/// `cargo test --release -p binance-syncd-paper ws:: -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: run with --release"]
fn throughput_one_connection() {
    let rate = bench_delivery(200_000, 300).expect("bench");
    println!("delivered {rate:.0} events/s to one connection");
    assert!(rate >= 20_000.0, "{rate:.0} events/s");
}
