//! The daemon's one TLS client configuration, for REST (ureq) and the stream (tungstenite) alike.
//!
//! [`client_config`] decides the roots (Mozilla's web roots, plus the certificates of
//! `SYNCD_CA_FILE`), the protocol versions (TLS 1.2 and 1.3) and the provider (rustls with
//! ring, no OpenSSL). ureq only takes a root list of whole certificates, which the web roots
//! are not (they are trust anchors), so instead of asking ureq to build a second configuration,
//! [`SharedTls`] is a ureq connector that wraps its TCP connections with this one.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use ureq::unversioned::transport::time::{Duration, Instant as UreqInstant};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport, TransportAdapter,
};

/// Whether `url` may be used as it is: encrypted (`https://`, `wss://`), or clear text that never
/// leaves the machine (`localhost`, `127.0.0.0/8`, `::1`). Anything unparsable counts as not
/// loopback, so a strange spelling errs on the side of refusing.
pub fn plaintext_ok(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else { return false };
    match scheme {
        "https" | "wss" => return true,
        "http" | "ws" => {}
        _ => return false,
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Userinfo (`user:pass@host`) is not the host.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, _)) => h,
            None => return false,
        },
        None => host_port.split(':').next().unwrap_or(""),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host == "localhost" {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a.is_loopback(),
        Ok(std::net::IpAddr::V6(a)) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
        Err(_) => false,
    }
}

/// The certificates of a PEM file (`SYNCD_CA_FILE`). An error says what is wrong with the file;
/// the caller names the variable.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&pem) {
        certs.push(item.map_err(|e| format!("{}: not a PEM certificate file ({e})", path.display()))?);
    }
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()));
    }
    // Checked here, where the file is known, rather than in `client_config`.
    for (i, cert) in certs.iter().enumerate() {
        RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| format!("{}: certificate {} is not usable as a root: {e}", path.display(), i + 1))?;
    }
    Ok(certs)
}

/// The client configuration: the web roots plus `extra_roots`, TLS 1.2 and 1.3, ring.
pub fn client_config(extra_roots: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for (i, cert) in extra_roots.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| format!("certificate {} is not usable as a root: {e}", i + 1))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// rustls's words for a TLS failure, with what to do about an unknown issuer.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError;
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            format!("tls: {e} (not signed by a trusted root; SYNCD_CA_FILE adds roots)")
        }
        _ => format!("tls: {e}"),
    }
}

/// What a TLS failure means, for logs: rustls's own words for a refused certificate (unknown
/// issuer, not valid for the name, expired), and a drop without `close_notify` called a drop.
pub fn describe_io(e: &io::Error) -> String {
    if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        return describe(tls);
    }
    if let Some(failed) = e.get_ref().and_then(|inner| inner.downcast_ref::<HandshakeFailed>()) {
        return failed.to_string();
    }
    if let Some(ureq) = e.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()) {
        return ureq.to_string();
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return "closed by the peer mid-stream (unexpected end of file; over TLS: no close_notify)".into();
    }
    format!("io: {}", e.kind())
}

/// Runs a REST handshake on `sock`, within the budget the adapter was given, so that a refused
/// certificate is reported as such rather than as whatever read came first.
fn handshake(conn: &mut ClientConnection, sock: &mut TransportAdapter) -> io::Result<()> {
    while conn.is_handshaking() {
        conn.complete_io(sock)?;
    }
    Ok(())
}

/// Runs a handshake, client or server, on `sock` until `deadline` or until `give_up` says so.
/// The socket's read timeout should be a short poll: the deadline is checked before each read,
/// since a peer that dribbles its handshake a byte at a time never times a read out (rustls's
/// `complete_io` keeps reading while the handshake is incomplete). A failed handshake sends
/// whatever alert rustls queued (bad certificate, no common version).
pub fn handshake_until<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    sock: &mut impl ReadWrite,
    deadline: Instant,
    give_up: &dyn Fn() -> bool,
) -> io::Result<()> {
    let over = || give_up() || Instant::now() >= deadline;
    while conn.is_handshaking() {
        match conn.complete_io(&mut Bounded { sock: &mut *sock, over: &over }) {
            Ok(_) => {}
            Err(e) if is_wait(&e) => {
                if over() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, HANDSHAKE_TIMED_OUT));
                }
            }
            Err(e) => {
                let _ = conn.write_tls(sock);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// What [`handshake_until`] says when time is up.
pub const HANDSHAKE_TIMED_OUT: &str = "TLS handshake timed out";

fn is_wait(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// A socket whose reads fail (as a timed-out read) once `over` says so.
struct Bounded<'a, S> {
    sock: &'a mut S,
    over: &'a dyn Fn() -> bool,
}

impl<S: Read> Read for Bounded<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if (self.over)() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.sock.read(buf)
    }
}

