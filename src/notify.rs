//! systemd's notify protocol (`sd_notify(3)`), in std only: one datagram per message to the
//! Unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//!
//! Without `NOTIFY_SOCKET` (not started by systemd with `Type=notify`) every call does nothing,
//! so the daemon behaves the same under any supervisor. Sending never blocks the caller for
//! long (a datagram to a local socket) and a failure is logged once at debug level and
//! otherwise ignored: supervision must never stop the fill log.
//!
//! Who sends what (see `ARCHITECTURE.md`): `reconcile` sends `READY=1` after its first
//! complete pass with the stream up; `state` sends `WATCHDOG=1` (with `STATUS=`) every half
//! of `WATCHDOG_USEC`, so a wedged writer stops the pings and systemd restarts it;
//! `Daemon::stop` sends `STOPPING=1`.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A handle on the supervisor's socket; cheap to clone, a no-op when there is none.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
    ready: AtomicBool,
    failed_once: AtomicBool,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("socket", &self.inner.is_some())
            .field("watchdog", &self.inner.as_ref().and_then(|i| i.watchdog))
            .finish()
    }
}

/// `@name` is the abstract namespace (a leading NUL byte on the wire), anything else a path.
fn address(name: &str) -> io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())
        }
        None => SocketAddr::from_pathname(name),
    }
}

/// `WATCHDOG_USEC` (for us, if `WATCHDOG_PID` says so or is unset) → how often to ping: half
/// the timeout, as `sd_watchdog_enabled(3)` recommends.
fn ping_interval(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`; a no-op notifier when unset
    /// or unusable (logged).
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var("NOTIFY_SOCKET").ok().filter(|n| !n.is_empty()) else {
            return Notifier::default();
        };
        let watchdog = ping_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
        );
        match Notifier::to(&name, watchdog) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("notify: cannot use NOTIFY_SOCKET {name}: {e}; not notifying systemd");
                Notifier::default()
            }
        }
    }

    /// Messages go to the socket `name` (`@` for the abstract namespace); `watchdog` is how often
    /// [`Notifier::watchdog_every`] tells the writer to ping.
    pub fn to(name: &str, watchdog: Option<Duration>) -> io::Result<Notifier> {
        let addr = address(name)?;
        let socket = UnixDatagram::unbound()?;
        // A full receive queue must not hold up the writer: drop the message instead.
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            inner: Some(Arc::new(Inner {
                socket,
                addr,
                watchdog,
                ready: AtomicBool::new(false),
                failed_once: AtomicBool::new(false),
            })),
        })
    }

    /// Whether a supervisor listens at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// How often `WATCHDOG=1` is due, when systemd watches us.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.inner.as_ref().and_then(|i| i.watchdog)
    }

    /// Sends `state` (newline-separated `KEY=value` assignments) as one datagram.
    pub fn send(&self, state: &str) {
        let Some(inner) = &self.inner else { return };
        if let Err(e) = inner.socket.send_to_addr(state.as_bytes(), &inner.addr) {
            if !inner.failed_once.swap(true, Ordering::Relaxed) {
                log::debug!("notify: cannot send to the supervisor ({e}); later failures are not logged");
            }
        }
    }

    /// `READY=1`, once per process whoever calls it again.
    pub fn ready(&self, status: &str) {
        if let Some(inner) = &self.inner {
            if !inner.ready.swap(true, Ordering::AcqRel) {
                self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
            }
        }
    }

    /// `WATCHDOG=1` (when systemd asked for it) with the current status line.
    pub fn beat(&self, status: &str) {
        match self.watchdog_every() {
            Some(_) => self.send(&format!("WATCHDOG=1\nSTATUS={}", one_line(status))),
            None => self.status(status),
        }
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

/// A status is one line: a newline would start another assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_pings_at_half_the_timeout_and_only_for_our_pid() {
        let ours = std::process::id().to_string();
        assert_eq!(ping_interval(Some("30000000"), None), Some(Duration::from_secs(15)));
        assert_eq!(ping_interval(Some("30000000"), Some(&ours)), Some(Duration::from_secs(15)));
        assert_eq!(ping_interval(Some("30000000"), Some("1")), None);
        assert_eq!(ping_interval(Some("0"), None), None);
        assert_eq!(ping_interval(Some("soon"), None), None);
        assert_eq!(ping_interval(None, None), None);
    }

    fn receive(rx: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn datagrams_reach_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("syncd-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier::to(path.to_str().unwrap(), Some(Duration::from_secs(1))).unwrap();
        n.ready("up\nand running");
        n.ready("again");
        n.beat("fine");
        n.stopping();
        assert_eq!(receive(&rx), "READY=1\nSTATUS=up and running");
        assert_eq!(receive(&rx), "WATCHDOG=1\nSTATUS=fine", "READY=1 is sent once");
        assert_eq!(receive(&rx), "STOPPING=1\nSTATUS=stopping");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("syncd-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier::to(&format!("@{name}"), None).unwrap();
        n.beat("no watchdog asked");
        assert_eq!(receive(&rx), "STATUS=no watchdog asked");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_socket_no_messages() {
        let n = Notifier::default();
        assert!(!n.enabled());
        assert_eq!(n.watchdog_every(), None);
        n.ready("x");
        n.stopping();
    }
}
