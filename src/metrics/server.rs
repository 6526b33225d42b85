//! THREAD `metrics`: a minimal blocking HTTP/1.1 server for `/metrics` and `/healthz`.
//!
//! A few dozen lines of std rather than a crate: two read-only GET routes, `Connection: close`.
//! Each connection gets its own short-lived thread and one deadline for the whole exchange
//! ([`DEADLINE`]). The accept thread never reads from a client. At most [`MAX_CONNS`]
//! connections hold a slot; when all are taken, a new one takes the slot of the oldest
//! connection that has not sent its whole request yet (else of the oldest): idle or slow
//! clients, however many, cannot keep a health check out, each arrival gets in at once.
//! Threads stay bounded (a cut connection's thread ends at once; past twice the slots a new
//! connection waits up to a second for them to end, then is closed). It only reads atomics
//! and short-lived locks the fill path never waits on (see [`crate::metrics`]).

use super::{render, Shared, Sources};
use crate::lock::{LockAnyway, RwLockAnyway};
use crossbeam_channel::Receiver;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest request head read; ours are a single line and a few headers.
const MAX_HEAD: usize = 8 * 1024;
/// The whole request and response of one connection, however the client paces its bytes.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Connections holding a slot: a scraper or two and a health probe, with room for strays (and
/// more arrive by cutting the oldest, see the module doc).
pub const MAX_CONNS: usize = 32;

/// How the server treats its clients (tests shorten the deadline).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub deadline: Duration,
    pub max_conns: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { deadline: DEADLINE, max_conns: MAX_CONNS }
    }
}

/// Starts serving on `listener` until `stop` closes.
pub fn spawn(listener: TcpListener, sources: Shared, stop: Receiver<()>) -> io::Result<JoinHandle<()>> {
    spawn_with(listener, sources, stop, Limits::default())
}

pub fn spawn_with(
    listener: TcpListener,
    sources: Shared,
    stop: Receiver<()>,
    limits: Limits,
) -> io::Result<JoinHandle<()>> {
    // A blocking accept answers at once (a polled one would add up to a poll's wait to every
    // scrape); a small waker thread connects once `stop` closes, so the accept returns.
    let mut wake = listener.local_addr()?;
    if wake.ip().is_unspecified() {
        wake.set_ip(if wake.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    thread::Builder::new().name("metrics-stop".into()).spawn(move || {
        let _ = stop.recv();
        flag.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
    })?;
    // Threads alive, cut ones included: the bound on memory.
    let threads = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(Mutex::new(Slots::default()));
    thread::Builder::new().name("metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            if stopping.load(Ordering::Acquire) {
                return;
            }
            match conn {
                Ok(conn) => {
                    // Past the slots, the threads alive are ones already cut, ending now: a
                    // busy CPU may take a moment to run them out, so wait (bounded) rather
                    // than turn a health check away.
                    let cap = Instant::now() + Duration::from_secs(1);
                    while threads.load(Ordering::Acquire) >= 2 * limits.max_conns && Instant::now() < cap {
                        thread::sleep(Duration::from_millis(1));
                    }
                    if threads.fetch_add(1, Ordering::AcqRel) >= 2 * limits.max_conns {
                        threads.fetch_sub(1, Ordering::AcqRel);
                        log::debug!("metrics: {} connection threads alive; closing a new one", 2 * limits.max_conns);
                        continue;
                    }
                    let Some(id) = lock(&slots).admit(&conn, limits.max_conns) else {
                        threads.fetch_sub(1, Ordering::AcqRel);
                        continue;
                    };
                    // What the daemon attached by now (the executor, plugins, fill tap).
                    let sources = sources.read_anyway().clone();
                    let (done, mine) = (threads.clone(), slots.clone());
                    let worker = thread::Builder::new().name("metrics-conn".into()).spawn(move || {
                        let asked = || lock(&mine).asked(id);
                        if let Err(e) = serve(conn, &sources, Instant::now() + limits.deadline, asked) {
                            log::debug!("metrics: a request failed: {}", e.kind());
                        }
                        lock(&mine).open.remove(&id);
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                    if let Err(e) = worker {
                        lock(&slots).open.remove(&id);
                        threads.fetch_sub(1, Ordering::AcqRel);
                        log::warn!("metrics: cannot start a connection thread: {}", e.kind());
                    }
                }
                Err(e) => {
                    log::warn!("metrics: accept failed: {}", e.kind());
                    // Out of descriptors, say: do not spin.
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    })
}

/// The connections holding a slot, oldest first.
#[derive(Default)]
struct Slots {
    next: u64,
    /// A handle to cut each one with, and whether its whole request has come.
    open: BTreeMap<u64, (TcpStream, bool)>,
}

fn lock(slots: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    slots.lock_anyway()
}

impl Slots {
    /// A slot for `conn`, cutting the oldest connection still sending its request (else the
    /// oldest) when all are taken: its thread's read or write fails at once and it ends.
    fn admit(&mut self, conn: &TcpStream, max: usize) -> Option<u64> {
        if self.open.len() >= max {
            let oldest = self.open.iter().find(|(_, (_, asked))| !asked).or(self.open.iter().next()).map(|(id, _)| *id);
            if let Some((cut, _)) = oldest.and_then(|id| self.open.remove(&id)) {
                log::debug!("metrics: {max} connections open; cutting the oldest idle one");
                let _ = cut.shutdown(Shutdown::Both);
            }
        }
        let handle = conn.try_clone().ok()?;
        self.next += 1;
        self.open.insert(self.next, (handle, false));
        Some(self.next)
    }

    fn asked(&mut self, id: u64) {
        if let Some((_, asked)) = self.open.get_mut(&id) {
            *asked = true;
        }
    }
}

/// A connection whose every read and write waits at most until one deadline.
struct Conn {
    stream: TcpStream,
    deadline: Instant,
}

impl Conn {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connection deadline passed"));
        }
        Ok(left)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.stream.set_read_timeout(Some(self.left()?))?;
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            self.stream.set_write_timeout(Some(self.left()?))?;
            match self.stream.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Serves one connection; `asked` is called once its whole request head has come.
fn serve(stream: TcpStream, sources: &Sources, deadline: Instant, asked: impl FnOnce()) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut conn = Conn { stream, deadline };
    let result = answer(&mut conn, sources, asked);
    // Closing with unread request bytes makes the kernel send a reset, which can destroy the
    // response before the client reads it: say we are done, then read what is left (briefly).
    let _ = conn.stream.shutdown(Shutdown::Write);
    conn.deadline = conn.deadline.min(Instant::now() + Duration::from_millis(200));
    let mut sink = [0u8; 1024];
    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
    result
}

fn answer(conn: &mut Conn, sources: &Sources, asked: impl FnOnce()) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(conn, "431 Request Header Fields Too Large", &[], "text/plain", "too large\n", true);
        }
    }
    asked();
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        let allow = [("Allow", "GET, HEAD")];
        return respond(conn, "405 Method Not Allowed", &allow, "text/plain", "GET only\n", with_body);
    }
    match path {
        "/metrics" => {
            respond(conn, "200 OK", &[], "text/plain; version=0.0.4; charset=utf-8", &render(sources), with_body)
        }
        "/healthz" => {
            let (ok, body) = sources.metrics.health();
            let status = if ok { "200 OK" } else { "503 Service Unavailable" };
            respond(conn, status, &[], "application/json", &body, with_body)
        }
        _ => respond(conn, "404 Not Found", &[], "text/plain", "try /metrics or /healthz\n", with_body),
    }
}

