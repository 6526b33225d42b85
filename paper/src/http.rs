//! A small, strict HTTP/1.1 server for the paper exchange's REST side.
//!
//! Our own rather than a crate's because the exchange must misbehave on purpose: answer an
//! order and then reset the connection, or accept the request and never answer. A thread per
//! connection (capped) keeps it simple and fast enough for thousands of requests a second on
//! keep-alive connections. Bad input is answered with a 4xx and a close, never a panic:
//! oversized request lines, headers or bodies, chunked bodies, garbage.

use super::tls::{Pacing, PaperStream};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A client gets this long for its TLS handshake, read in slices of [`HANDSHAKE_POLL`] so a
/// stopping server does not wait for it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_POLL: Duration = Duration::from_millis(100);

/// Limits on what a client may send.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_line: usize,
    pub max_headers: usize,
    pub max_body: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_line: 16 * 1024,
            max_headers: 100,
            max_body: 64 * 1024,
            max_connections: 512,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// One request as received. `query` and `body` are raw bytes as sent: signatures are checked
/// over them before any decoding.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub peer: IpAddr,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Outcome {
    Respond(Response),
    /// Close the connection without answering (the reset-after-placing fault).
    Hangup,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(status: u16, body: String) -> Response {
        Response { status, headers: Vec::new(), body }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

pub type Handler = dyn Fn(Request) -> Outcome + Send + Sync;

/// A running server; dropping it stops accepting and joins the accept thread.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves on `addr`; with `tls`, every connection is TLS (the handshake runs on the
    /// connection's thread).
    pub fn start(
        addr: SocketAddr,
        limits: HttpLimits,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Arc<Handler>,
    ) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let stop2 = stop.clone();
        let accept = thread::Builder::new().name("paper-http".into()).spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                if live.load(Ordering::Relaxed) >= limits.max_connections {
                    // Over TLS the answer would need a handshake first: the client just sees a close.
                    if tls.is_none() {
                        let _ = write_response(&mut &stream, &busy(), false);
                    }
                    continue;
                }
                live.fetch_add(1, Ordering::Relaxed);
                let (handler, limits, conn_live, stop) = (handler.clone(), limits.clone(), live.clone(), stop2.clone());
                let tls = tls.clone();
                let spawned = thread::Builder::new().name("paper-http-conn".into()).spawn(move || {
                    serve(stream, tls.as_ref(), &limits, &*handler, &stop);
                    conn_live.fetch_sub(1, Ordering::Relaxed);
                });
                if spawned.is_err() {
                    // Out of threads: the connection went down with the closure; count it back.
                    live.fetch_sub(1, Ordering::Relaxed);
                    log::warn!("paper http: could not spawn a connection thread");
                }
            }
        })?;
        Ok(HttpServer { addr, stop, accept: Some(accept) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // accept() blocks; a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn busy() -> Response {
    Response::json(503, r#"{"code":-1008,"msg":"Server is currently overloaded with other requests. Please try again in a few minutes."}"#.into())
}

fn bad(status: u16, msg: &str) -> Response {
    Response::json(status, format!("{{\"code\":-1000,\"msg\":\"{msg}\"}}"))
}

/// Reads one line ending in `\n` of at most `max` bytes. `Ok(None)` on a clean EOF before any
/// byte; an error if the line is too long or the peer vanished mid-line.
fn read_line(reader: &mut impl BufRead, max: usize, line: &mut Vec<u8>) -> io::Result<Option<()>> {
    line.clear();
    let n = reader.by_ref().take(max as u64 + 1).read_until(b'\n', line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        let kind = if n > max { io::ErrorKind::InvalidData } else { io::ErrorKind::UnexpectedEof };
        return Err(io::Error::new(kind, "line too long or cut"));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Some(()))
}

fn serve(
    tcp: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
    limits: &HttpLimits,
    handler: &Handler,
    stop: &AtomicBool,
) {
    let Ok(peer) = tcp.peer_addr() else { return };
    let _ = tcp.set_nodelay(true);
    if tcp.set_read_timeout(Some(HANDSHAKE_POLL)).is_err() {
        return;
    }
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let give_up = || stop.load(Ordering::Relaxed);
    let stream = match PaperStream::accept(tcp, tls, Arc::new(Pacing::default()), deadline, &give_up) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("paper http: tls handshake failed: {e}");
            return;
        }
    };
    if stream.tcp().set_read_timeout(Some(limits.idle_timeout)).is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    if converse(&mut reader, peer, limits, handler, stop) {
        reader.get_mut().close_notify();
    }
}

