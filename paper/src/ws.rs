//! The paper exchange's user-data WebSocket server.
//!
//! Binance.US serves a listen key's events at `/ws/<listenKey>` (bare JSON) and
//! `/stream?streams=<listenKey>` (wrapped as `{"stream":..,"data":..}`). This server does the same on
//! loopback, plus the keep-alive and limit rules ("WebSocket Streams" in the Binance.US API docs) that a client has to
//! survive: a ping with a payload every `ping_interval`, a cut when no pong echoes one within
//! `pong_timeout`, a cut after `incoming_per_second` messages in one second, and the "24 h cut" at
//! `max_connection_life`. The engine drives connections through [`StreamHub`]: events, garbage
//! frames, and the faults (close, drop with RST or FIN, silence).
//!
//! One accept thread (`paper-ws-accept`) and one thread per connection (`paper-ws-<n>`). A
//! connection's socket is non-blocking and its thread waits on the hub channel, with a 10 ms poll
//! for the socket: a blocking read with a timeout would put that wait between every batch of
//! events and cap delivery far below the 20,000 events/s a test run needs.
//!
//! Each session ends with exactly one [`StreamHub::detach`] carrying one of the reasons in
//! [`reason`]. Close codes the server sends: 1001 (going away) for the 24 h cut and for shutdown,
//! 1008 (policy) for a missed pong and for too many messages, 1009 (too big) for an oversized
//! frame, 1002 (protocol) for a broken frame, and whatever a `Close` fault asks for.
//!
//! Listen keys are secrets on the real exchange, so nothing here logs one or a request path: logs
//! and session records carry the tag [`KeyCheck::live_key`] returns.

use super::hub::{StreamFormat, StreamHub, StreamItem, QUEUE_DEPTH};
use super::tls::{Pacing, PaperStream};
use crossbeam_channel::{select_biased, Receiver, RecvTimeoutError, Sender, TryRecvError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Bytes, HandshakeError, Message, WebSocket};

/// Timing and limits of the stream, after the docs' "WebSocket Streams". Tests compress the times.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The server pings this often, with the current time in ms as the payload.
    pub ping_interval: Duration,
    /// A connection whose oldest unanswered ping is this old is cut ("pong timeout").
    pub pong_timeout: Duration,
    /// A connection is closed with 1001 "24h cut" when it reaches this age.
    pub max_connection_life: Duration,
    /// More incoming messages than this (pings, pongs, text, binary; not close) within one
    /// second cut the connection ("too many messages"). The second is a real one: when
    /// `ping_interval` is compressed, scale this up too, or the client's pongs alone break it.
    pub incoming_per_second: u32,
    /// Largest incoming message in bytes; a larger one cuts the connection ("frame too large").
    pub max_frame: usize,
}

impl Default for WsSettings {
    /// Binance.US from 2026-08-31: ping every 20 s, one minute for the pong, 24 h, 5 msg/s.
    fn default() -> WsSettings {
        WsSettings {
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
            max_connection_life: Duration::from_secs(24 * 60 * 60),
            incoming_per_second: 5,
            max_frame: 64 * 1024,
        }
    }
}

/// The engine's view of listen keys, asked once per connection attempt.
pub trait KeyCheck: Send + Sync + 'static {
    /// `Some(tag)` if `key` is live; the tag (a fingerprint) goes into logs and the report.
    fn live_key(&self, key: &str) -> Option<String>;
    /// The exchange clock, for session records and ping payloads.
    fn now_ms(&self) -> i64;
}

/// Why a session ended, as recorded by [`StreamHub::detach`].
pub mod reason {
    /// The client sent a close frame or closed its side of the TCP connection.
    pub const CLIENT_CLOSED: &str = "client closed";
    /// No pong echoed a ping within `pong_timeout`.
    pub const PONG_TIMEOUT: &str = "pong timeout";
    /// More than `incoming_per_second` messages in one second.
    pub const TOO_MANY_MESSAGES: &str = "too many messages";
    /// The connection reached `max_connection_life`.
    pub const LIFETIME_CUT: &str = "24h cut";
    /// A `Drop { rst: true }` fault.
    pub const FAULT_RST: &str = "fault: rst";
    /// A `Drop { rst: false }` fault.
    pub const FAULT_FIN: &str = "fault: fin";
    /// A `Close` fault.
    pub const FAULT_CLOSE: &str = "fault: close";
    /// The server was dropped.
    pub const SERVER_STOPPED: &str = "server stopped";
    /// The socket failed (reset by the client, broken pipe, handshake write failed).
    pub const IO_ERROR: &str = "io error";
    /// An incoming message was larger than `max_frame`.
    pub const FRAME_TOO_LARGE: &str = "frame too large";
    /// The client broke the WebSocket protocol (unmasked frame, bad opcode, bad UTF-8, ...).
    pub const PROTOCOL_ERROR: &str = "protocol error";
    /// The client read too slowly: its hub queue filled up or our write buffer did.
    pub const SLOW_CONSUMER: &str = "slow consumer";
}

