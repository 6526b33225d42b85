//! Serde types spelled like Binance's JSON; no logic beyond turning them into domain values.
//!
//! One-letter stream keys stay here (`#[serde(rename = "E")] event_time`). Unknown fields are
//! ignored everywhere: Binance adds fields regularly ("User Data Streams" in the Binance.US API
//! docs, <https://docs.binance.us/>).

use crate::decimal::Decimal;
use crate::model::{FillRecord, Side};
use serde::Deserialize;

/// `executionReport` ("Order Update"): the fields the daemon uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ExecutionReport {
    #[serde(rename = "E")]
    pub event_time: i64,
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "c")]
    pub client_order_id: String,
    #[serde(rename = "S")]
    pub side: String,
    #[serde(rename = "o")]
    pub order_type: String,
    #[serde(rename = "q")]
    pub quantity: Decimal,
    #[serde(rename = "p")]
    pub price: Decimal,
    #[serde(rename = "C", default)]
    pub orig_client_order_id: Option<String>,
    #[serde(rename = "x")]
    pub execution_type: String,
    #[serde(rename = "X")]
    pub status: String,
    #[serde(rename = "r", default)]
    pub reject_reason: String,
    #[serde(rename = "i")]
    pub order_id: u64,
    #[serde(rename = "l")]
    pub last_qty: Decimal,
    #[serde(rename = "z")]
    pub cumulative_qty: Decimal,
    #[serde(rename = "L")]
    pub last_price: Decimal,
    #[serde(rename = "n")]
    pub commission: Decimal,
    #[serde(rename = "N")]
    pub commission_asset: Option<String>,
    #[serde(rename = "T")]
    pub transaction_time: i64,
    #[serde(rename = "t")]
    pub trade_id: i64,
    #[serde(rename = "m")]
    pub maker: bool,
    #[serde(rename = "Y", default)]
    pub last_quote_qty: Option<Decimal>,
}

impl ExecutionReport {
    /// The fill this report carries, if it is a `TRADE`; `Err` for a `TRADE` that is not a
    /// fill the log can take ([`Refusal`]). Whether its symbol is tracked is the caller's to say.
    pub fn fill(&self) -> Result<Option<FillRecord>, Refusal> {
        if self.execution_type != "TRADE" {
            return Ok(None);
        }
        let trade_id = u64::try_from(self.trade_id).map_err(|_| Refusal::TradeId(i128::from(self.trade_id)))?;
        check_fill(trade_id, self.order_id, self.last_price, self.last_qty)?;
        let side = Side::parse(&self.side).ok_or_else(|| Refusal::Side(clip(&self.side)))?;
        let quote_qty = match self.last_quote_qty {
            Some(y) => y,
            None => self.last_price.checked_mul(self.last_qty).ok_or(Refusal::QuoteQty)?,
        };
        Ok(Some(FillRecord {
            symbol: self.symbol.clone(),
            trade_id,
            order_id: self.order_id,
            client_order_id: self.client_order_id.clone(),
            side,
            price: self.last_price,
            qty: self.last_qty,
            quote_qty,
            commission: self.commission,
            commission_asset: self.commission_asset.clone().unwrap_or_default(),
            maker: self.maker,
            time: self.transaction_time,
            seq: 0,
        }))
    }

