//! THREAD `stream`: the user-data WebSocket.
//!
//! Gets a listen key (`POST /api/v3/userDataStream`, API-key header only), connects
//! `SYNCD_WS_URL/ws/<listenKey>` with a connect timeout and a short read timeout, and forwards
//! every parsed event through a [`Fanout`]: to the executor first, then to the `state` thread
//! (a trade report also wakes the fill log's followers before either). It answers the server's
//! pings (same payload), and because a stream can go silent with TCP still open, it sends its
//! own ping whenever nothing has arrived for `ping_every` and gives the connection up after
//! `silence_timeout` without a single frame. On any loss (error, close, `listenKeyExpired`,
//! silence, a keep-alive that found the key gone) it tells both the stream is down (so fills
//! keep coming by REST), asks for the key again, and reconnects with jittered exponential
//! backoff, never more than 15 attempts in any 10 s. It never gives up.
//!
//! The listen key lives in a [`KeyCell`] shared with the keep-alive thread and shutdown; it is a
//! [`Secret`] and only its fingerprint is ever logged. URLs are never logged.

use crate::backoff::{Backoff, WindowCap};
use crate::error::Error;
use crate::lock::LockAnyway;
use crate::rest::{RestClient, LISTEN_KEY_NEW};
use crate::secret::Secret;
use crate::wire::{parse_event, FrameError, ListenKeyReply, UserEvent};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// What the stream tells the `state` and `executor` threads.
#[derive(Debug, Clone)]
pub enum StreamMsg {
    /// Connected; the events that follow are live. Reconcile now.
    Up { session: u64 },
    /// With the time its frame was read off the socket (the fill-latency histogram starts there).
    Event(UserEvent, Instant),
    /// The connection is gone; fills must come by REST until the next `Up`.
    Down { reason: String },
}

/// Where the stream's messages go: every other listener (the executor's order book) first, best
/// effort, then `state`, the primary (it logs fills, and the stream is useless without it).
#[derive(Debug, Clone)]
pub struct Fanout {
    primary: Sender<StreamMsg>,
    others: Vec<Sender<StreamMsg>>,
    /// Told of a trade before anyone else, so the fill log's followers wake while it is
    /// being written instead of after.
    tap: Option<crate::filllog::FillTap>,
}

impl Fanout {
    pub fn new(primary: Sender<StreamMsg>, others: Vec<Sender<StreamMsg>>) -> Fanout {
        Fanout { primary, others, tap: None }
    }

    /// Sends a heads-up to `tap`'s followers on every trade report.
    pub fn with_tap(mut self, tap: crate::filllog::FillTap) -> Fanout {
        self.tap = Some(tap);
        self
    }

    /// `Err` only when `state` is gone: then the stream has no reason to go on. The others
    /// (the executor) get the message first, so it is queued there before the fill log's
    /// writer can publish it and a strategy react to the fill.
    pub fn send(&self, msg: StreamMsg) -> Result<(), StateGone> {
        if let (Some(tap), StreamMsg::Event(UserEvent::Execution(r), _)) = (&self.tap, &msg) {
            if r.execution_type == "TRADE" {
                tap.expect();
            }
        }
        for o in &self.others {
            let _ = o.send(msg.clone());
        }
        self.primary.send(msg).map_err(|_| StateGone)
    }
}

/// The `state` thread has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateGone;

/// Requests to the stream thread from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCtl {
    /// The keep-alive found the key unknown: get a new one and reconnect.
    RenewKey,
}

/// The current listen key, shared by `stream`, `keepalive` and shutdown.
#[derive(Debug, Default, Clone)]
pub struct KeyCell(Arc<Mutex<Option<Secret>>>);

impl KeyCell {
    pub fn get(&self) -> Option<Secret> {
        self.0.lock_anyway().clone()
    }

    pub fn set(&self, key: Option<Secret>) {
        *self.0.lock_anyway() = key;
    }
}

/// Intervals of the stream; see `config` for the variables behind them.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub ws_url: String,
    pub connect_timeout: Duration,
    /// Send our own ping after this long without any frame from the server.
    pub ping_every: Duration,
    /// Give the connection up after this long without any frame.
    pub silence_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A connection that lasted this long resets the backoff.
    pub backoff_reset: Duration,
    /// How often the read loop wakes to look at timers and the stop channel.
    pub poll: Duration,
    /// The process's one TLS client configuration (`crate::tls`), shared with REST.
    pub tls: Arc<rustls::ClientConfig>,
}