/// How long the server waits on the hub channel before it polls the socket again.
const POLL: Duration = Duration::from_millis(10);
/// The wait between flush attempts while the client's receive window is full.
const POLL_BLOCKED: Duration = Duration::from_millis(1);
/// Items sent between two flushes and two socket reads.
const BATCH: usize = 1024;
/// Incoming messages handled per poll; more than a handful already breaks the rate limit.
const READS_PER_POLL: usize = 64;
/// A client gets this long to send its upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The handshake reads in slices this short so that shutdown doesn't wait for a slow client.
const HANDSHAKE_POLL: Duration = Duration::from_millis(100);
/// After our close frame, the client gets this long to answer before TCP is shut.
const CLOSE_GRACE: Duration = Duration::from_millis(200);
/// Ping payloads remembered while unanswered; a pong must echo one of them.
const OUTSTANDING_PINGS: usize = 64;
/// Beyond this many connection threads, new connections are dropped at once.
const MAX_CONNECTIONS: usize = 1024;
/// Our write buffer beyond which a client counts as a slow consumer. We stop taking items from
/// the hub while writes block, so this only fills if a single batch outgrows it.
const MAX_WRITE_BUFFER: usize = 8 << 20;

enum ListenerCmd {
    Refuse { until: Instant, ack: Sender<()> },
}

/// The running server. Dropping it closes every connection (1001 "server stopped") and joins
/// all its threads.
pub struct WsServer {
    addr: SocketAddr,
    /// Never sent on: dropping it tells every thread to stop.
    stop: Option<Sender<()>>,
    listener: Sender<ListenerCmd>,
    accept: Option<JoinHandle<()>>,
}

impl WsServer {
    /// Binds `addr` (port 0 picks one) and starts accepting.
    ///
    /// # Errors
    /// Binding the listener or spawning the accept thread failed.
    pub fn start(
        addr: SocketAddr,
        settings: WsSettings,
        tls: Option<Arc<rustls::ServerConfig>>,
        hub: StreamHub,
        keys: Arc<dyn KeyCheck>,
    ) -> io::Result<WsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (listener_tx, listener_rx) = crossbeam_channel::unbounded();
        let shared = ServerCtx { settings: Arc::new(settings), tls, hub, keys, stop: stop_rx };
        let accept = thread::Builder::new()
            .name("paper-ws-accept".into())
            .spawn(move || accept_loop(listener, addr, shared, listener_rx))?;
        Ok(WsServer { addr, stop: Some(stop_tx), listener: listener_tx, accept: Some(accept) })
    }

    /// The bound address, with the port the OS chose.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Refuses new TCP connections for `period`: the listening socket is closed, so a connect
    /// gets `ConnectionRefused`, and the same port is bound again afterwards. Open connections
    /// are not touched. Returns once the listener is closed.
    pub fn refuse_for(&self, period: Duration) {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        let until = Instant::now() + period;
        if self.listener.send(ListenerCmd::Refuse { until, ack: ack_tx }).is_err() {
            return; // the accept thread is gone: nothing accepts anyway
        }
        self.wake();
        // Bounded so a wedged accept thread can't hang the caller; it never should be.
        let _ = ack_rx.recv_timeout(Duration::from_secs(2));
    }

    /// A blocked `accept()` only returns for a connection, so we make one. [tiny-http]
    fn wake(&self) {
        let target = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port()),
            IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.addr.port()),
            _ => self.addr,
        };
        // Refused while the listener is closed, which is fine: then nobody is in accept().
        let _ = TcpStream::connect_timeout(&target, Duration::from_millis(500));
    }
}

// The exchange keeps the server in an `Arc` behind a `Mutex` and drops it from any thread: a
// field that is not `Send + Sync` must fail the build, not a test run.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<WsServer>();
};

impl Drop for WsServer {
    fn drop(&mut self) {
        self.stop.take();
        self.wake();
        if let Some(accept) = self.accept.take() {
            if accept.join().is_err() {
                log::error!("paper ws: accept thread panicked");
            }
        }
    }
}

/// What the accept thread hands to every connection thread.
#[derive(Clone)]
struct ServerCtx {
    settings: Arc<WsSettings>,
    /// Every connection is TLS when set.
    tls: Option<Arc<rustls::ServerConfig>>,
    hub: StreamHub,
    keys: Arc<dyn KeyCheck>,
    stop: Receiver<()>,
}