    /// The order's own client id: on a cancel report `c` is the cancel's id and `C` the order's.
    pub fn order_client_id(&self) -> &str {
        match &self.orig_client_order_id {
            Some(c) if !c.is_empty() => c,
            _ => &self.client_order_id,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Balance {
    #[serde(rename = "a")]
    pub asset: String,
    #[serde(rename = "f")]
    pub free: Decimal,
    #[serde(rename = "l")]
    pub locked: Decimal,
}

/// `outboundAccountPosition` ("Account Update"): absolute balances of the assets that may have changed.
#[derive(Debug, Clone, Deserialize)]
pub struct AccountPosition {
    #[serde(rename = "E")]
    pub event_time: i64,
    #[serde(rename = "B", default)]
    pub balances: Vec<Balance>,
}

/// `balanceUpdate` ("Balance Update"): a signed delta from a deposit or withdrawal.
#[derive(Debug, Clone, Deserialize)]
pub struct BalanceUpdate {
    #[serde(rename = "E")]
    pub event_time: i64,
    #[serde(rename = "a")]
    pub asset: String,
    #[serde(rename = "d")]
    pub delta: Decimal,
    #[serde(rename = "T", default)]
    pub clear_time: i64,
}

/// `listStatus` ("Order Update", order lists): kept for completeness; the daemon places no order lists.
#[derive(Debug, Clone, Deserialize)]
pub struct ListStatus {
    #[serde(rename = "E")]
    pub event_time: i64,
    #[serde(rename = "s")]
    pub symbol: String,
    #[serde(rename = "g")]
    pub order_list_id: i64,
    #[serde(rename = "L", default)]
    pub list_order_status: String,
}

/// One user-data stream message, after unwrapping a combined-stream envelope.
#[derive(Debug, Clone)]
pub enum UserEvent {
    Execution(Box<ExecutionReport>),
    Position(AccountPosition),
    BalanceUpdate(BalanceUpdate),
    ListStatus(ListStatus),
    /// The listen key lapsed: nothing more will come on it.
    ListenKeyExpired,
    /// A planned server shutdown: reconnect now.
    ServerShutdown,
    /// An event type we do not know (ignored).
    Unknown(String),
}

/// Why a text frame could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    NotJson,
    NoEventType,
    /// A known event type whose fields did not parse.
    BadEvent(String),
}

/// Parses one text frame: a bare event (`/ws/<key>`) or a combined `{"stream","data"}` one.
pub fn parse_event(text: &str) -> Result<UserEvent, FrameError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| FrameError::NotJson)?;
    let event = match value.get("data") {
        Some(data) if value.get("stream").is_some() => data,
        _ => &value,
    };
    let kind = event.get("e").and_then(|e| e.as_str()).ok_or(FrameError::NoEventType)?;
    let bad = |e: serde_json::Error| FrameError::BadEvent(format!("{kind}: {e}"));
    Ok(match kind {
        "executionReport" => UserEvent::Execution(Box::new(ExecutionReport::deserialize(event).map_err(bad)?)),
        "outboundAccountPosition" => UserEvent::Position(AccountPosition::deserialize(event).map_err(bad)?),
        "balanceUpdate" => UserEvent::BalanceUpdate(BalanceUpdate::deserialize(event).map_err(bad)?),
        "listStatus" => UserEvent::ListStatus(ListStatus::deserialize(event).map_err(bad)?),
        "listenKeyExpired" => UserEvent::ListenKeyExpired,
        "serverShutdown" => UserEvent::ServerShutdown,
        other => UserEvent::Unknown(other.chars().take(64).collect()),
    })
}

/// A row of `GET /api/v3/myTrades` ("Account Trade List"). What identifies and prices the fill is required;
/// `quoteQty` and `commissionAsset` are tolerated missing or null, since a row we cannot read
/// would stop reconciliation of its symbol at that row.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MyTrade {
    pub symbol: String,
    pub id: u64,
    pub order_id: u64,
    pub price: Decimal,
    pub qty: Decimal,
    #[serde(default)]
    pub quote_qty: Option<Decimal>,
    pub commission: Decimal,
    #[serde(default)]
    pub commission_asset: Option<String>,
    pub time: i64,
    pub is_buyer: bool,
    pub is_maker: bool,
}

