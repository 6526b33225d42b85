//! Another Binance client for the paper exchange: the web-UI user, a second bot, a test.
//!
//! It is deliberately *not* the daemon's REST client, which cannot send orders at all (only
//! the executor can). This one sends whatever it is given, like any third-party client would,
//! so tests and benchmarks can place LIMIT/MARKET/IOC orders, orders the executor would refuse,
//! and orders "from someone else" on the same account. Signing is the exchange's own
//! ([`crate::sign`]); the server clock is the exchange's own.

use super::{PaperExchange, DEMO_API_KEY, DEMO_API_SECRET};
use crate::sign::{self, Secret};
use serde_json::Value;
use std::sync::Arc;

/// A signed client for one paper exchange, with its demo key pair.
pub struct Trader {
    agent: ureq::Agent,
    base: String,
    secret: Secret,
    shared: Arc<super::Shared>,
}

/// The status and parsed body of one answer (`Value::String` if the body is not JSON).
#[derive(Debug, Clone)]
pub struct TraderReply {
    pub status: u16,
    pub body: Value,
}

impl TraderReply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn code(&self) -> i64 {
        self.body["code"].as_i64().unwrap_or(0)
    }
}

impl Trader {
    pub fn new(ex: &PaperExchange) -> Trader {
        let config = ureq::Agent::config_builder().http_status_as_error(false).build();
        let trust = ex.trust();
        let config = if trust.is_empty() {
            config
        } else {
            // A TLS exchange's own certificate is the one root: if it were unusable, requests
            // fail and say why.
            use ureq::tls::{Certificate, RootCerts, TlsConfig};
            let roots: Vec<Certificate<'static>> = trust.iter().map(|c| Certificate::from_der(c).to_owned()).collect();
            let tls = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&roots)).build();
            ureq::Agent::config_builder().http_status_as_error(false).tls_config(tls).build()
        };
        let agent: ureq::Agent = config.into();
        Trader { agent, base: ex.rest_url(), secret: Secret::new(DEMO_API_SECRET), shared: ex.shared().clone() }
    }

    /// One signed request; `Err` only when no HTTP answer came back (a reset, say).
    pub fn signed(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Result<TraderReply, String> {
        let mut query = sign::encode_params(params);
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("timestamp={}", self.shared.clock.now_ms()));
        let signature = sign::sign(&self.secret, &query, "");
        let url = format!("{}{path}?{query}&signature={signature}", self.base);
        let result = match method {
            "GET" => self.agent.get(&url).header("X-MBX-APIKEY", DEMO_API_KEY).call(),
            "DELETE" => self.agent.delete(&url).header("X-MBX-APIKEY", DEMO_API_KEY).call(),
            "POST" => self.agent.post(&url).header("X-MBX-APIKEY", DEMO_API_KEY).send_empty(),
            "PUT" => self.agent.put(&url).header("X-MBX-APIKEY", DEMO_API_KEY).send_empty(),
            other => return Err(format!("method {other} is not one of GET, DELETE, POST, PUT")),
        };
        let mut response = result.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(TraderReply { status, body })
    }

    /// `POST /api/v3/order` with exactly these parameters.
    pub fn order(&self, params: &[(&str, &str)]) -> Result<TraderReply, String> {
        self.signed("POST", "/api/v3/order", params)
    }

    /// A resting `LIMIT_MAKER` with a RESULT answer.
    pub fn maker(&self, symbol: &str, side: &str, qty: &str, price: &str, client_id: &str) -> Result<Value, String> {
        let reply = self.order(&[
            ("symbol", symbol),
            ("side", side),
            ("type", "LIMIT_MAKER"),
            ("quantity", qty),
            ("price", price),
            ("newClientOrderId", client_id),
            ("newOrderRespType", "RESULT"),
        ])?;
        if reply.ok() {
            Ok(reply.body)
        } else {
            Err(format!("http {}: {}", reply.status, reply.body))
        }
    }

    /// `DELETE /api/v3/order` with exactly these parameters.
    pub fn cancel(&self, params: &[(&str, &str)]) -> Result<TraderReply, String> {
        self.signed("DELETE", "/api/v3/order", params)
    }

    /// `DELETE /api/v3/openOrders?symbol=...`.
    pub fn cancel_all(&self, symbol: &str) -> Result<TraderReply, String> {
        self.signed("DELETE", "/api/v3/openOrders", &[("symbol", symbol)])
    }
}