fn stopped(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
}

fn accept_loop(mut listener: TcpListener, addr: SocketAddr, shared: ServerCtx, commands: Receiver<ListenerCmd>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    let mut accepted: u64 = 0;
    loop {
        if stopped(&shared.stop) {
            break;
        }
        if let Ok(ListenerCmd::Refuse { until, ack }) = commands.try_recv() {
            drop(listener);
            let _ = ack.send(());
            log::info!("paper ws: refusing connections for {:?}", until.saturating_duration_since(Instant::now()));
            match refuse(addr, until, &shared.stop, &commands) {
                Some(again) => listener = again,
                None => break,
            }
            log::info!("paper ws: accepting connections again");
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if stopped(&shared.stop) {
                    break;
                }
                // A pending ListenerCmd came with a wake-up connection; it fails its handshake
                // quietly, so it needs no special case here.
                conns.retain(|h| !h.is_finished());
                if conns.len() >= MAX_CONNECTIONS {
                    log::warn!("paper ws: {MAX_CONNECTIONS} connections open, dropping a new one");
                    continue;
                }
                accepted += 1;
                let shared = shared.clone();
                let spawned =
                    thread::Builder::new().name(format!("paper-ws-{accepted}")).spawn(move || serve(stream, shared));
                match spawned {
                    Ok(handle) => conns.push(handle),
                    Err(e) => log::warn!("paper ws: cannot spawn a connection thread: {e}"),
                }
            }
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning on the error.
                log::warn!("paper ws: accept: {e}");
                if let Err(RecvTimeoutError::Disconnected) = shared.stop.recv_timeout(Duration::from_millis(20)) {
                    break;
                }
            }
        }
    }
    for conn in conns {
        if conn.join().is_err() {
            log::error!("paper ws: a connection thread panicked");
        }
    }
}

/// Waits out a refusal (extended by further requests), then binds `addr` again.
/// `None` when the server stops meanwhile.
fn refuse(
    addr: SocketAddr,
    mut until: Instant,
    stop: &Receiver<()>,
    commands: &Receiver<ListenerCmd>,
) -> Option<TcpListener> {
    let mut warned = false;
    loop {
        let now = Instant::now();
        let wait = if now >= until {
            match TcpListener::bind(addr) {
                Ok(listener) => return Some(listener),
                Err(e) => {
                    if !warned {
                        log::warn!("paper ws: cannot bind {addr} again yet: {e}");
                        warned = true;
                    }
                    Duration::from_millis(20)
                }
            }
        } else {
            until - now
        };
        select_biased! {
            recv(stop) -> _ => return None,
            recv(commands) -> msg => match msg {
                Ok(ListenerCmd::Refuse { until: later, ack }) => {
                    until = until.max(later);
                    let _ = ack.send(());
                }
                Err(_) => return None,
            },
            default(wait) => {}
        }
    }
}

/// The session a successful handshake attached. Dropping it detaches, so `detach` happens
/// exactly once whichever way the connection ends, a panic included.
struct Session {
    hub: StreamHub,
    keys: Arc<dyn KeyCheck>,
    id: u64,
    reason: &'static str,
}

impl Drop for Session {
    fn drop(&mut self) {
        log::info!("paper ws: session={} closed reason={}", self.id, self.reason);
        self.hub.detach(self.id, self.reason, self.keys.now_ms());
    }
}

/// Where a handshake request leads.
struct Subscription {
    key: String,
    tag: String,
    format: StreamFormat,
    /// The stream names of the request, for LIST_SUBSCRIPTIONS.
    streams: Vec<String>,
}

/// Why a handshake is refused: Binance's `{code, msg}`, sent with HTTP 400.
#[derive(Serialize)]
struct Refusal {
    code: i64,
    msg: &'static str,
}

const NO_SUCH_KEY: Refusal = Refusal { code: -1125, msg: "This listenKey does not exist." };
const UNKNOWN_PATH: Refusal =
    Refusal { code: -1, msg: "Unknown path; expected /ws/<listenKey> or /stream?streams=<listenKey>." };

fn reject(rejection: &Refusal) -> ErrorResponse {
    let body = serde_json::to_string(rejection).unwrap_or_default();
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = tungstenite::http::StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        tungstenite::http::header::CONTENT_TYPE,
        tungstenite::http::HeaderValue::from_static("application/json"),
    );
    response
}

