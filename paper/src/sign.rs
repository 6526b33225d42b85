//! Request signatures as the exchange checks them: HMAC-SHA256 of `totalParams` (the query
//! string immediately followed by the body, exactly as the bytes arrived), hex-encoded
//! ("SIGNED Endpoint Security", <https://docs.binance.us/#signed-endpoint-security>). The
//! paper exchange has its own code for this rather than the daemon's signer, so a signing bug
//! in the daemon shows as `-1022` here instead of agreeing with itself.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// An API secret: never printed whole (`Debug` shows a short hash only).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sha256:` and the first 4 bytes of the value's hash, in the daemon's format, so a
    /// report and the daemon's log name the same listen key the same way.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let d = Sha256::digest(self.0.as_bytes());
        format!("sha256:{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

fn mac(secret: &Secret, query: &str, body: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail, and an empty key is a key.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(query.as_bytes());
    mac.update(body.as_bytes());
    mac
}

/// Lower-case hex signature of `query` + `body` (what a client sends).
pub fn sign(secret: &Secret, query: &str, body: &str) -> String {
    mac(secret, query, body).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `signature` (hex, either case) signs `query` + `body`; compared in constant time.
pub fn verify(secret: &Secret, query: &str, body: &str, signature: &str) -> bool {
    let text = signature.as_bytes();
    if !text.len().is_multiple_of(2) {
        return false;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes: Option<Vec<u8>> = text.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect();
    match bytes {
        Some(bytes) => mac(secret, query, body).verify_slice(&bytes).is_ok(),
        None => false,
    }
}

/// `k1=v1&k2=v2`, values percent-encoded (UTF-8, RFC 3986 unreserved characters kept).
pub fn encode_params(params: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        for &b in v.as_bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example ("SIGNED Endpoint Examples" in the Binance.US API docs).
    #[test]
    fn the_documented_example_signs_and_verifies() {
        let secret = Secret::new(crate::DEMO_API_SECRET);
        let query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        let sig = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
        assert_eq!(sign(&secret, query, ""), sig);
        assert!(verify(&secret, query, "", &sig.to_uppercase()));
        assert!(verify(
            &secret,
            "symbol=LTCBTC&side=BUY",
            "&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
            sig
        ));
        for bad in ["", "c8", "zz", &sig[1..]] {
            assert!(!verify(&secret, query, "", bad), "{bad}");
        }
        assert!(!format!("{secret:?}").contains(&crate::DEMO_API_SECRET[..12]));
        assert_eq!(encode_params(&[("a", "x y"), ("b", "é~")]), "a=x%20y&b=%C3%A9~");
    }
}