fn respond(
    conn: &mut Conn,
    status: &str,
    extra: &[(&str, &str)],
    kind: &str,
    body: &str,
    with_body: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Cache-Control: no-store\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    if with_body {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(limits: Limits) -> (std::net::SocketAddr, crossbeam_channel::Sender<()>) {
        let sources = Arc::new(std::sync::RwLock::new(Sources::bare()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        spawn_with(listener, sources, stop_rx, limits).unwrap();
        (addr, stop_tx)
    }

    fn request(addr: std::net::SocketAddr, req: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn a_client_dripping_bytes_is_cut_at_the_deadline_and_blocks_nobody() {
        let (addr, _stop) = server(Limits { deadline: Duration::from_millis(600), max_conns: 4 });
        // One byte every 100 ms: under any per-read timeout, so only a deadline ends it.
        let mut slow = TcpStream::connect(addr).unwrap();
        let dripper = {
            let mut slow = slow.try_clone().unwrap();
            thread::spawn(move || {
                for b in
                    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                {
                    if slow.write_all(&[*b]).is_err() {
                        return true;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                false
            })
        };
        // Idle ones too, up to one slot short of the cap.
        let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let healthz = request(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(healthz.starts_with("HTTP/1.1 200 OK\r\n"), "{healthz}");
        assert!(!dripper.is_finished(), "answered while the slow client was still being served");
        // The server gave up on the dripper: its socket reads end (closed, or reset).
        slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(slow.read(&mut buf), Ok(0) | Err(_)), "the slow connection was closed");
        assert!(dripper.join().unwrap(), "its writes failed before it had sent the whole head");
        drop(idle);
    }

    #[test]
    fn three_times_as_many_idle_connections_as_slots_cannot_keep_healthz_out() {
        // A deadline far past the test: only being cut frees an idle connection's slot.
        let (addr, _stop) = server(Limits { deadline: Duration::from_secs(60), max_conns: 4 });
        let mut idle: Vec<TcpStream> = (0..12).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for _ in 0..3 {
            let healthz = request(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            assert!(healthz.starts_with("HTTP/1.1 200 OK\r\n"), "{healthz:?}");
            idle.push(TcpStream::connect(addr).unwrap());
        }
        // The oldest idle ones were cut to make room: their reads end.
        idle[0].set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(idle[0].read(&mut buf), Ok(0) | Err(_)), "the oldest idle connection was cut");
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let (addr, _stop) = server(Limits::default());
        let out = request(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
        assert!(out.starts_with("HTTP/1.1 405") && out.contains("\r\nAllow: GET, HEAD\r\n"), "{out}");
        let out = request(addr, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("\r\n\r\n"), "no body for HEAD: {out}");
    }
}