/// A stream connection, plain or TLS. Ours rather than tungstenite's so that connect and read
/// timeouts apply to the TCP socket underneath either way.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// The TLS handshake's read slice: how far past its deadline a handshake can run.
const HANDSHAKE_POLL: Duration = Duration::from_millis(100);

/// The user stream's frame and message limit.
const USER_FRAME_LIMIT: usize = 8 << 20;

/// Connects `base` + `path` (`ws://` or `wss://`, the latter with `tls`), with `timeout` on
/// connect and handshakes. `on_attempt` runs before each TCP connect: a host with several
/// addresses costs one attempt each against the connection-rate cap.
pub fn connect(
    base: &str,
    path: &str,
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
    on_attempt: &mut dyn FnMut(),
) -> Result<WebSocket<Conn>, Error> {
    connect_limited(base, path, timeout, tls, USER_FRAME_LIMIT, on_attempt)
}

/// [`connect`], with frames and messages larger than `max_frame` bytes refused (the read
/// that meets one fails, which ends the connection).
pub fn connect_limited(
    base: &str,
    path: &str,
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
    max_frame: usize,
    on_attempt: &mut dyn FnMut(),
) -> Result<WebSocket<Conn>, Error> {
    let (secure, rest) = if let Some(r) = base.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = base.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(Error::Config("SYNCD_WS_URL must start with ws:// or wss://".into()));
    };
    let (authority, base_path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse::<u16>() {
            Ok(port) => (h.trim_start_matches('[').trim_end_matches(']'), port),
            Err(_) => return Err(Error::Config("SYNCD_WS_URL has a bad port".into())),
        },
        _ => (authority, if secure { 443 } else { 80 }),
    };
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Transport(format!("stream host lookup: {}", e.kind())))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut tcp = None;
    for addr in addrs {
        on_attempt();
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let tcp = tcp.ok_or_else(|| Error::Transport(format!("stream connect: {}", last.kind())))?;
    tcp.set_read_timeout(Some(timeout)).map_err(|e| Error::Transport(format!("socket: {}", e.kind())))?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| Error::Transport(format!("socket: {}", e.kind())))?;
    let _ = tcp.set_nodelay(true);
    let conn = if secure {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| Error::Config("SYNCD_WS_URL host is not a valid TLS name".into()))?;
        let mut client =
            rustls::ClientConnection::new(tls.clone(), name).map_err(|e| Error::Transport(format!("tls: {e}")))?;
        let mut tcp = tcp;
        // Before the WebSocket handshake, so that a refused certificate is reported as one. One
        // deadline for the whole handshake, read in short polls: a server dribbling its
        // handshake never times a single read out.
        let deadline = Instant::now() + timeout;
        tcp.set_read_timeout(Some(timeout.min(HANDSHAKE_POLL)))
            .map_err(|e| Error::Transport(format!("socket: {}", e.kind())))?;
        crate::tls::handshake_until(&mut client, &mut tcp, deadline, &|| false).map_err(|e| {
            Error::Transport(match e.kind() {
                io::ErrorKind::TimedOut => format!("stream {}", crate::tls::HANDSHAKE_TIMED_OUT),
                _ => format!("stream {}", crate::tls::describe_io(&e)),
            })
        })?;
        tcp.set_read_timeout(Some(timeout)).map_err(|e| Error::Transport(format!("socket: {}", e.kind())))?;
        Conn::Tls(Box::new(rustls::StreamOwned::new(client, tcp)))
    } else {
        Conn::Plain(tcp)
    };
    let url = format!("{}://{authority}{base_path}{path}", if secure { "wss" } else { "ws" });
    let config = WebSocketConfig::default().max_message_size(Some(max_frame)).max_frame_size(Some(max_frame));
    match tungstenite::client::client_with_config(url.as_str(), conn, Some(config)) {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e.into()),
        Err(tungstenite::HandshakeError::Interrupted(_)) => Err(Error::Transport("stream handshake timed out".into())),
    }
}

/// True once `stop` has closed (or been sent to).
pub(crate) fn stopping(stop: &Receiver<()>) -> bool {
    !matches!(stop.try_recv(), Err(TryRecvError::Empty))
}

