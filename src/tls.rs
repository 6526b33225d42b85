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
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport, TransportAdapter,
};

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
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return "closed by the peer mid-stream (unexpected end of file; over TLS: no close_notify)".into();
    }
    format!("io: {}", e.kind())
}

/// Runs the client handshake on `tcp` (blocking, with the socket's own timeouts), so that a
/// refused certificate is reported as such rather than as whatever read came first.
pub fn handshake(conn: &mut ClientConnection, tcp: &mut impl ReadWrite) -> io::Result<()> {
    while conn.is_handshaking() {
        conn.complete_io(tcp)?;
    }
    Ok(())
}

/// `Read + Write`, for [`handshake`].
pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

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
        sock.set_timeout(details.timeout);
        if let Err(e) = handshake(&mut conn, &mut sock) {
            // A refused certificate is rustls's error inside the io error: keep it whole.
            return Err(match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => ureq::Error::Rustls(tls.clone()),
                None => ureq::Error::Io(e),
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

/// The REST client's agent: ureq's own proxy and TCP connectors, then [`SharedTls`].
pub fn agent(config: ureq::config::Config, tls: Arc<ClientConfig>) -> ureq::Agent {
    use ureq::unversioned::resolver::DefaultResolver;
    use ureq::unversioned::transport::{ConnectProxyConnector, TcpConnector};
    let connector = ().chain(ConnectProxyConnector::default()).chain(TcpConnector::default()).chain(SharedTls(tls));
    ureq::Agent::with_parts(config, connector, DefaultResolver::default())
}