fn route(request: &Request, keys: &dyn KeyCheck) -> Result<Subscription, Refusal> {
    let uri = request.uri();
    if let Some(key) = uri.path().strip_prefix("/ws/") {
        let tag = keys.live_key(key).ok_or(NO_SUCH_KEY)?;
        return Ok(Subscription {
            key: key.to_string(),
            tag,
            format: StreamFormat::Raw,
            streams: vec![key.to_string()],
        });
    }
    if uri.path() == "/stream" {
        let streams: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("streams="))
            .unwrap_or("")
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        // A combined URL may mix market streams in; the first live key is the user stream.
        for name in &streams {
            if let Some(tag) = keys.live_key(name) {
                return Ok(Subscription { key: name.clone(), tag, format: StreamFormat::Combined, streams });
            }
        }
        return Err(NO_SUCH_KEY);
    }
    Err(UNKNOWN_PATH)
}

/// A plain-HTTP answer for requests that never became a WebSocket handshake.
fn not_a_websocket() -> String {
    let body = r#"{"code":-1,"msg":"Expected a WebSocket upgrade."}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn serve(stream: TcpStream, shared: ServerCtx) {
    let Ok(raw) = stream.try_clone() else { return };
    let setup = stream
        .set_nodelay(true)
        .and(stream.set_read_timeout(Some(HANDSHAKE_POLL)))
        .and(stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)));
    if setup.is_err() {
        return;
    }
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let pacing = Arc::new(Pacing::default());
    let give_up = || stopped(&shared.stop);
    let stream = match PaperStream::accept(stream, shared.tls.as_ref(), pacing.clone(), deadline, &give_up) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("paper ws: tls handshake failed: {e}");
            let _ = raw.shutdown(Shutdown::Both);
            return;
        }
    };
    let max_frame = shared.settings.max_frame;
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    let attached: Cell<Option<(Session, Receiver<StreamItem>, Subscription)>> = Cell::new(None);
    // Attaching inside the handshake, before the 101 goes out, means an event published right
    // after the client sees the upgrade is already queued for it.
    #[expect(clippy::result_large_err, reason = "tungstenite's Callback fixes the error type")]
    let callback = |request: &Request, response: Response| {
        let route = route(request, &*shared.keys).map_err(|r| reject(&r))?;
        let opened = shared.keys.now_ms();
        let (id, rx) = shared.hub.attach(&route.key, route.tag.clone(), route.format, opened);
        log::info!("paper ws: session={id} key={} format={:?} opened", route.tag, route.format);
        let session = Session { hub: shared.hub.clone(), keys: shared.keys.clone(), id, reason: reason::IO_ERROR };
        attached.set(Some((session, rx, route)));
        Ok(response)
    };
    let mut result = tungstenite::accept_hdr_with_config(stream, callback, Some(config));
    let ws = loop {
        match result {
            Ok(ws) => break ws,
            Err(HandshakeError::Interrupted(mid)) => {
                if stopped(&shared.stop) || Instant::now() >= deadline {
                    log::debug!("paper ws: handshake abandoned");
                    let _ = raw.shutdown(Shutdown::Both);
                    return; // a Session attached meanwhile detaches with "io error"
                }
                result = mid.handshake();
            }
            Err(HandshakeError::Failure(e)) => {
                match e {
                    tungstenite::Error::Http(response) => {
                        log::debug!("paper ws: handshake rejected status={}", response.status());
                    }
                    tungstenite::Error::Io(e) => log::debug!("paper ws: handshake io: {}", e.kind()),
                    other => {
                        // Plain HTTP, a malformed request: nothing was answered yet. Over TLS
                        // the session went down with the handshake, so there it is just a close.
                        log::debug!("paper ws: not a websocket request: {other}");
                        if shared.tls.is_none() {
                            let _ = (&raw).write_all(not_a_websocket().as_bytes());
                        }
                    }
                }
                let _ = raw.shutdown(Shutdown::Both);
                return;
            }
        }
    };
    let Some((mut session, rx, route)) = attached.take() else { return };
    if ws.get_ref().tcp().set_nonblocking(true).is_err() {
        return;
    }
    let now = Instant::now();
    let mut conn = Connection {
        ws,
        raw,
        pacing,
        trickle: None,
        rx,
        stop: shared.stop.clone(),
        hub: shared.hub.clone(),
        keys: shared.keys.clone(),
        settings: shared.settings.clone(),
        id: session.id,
        format: route.format,
        streams: route.streams,
        opened: now,
        next_ping: now + shared.settings.ping_interval,
        outstanding: VecDeque::new(),
        unanswered_since: None,
        incoming: VecDeque::new(),
        silent: false,
        blocked: false,
        backlog: VecDeque::new(),
        counts: Counts::default(),
    };
    session.reason = conn.run();
    drop(conn); // the socket closes before the session is recorded as closed
}