impl MyTrade {
    /// Whether this row, from a `myTrades` request for `asked`, is a fill the log can take:
    /// trade ids are per symbol, so a row of another symbol would be deduplicated under one
    /// symbol and logged under the other, and its id must not move `asked`'s cursor.
    pub fn check(&self, asked: &str) -> Result<(), Refusal> {
        if self.symbol != asked {
            return Err(Refusal::WrongSymbol { asked: clip(asked), got: clip(&self.symbol) });
        }
        check_fill(self.id, self.order_id, self.price, self.qty)?;
        if self.quote_qty.is_none() && self.price.checked_mul(self.qty).is_none() {
            return Err(Refusal::QuoteQty);
        }
        Ok(())
    }

    pub fn into_fill(self, client_order_id: String) -> FillRecord {
        let quote_qty = self.quote_qty.or_else(|| self.price.checked_mul(self.qty)).unwrap_or(Decimal::ZERO);
        FillRecord {
            symbol: self.symbol,
            trade_id: self.id,
            order_id: self.order_id,
            client_order_id,
            side: if self.is_buyer { Side::Buy } else { Side::Sell },
            price: self.price,
            qty: self.qty,
            quote_qty,
            commission: self.commission,
            commission_asset: self.commission_asset.unwrap_or_default(),
            maker: self.is_maker,
            time: self.time,
            seq: 0,
        }
    }
}

/// The largest trade or order id taken: Binance's ids are signed 64-bit integers ("Account
/// Trade List" and "Order Update" in <https://docs.binance.us/>), so a larger one is not the
/// exchange's, and a cursor (the next id to read) never overflows.
pub const MAX_ID: u64 = i64::MAX as u64;

/// Why an exchange row or stream event was not taken as a fill: logged once, counted in
/// `syncd_fills_refused_total{source,reason}`, never written to the fill log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A `myTrades` row of another symbol than the one asked for.
    WrongSymbol {
        asked: String,
        got: String,
    },
    /// A symbol not in `SYNCD_SYMBOLS`.
    Untracked(String),
    TradeId(i128),
    OrderId(u64),
    /// Zero or negative.
    Price(Decimal),
    /// Zero or negative.
    Qty(Decimal),
    Side(String),
    /// No quote quantity given, and price × quantity does not fit.
    QuoteQty,
    /// Not the documented shape (a field missing, a number where a decimal string belongs).
    Unreadable(String),
}

impl Refusal {
    /// Every [`reason`](Self::reason), for the metric's series to exist from the start.
    pub const REASONS: [&'static str; 9] =
        ["wrong_symbol", "untracked_symbol", "trade_id", "order_id", "price", "qty", "side", "quote_qty", "unreadable"];

    /// The metric's `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::WrongSymbol { .. } => "wrong_symbol",
            Refusal::Untracked(_) => "untracked_symbol",
            Refusal::TradeId(_) => "trade_id",
            Refusal::OrderId(_) => "order_id",
            Refusal::Price(_) => "price",
            Refusal::Qty(_) => "qty",
            Refusal::Side(_) => "side",
            Refusal::QuoteQty => "quote_qty",
            Refusal::Unreadable(_) => "unreadable",
        }
    }

    /// Refused for what the row says, not for whom: its symbol and trade id are right, so its
    /// id may count for the cursor (see [`crate::reconcile::cursor::after_page`]).
    pub fn of_content(&self) -> bool {
        matches!(self, Refusal::Price(_) | Refusal::Qty(_) | Refusal::Side(_) | Refusal::QuoteQty)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::WrongSymbol { asked, got } => write!(f, "symbol {got:?} in an answer for {asked}"),
            Refusal::Untracked(s) => write!(f, "symbol {s:?} is not in SYNCD_SYMBOLS"),
            Refusal::TradeId(id) => write!(f, "trade id {id} out of range 0..={MAX_ID}"),
            Refusal::OrderId(id) => write!(f, "order id {id} out of range 0..={MAX_ID}"),
            Refusal::Price(p) => write!(f, "price {p} is not positive"),
            Refusal::Qty(q) => write!(f, "quantity {q} is not positive"),
            Refusal::Side(s) => write!(f, "unknown side {s:?}"),
            Refusal::QuoteQty => f.write_str("no quote quantity, and price x quantity overflows"),
            Refusal::Unreadable(e) => write!(f, "unreadable ({e})"),
        }
    }
}

