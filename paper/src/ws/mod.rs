//! The paper exchange's WebSocket server: the user-data stream and the public market streams.
//!
//! Binance.US serves a listen key's events at `/ws/<listenKey>` (bare JSON) and
//! `/stream?streams=<listenKey>` (wrapped as `{"stream":..,"data":..}`), and public market
//! streams the same way by name (`/ws/btcusd@trade`, `/stream?streams=btcusd@trade/...`), with
//! no key. This server does the same on loopback, plus the keep-alive and limit rules ("WebSocket Streams" in the Binance.US API docs) that a client has to
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

mod connection;
mod handshake;
mod subscribe;
#[cfg(test)]
mod tests;

use super::hub::{is_market_stream, StreamFormat, StreamHub, StreamItem, QUEUE_DEPTH};
use super::tls::{Pacing, PaperStream};
use connection::*;
use crossbeam_channel::{select_biased, Receiver, RecvTimeoutError, Sender, TryRecvError};
use handshake::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use subscribe::*;
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