/// How a connection ends.
enum SessionEnd {
    /// Send a close frame, give the client a moment to answer, shut TCP.
    Close(CloseCode, String, &'static str),
    /// The client closed: flush tungstenite's close reply, shut TCP.
    Answer(&'static str),
    /// Shut TCP without a close frame (FIN).
    Fin(&'static str),
    /// Reset the TCP connection (see [`Connection::reset`]).
    Rst(&'static str),
}

impl SessionEnd {
    fn close(code: CloseCode, reason: &'static str) -> SessionEnd {
        SessionEnd::Close(code, reason.to_string(), reason)
    }
}

/// Counter increments not yet written to the session record.
#[derive(Default)]
struct Counts {
    pings_sent: u64,
    pongs_received: u64,
    events_sent: u64,
    messages_received: u64,
}

impl Counts {
    fn any(&self) -> bool {
        self.pings_sent + self.pongs_received + self.events_sent + self.messages_received > 0
    }
}

struct Connection {
    ws: WebSocket<PaperStream>,
    /// The same socket, for shutdown, timeouts and peek past tungstenite and TLS.
    raw: TcpStream,
    /// The socket's write pacing, on while a trickled frame goes out.
    pacing: Arc<Pacing>,
    /// A `Trickle` fault's frames still to pace: (frames, bytes, pause).
    trickle: Option<(u32, usize, Duration)>,
    rx: Receiver<StreamItem>,
    stop: Receiver<()>,
    hub: StreamHub,
    keys: Arc<dyn KeyCheck>,
    settings: Arc<WsSettings>,
    id: u64,
    format: StreamFormat,
    streams: Vec<String>,
    opened: Instant,
    next_ping: Instant,
    /// Payloads of pings not answered yet, oldest first.
    outstanding: VecDeque<Bytes>,
    unanswered_since: Option<Instant>,
    /// Arrival times of the incoming messages of the last second.
    incoming: VecDeque<Instant>,
    silent: bool,
    /// The last write or flush would have blocked: the client's receive window is full.
    blocked: bool,
    /// Frames taken from the hub while `blocked`. The hub queue is drained even then, so that
    /// a fault reaches a client that has stopped reading.
    backlog: VecDeque<StreamItem>,
    counts: Counts,
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

impl Connection {
    fn run(&mut self) -> &'static str {
        let end = loop {
            let step = self.step();
            self.record();
            if let Err(end) = step {
                break end;
            }
        };
        let reason = self.finish(end);
        self.record();
        reason
    }

    fn record(&mut self) {
        if !self.counts.any() {
            return;
        }
        let c = std::mem::take(&mut self.counts);
        self.hub.record(self.id, |s| {
            s.pings_sent += c.pings_sent;
            s.pongs_received += c.pongs_received;
            s.events_sent += c.events_sent;
            s.messages_received += c.messages_received;
        });
    }

    /// One round: wait for items (or the poll), send them, read the socket, run the timers.
    fn step(&mut self) -> Result<(), SessionEnd> {
        // Only this thread takes items out, so a queue that was full when the hub failed to
        // queue an event is still full here: events got lost, as on a real slow connection.
        if self.rx.is_full() {
            return Err(SessionEnd::Rst(reason::SLOW_CONSUMER));
        }
        let wait = if self.blocked && !self.silent {
            POLL_BLOCKED
        } else {
            POLL.min(self.next_timer().saturating_duration_since(Instant::now()))
        };
        select_biased! {
            recv(self.stop) -> _ => return Err(self.stopping()),
            recv(self.rx) -> item => match item {
                Ok(item) => self.batch(item)?,
                Err(_) => return Err(self.stopping()), // the hub let go of us
            },
            default(wait) => {}
        }
        if self.silent {
            return self.read_discard();
        }
        self.read()?;
        self.timers()?;
        self.flush()?;
        if !self.blocked && !self.backlog.is_empty() {
            self.send_backlog()?;
            self.flush()?;
        }
        Ok(())
    }

    fn stopping(&self) -> SessionEnd {
        if self.silent {
            SessionEnd::Fin(reason::SERVER_STOPPED)
        } else {
            SessionEnd::close(CloseCode::Away, reason::SERVER_STOPPED)
        }
    }

    fn next_timer(&self) -> Instant {
        if self.silent {
            return Instant::now() + POLL;
        }
        let mut at = self.next_ping.min(self.opened + self.settings.max_connection_life);
        if let Some(since) = self.unanswered_since {
            at = at.min(since + self.settings.pong_timeout);
        }
        at
    }

    /// Handles `first` and whatever else is queued, up to [`BATCH`] items.
    fn batch(&mut self, first: StreamItem) -> Result<(), SessionEnd> {
        self.item(first)?;
        for _ in 1..BATCH {
            if self.rx.is_full() {
                return Err(SessionEnd::Rst(reason::SLOW_CONSUMER));
            }
            match self.rx.try_recv() {
                Ok(item) => self.item(item)?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn item(&mut self, item: StreamItem) -> Result<(), SessionEnd> {
        match item {
            StreamItem::Event(_) | StreamItem::Text(_) | StreamItem::Binary(_) => {
                if self.silent {
                    return Ok(());
                }
                if self.blocked || !self.backlog.is_empty() {
                    if self.backlog.len() >= QUEUE_DEPTH {
                        return Err(SessionEnd::Rst(reason::SLOW_CONSUMER));
                    }
                    self.backlog.push_back(item);
                    return Ok(());
                }
                self.send_item(item)
            }
            StreamItem::Close { code, reason } => {
                // Frames queued before the fault go out first, as far as the window allows.
                self.send_backlog()?;
                Err(SessionEnd::Close(CloseCode::from(code), reason, reason::FAULT_CLOSE))
            }
            StreamItem::Drop { rst: true } => Err(SessionEnd::Rst(reason::FAULT_RST)),
            StreamItem::Drop { rst: false } => Err(SessionEnd::Fin(reason::FAULT_FIN)),
            StreamItem::Trickle { frames, bytes, pause } => {
                self.trickle = (frames > 0 && bytes > 0).then_some((frames, bytes, pause));
                Ok(())
            }
            StreamItem::Silence => {
                if !self.silent {
                    log::info!("paper ws: session={} silent", self.id);
                }
                self.silent = true;
                self.backlog.clear();
                Ok(())
            }
        }
    }

    fn send_backlog(&mut self) -> Result<(), SessionEnd> {
        while !self.blocked {
            let Some(item) = self.backlog.pop_front() else { break };
            self.send_item(item)?;
        }
        Ok(())
    }

    fn send_item(&mut self, item: StreamItem) -> Result<(), SessionEnd> {
        match item {
            StreamItem::Event(json) => {
                self.send_frame(Message::text(&*json))?;
                self.counts.events_sent += 1;
                Ok(())
            }
            StreamItem::Text(text) => self.send_frame(Message::text(&*text)),
            StreamItem::Binary(bytes) => self.send_frame(Message::binary(Bytes::copy_from_slice(&bytes))),
            _ => Ok(()), // only frames are ever queued
        }
    }

    /// Sends a frame, paced while a `Trickle` fault lasts: flushed at once so that the pauses
    /// fall inside this frame, on this connection's thread only.
    fn send_frame(&mut self, msg: Message) -> Result<(), SessionEnd> {
        let Some((frames, bytes, pause)) = self.trickle else { return self.send(msg) };
        self.trickle = (frames > 1).then_some((frames - 1, bytes, pause));
        self.pacing.set(bytes, pause);
        let sent = self.send(msg).and_then(|()| self.flush());
        self.pacing.off();
        sent
    }

    fn send(&mut self, msg: Message) -> Result<(), SessionEnd> {
        match self.ws.write(msg) {
            Ok(()) => Ok(()),
            // The frame stays in tungstenite's buffer and goes out with a later flush.
            Err(tungstenite::Error::Io(e)) if would_block(&e) => {
                self.blocked = true;
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    fn flush(&mut self) -> Result<(), SessionEnd> {
        match self.ws.flush() {
            Ok(()) => {
                self.blocked = false;
                Ok(())
            }
            Err(tungstenite::Error::Io(e)) if would_block(&e) => {
                self.blocked = true;
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Maps a tungstenite error on a live connection to how it ends.
    fn failed(&self, e: tungstenite::Error) -> SessionEnd {
        use tungstenite::error::ProtocolError;
        match e {
            tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                SessionEnd::Fin(reason::CLIENT_CLOSED)
            }
            tungstenite::Error::Io(e) => {
                log::debug!("paper ws: session={} io: {}", self.id, e.kind());
                SessionEnd::Fin(reason::IO_ERROR)
            }
            tungstenite::Error::Capacity(_) => SessionEnd::close(CloseCode::Size, reason::FRAME_TOO_LARGE),
            tungstenite::Error::WriteBufferFull(_) => SessionEnd::Rst(reason::SLOW_CONSUMER),
            other => {
                log::debug!("paper ws: session={} protocol: {other}", self.id);
                SessionEnd::close(CloseCode::Protocol, reason::PROTOCOL_ERROR)
            }
        }
    }

    /// Reads and handles what the client sent.
    fn read(&mut self) -> Result<(), SessionEnd> {
        for _ in 0..READS_PER_POLL {
            match self.ws.read() {
                Ok(msg) => self.message(msg)?,
                Err(tungstenite::Error::Io(e)) if would_block(&e) => break,
                Err(e) => return Err(self.failed(e)),
            }
        }
        Ok(())
    }

    /// While silent, bytes are read and dropped past tungstenite, which would otherwise answer
    /// pings: a silent server says nothing at all.
    fn read_discard(&mut self) -> Result<(), SessionEnd> {
        let mut scratch = [0u8; 4096];
        loop {
            // Through TLS when there is TLS: raw bytes taken from under rustls would break it.
            match self.ws.get_mut().read(&mut scratch) {
                Ok(0) => return Err(SessionEnd::Fin(reason::CLIENT_CLOSED)),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(()),
                Err(_) => return Err(SessionEnd::Fin(reason::IO_ERROR)),
            }
        }
    }

    fn message(&mut self, msg: Message) -> Result<(), SessionEnd> {
        if matches!(msg, Message::Close(_)) {
            return Err(SessionEnd::Answer(reason::CLIENT_CLOSED)); // tungstenite queued the reply
        }
        self.counts.messages_received += 1;
        let now = Instant::now();
        self.incoming.push_back(now);
        while self.incoming.front().is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.incoming.pop_front();
        }
        if self.incoming.len() > self.settings.incoming_per_second as usize {
            return Err(SessionEnd::close(CloseCode::Policy, reason::TOO_MANY_MESSAGES));
        }
        match msg {
            Message::Text(text) => {
                let reply = subscribe_reply(text.as_str(), &mut self.streams, self.format);
                self.send(Message::text(reply))?;
            }
            Message::Pong(payload) => {
                self.counts.pongs_received += 1;
                // Binance.com's "WebSocket Streams": an unsolicited pong "will not prevent disconnection".
                if self.outstanding.contains(&payload) {
                    self.outstanding.clear();
                    self.unanswered_since = None;
                }
            }
            // tungstenite answers pings; binary frames mean nothing to the server.
            Message::Ping(_) | Message::Binary(_) | Message::Close(_) | Message::Frame(_) => {}
        }
        Ok(())
    }

    /// Lifetime, pong deadline and the next ping.
    fn timers(&mut self) -> Result<(), SessionEnd> {
        let now = Instant::now();
        if now.duration_since(self.opened) >= self.settings.max_connection_life {
            return Err(SessionEnd::close(CloseCode::Away, reason::LIFETIME_CUT));
        }
        if self.unanswered_since.is_some_and(|since| now.duration_since(since) >= self.settings.pong_timeout) {
            return Err(SessionEnd::close(CloseCode::Policy, reason::PONG_TIMEOUT));
        }
        if now < self.next_ping {
            return Ok(());
        }
        let payload = Bytes::from(self.keys.now_ms().to_string());
        self.send(Message::Ping(payload.clone()))?;
        self.counts.pings_sent += 1;
        if self.outstanding.len() == OUTSTANDING_PINGS {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back(payload);
        self.unanswered_since.get_or_insert(now);
        self.next_ping = now + self.settings.ping_interval;
        Ok(())
    }

    /// Ends the connection the way `end` says; returns the reason to record.
    fn finish(&mut self, end: SessionEnd) -> &'static str {
        // Back to blocking with short timeouts: the last frames may wait on a full window.
        let _ = self.raw.set_nonblocking(false);
        let _ = self.raw.set_write_timeout(Some(CLOSE_GRACE));
        match end {
            SessionEnd::Close(code, text, why) => {
                let frame = CloseFrame { code, reason: truncate_reason(text).into() };
                let _ = self.ws.close(Some(frame));
                self.linger();
                let _ = self.raw.shutdown(Shutdown::Both);
                why
            }
            SessionEnd::Answer(why) => {
                self.linger();
                let _ = self.raw.shutdown(Shutdown::Both);
                why
            }
            SessionEnd::Fin(why) => {
                let _ = self.raw.shutdown(Shutdown::Both);
                why
            }
            SessionEnd::Rst(why) => {
                self.reset();
                why
            }
        }
    }

    /// Flushes the close handshake and waits briefly for the client's close frame, so the
    /// client sees an orderly close rather than a reset.
    fn linger(&mut self) {
        let deadline = Instant::now() + CLOSE_GRACE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.raw.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match self.ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // closed, timed out, or broken: all mean done
            }
        }
    }

    /// Resets the connection without `SO_LINGER` (`TcpStream::set_linger` is unstable and the
    /// crate has no `unsafe`): Linux answers a `close()` with RST instead of FIN when received
    /// data is still unread (RFC 2525, section 2.17). So we ping, wait up to [`CLOSE_GRACE`] for any
    /// bytes (the pong) to arrive in the kernel's buffer without reading them, and let the
    /// socket close when `Connection` drops. A client that sends nothing in that time gets a FIN.
    fn reset(&mut self) {
        let _ = self.ws.write(Message::Ping(Bytes::from_static(b"rst")));
        let _ = self.ws.flush();
        let deadline = Instant::now() + CLOSE_GRACE;
        let mut probe = [0u8; 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.raw.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match self.raw.peek(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Unread bytes (close sends RST), EOF (nothing left to reset), or timeout.
                _ => return,
            }
        }
        // No shutdown() here: it would send the FIN this is meant to avoid.
    }
}

/// A close frame's payload is at most 125 bytes, two of them the code.
fn truncate_reason(mut text: String) -> String {
    if text.len() > 123 {
        let mut end = 123;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Method {
    Subscribe,
    Unsubscribe,
    ListSubscriptions,
    SetProperty,
    GetProperty,
}

#[derive(Deserialize)]
struct SubscribeRequest {
    method: Method,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    id: Value,
}

#[derive(Serialize)]
struct SubscribeResult<'a> {
    result: Value,
    id: &'a Value,
}

#[derive(Serialize)]
struct SubscribeError<'a> {
    code: i64,
    msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
}

fn error_reply(code: i64, msg: String, id: Option<&Value>) -> String {
    serde_json::to_string(&SubscribeError { code, msg, id }).unwrap_or_default()
}

/// Answers a text message from the client as Binance's stream host does ("Live Subscribing/
/// Unsubscribing to streams" and its error messages in the docs' "WebSocket Streams").
/// Subscriptions are only remembered: the paper exchange has no market streams, and the event
/// format is fixed at connect time, so SET_PROPERTY changes nothing.
fn subscribe_reply(text: &str, streams: &mut Vec<String>, format: StreamFormat) -> String {
    let request: SubscribeRequest = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(e) if e.is_syntax() || e.is_eof() => return error_reply(3, format!("Invalid JSON: {e}"), None),
        Err(e) => return error_reply(2, format!("Invalid request: {e}"), None),
    };
    let id = &request.id;
    if !(id.is_null() || id.is_u64()) {
        return error_reply(2, "Invalid request: request ID must be an unsigned integer".into(), None);
    }
    let params = request.params.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let names = || params.iter().filter_map(Value::as_str).map(str::to_string);
    let result = match request.method {
        Method::Subscribe => {
            for name in names() {
                if !streams.contains(&name) {
                    streams.push(name);
                }
            }
            Value::Null
        }
        Method::Unsubscribe => {
            let gone: Vec<String> = names().collect();
            streams.retain(|s| !gone.contains(s));
            Value::Null
        }
        Method::ListSubscriptions => Value::from(streams.clone()),
        Method::SetProperty | Method::GetProperty => {
            if params.first().and_then(Value::as_str) != Some("combined") {
                return error_reply(0, "Unknown property".into(), Some(id));
            }
            if request.method == Method::GetProperty {
                Value::Bool(format == StreamFormat::Combined)
            } else if params.get(1).is_some_and(Value::is_boolean) {
                Value::Null
            } else {
                return error_reply(1, "Invalid value type: expected Boolean".into(), None);
            }
        }
    };
    serde_json::to_string(&SubscribeResult { result, id }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
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
    fn unknown_key_or_path_is_rejected_at_handshake() {
        let (server, hub) = start(quiet());
        for path in ["/ws/notakey", "/stream?streams=btcusd@bookTicker", "/ws/", "/stream", "/api/v3/time"] {
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
        let settings = WsSettings {
            ping_interval: Duration::from_millis(20),
            pong_timeout: Duration::from_millis(100),
            ..quiet()
        };
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
            (
                r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#,
                format!(r#"{{"result":["{KEY}","btcusd@aggTrade"],"id":3}}"#),
            ),
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
        assert!(ask(r#"{"method":"NOPE","id":1}"#)
            .starts_with(r#"{"code":2,"msg":"Invalid request: unknown variant `NOPE`"#));
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
        let server =
            WsServer::start("127.0.0.1:0".parse().unwrap(), quiet(), Some(tls.server_config().clone()), hub, keys)
                .expect("bind loopback");
        let client =
            crate::tls::tests::dribble(TcpStream::connect(server.local_addr()).unwrap(), Duration::from_secs(8));
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
}