/// Closes `ws` as far as it goes: best effort, the connection is being left anyway.
pub(crate) fn close(ws: &mut WebSocket<Conn>) {
    let _ = ws.close(None);
    let _ = ws.flush();
}

/// Sleeps `d` unless `stop` closes first; true if stopping.
pub(crate) fn sleep_or_stop(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(crossbeam_channel::RecvTimeoutError::Timeout))
}

pub(crate) fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Connection attempts of a stream: the backoff between them, and caps of 15 per 10 s and
/// `per_5m` per 5 minutes, counting every TCP connect (Binance allows 300 per 5 minutes per
/// IP, "WebSocket Limits" at <https://docs.binance.us/#websocket-limits>).
pub(crate) struct Attempts {
    pub(crate) backoff: Backoff,
    pub(crate) cap: WindowCap,
    cap_5m: WindowCap,
}

impl Attempts {
    pub(crate) fn new(s: &StreamSettings, per_5m: usize) -> Attempts {
        Attempts {
            backoff: Backoff::new(s.backoff_min, s.backoff_max, s.backoff_reset),
            cap: WindowCap::new(15, Duration::from_secs(10)),
            cap_5m: WindowCap::new(per_5m, Duration::from_secs(300)),
        }
    }

    /// Sleeps `delay`, then as long as the caps say; true if `stop` closed meanwhile.
    pub(crate) fn wait(&mut self, stop: &Receiver<()>, delay: Duration) -> bool {
        if sleep_or_stop(stop, delay) {
            return true;
        }
        let now = Instant::now();
        let hold = self.cap.wait(now).max(self.cap_5m.wait(now));
        !hold.is_zero() && sleep_or_stop(stop, hold)
    }

    /// A TCP connect is about to start.
    pub(crate) fn record(&mut self) {
        let now = Instant::now();
        self.cap.record(now);
        self.cap_5m.record(now);
    }
}

/// A connection's silence watch, shared by the user and market streams: a stream can go silent
/// with TCP still open, so after `ping_every` without a frame we send our own ping (at most 5
/// messages of ours a second: the documented incoming-message limit, "WebSocket Limits" at
/// <https://docs.binance.us/#websocket-limits>), and after `silence_timeout` without one the
/// connection is given up.
pub(crate) struct Liveness {
    ping_every: Duration,
    silence_timeout: Duration,
    last_rx: Instant,
    last_ping: Instant,
    out_cap: WindowCap,
    pings: u64,
}

/// Why [`Liveness::tick`] gave a connection up.
pub(crate) enum Quiet {
    /// No frame for `silence_timeout` (the server was reachable moments ago).
    Silent(String),
    /// Our ping could not be sent.
    PingFailed(String),
}

impl Liveness {
    pub(crate) fn new(ping_every: Duration, silence_timeout: Duration, now: Instant) -> Liveness {
        Liveness {
            ping_every,
            silence_timeout,
            last_rx: now,
            last_ping: now,
            out_cap: WindowCap::new(5, Duration::from_secs(1)),
            pings: 0,
        }
    }

    /// A frame (of any kind) arrived at `at`; returns `at`.
    pub(crate) fn heard(&mut self, at: Instant) -> Instant {
        self.last_rx = at;
        at
    }

    /// Before each read: gives up a silent connection, pings a quiet one.
    pub(crate) fn tick<S: Read + Write>(&mut self, ws: &mut WebSocket<S>, now: Instant) -> Result<(), Quiet> {
        let quiet = now.duration_since(self.last_rx);
        if quiet >= self.silence_timeout {
            return Err(Quiet::Silent(format!("no frame for {quiet:?}")));
        }
        if quiet >= self.ping_every
            && now.duration_since(self.last_ping) >= self.ping_every
            && self.out_cap.wait(now).is_zero()
        {
            self.pings += 1;
            if let Err(e) = ws.send(Message::Ping(self.pings.to_be_bytes().to_vec().into())) {
                return Err(Quiet::PingFailed(format!("ping failed: {}", crate::Error::from(e))));
            }
            self.out_cap.record(now);
            self.last_ping = now;
        }
        Ok(())
    }
}

