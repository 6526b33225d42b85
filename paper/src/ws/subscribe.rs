//! Live-subscription requests a client may send on its stream (`SUBSCRIBE`, `UNSUBSCRIBE`,
//! `LIST_SUBSCRIPTIONS`) and their replies.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum Method {
    Subscribe,
    Unsubscribe,
    ListSubscriptions,
    SetProperty,
    GetProperty,
}

#[derive(Deserialize)]
pub(super) struct SubscribeRequest {
    method: Method,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    id: Value,
}

#[derive(Serialize)]
pub(super) struct SubscribeResult<'a> {
    result: Value,
    id: &'a Value,
}

#[derive(Serialize)]
pub(super) struct SubscribeError<'a> {
    code: i64,
    msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
}

pub(super) fn error_reply(code: i64, msg: String, id: Option<&Value>) -> String {
    serde_json::to_string(&SubscribeError { code, msg, id }).unwrap_or_default()
}

/// Answers a text message from the client as Binance's stream host does ("Live Subscribing/
/// Unsubscribing to streams" and its error messages in the docs' "WebSocket Streams").
/// Market streams subscribed here are sent from then on (the caller tells the hub); the
/// event format is fixed at connect time, so SET_PROPERTY changes nothing.
pub(super) fn subscribe_reply(text: &str, streams: &mut Vec<String>, format: StreamFormat) -> String {
    let request: SubscribeRequest = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(e) if e.is_syntax() || e.is_eof() => return error_reply(3, format!("Invalid JSON: {e}"), None),
        Err(e) => return error_reply(2, format!("Invalid request: {e}"), None),
    };
    let id = &request.id;
    if !(id.is_null() || id.is_u64()) {
        return error_reply(2, "Invalid request: request ID must be an unsigned integer".into(), None);
    }
    let params = request.params.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let names = || params.iter().filter_map(Value::as_str).map(str::to_string);
    let result = match request.method {
        Method::Subscribe => {
            for name in names() {
                if !streams.contains(&name) {
                    streams.push(name);
                }
            }
            Value::Null
        }
        Method::Unsubscribe => {
            let gone: Vec<String> = names().collect();
            streams.retain(|s| !gone.contains(s));
            Value::Null
        }
        Method::ListSubscriptions => Value::from(streams.clone()),
        Method::SetProperty | Method::GetProperty => {
            if params.first().and_then(Value::as_str) != Some("combined") {
                return error_reply(0, "Unknown property".into(), Some(id));
            }
            if request.method == Method::GetProperty {
                Value::Bool(format == StreamFormat::Combined)
            } else if params.get(1).is_some_and(Value::is_boolean) {
                Value::Null
            } else {
                return error_reply(1, "Invalid value type: expected Boolean".into(), None);
            }
        }
    };
    serde_json::to_string(&SubscribeResult { result, id }).unwrap_or_default()
}