/// Requests and answers until the connection ends; false when it ended in a hang-up fault.
fn converse(
    reader: &mut BufReader<PaperStream>,
    peer: SocketAddr,
    limits: &HttpLimits,
    handler: &Handler,
    stop: &AtomicBool,
) -> bool {
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // Request line.
        match read_line(reader, limits.max_line, &mut line) {
            Ok(Some(())) => {}
            Ok(None) => return true,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let _ = write_response(reader.get_mut(), &bad(414, "Request line too long."), false);
                return true;
            }
            Err(_) => return true,
        }
        if line.is_empty() {
            continue; // stray CRLF between requests is allowed
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let mut parts = text.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            let _ = write_response(reader.get_mut(), &bad(400, "Malformed request line."), false);
            return true;
        };
        if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
            let _ = write_response(reader.get_mut(), &bad(400, "Malformed request line."), false);
            return true;
        }
        let http10 = version == "HTTP/1.0";
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.to_string(), String::new()),
        };
        // Headers.
        let mut headers = Vec::new();
        loop {
            match read_line(reader, limits.max_line, &mut line) {
                Ok(Some(())) if line.is_empty() => break,
                Ok(Some(())) => {}
                _ => {
                    let _ = write_response(reader.get_mut(), &bad(400, "Malformed headers."), false);
                    return true;
                }
            }
            if headers.len() >= limits.max_headers {
                let _ = write_response(reader.get_mut(), &bad(431, "Too many headers."), false);
                return true;
            }
            let h = String::from_utf8_lossy(&line);
            let Some((k, v)) = h.split_once(':') else {
                let _ = write_response(reader.get_mut(), &bad(400, "Malformed header."), false);
                return true;
            };
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        if header("transfer-encoding").is_some() {
            let _ = write_response(
                reader.get_mut(),
                &bad(411, "Chunked bodies are not supported; send Content-Length."),
                false,
            );
            return true;
        }
        let len = match header("content-length").map(|v| v.parse::<usize>()) {
            None => 0,
            Some(Ok(n)) if n <= limits.max_body => n,
            Some(Ok(_)) => {
                let _ = write_response(reader.get_mut(), &bad(413, "Request body too large."), false);
                return true;
            }
            Some(Err(_)) => {
                let _ = write_response(reader.get_mut(), &bad(400, "Malformed Content-Length."), false);
                return true;
            }
        };
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return true;
        }
        let keep_alive = match header("connection").map(|v| v.to_ascii_lowercase()) {
            Some(v) if v.contains("close") => false,
            Some(v) if v.contains("keep-alive") => true,
            _ => !http10,
        };
        let request = Request {
            method: method.to_string(),
            path,
            query,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            peer: peer.ip(),
        };
        match handler(request) {
            Outcome::Respond(r) => {
                if write_response(reader.get_mut(), &r, keep_alive).is_err() || !keep_alive {
                    return true;
                }
            }
            Outcome::Hangup => {
                // Over TLS too without close_notify: the client sees a bare drop.
                let _ = reader.get_ref().tcp().shutdown(Shutdown::Both);
                return false;
            }
        }
    }
    true
}

fn write_response(stream: &mut impl Write, r: &Response, keep_alive: bool) -> io::Result<()> {
    let mut out = String::with_capacity(256 + r.body.len());
    out.push_str(&format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status)));
    out.push_str("Content-Type: application/json;charset=UTF-8\r\n");
    out.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    for (k, v) in &r.headers {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&r.body);
    stream.write_all(out.as_bytes())?;
    stream.flush()
}