/// At most 32 characters of an exchange's string, for a log line.
fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

/// What every fill must be, wherever it came from. Decimals are exact by construction
/// ([`Decimal`] takes strings and integers only, never a float).
fn check_fill(trade_id: u64, order_id: u64, price: Decimal, qty: Decimal) -> Result<(), Refusal> {
    if trade_id > MAX_ID {
        return Err(Refusal::TradeId(i128::from(trade_id)));
    }
    if order_id > MAX_ID {
        return Err(Refusal::OrderId(order_id));
    }
    if price.is_zero() || price.is_negative() {
        return Err(Refusal::Price(price));
    }
    if qty.is_zero() || qty.is_negative() {
        return Err(Refusal::Qty(qty));
    }
    Ok(())
}

/// The fields of `GET /api/v3/order` the daemon reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueriedOrder {
    pub order_id: u64,
    pub client_order_id: String,
    pub status: String,
}

/// An order as `POST /order` (RESULT), `DELETE /order`, `GET /order` and `GET /openOrders`
/// return it ("New Order", "Query Order", "Cancel Order"): the fields the executor keeps. On a cancel reply
/// `clientOrderId` is the cancel's own id and `origClientOrderId` the order's.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderReply {
    pub symbol: String,
    pub order_id: u64,
    pub client_order_id: String,
    #[serde(default)]
    pub orig_client_order_id: Option<String>,
    #[serde(default)]
    pub price: Option<Decimal>,
    #[serde(default)]
    pub orig_qty: Option<Decimal>,
    #[serde(default)]
    pub executed_qty: Option<Decimal>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub side: Option<String>,
    #[serde(rename = "type", default)]
    pub order_type: Option<String>,
    #[serde(default)]
    pub update_time: Option<i64>,
    #[serde(default)]
    pub transact_time: Option<i64>,
}

impl OrderReply {
    /// Server time of the order's last change, if the reply says (`updateTime`, or
    /// `transactTime` on a placement or cancel).
    pub fn changed_ms(&self) -> Option<i64> {
        self.update_time.or(self.transact_time)
    }

    /// The order's own client id, whichever reply this is.
    pub fn order_client_id(&self) -> &str {
        match &self.orig_client_order_id {
            Some(c) if !c.is_empty() => c,
            _ => &self.client_order_id,
        }
    }
}

