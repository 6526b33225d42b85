//! Secrets as a type, not a convention.
//!
//! The API secret and every listen key are [`Secret`]s. There is no `Display`, `Serialize` or
//! `Deref`: [`Secret::expose`] is the only way to the text, so every use can be found with grep,
//! and a `#[derive(Debug)]` on a struct holding one stays safe to log.

use sha2::{Digest, Sha256};
use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The whole text. Call it only where the value goes onto the wire or into an HMAC.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, stable tag that tells "same key" from "new key" in a log without revealing it:
    /// the first 4 bytes of its SHA-256.
    pub fn fingerprint(&self) -> String {
        let d = Sha256::digest(self.0.as_bytes());
        format!("sha256:{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new(SECRET);
        for text in [format!("{s:?}"), format!("{s:#?}"), format!("{:?}", Some(&s))] {
            assert!(!text.contains(SECRET), "{text}");
            assert!(!text.contains(&SECRET[..12]), "{text}");
            assert!(text.contains("sha256:"), "{text}");
        }
    }

    #[test]
    fn fingerprint_tells_keys_apart() {
        assert_eq!(Secret::new("a").fingerprint(), Secret::new("a").fingerprint());
        assert_ne!(Secret::new("a").fingerprint(), Secret::new("b").fingerprint());
    }
}
