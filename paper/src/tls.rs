//! TLS for the paper exchange (`binance-syncd paper --tls`): the same rustls and ring provider
//! as the daemon, no OpenSSL.
//!
//! [`PaperTls`] holds the server configuration and the certificate a client should trust: either
//! the operator's (`--tls-cert`/`--tls-key`), or a certificate for `localhost` and `127.0.0.1`
//! issued at start by a throwaway CA whose certificate is what clients trust (a CA rather than
//! one self-signed leaf, since strict verifiers refuse a leaf as its own anchor).
//!
//! [`PaperStream`] is what the REST and WebSocket servers read and write, plain or TLS alike,
//! with the handshake run by [`PaperStream::accept`] on the connection's own thread, so a slow
//! or silent client never holds up the accept loop. [`Pacing`] lets a fault write frames in
//! small TLS records, each cut in two TCP writes with a pause between: the client's read
//! times out in the middle of a record.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A server certificate, its key (inside the config) and what clients should trust.
pub struct PaperTls {
    config: Arc<ServerConfig>,
    trust: Vec<CertificateDer<'static>>,
    trust_pem: String,
}

impl fmt::Debug for PaperTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaperTls").field("trust", &self.trust.len()).finish_non_exhaustive()
    }
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key do not fit: {e}"))?;
    Ok(Arc::new(config))
}

impl PaperTls {
    /// A fresh CA and a certificate it issues for `names` (DNS names or IP addresses).
    pub fn generate(names: &[&str]) -> Result<PaperTls, String> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let err = |e: rcgen::Error| format!("cannot generate a certificate: {e}");
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "binance-syncd paper exchange CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let leaf_key = KeyPair::generate().map_err(err)?;
        let mut leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).map_err(err)?;
        leaf.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("paper"));
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = Issuer::new(ca, ca_key);
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(err)?;
        let key = PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(|e| format!("generated key: {e}"))?;
        let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
        Ok(PaperTls {
            config: server_config(chain, key)?,
            trust: vec![ca_cert.der().clone()],
            trust_pem: ca_cert.pem(),
        })
    }

    /// The operator's certificate chain and key (PEM). Clients trust the chain's certificates.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<PaperTls, String> {
        let text = std::fs::read_to_string(cert).map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("--tls-cert {}: no PEM certificate in it", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        // From the parsed chain, not the file's text: a combined certificate and key file
        // would otherwise publish its key in the CA file clients are told to read.
        let trust_pem = chain
            .iter()
            .map(|c| {
                pem::encode_config(
                    &pem::Pem::new("CERTIFICATE", c.as_ref()),
                    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                )
            })
            .collect();
        Ok(PaperTls { config: server_config(chain.clone(), key)?, trust: chain, trust_pem })
    }

    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// The certificates a client adds to its roots to trust this server.
    pub fn trust(&self) -> &[CertificateDer<'static>] {
        &self.trust
    }

    /// [`PaperTls::trust`] as PEM, for a CA file (`SYNCD_CA_FILE`, a Python CA bundle).
    pub fn trust_pem(&self) -> &str {
        &self.trust_pem
    }
}

/// A fault's write pacing, shared by a connection and its socket: `bytes` 0 is off.
#[derive(Debug, Default)]
pub struct Pacing {
    bytes: AtomicUsize,
    pause_ms: AtomicU64,
}