impl<S: Write> Write for Bounded<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// `Read + Write`, for [`handshake_until`].
pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A marker inside the io error of a failed REST handshake: it failed before any byte of the
/// request was sent, so even an order cannot exist.
#[derive(Debug)]
pub struct HandshakeFailed(pub io::Error);

impl fmt::Display for HandshakeFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tls handshake: {}", describe_io(&self.0))
    }
}

impl std::error::Error for HandshakeFailed {}

/// True if `e` is from [`SharedTls::connect`]: nothing of the request went out.
pub fn is_handshake_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<HandshakeFailed>())
}

/// A ureq connector (after `TcpConnector`) that wraps `https` connections with the shared
/// [`ClientConfig`].
#[derive(Debug)]
pub struct SharedTls(pub Arc<ClientConfig>);

impl<In: Transport> Connector<In> for SharedTls {
    type Out = Either<In, TlsTransport>;

    fn connect(&self, details: &ConnectionDetails, chained: Option<In>) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Err(ureq::Error::ConnectionFailed);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let name =
            ServerName::try_from(host.to_string()).map_err(|_| ureq::Error::Tls("host is not a valid TLS name"))?;
        let mut conn = ClientConnection::new(self.0.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        // The budget is for TCP connect and handshake together (as in ureq's own connector):
        // what the connectors before this one spent is gone.
        let mut timeout = details.timeout;
        if let (Duration::Exact(limit), UreqInstant::Exact(now), UreqInstant::Exact(then)) =
            (timeout.after, (details.current_time)(), details.now)
        {
            timeout.after = Duration::Exact(limit.saturating_sub(now.saturating_duration_since(then)));
        }
        sock.set_timeout(timeout);
        if let Err(e) = handshake(&mut conn, &mut sock) {
            // Every error here is from before the request's first byte. A refused certificate
            // is rustls's error inside the io error, a timeout ureq's own: keep both whole.
            return Err(match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => ureq::Error::Rustls(tls.clone()),
                // The handshake spends the connect budget, whichever limit (connect or global)
                // is the nearer; calling it Connect tells the caller nothing was sent.
                None => match ureq::Error::from(e) {
                    ureq::Error::Timeout(_) => ureq::Error::Timeout(ureq::Timeout::Connect),
                    other => {
                        let e = other.into_io();
                        ureq::Error::Io(io::Error::new(e.kind(), HandshakeFailed(e)))
                    }
                },
            });
        }
        let buffers = LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(Either::B(TlsTransport { buffers, stream: StreamOwned::new(conn, sock) })))
    }
}

/// One TLS connection of the REST client.
pub struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// The REST client's agent: ureq's own proxy and TCP connectors, then [`SharedTls`], with
/// [`KeptResolver`].
pub fn agent(config: ureq::config::Config, tls: Arc<ClientConfig>) -> ureq::Agent {
    use ureq::unversioned::transport::{ConnectProxyConnector, TcpConnector};
    let connector = ().chain(ConnectProxyConnector::default()).chain(TcpConnector::default()).chain(SharedTls(tls));
    ureq::Agent::with_parts(config, connector, KeptResolver::default())
}

/// How long a host name's addresses are used for new connections before it is looked up again.
const KEEP_NAME: std::time::Duration = std::time::Duration::from_secs(30);

/// ureq's resolver, without a lookup per request. ureq 3 resolves a request's host before it
/// looks in its pool of kept-alive connections, and its `DefaultResolver`, with a timeout set
/// (ours is), starts a thread for each lookup: every order cost a thread's creation and a
/// `getaddrinfo`, and on a loaded host the wait for that thread to be scheduled, even when a
/// kept-alive connection then carried it. Here an IP address (the paper exchange, a proxy on
/// loopback) is taken as it is, and a name's addresses are kept for 30 s: they only
/// serve new connections, so an address that changes is picked up within that time.
#[derive(Debug, Default)]
pub struct KeptResolver {
    inner: ureq::unversioned::resolver::DefaultResolver,
    kept: std::sync::Mutex<Option<(String, Instant, ureq::unversioned::resolver::ResolvedSocketAddrs)>>,
}

