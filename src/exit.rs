//! Why the daemon stops, and the one mapping from that to the process's exit code.
//!
//! Every thread of `run` reports here through one `Sender<Exit>`; `main` waits on the other
//! end. It is a leaf module so that the threads need not import each other (or `daemon`, which
//! assembles them) to say why they ended.

use crate::error::Error;

/// Done: a clean stop, or the command did what it was asked.
pub const OK: u8 = 0;
/// A runtime failure; the fill log and reconciliation make a restart lossless.
pub const FAILURE: u8 = 1;
/// Bad usage, configuration or API key: a person must fix something before a retry can help.
pub const USAGE: u8 = 2;

/// Why the daemon must stop, sent to `main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT: a clean stop, exit 0.
    Signal,
    /// A problem no retry can fix (the API key refused): one message, exit 2.
    Fatal(String),
    /// A core thread ended unexpectedly: exit 1, and the restart is lossless.
    Died(&'static str),
}

impl Exit {
    /// The documented exit code: 0 done, 1 runtime failure, 2 bad usage, configuration or key.
    pub fn code(&self) -> u8 {
        match self {
            Exit::Signal => OK,
            Exit::Fatal(_) => USAGE,
            Exit::Died(_) => FAILURE,
        }
    }
}

/// The exit code of an error that ends the program before (or instead of) the daemon running.
pub fn error_code(e: &Error) -> u8 {
    match e {
        Error::Stopped => OK,
        Error::Config(_) => USAGE,
        e if e.is_auth_failure() => USAGE,
        _ => FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_readme() {
        assert_eq!(Exit::Signal.code(), 0);
        assert_eq!(Exit::Fatal("key refused".into()).code(), 2);
        assert_eq!(Exit::Died("state").code(), 1);
        assert_eq!(error_code(&Error::Config("SYNCD_SYMBOLS".into())), 2);
        assert_eq!(error_code(&Error::Api { status: 401, code: -2015, msg: String::new() }), 2);
        assert_eq!(error_code(&Error::Transport("reset".into())), 1);
        assert_eq!(error_code(&Error::Stopped), 0);
        assert_eq!(error_code(&Error::Internal("cannot start a thread".into())), 1);
    }
}