pub struct Stream {
    pub settings: StreamSettings,
    pub rest: Arc<RestClient>,
    pub key: KeyCell,
    pub events: Fanout,
    pub ctl: Receiver<StreamCtl>,
    pub stop: Receiver<()>,
    /// Straight to `main` for problems no retry can fix.
    pub exit: Sender<crate::exit::Exit>,
}

/// Why a connection ended.
enum End {
    Stop,
    /// `serverShutdown`: a new connection is already open on the same key ("User Data Streams", `serverShutdown`).
    Handover(Box<WebSocket<Conn>>),
    /// Lost. `quick`: the server was reachable moments ago (silence, expiry, shutdown, a
    /// renewed key), so reconnect after the shortest delay rather than the grown backoff.
    Lost {
        reason: String,
        quick: bool,
    },
}

fn lost(reason: impl Into<String>) -> End {
    End::Lost { reason: reason.into(), quick: false }
}

fn lost_quick(reason: impl Into<String>) -> End {
    End::Lost { reason: reason.into(), quick: true }
}

impl Stream {
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new().name("stream".into()).spawn(move || self.run())
    }

    fn run(self) {
        let s = &self.settings;
        // Binance's own ceiling is 300 connection attempts per 5 minutes per IP ("WebSocket Limits"); stay
        // well under it even when quick reconnects repeat.
        let mut attempts = Attempts::new(s, 250);
        let mut session = 0u64;
        let mut delay = Duration::ZERO;
        loop {
            if attempts.wait(&self.stop, delay) {
                return;
            }
            let key = match self.listen_key() {
                Ok(k) => k,
                Err(e) if e.is_auth_failure() => {
                    let _ = self.exit.send(crate::exit::Exit::Fatal(format!("listen key refused: {e}")));
                    return;
                }
                Err(Error::Stopped) => return,
                Err(e) => {
                    self.rest.metrics().stream_connect_failures.inc();
                    delay = attempts.backoff.next_delay(Instant::now());
                    log::warn!("stream: cannot get a listen key ({e}); retrying in {delay:?}");
                    continue;
                }
            };
            let path = format!("/ws/{}", key.expose());
            let ws = match connect(&s.ws_url, &path, s.connect_timeout, &s.tls, &mut || attempts.record()) {
                Ok(ws) => ws,
                Err(e) => {
                    self.rest.metrics().stream_connect_failures.inc();
                    delay = attempts.backoff.next_delay(Instant::now());
                    log::warn!("stream: connect failed ({e}); retrying in {delay:?}");
                    continue;
                }
            };
            session += 1;
            attempts.backoff.connected(Instant::now());
            log::info!("stream: connected session={session} key={}", key.fingerprint());
            self.rest.metrics().stream_up();
            if self.events.send(StreamMsg::Up { session }).is_err() {
                return;
            }
            // A renewal asked for before this key was fetched is already answered.
            while self.ctl.try_recv().is_ok() {}
            let mut ws = ws;
            loop {
                match self.read_loop(ws, &key, &mut attempts.cap) {
                    End::Stop => return,
                    End::Handover(next) => {
                        session += 1;
                        log::info!("stream: serverShutdown; moved to session={session} with no gap");
                        self.rest.metrics().stream_handover();
                        if self.events.send(StreamMsg::Up { session }).is_err() {
                            return;
                        }
                        ws = *next;
                    }
                    End::Lost { reason, quick } => {
                        delay = attempts.backoff.next_delay(Instant::now());
                        if quick {
                            delay = s.backoff_min;
                        }
                        log::warn!("stream: session={session} lost ({reason}); reconnecting in {delay:?}");
                        self.rest.metrics().stream_down(&reason);
                        if self.events.send(StreamMsg::Down { reason }).is_err() {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// POST returns the live key or a new one ("User Data Streams", listen key); either way it is the one to use.
    fn listen_key(&self) -> Result<Secret, Error> {
        let reply: ListenKeyReply = self.rest.call_json(&LISTEN_KEY_NEW, &[])?;
        let key = Secret::new(reply.listen_key);
        let previous = self.key.get();
        if previous.as_ref() != Some(&key) {
            log::info!("stream: listen key {}", key.fingerprint());
        }
        self.key.set(Some(key.clone()));
        Ok(key)
    }

    /// On `serverShutdown` ("User Data Streams"), open a new connection on the same key first, then read what
    /// the old one still holds and close it, so no event falls between the two. `None` if the
    /// new connection cannot be had now (the caller then reconnects the ordinary way).
    fn handover(&self, old: &mut WebSocket<Conn>, key: &Secret, cap: &mut WindowCap) -> Option<WebSocket<Conn>> {
        if !cap.wait(Instant::now()).is_zero() {
            return None;
        }
        let mut record = || cap.record(Instant::now());
        let s = &self.settings;
        let next = match connect(&s.ws_url, &format!("/ws/{}", key.expose()), s.connect_timeout, &s.tls, &mut record) {
            Ok(ws) => ws,
            Err(e) => {
                log::warn!("stream: serverShutdown handover failed ({e})");
                return None;
            }
        };
        let _ = old.get_ref().tcp().set_read_timeout(Some(Duration::from_millis(50)));
        // Until the old connection has nothing more (a read times out) or closes.
        while let Ok(msg) = old.read() {
            if let Message::Text(text) = msg {
                if let Ok(event) = parse_event(text.as_str()) {
                    if !matches!(event, UserEvent::ServerShutdown | UserEvent::ListenKeyExpired | UserEvent::Unknown(_))
                        && self.events.send(StreamMsg::Event(event, Instant::now())).is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = old.close(None);
        let _ = old.flush();
        Some(next)
    }

    fn read_loop(&self, mut ws: WebSocket<Conn>, key: &Secret, cap: &mut WindowCap) -> End {
        let s = &self.settings;
        if let Err(e) = ws.get_ref().tcp().set_read_timeout(Some(s.poll)) {
            return lost(format!("socket: {}", e.kind()));
        }
        let mut live = Liveness::new(s.ping_every, s.silence_timeout, Instant::now());
        loop {
            if stopping(&self.stop) {
                close(&mut ws);
                return End::Stop;
            }
            if let Ok(StreamCtl::RenewKey) = self.ctl.try_recv() {
                // Only a renewal for the key this connection uses ends it.
                if self.key.get().as_ref() != Some(key) {
                    close(&mut ws);
                    return lost_quick("keep-alive found the listen key gone");
                }
            }
            match live.tick(&mut ws, Instant::now()) {
                Ok(()) => {}
                Err(Quiet::Silent(why)) => return lost_quick(why),
                Err(Quiet::PingFailed(why)) => return lost(why),
            }
            match ws.read() {
                Ok(msg) => {
                    let last_rx = live.heard(Instant::now());
                    self.rest.metrics().frame();
                    match msg {
                        Message::Text(text) => match parse_event(text.as_str()) {
                            Ok(UserEvent::ListenKeyExpired) => {
                                close(&mut ws);
                                self.key.set(None);
                                return lost_quick("listenKeyExpired");
                            }
                            Ok(UserEvent::ServerShutdown) => {
                                if let Some(next) = self.handover(&mut ws, key, cap) {
                                    return End::Handover(Box::new(next));
                                }
                                close(&mut ws);
                                return lost_quick("serverShutdown");
                            }
                            Ok(UserEvent::Unknown(kind)) => log::debug!("stream: ignoring event type {kind}"),
                            Ok(event) => {
                                if self.events.send(StreamMsg::Event(event, last_rx)).is_err() {
                                    return End::Stop;
                                }
                            }
                            Err(e) => {
                                // An order report we cannot read may have been a fill: counted
                                // with the refused ones (REST reads it, if it was).
                                if matches!(&e, FrameError::BadEvent(why) if why.starts_with("executionReport")) {
                                    self.rest.metrics().fill_refused(crate::registry::Source::Stream, "unreadable");
                                }
                                log::warn!("stream: skipped a text frame of {} bytes: {e:?}", text.len())
                            }
                        },
                        Message::Binary(b) => log::warn!("stream: skipped a binary frame of {} bytes", b.len()),
                        Message::Close(frame) => {
                            let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                            let _ = ws.flush();
                            return lost(format!("server closed with {code}"));
                        }
                        // tungstenite queues the pong for a ping; it goes out with the next flush.
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                    if let Err(e) = ws.flush() {
                        if !is_timeout(&e) {
                            return lost(format!("flush: {}", crate::Error::from(e)));
                        }
                    }
                }
                Err(e) if is_timeout(&e) => {
                    // A queued pong may still be waiting for a write.
                    let _ = ws.flush();
                }
                Err(e) => return lost(crate::Error::from(e).to_string()),
            }
        }
    }
}