/// `POST /api/v3/order/cancelReplace` when both halves succeeded.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelReplaceReply {
    pub cancel_response: OrderReply,
    pub new_order_response: OrderReply,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenKeyReply {
    pub listen_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    // The docs' "Order Update" sample and the LIMIT_MAKER partial fill built from its lifecycle.
    const NEW: &str = r#"{"e":"executionReport","E":1788540400101,"s":"BTCUSD","c":"syncd-7f3a-000041","S":"BUY","o":"LIMIT_MAKER","f":"GTC","q":"0.01000000","p":"60000.00000000","P":"0.00000000","F":"0.00000000","g":-1,"C":"","x":"NEW","X":"NEW","r":"NONE","i":123456789,"l":"0.00000000","z":"0.00000000","L":"0.00000000","n":"0","N":null,"T":1788540400100,"t":-1,"I":987654321,"w":true,"m":false,"M":false,"O":1788540400100,"Z":"0.00000000","Y":"0.00000000","Q":"0.00000000","W":1788540400100,"V":"EXPIRE_MAKER"}"#;

    fn trade() -> String {
        NEW.replace(r#""x":"NEW","X":"NEW""#, r#""x":"TRADE","X":"PARTIALLY_FILLED""#)
            .replace(
                r#""l":"0.00000000","z":"0.00000000","L":"0.00000000","n":"0","N":null"#,
                r#""l":"0.00400000","z":"0.00400000","L":"60000.00000000","n":"0.00000400","N":"BTC""#,
            )
            .replace(r#""t":-1"#, r#""t":555001"#)
            .replace(r#""m":false"#, r#""m":true"#)
            .replace(r#""Z":"0.00000000","Y":"0.00000000""#, r#""Z":"240.00000000","Y":"240.00000000""#)
    }

    #[test]
    fn new_report_is_not_a_fill() {
        match parse_event(NEW).unwrap() {
            UserEvent::Execution(r) => assert!(matches!(r.fill(), Ok(None))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn trade_report_becomes_a_fill_with_exact_strings() {
        let UserEvent::Execution(r) = parse_event(&trade()).unwrap() else { panic!() };
        let f = r.fill().unwrap().unwrap();
        assert_eq!((f.symbol.as_str(), f.trade_id, f.order_id), ("BTCUSD", 555001, 123456789));
        assert_eq!(f.client_order_id, "syncd-7f3a-000041");
        assert_eq!(f.side, Side::Buy);
        assert_eq!(
            (f.price.to_string(), f.qty.to_string(), f.quote_qty.to_string(), f.commission.to_string()),
            ("60000.00000000".into(), "0.00400000".into(), "240.00000000".into(), "0.00000400".into())
        );
        assert!(f.maker);
        assert_eq!(f.time, 1788540400100);
    }

    #[test]
    fn combined_envelope_is_unwrapped() {
        let wrapped = format!(r#"{{"stream":"somekey","data":{}}}"#, trade());
        assert!(matches!(parse_event(&wrapped).unwrap(), UserEvent::Execution(_)));
    }

    #[test]
    fn documented_account_events_parse() {
        let pos = r#"{"e":"outboundAccountPosition","E":1564034571105,"u":1564034571073,"B":[{"a":"ETH","f":"10000.000000","l":"0.000000"}]}"#;
        let UserEvent::Position(p) = parse_event(pos).unwrap() else { panic!() };
        assert_eq!(p.balances[0].free.to_string(), "10000.000000");
        let bu = r#"{"e": "balanceUpdate", "E": 1573200697110, "a": "BTC", "d": "100.00000000", "T": 1573200697068}"#;
        assert!(matches!(parse_event(bu).unwrap(), UserEvent::BalanceUpdate(_)));
        let ls = r#"{"e":"listStatus","E":1564035303637,"s":"ETHBTC","g":2,"c":"OCO","l":"EXEC_STARTED","L":"EXECUTING","r":"NONE","C":"F4QN4G8DlFATFlIUQ0cjdD","T":1564035303625,"O":[{"s":"ETHBTC","i":17,"c":"AJYsMjErWJesZvqlJCTUgL"}]}"#;
        assert!(matches!(parse_event(ls).unwrap(), UserEvent::ListStatus(_)));
        let exp = r#"{"e":"listenKeyExpired","E":1699596037418,"listenKey":"OfYGbUzi3PraNagEkdKuFwUHn48brFsItTdsuiIXrucEvD0rhRXZ7I6URWfE8YE8"}"#;
        assert!(matches!(parse_event(exp).unwrap(), UserEvent::ListenKeyExpired));
        assert!(matches!(
            parse_event(r#"{"e":"serverShutdown","E":1770123456789}"#).unwrap(),
            UserEvent::ServerShutdown
        ));
    }

    #[test]
    fn garbage_is_classified_not_fatal() {
        assert_eq!(parse_event("{\"e\":\"executionReport\",\"E\":").unwrap_err(), FrameError::NotJson);
        assert_eq!(parse_event("[1,2]").unwrap_err(), FrameError::NoEventType);
        assert!(matches!(parse_event(r#"{"e":"somethingNew","E":1}"#).unwrap(), UserEvent::Unknown(_)));
        assert!(matches!(parse_event(r#"{"e":"executionReport","E":1}"#).unwrap_err(), FrameError::BadEvent(_)));
    }

    #[test]
    fn my_trades_row_becomes_a_fill() {
        let row = r#"{"symbol":"BNBBTC","id":28457,"orderId":100234,"orderListId":-1,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012","commission":"10.10000000","commissionAsset":"BNB","time":1499865549590,"isBuyer":true,"isMaker":false,"isBestMatch":true}"#;
        let t: MyTrade = serde_json::from_str(row).unwrap();
        let f = t.into_fill("abc".into());
        assert_eq!(
            (f.trade_id, f.side, f.maker, f.quote_qty.to_string()),
            (28457, Side::Buy, false, "48.000012".into())
        );
        // A sparser server: no quoteQty, a null commissionAsset. Still a fill.
        let sparse = row.replace(r#""quoteQty":"48.000012","#, "").replace(r#""BNB""#, "null");
        let f = serde_json::from_str::<MyTrade>(&sparse).unwrap().into_fill(String::new());
        assert_eq!((f.quote_qty.to_string().as_str(), f.commission_asset.as_str()), ("48.000012", ""));
    }

    /// Decoders against inputs nobody chose (issue 12): never a panic; a decode or an error; an
    /// unknown `e` is skipped.
    mod props {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        const POSITION: &str = r#"{"e":"outboundAccountPosition","E":1564034571105,"u":1564034571073,"B":[{"a":"ETH","f":"10000.000000","l":"0.000000"}]}"#;
        const BALANCE: &str =
            r#"{"e":"balanceUpdate","E":1573200697110,"a":"BTC","d":"100.00000000","T":1573200697068}"#;
        const LIST: &str = r#"{"e":"listStatus","E":1564035303637,"s":"ETHBTC","g":2,"c":"OCO","l":"EXEC_STARTED","L":"EXECUTING","r":"NONE","C":"F4QN4G8DlFATFlIUQ0cjdD","T":1564035303625,"O":[{"s":"ETHBTC","i":17,"c":"AJYsMjErWJesZvqlJCTUgL"}]}"#;
        const EXPIRED: &str = r#"{"e":"listenKeyExpired","E":1699596037418,"listenKey":"OfYGbUzi3PraNagEkdKuFwUHn48brFsItTdsuiIXrucEvD0rhRXZ7I6URWfE8YE8"}"#;
        const MY_TRADE: &str = r#"{"symbol":"BNBBTC","id":28457,"orderId":100234,"orderListId":-1,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012","commission":"10.10000000","commissionAsset":"BNB","time":1499865549590,"isBuyer":true,"isMaker":false,"isBestMatch":true}"#;

        // REST replies as the Binance.US REST API documents them ("New order", "Query order",
        // "Cancel order", "Cancel an existing order and send a new order").
        const ORDER_RESULT: &str = r#"{"symbol":"BTCUSDT","orderId":28,"orderListId":-1,"clientOrderId":"6gCrw2kRUAF9CvJDGP16IP","transactTime":1507725176595,"price":"0.00000000","origQty":"10.00000000","executedQty":"10.00000000","cummulativeQuoteQty":"10.00000000","status":"FILLED","timeInForce":"GTC","type":"MARKET","side":"SELL","workingTime":1507725176595,"selfTradePreventionMode":"NONE"}"#;
        const ORDER_QUERY: &str = r#"{"symbol":"LTCBTC","orderId":1,"orderListId":-1,"clientOrderId":"myOrder1","price":"0.1","origQty":"1.0","executedQty":"0.0","cummulativeQuoteQty":"0.0","status":"NEW","timeInForce":"GTC","type":"LIMIT","side":"BUY","stopPrice":"0.0","icebergQty":"0.0","time":1499827319559,"updateTime":1499827319559,"isWorking":true,"origQuoteOrderQty":"0.000000","workingTime":1507725176595,"selfTradePreventionMode":"NONE"}"#;
        const ORDER_CANCEL: &str = r#"{"symbol":"LTCBTC","origClientOrderId":"myOrder1","orderId":4,"orderListId":-1,"clientOrderId":"cancelMyOrder1","price":"2.00000000","origQty":"1.00000000","executedQty":"0.00000000","cummulativeQuoteQty":"0.00000000","status":"CANCELED","timeInForce":"GTC","type":"LIMIT","side":"BUY","selfTradePreventionMode":"NONE"}"#;
        const CANCEL_REPLACE: &str = r#"{"cancelResult":"SUCCESS","newOrderResult":"SUCCESS","cancelResponse":{"symbol":"BTCUSDT","origClientOrderId":"DnLo3vTAQcjha43lAZhZ0y","orderId":9,"orderListId":-1,"clientOrderId":"osxN3JXAtJvKvCqGeMWMVR","price":"0.01000000","origQty":"0.000100","executedQty":"0.00000000","cummulativeQuoteQty":"0.00000000","status":"CANCELED","timeInForce":"GTC","type":"LIMIT_MAKER","side":"SELL","selfTradePreventionMode":"NONE"},"newOrderResponse":{"symbol":"BTCUSDT","orderId":10,"orderListId":-1,"clientOrderId":"wOceeeOzNORyLiQfw7jd8S","transactTime":1652928801803,"price":"0.02000000","origQty":"0.040000","executedQty":"0.00000000","cummulativeQuoteQty":"0.00000000","status":"NEW","timeInForce":"GTC","type":"LIMIT_MAKER","side":"BUY","workingTime":1669277163808,"fills":[],"selfTradePreventionMode":"NONE"}}"#;

        #[test]
        fn the_documented_rest_replies_decode() {
            let placed: OrderReply = serde_json::from_str(ORDER_RESULT).unwrap();
            assert_eq!(
                (placed.order_id, placed.changed_ms(), placed.status.as_deref()),
                (28, Some(1507725176595), Some("FILLED"))
            );
            let queried: OrderReply = serde_json::from_str(ORDER_QUERY).unwrap();
            assert_eq!((queried.order_client_id(), queried.changed_ms()), ("myOrder1", Some(1499827319559)));
            let canceled: OrderReply = serde_json::from_str(ORDER_CANCEL).unwrap();
            assert_eq!(canceled.order_client_id(), "myOrder1", "a cancel's own id is not the order's");
            let replaced: CancelReplaceReply = serde_json::from_str(CANCEL_REPLACE).unwrap();
            assert_eq!((replaced.cancel_response.order_id, replaced.new_order_response.order_id), (9, 10));
        }

        fn samples() -> Vec<Value> {
            let trade = trade();
            [
                NEW,
                trade.as_str(),
                POSITION,
                BALANCE,
                LIST,
                EXPIRED,
                r#"{"e":"serverShutdown","E":1770123456789}"#,
                MY_TRADE,
                ORDER_RESULT,
                ORDER_QUERY,
                ORDER_CANCEL,
                CANCEL_REPLACE,
            ]
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect()
        }

        /// Replacement values: other types, huge and odd numbers, nesting.
        fn odd_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                Just(serde_json::json!(1e308)),
                Just(serde_json::json!(-0.5)),
                "[0-9]{0,60}(\\.[0-9]{0,30})?".prop_map(Value::String),
                "\\PC{0,12}".prop_map(Value::String),
                Just(serde_json::json!([])),
                Just(serde_json::json!({"e": "executionReport"})),
            ]
        }

        #[derive(Debug, Clone)]
        enum Mutation {
            Drop(usize),
            Retype(usize, Value),
            Add(String, Value),
            Reverse,
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            prop_oneof![
                any::<usize>().prop_map(Mutation::Drop),
                (any::<usize>(), odd_value()).prop_map(|(i, v)| Mutation::Retype(i, v)),
                ("[a-zA-Z]{1,3}", odd_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
                Just(Mutation::Reverse),
            ]
        }

        fn mutate(mut obj: Map<String, Value>, mutations: &[Mutation]) -> Map<String, Value> {
            for m in mutations {
                let keys: Vec<String> = obj.keys().cloned().collect();
                match m {
                    Mutation::Drop(i) if !keys.is_empty() => {
                        obj.remove(&keys[i % keys.len()]);
                    }
                    Mutation::Retype(i, v) if !keys.is_empty() => {
                        obj.insert(keys[i % keys.len()].clone(), v.clone());
                    }
                    Mutation::Add(k, v) => {
                        obj.insert(k.clone(), v.clone());
                    }
                    // Field order: serde_json's map is sorted, so reorder in the text instead.
                    Mutation::Reverse => {}
                    _ => {}
                }
            }
            obj
        }

        /// The object as text, fields in reverse order when asked (order must not matter).
        fn text(obj: &Map<String, Value>, reverse: bool) -> String {
            let mut fields: Vec<String> =
                obj.iter().map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v)).collect();
            if reverse {
                fields.reverse();
            }
            format!("{{{}}}", fields.join(","))
        }

        fn decode_all(text: &str) {
            let _ = parse_event(text);
            let _ = serde_json::from_str::<MyTrade>(text).map(|t| t.into_fill(String::new()));
            let _ = serde_json::from_str::<QueriedOrder>(text);
            let _ = serde_json::from_str::<OrderReply>(text);
            let _ = serde_json::from_str::<CancelReplaceReply>(text);
            let _ = serde_json::from_str::<ListenKeyReply>(text);
            if let Ok(UserEvent::Execution(r)) = parse_event(text) {
                let _ = (r.fill(), r.order_client_id());
            }
        }

        proptest! {
            #![proptest_config(crate::proptest_config(512))]

            /// Arbitrary bytes (as the text a frame would carry) never panic.
            #[test]
            fn arbitrary_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
                decode_all(&String::from_utf8_lossy(&bytes));
            }

            /// Mutated documented samples never panic: each decodes or returns an error, and the
            /// combined-stream envelope changes nothing.
            #[test]
            fn mutated_samples_decode_or_fail_cleanly(
                which in 0usize..8,
                mutations in prop::collection::vec(mutation(), 0..6),
                cut in prop::option::of(any::<usize>()),
            ) {
                let Value::Object(obj) = samples().swap_remove(which) else { unreachable!() };
                let reverse = mutations.iter().any(|m| matches!(m, Mutation::Reverse));
                let obj = mutate(obj, &mutations);
                let mut t = text(&obj, reverse);
                if let Some(c) = cut {
                    let c = c % (t.len() + 1);
                    t.truncate((0..=c).rev().find(|&i| t.is_char_boundary(i)).unwrap_or(0));
                }
                decode_all(&t);
                let wrapped = format!(r#"{{"stream":"k","data":{t}}}"#);
                decode_all(&wrapped);
                if cut.is_none() {
                    prop_assert_eq!(format!("{:?}", parse_event(&t)), format!("{:?}", parse_event(&wrapped)));
                    // Field order never changes the answer.
                    prop_assert_eq!(format!("{:?}", parse_event(&t)), format!("{:?}", parse_event(&text(&obj, !reverse))));
                }
            }

            /// An event type nobody documented is skipped as `Unknown`, never an error, whatever
            /// its other fields.
            #[test]
            fn an_unknown_event_type_is_skipped(
                kind in "[a-zA-Z]{1,80}",
                mutations in prop::collection::vec(mutation(), 0..6),
            ) {
                let known = ["executionReport", "outboundAccountPosition", "balanceUpdate", "listStatus", "listenKeyExpired", "serverShutdown"];
                prop_assume!(!known.contains(&kind.as_str()));
                let Value::Object(obj) = samples().swap_remove(1) else { unreachable!() };
                let mut obj = mutate(obj, &mutations);
                obj.insert("e".into(), Value::String(kind.clone()));
                let parsed = parse_event(&text(&obj, false));
                prop_assert!(matches!(&parsed, Ok(UserEvent::Unknown(k)) if kind.starts_with(k.as_str())), "{:?}", parsed);
            }
        }
    }
}
