//! The upgrade request: which listen key (or none: public market streams) and stream format a
//! path asks for, and the refusals (`-1125`, unknown path, not a WebSocket) a client reads
//! before any frame.

use super::*;

/// Where a handshake request leads.
pub(super) struct Subscription {
    /// The listen key; `None` for a connection to public market streams only.
    pub(super) key: Option<String>,
    pub(super) tag: String,
    pub(super) format: StreamFormat,
    /// The stream names of the request, for LIST_SUBSCRIPTIONS.
    pub(super) streams: Vec<String>,
}

/// Why a handshake is refused: Binance's `{code, msg}`, sent with HTTP 400.
#[derive(Serialize)]
pub(super) struct Refusal {
    code: i64,
    msg: &'static str,
}

pub(super) const NO_SUCH_KEY: Refusal = Refusal { code: -1125, msg: "This listenKey does not exist." };
pub(super) const UNKNOWN_PATH: Refusal =
    Refusal { code: -1, msg: "Unknown path; expected /ws/<stream> or /stream?streams=<stream>/<stream>." };

pub(super) fn reject(rejection: &Refusal) -> ErrorResponse {
    let body = serde_json::to_string(rejection).unwrap_or_default();
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = tungstenite::http::StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        tungstenite::http::header::CONTENT_TYPE,
        tungstenite::http::HeaderValue::from_static("application/json"),
    );
    response
}

pub(super) fn route(request: &Request, keys: &dyn KeyCheck) -> Result<Subscription, Refusal> {
    let uri = request.uri();
    let market = |streams: Vec<String>, format| Subscription { key: None, tag: "market".into(), format, streams };
    // A raw connection to no stream yet: the client subscribes by message.
    if uri.path() == "/ws" {
        return Ok(market(Vec::new(), StreamFormat::Raw));
    }
    if let Some(name) = uri.path().strip_prefix("/ws/") {
        if is_market_stream(name) {
            return Ok(market(vec![name.to_string()], StreamFormat::Raw));
        }
        let tag = keys.live_key(name).ok_or(NO_SUCH_KEY)?;
        return Ok(Subscription {
            key: Some(name.to_string()),
            tag,
            format: StreamFormat::Raw,
            streams: vec![name.to_string()],
        });
    }
    if uri.path() == "/stream" {
        let streams: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("streams="))
            .unwrap_or("")
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        // A combined URL may mix market streams in; the first live key is the user stream.
        for name in streams.iter().filter(|n| !is_market_stream(n)) {
            if let Some(tag) = keys.live_key(name) {
                return Ok(Subscription { key: Some(name.clone()), tag, format: StreamFormat::Combined, streams });
            }
        }
        // Market streams alone need no key; a name that is no stream and no live key is refused.
        if !streams.is_empty() && streams.iter().all(|n| is_market_stream(n)) {
            return Ok(market(streams, StreamFormat::Combined));
        }
        return Err(NO_SUCH_KEY);
    }
    Err(UNKNOWN_PATH)
}

/// A plain-HTTP answer for requests that never became a WebSocket handshake.
pub(super) fn not_a_websocket() -> String {
    let body = r#"{"code":-1,"msg":"Expected a WebSocket upgrade."}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}
