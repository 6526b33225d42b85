//! THREAD `metrics`: a minimal blocking HTTP/1.1 server for `/metrics` and `/healthz`.
//!
//! A few dozen lines of std rather than a crate: two read-only GET routes, one connection at a
//! time, `Connection: close`. It only reads atomics and short-lived locks the fill path never
//! waits on (see [`crate::metrics`]), so a slow or hostile client delays other scrapers at
//! most by its 2 s timeouts, never the daemon.

use super::{render, Sources};
use crossbeam_channel::Receiver;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Longest request head read; ours are a single line and a few headers.
const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts serving on `listener` until `stop` closes.
pub fn spawn(listener: TcpListener, sources: Sources, stop: Receiver<()>) -> io::Result<JoinHandle<()>> {
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
    thread::Builder::new().name("metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            if stopping.load(Ordering::Acquire) {
                return;
            }
            match conn {
                Ok(conn) => {
                    if let Err(e) = serve(conn, &sources) {
                        log::debug!("metrics: a request failed: {}", e.kind());
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

fn serve(mut conn: TcpStream, sources: &Sources) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut conn, "431 Request Header Fields Too Large", "text/plain", "too large\n", true);
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return respond(&mut conn, "405 Method Not Allowed", "text/plain", "GET only\n", with_body);
    }
    match path {
        "/metrics" => {
            respond(&mut conn, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &render(sources), with_body)
        }
        "/healthz" => {
            let (ok, body) = sources.metrics.health();
            let status = if ok { "200 OK" } else { "503 Service Unavailable" };
            respond(&mut conn, status, "application/json", &body, with_body)
        }
        _ => respond(&mut conn, "404 Not Found", "text/plain", "try /metrics or /healthz\n", with_body),
    }
}

fn respond(conn: &mut TcpStream, status: &str, kind: &str, body: &str, with_body: bool) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    if with_body {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}