impl Pacing {
    pub fn set(&self, bytes: usize, pause: Duration) {
        self.pause_ms.store(pause.as_millis() as u64, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn off(&self) {
        self.bytes.store(0, Ordering::Relaxed);
    }

    fn chunk(&self) -> Option<(usize, Duration)> {
        let bytes = self.bytes.load(Ordering::Relaxed);
        (bytes > 0).then(|| (bytes, Duration::from_millis(self.pause_ms.load(Ordering::Relaxed))))
    }
}

/// The TCP socket under a connection. While pacing is on, every write goes out in two halves
/// with the pause between: under TLS, one write is one record, so the peer's read sees the
/// first half of a record and then nothing for the pause.
pub struct PacedTcp {
    tcp: TcpStream,
    pacing: Arc<Pacing>,
    /// The rest of a cut write is due after the pause.
    mid: bool,
}

impl Read for PacedTcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for PacedTcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some((_, pause)) = self.pacing.chunk() else {
            self.mid = false;
            return self.tcp.write(buf);
        };
        if self.mid {
            std::thread::sleep(pause);
            self.mid = false;
            return self.tcp.write(buf);
        }
        let half = buf.len().div_ceil(2);
        let n = self.tcp.write(&buf[..half])?;
        self.mid = n < buf.len();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// A server-side connection, plain or TLS.
pub enum PaperStream {
    Plain(PacedTcp),
    Tls(Box<StreamOwned<ServerConnection, PacedTcp>>),
}

impl PaperStream {
    /// Wraps an accepted socket, running the TLS handshake when `tls` is set. The socket's read
    /// timeout is the poll: between reads, `give_up` is asked (a stopping server), and the
    /// handshake fails at `deadline`.
    pub fn accept(
        tcp: TcpStream,
        tls: Option<&Arc<ServerConfig>>,
        pacing: Arc<Pacing>,
        deadline: Instant,
        give_up: &dyn Fn() -> bool,
    ) -> io::Result<PaperStream> {
        let mut sock = PacedTcp { tcp, pacing, mid: false };
        let Some(config) = tls else { return Ok(PaperStream::Plain(sock)) };
        let mut conn = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        handshake_until(&mut conn, &mut sock, deadline, give_up)?;
        Ok(PaperStream::Tls(Box::new(StreamOwned::new(conn, sock))))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            PaperStream::Plain(s) => &s.tcp,
            PaperStream::Tls(s) => &s.get_ref().tcp,
        }
    }

    /// Ends a TLS session in order (`close_notify`); nothing for a plain socket.
    pub fn close_notify(&mut self) {
        if let PaperStream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }

    fn pacing(&self) -> &Pacing {
        match self {
            PaperStream::Plain(s) => &s.pacing,
            PaperStream::Tls(s) => &s.get_ref().pacing,
        }
    }
}

impl Read for PaperStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            PaperStream::Plain(s) => s.read(buf),
            PaperStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for PaperStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Paced: at most one record's worth per write.
        let buf = match self.pacing().chunk() {
            Some((bytes, _)) => &buf[..buf.len().min(bytes)],
            None => buf,
        };
        match self {
            PaperStream::Plain(s) => s.write(buf),
            PaperStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            PaperStream::Plain(s) => s.flush(),
            PaperStream::Tls(s) => s.flush(),
        }
    }
}

/// Runs the server handshake until `deadline` or until `give_up` says so. `sock`'s read
/// timeout is a short poll, and the deadline is checked before each read: a client dribbling
/// its hello a byte at a time never times a read out (rustls's `complete_io` keeps reading
/// while the handshake is incomplete). A failed handshake sends the alert rustls queued.
fn handshake_until(
    conn: &mut ServerConnection,
    sock: &mut PacedTcp,
    deadline: Instant,
    give_up: &dyn Fn() -> bool,
) -> io::Result<()> {
    let over = || give_up() || Instant::now() >= deadline;
    while conn.is_handshaking() {
        match conn.complete_io(&mut Bounded { sock: &mut *sock, over: &over }) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                if over() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"));
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

/// The connection's socket, whose reads fail (as a timed-out read) once `over` says so.
struct Bounded<'a> {
    sock: &'a mut PacedTcp,
    over: &'a dyn Fn() -> bool,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if (self.over)() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.sock.read(buf)
    }
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Writes a TLS record header on `tcp`, then one byte every 30 ms for `lasting`: no read
    /// of the peer ever times out, and the record is never complete.
    pub(crate) fn dribble(mut tcp: TcpStream, lasting: Duration) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let started = Instant::now();
            // A handshake record (0x16), TLS 1.2, 16 KiB long.
            if tcp.write_all(&[0x16, 0x03, 0x03, 0x40, 0x00]).is_err() {
                return;
            }
            while started.elapsed() < lasting && tcp.write_all(&[0]).is_ok() {
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    }

    #[test]
    fn a_client_dribbling_its_hello_is_cut_off_at_the_deadline() {
        let tls = PaperTls::generate(&["localhost"]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = dribble(TcpStream::connect(listener.local_addr().unwrap()).unwrap(), Duration::from_secs(5));
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(500);
        let result = PaperStream::accept(tcp, Some(tls.server_config()), Arc::default(), deadline, &|| false);
        let took = started.elapsed();
        assert!(matches!(&result, Err(e) if e.kind() == io::ErrorKind::TimedOut), "{:?}", result.err());
        assert!(took < Duration::from_secs(2), "the handshake ran {took:?} past its 500 ms");
        drop(client);
    }

    #[test]
    fn combined_cert_and_key_file_publishes_only_the_certificate() {
        let dir = std::env::temp_dir().join(format!("syncd-paper-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let combined = dir.join("combined.pem");
        std::fs::write(&combined, format!("{}{}", cert.cert.pem(), cert.signing_key.serialize_pem())).unwrap();
        let tls = PaperTls::from_pem_files(&combined, &combined).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!tls.trust_pem().contains("PRIVATE KEY"), "{}", tls.trust_pem());
        let back: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(tls.trust_pem().as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, [cert.cert.der().clone()]);
    }

    #[test]
    fn generated_trust_pem_reads_back_as_the_ca() {
        let tls = PaperTls::generate(&["localhost", "127.0.0.1"]).unwrap();
        let back: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(tls.trust_pem().as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, tls.trust());
    }
}
