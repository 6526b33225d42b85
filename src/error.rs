//! The one error type, grouped by what the caller should do about it.
//!
//! Errors are mapped at the boundary (ureq, tungstenite, io) and keep the *kind* of failure,
//! never a URL or query: ours carry signatures and listen keys.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug)]
pub enum Error {
    /// A setting is missing or wrong. Fatal at start: print it and exit non-zero.
    Config(String),
    /// HTTP 429. Nothing may be sent until `retry_after` has passed; pressing on escalates to 418.
    RateLimited { retry_after: Duration },
    /// HTTP 418: the IP is banned for `retry_after`. Every thread waits it out.
    Banned { retry_after: Duration },
    /// The exchange refused the request with its own `{code, msg}`. Do not retry unchanged.
    Api { status: u16, code: i64, msg: String },
    /// An order request may or may not have reached the engine (5xx, -1006/-1007, timeout or a
    /// reset after sending). Look the order up by its client id before doing anything else.
    OutcomeUnknown(String),
    /// Network or protocol trouble before the request could have had an effect. Retry later.
    Transport(String),
    /// The exchange answered something we could not read.
    Decode(String),
    /// A local file (fill log, state, plugin) could not be used.
    Io { path: PathBuf, source: io::Error },
    /// The process could not get something it needs from the OS (a thread, signal handlers).
    /// Not retried: the same machine will refuse again, so stop with one message.
    Internal(String),
    /// The daemon is shutting down; the work was not attempted.
    Stopped,
}

impl Error {
    /// `.map_err(Error::io(path))`: the path travels with the cause.
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_path_buf(), source }
    }

    /// The Binance error code, if the exchange gave one.
    pub fn api_code(&self) -> Option<i64> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Worth trying again after a pause (the exchange or network may recover). Rejections,
    /// bad config and unknown outcomes are not: each needs a decision first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. } | Error::Banned { .. } | Error::Transport(_) => true,
            Error::Api { code, status, .. } => *status >= 500 || matches!(code, -1001 | -1003 | -1008 | -1015 | -1021),
            _ => false,
        }
    }

    /// Ends the start-up loop: retrying cannot fix a bad setting, an unusable file, a refused
    /// key or an OS that will not start a thread; everything else may clear up.
    pub fn ends_start(&self) -> bool {
        matches!(self, Error::Config(_) | Error::Io { .. } | Error::Internal(_)) || self.is_auth_failure()
    }

    /// The API key is malformed or refused (`-2014`, `-2015`, HTTP 401): retrying cannot help.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Error::Api { code: -2014 | -2015, .. } | Error::Api { status: 401, .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(what) => write!(f, "config: {what}"),
            Error::RateLimited { retry_after } => write!(f, "rate limited for {retry_after:?}"),
            Error::Banned { retry_after } => write!(f, "ip banned for {retry_after:?}"),
            Error::Api { status, code, msg } => write!(f, "exchange {status}: {code} {msg}"),
            Error::OutcomeUnknown(what) => write!(f, "outcome unknown: {what}"),
            Error::Transport(what) => write!(f, "transport: {what}"),
            Error::Decode(what) => write!(f, "decode: {what}"),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Internal(what) => write!(f, "internal: {what}"),
            Error::Stopped => f.write_str("stopped"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<tungstenite::Error> for Error {
    // tungstenite's URL errors hold the whole URL, listen key included: keep only the kind.
    fn from(e: tungstenite::Error) -> Error {
        Error::Transport(match e {
            tungstenite::Error::Io(io) => format!("websocket {}", crate::tls::describe_io(&io)),
            tungstenite::Error::ConnectionClosed => "websocket closed".into(),
            tungstenite::Error::AlreadyClosed => "websocket already closed".into(),
            tungstenite::Error::Protocol(p) => format!("websocket protocol: {p}"),
            tungstenite::Error::Capacity(c) => format!("websocket capacity: {c}"),
            tungstenite::Error::Http(r) => format!("websocket handshake: http {}", r.status()),
            tungstenite::Error::Url(_) => "websocket url rejected".into(),
            tungstenite::Error::Tls(_) => "websocket tls error".into(),
            _ => "websocket error".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_context_then_detail() {
        let e = Error::Api { status: 400, code: -1013, msg: "Filter failure: LOT_SIZE".into() };
        assert_eq!(e.to_string(), "exchange 400: -1013 Filter failure: LOT_SIZE");
        assert_eq!(e.api_code(), Some(-1013));
        assert!(!e.is_retryable());
    }

    #[test]
    fn classes() {
        assert!(Error::Api { status: 401, code: -2015, msg: String::new() }.is_auth_failure());
        assert!(Error::Transport("reset".into()).is_retryable());
        assert!(!Error::OutcomeUnknown("503".into()).is_retryable());
        assert!(Error::Api { status: 400, code: -1021, msg: String::new() }.is_retryable());
        let spawn = Error::Internal("cannot start a thread".into());
        assert!(!spawn.is_retryable() && spawn.ends_start());
        assert!(!Error::Transport("reset".into()).ends_start());
    }

    #[test]
    fn tungstenite_url_errors_drop_the_url() {
        let e: Error = tungstenite::Error::Url(tungstenite::error::UrlError::UnableToConnect(
            "ws://127.0.0.1:1/ws/SECRETLISTENKEY".into(),
        ))
        .into();
        assert!(!e.to_string().contains("SECRETLISTENKEY"));
    }
}
