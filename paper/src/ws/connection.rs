//! One stream connection: its session record, its thread (`serve`: handshake, then the loop
//! that writes the hub's events, pings, reads, enforces the limits and acts out faults) and
//! how it ends.

use super::*;

/// The session a successful handshake attached. Dropping it detaches, so `detach` happens
/// exactly once whichever way the connection ends, a panic included.
pub(super) struct Session {
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

pub(super) fn serve(stream: TcpStream, shared: ServerCtx) {
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
        let (id, rx) = shared.hub.attach(route.key.as_deref(), route.tag.clone(), route.format, &route.streams, opened);
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
pub(super) enum SessionEnd {
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
pub(super) struct Counts {
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

pub(super) struct Connection {
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

pub(super) fn would_block(e: &io::Error) -> bool {
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
                self.hub.set_streams(self.id, &self.streams);
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
pub(super) fn truncate_reason(mut text: String) -> String {
    if text.len() > 123 {
        let mut end = 123;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