impl ureq::unversioned::resolver::Resolver for KeptResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        use crate::lock::LockAnyway;
        use ureq::unversioned::resolver::DefaultResolver;
        // `host:port`, the port the scheme's when the URL has none (an IPv6 host in brackets).
        let Some(key) = uri.scheme().zip(uri.authority()).and_then(|(s, a)| DefaultResolver::host_and_port(s, a))
        else {
            return self.inner.resolve(uri, config, timeout);
        };
        if let Ok(addr) = key.parse::<std::net::SocketAddr>() {
            let mut addrs = self.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        if let Some((name, at, addrs)) = &*self.kept.lock_anyway() {
            if *name == key && at.elapsed() < KEEP_NAME {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        *self.kept.lock_anyway() = Some((key, Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn an_ip_address_is_taken_as_it_is_and_a_name_is_looked_up_once_for_a_while() {
        use ureq::unversioned::resolver::Resolver;
        use ureq::unversioned::transport::NextTimeout;
        let r = KeptResolver::default();
        let config = ureq::config::Config::default();
        let timeout = NextTimeout::default();
        let resolve = |url: &str| r.resolve(&url.parse().unwrap(), &config, timeout).unwrap().to_vec();
        assert_eq!(resolve("http://127.0.0.1:8080/api/v3/order"), ["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(resolve("https://[::1]/x"), ["[::1]:443".parse().unwrap()]);
        assert!(r.kept.lock().unwrap().is_none(), "an address is never kept: nothing was looked up");
        let first = resolve("http://localhost:9/");
        assert!(!first.is_empty() && first.iter().all(|a| a.ip().is_loopback() && a.port() == 9), "{first:?}");
        let kept = r.kept.lock().unwrap().clone().map(|(name, _, addrs)| (name, addrs.to_vec()));
        assert_eq!(kept, Some(("localhost:9".to_string(), first.clone())));
        assert_eq!(resolve("http://localhost:9/again"), first, "the same addresses, kept");
    }

    #[test]
    fn clear_text_is_allowed_to_loopback_only() {
        for ok in [
            "https://api.binance.us",
            "wss://stream.binance.us:9443",
            "http://127.0.0.1:8080",
            "ws://127.9.9.9:1",
            "http://localhost:1",
            "http://LOCALHOST./x",
            "ws://[::1]:9443",
            "http://[::ffff:127.0.0.1]:80",
            "http://user:pw@127.0.0.1:80",
        ] {
            assert!(plaintext_ok(ok), "{ok}");
        }
        for refused in [
            "http://api.binance.us",
            "ws://stream.binance.us:9443",
            "http://0.0.0.0:8080",
            "http://10.0.0.1",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "http://127.0.0.1@evil.example",
            "ws://[::2]:1",
            "http://[::1",
            "ftp://127.0.0.1",
            "no scheme",
        ] {
            assert!(!plaintext_ok(refused), "{refused}");
        }
    }
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// The header of a TLS handshake record of 16 KiB: the peer waits for all of it.
    pub(crate) const RECORD_HEADER: [u8; 5] = [0x16, 0x03, 0x03, 0x40, 0x00];

    /// Writes a record header on `tcp`, then one byte every 30 ms for `lasting`: no read of the
    /// peer ever times out, and the record is never complete.
    pub(crate) fn dribble(mut tcp: TcpStream, lasting: Duration) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let started = Instant::now();
            if tcp.write_all(&RECORD_HEADER).is_err() {
                return;
            }
            while started.elapsed() < lasting && tcp.write_all(&[0]).is_ok() {
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    }

    /// A listener whose connections get `serve`, each on its own thread; its address.
    pub(crate) fn server(serve: fn(TcpStream)) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for tcp in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || serve(tcp));
            }
        });
        addr
    }

    #[test]
    fn a_ca_file_with_a_certificate_that_is_no_root_is_named_in_the_error() {
        let path = std::env::temp_dir().join(format!("syncd-bad-root-{}.pem", std::process::id()));
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let err = read_ca_file(&path).err().unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains(&path.display().to_string()) && err.contains("not usable as a root"), "{err}");
    }

    #[test]
    fn a_stream_handshake_with_a_dribbling_server_ends_at_the_connect_timeout() {
        let addr = server(|tcp| {
            let _ = dribble(tcp, Duration::from_secs(5)).join();
        });
        let config = client_config(&[]).unwrap();
        let started = Instant::now();
        let url = format!("wss://localhost:{}", addr.port());
        let err = match crate::stream::connect(&url, "/ws/x", Duration::from_millis(500), &config, &mut || {}) {
            Ok(_) => panic!("a handshake that never completes succeeded"),
            Err(e) => e.to_string(),
        };
        let took = started.elapsed();
        assert!(err.contains("TLS handshake timed out"), "{err}");
        assert!(took < Duration::from_secs(2), "the handshake ran {took:?} past its 500 ms");
    }
}
