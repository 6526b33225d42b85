//! The order desk: the only code that can send a request that changes an order.
//!
//! `RestClient::order_desk` (crate-private) hands out one per client, to the executor thread, which is
//! therefore the one path to `POST/DELETE /api/v3/order`, `DELETE /api/v3/openOrders` and
//! `POST /api/v3/order/cancelReplace` (the desk never uses `DELETE /api/v3/openOrders`: it
//! would cancel other users' orders on the account too). The desk speaks `LIMIT_MAKER` only: there is no method
//! here that could send `LIMIT`, `MARKET` or any other type, nor one that takes a free-form
//! parameter list. Prices and quantities arrive as [`Decimal`]s already rounded onto the
//! symbol's grid; they are written as the exchange's exact decimal strings.
//!
//! Every order request asks for `newOrderRespType=RESULT` (LIMIT_MAKER defaults to `ACK`, which
//! carries no status) and never sends `timeInForce` (LIMIT_MAKER refuses it with `-1106`).
//! Binance.US REST API, "New order (TRADE)" and "Cancel order (TRADE)":
//! <https://docs.binance.us/#new-order-trade>.

use super::{
    Admission, Endpoint, LaneId, RestClient, ALL_ORDERS, OPEN_ORDERS, ORDER_CANCEL, ORDER_CANCEL_REPLACE, ORDER_NEW,
    ORDER_QUERY,
};
use crate::decimal::Decimal;
use crate::error::Error;
use crate::filters::ExchangeRules;
use crate::model::Side;
use crate::wire::{CancelReplaceReply, OrderReply};
use std::sync::Arc;
use std::time::Duration;

/// Which order a cancel means (a domain type: strategies name orders with it too).
pub use crate::model::OrderRef;

/// What `allOrders` says of one client id.
#[derive(Debug, Clone)]
pub enum Listed {
    Found(Box<OrderReply>),
    /// The whole list since the given time was read, and it is not in it.
    Absent,
    /// More orders than one search reads: it may be further on.
    TooMany,
}

/// A new `LIMIT_MAKER` order, already rounded and checked.
#[derive(Debug, Clone, Copy)]
pub struct MakerOrder<'a> {
    pub symbol: &'a str,
    pub side: Side,
    pub price: Decimal,
    pub quantity: Decimal,
    pub client_order_id: &'a str,
}

/// The executor's handle to the order endpoints. Not `Clone`: one holder.
#[derive(Debug)]
pub struct OrderDesk {
    rest: Arc<RestClient>,
}

impl OrderDesk {
    pub(super) fn new(rest: Arc<RestClient>) -> OrderDesk {
        OrderDesk { rest }
    }

    pub fn rest(&self) -> &Arc<RestClient> {
        &self.rest
    }

    /// The parameters of a new maker order, in the order they are sent.
    fn maker_params(order: &MakerOrder<'_>, price: &str, quantity: &str) -> [(&'static str, String); 7] {
        [
            ("symbol", order.symbol.to_string()),
            ("side", order.side.as_str().to_string()),
            ("type", "LIMIT_MAKER".to_string()),
            ("quantity", quantity.to_string()),
            ("price", price.to_string()),
            ("newClientOrderId", order.client_order_id.to_string()),
            ("newOrderRespType", "RESULT".to_string()),
        ]
    }

    /// The exact query string a placement signs (without `recvWindow`, `timestamp` and
    /// `signature`): for the benchmark and tests of what goes on the wire.
    pub fn placement_query(order: &MakerOrder<'_>) -> String {
        let (price, quantity) = (order.price.to_string(), order.quantity.to_string());
        let params = OrderDesk::maker_params(order, &price, &quantity);
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        super::encode_params(&borrowed)
    }

    /// `POST /api/v3/order`, `type=LIMIT_MAKER`. Waits in the rate gate as long as it says.
    ///
    /// # Errors
    /// [`Error::OutcomeUnknown`] when the order may or may not exist (5xx, `-1006`/`-1007`, a
    /// timeout or reset after sending): look it up by its client id before anything else.
    pub fn place(&self, order: &MakerOrder<'_>) -> Result<OrderReply, Error> {
        let (price, quantity) = (order.price.to_string(), order.quantity.to_string());
        let params = OrderDesk::maker_params(order, &price, &quantity);
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        super::decode(&ORDER_NEW, &self.rest.call_with(&ORDER_NEW, &borrowed, Admission::Wait, LaneId::Orders)?)
    }

    /// `DELETE /api/v3/order`. `cancel_id` names the cancel itself (its report's `c`).
    /// `within` bounds the whole call (shutdown); `None` waits in the gate as long as it says.
    pub fn cancel(
        &self,
        symbol: &str,
        target: &OrderRef,
        cancel_id: &str,
        within: Option<Duration>,
    ) -> Result<OrderReply, Error> {
        let id_text;
        let mut params: Vec<(&str, &str)> = vec![("symbol", symbol)];
        match target {
            OrderRef::Id(id) => {
                id_text = id.to_string();
                params.push(("orderId", id_text.as_str()));
            }
            OrderRef::ClientId(c) => params.push(("origClientOrderId", c.as_str())),
        }
        params.push(("newClientOrderId", cancel_id));
        let admission = within.map_or(Admission::Wait, Admission::Within);
        let body = match admission {
            Admission::Wait => self.rest.call_with(&ORDER_CANCEL, &params, admission, LaneId::Orders)?,
            _ => self.rest.call_once(&ORDER_CANCEL, &params, admission, LaneId::Orders)?,
        };
        super::decode(&ORDER_CANCEL, &body)
    }

    /// `POST /api/v3/order/cancelReplace` with `STOP_ON_FAILURE`: the new order is placed only
    /// if the cancel succeeded. `-2022`: nothing changed; `-2021`: the old order is cancelled
    /// and the new one failed (the reason is in the message).
    pub fn cancel_replace(
        &self,
        target: &OrderRef,
        order: &MakerOrder<'_>,
        cancel_id: &str,
    ) -> Result<CancelReplaceReply, Error> {
        let (price, quantity) = (order.price.to_string(), order.quantity.to_string());
        let maker = OrderDesk::maker_params(order, &price, &quantity);
        let mut params: Vec<(&str, &str)> = maker.iter().map(|(k, v)| (*k, v.as_str())).collect();
        params.push(("cancelReplaceMode", "STOP_ON_FAILURE"));
        let id_text;
        match target {
            OrderRef::Id(id) => {
                id_text = id.to_string();
                params.push(("cancelOrderId", id_text.as_str()));
            }
            OrderRef::ClientId(c) => params.push(("cancelOrigClientOrderId", c.as_str())),
        }
        params.push(("cancelNewClientOrderId", cancel_id));
        let body = self.rest.call_with(&ORDER_CANCEL_REPLACE, &params, Admission::Wait, LaneId::Orders)?;
        super::decode(&ORDER_CANCEL_REPLACE, &body)
    }

    /// `GET /api/v3/order` by order id or client id: how an unknown outcome is resolved.
    pub fn query(&self, symbol: &str, order: &OrderRef) -> Result<OrderReply, Error> {
        match order {
            OrderRef::Id(id) => self.read(&ORDER_QUERY, &[("symbol", symbol), ("orderId", &id.to_string())]),
            OrderRef::ClientId(c) => self.read(&ORDER_QUERY, &[("symbol", symbol), ("origClientOrderId", c)]),
        }
    }

    /// The order with `client_order_id` among every order of `symbol` (open, filled, cancelled:
    /// `GET /api/v3/allOrders`) created since `since_ms` (server time), paged by order id.
    pub fn find_listed(&self, symbol: &str, client_order_id: &str, since_ms: i64) -> Result<Listed, Error> {
        const PAGE: usize = 1000;
        const PAGES: usize = 5;
        let (limit, start) = (PAGE.to_string(), since_ms.max(0).to_string());
        let mut from: Option<String> = None;
        for _ in 0..PAGES {
            let mut params = vec![("symbol", symbol), ("limit", limit.as_str())];
            match &from {
                // `orderId` and a time are not combined: the next page starts from an id alone.
                Some(id) => params.push(("orderId", id.as_str())),
                None => params.push(("startTime", start.as_str())),
            }
            let rows = self.order_rows(&ALL_ORDERS, &params)?;
            if let Some(found) = rows.iter().find(|o| o.client_order_id == client_order_id) {
                return Ok(Listed::Found(Box::new(found.clone())));
            }
            if rows.len() < PAGE {
                return Ok(Listed::Absent);
            }
            let last = rows.iter().map(|o| o.order_id).max().unwrap_or(0);
            from = Some(last.saturating_add(1).to_string());
        }
        Ok(Listed::TooMany)
    }

    /// A read the order thread needs before it can go on (the account at a book rebuild, an
    /// `avgPrice` an order waits on, a lookup): on the order lane, so it never queues behind a
    /// background request, and waiting in the gate like an order.
    pub fn read<T: serde::de::DeserializeOwned>(&self, ep: &Endpoint, params: &[(&str, &str)]) -> Result<T, Error> {
        super::refuse_orders(ep)?;
        super::decode(ep, &self.rest.call_with(ep, params, Admission::Wait, LaneId::Orders)?)
    }

    /// `exchangeInfo` re-read on the order lane within `share_pct` % of the limits (never
    /// waiting in the gate): after a `-1013`/`-1111` the next order waits for it.
    pub fn exchange_info(&self, symbols: &[String], share_pct: u64) -> Result<ExchangeRules, Error> {
        self.rest.exchange_info_with(symbols, Admission::Share(share_pct), LaneId::Orders)
    }

    /// `GET /api/v3/openOrders` for one symbol.
    pub fn open_orders(&self, symbol: &str) -> Result<Vec<OrderReply>, Error> {
        self.order_rows(&OPEN_ORDERS, &[("symbol", symbol)])
    }

    /// A list of orders; a row that cannot be read is skipped with a warning.
    fn order_rows(&self, ep: &super::Endpoint, params: &[(&str, &str)]) -> Result<Vec<OrderReply>, Error> {
        let symbol = params.iter().find(|(k, _)| *k == "symbol").map_or("", |(_, v)| *v);
        let rows: Vec<serde_json::Value> = self.read(ep, params)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_value::<OrderReply>(row) {
                Ok(o) => out.push(o),
                // One unreadable row must not hide the others; the book is rebuilt again later.
                Err(e) => log::warn!("{} {symbol}: skipping a row that could not be read ({e})", ep.path),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ServerClock;
    use crate::ratelimit::RateGate;
    use crate::rest::RestConfig;
    use crate::secret::Secret;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

    /// A server that answers every request with `answer` (`None`: read it, then hang up).
    fn server(answer: Option<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut buf = [0u8; 8192];
                let _ = s.read(&mut buf);
                if let Some(a) = answer {
                    let _ = s.write_all(a.as_bytes());
                }
            }
        });
        url
    }

    fn desk(url: &str) -> OrderDesk {
        let clock = Arc::new(ServerClock::new());
        clock.set_offset(0);
        let gate = Arc::new(RateGate::new(Vec::new(), clock.clone()));
        let rest = Arc::new(RestClient::new(
            RestConfig {
                base_url: url.to_string(),
                api_key: Some(Secret::new("key")),
                api_secret: Some(Secret::new(SECRET)),
                recv_window_ms: 5000,
                timeout: Duration::from_secs(5),
                clock_resync: Duration::from_secs(3600),
                tls: crate::tls::client_config(&[]).unwrap(),
            },
            clock,
            gate,
        ));
        let desk = rest.order_desk().unwrap();
        assert!(rest.order_desk().is_none(), "one desk per client");
        desk
    }

    fn order() -> MakerOrder<'static> {
        MakerOrder {
            symbol: "BTCUSD",
            side: Side::Buy,
            price: "60000.01".parse().unwrap(),
            quantity: "0.00100".parse().unwrap(),
            client_order_id: "sdx-1",
        }
    }

    #[test]
    fn the_placement_is_limit_maker_with_result_and_no_time_in_force() {
        assert_eq!(
            OrderDesk::placement_query(&order()),
            "symbol=BTCUSD&side=BUY&type=LIMIT_MAKER&quantity=0.00100&price=60000.01&newClientOrderId=sdx-1&newOrderRespType=RESULT"
        );
    }

    #[test]
    fn order_5xx_and_minus_1007_are_outcome_unknown_but_a_query_5xx_is_not() {
        let minus_1007 = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 117\r\nConnection: close\r\n\r\n{\"code\":-1007,\"msg\":\"Timeout waiting for response from backend server. Send status unknown; execution status unknown.\"}";
        let gateway = "HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 15\r\nConnection: close\r\n\r\ngateway timeout";
        for answer in [minus_1007, gateway] {
            let d = desk(&server(Some(answer)));
            match d.place(&order()) {
                Err(Error::OutcomeUnknown(what)) => assert!(!what.contains(SECRET)),
                other => panic!("expected OutcomeUnknown, got {other:?}"),
            }
            match d.cancel("BTCUSD", &OrderRef::Id(1), "sdx-c1", None) {
                Err(Error::OutcomeUnknown(_)) => {}
                other => panic!("expected OutcomeUnknown for the cancel, got {other:?}"),
            }
        }
        let bad_gateway = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad gateway";
        match desk(&server(Some(bad_gateway))).query("BTCUSD", &OrderRef::ClientId("sdx-1".into())) {
            Err(Error::Api { status: 502, .. }) => {}
            other => panic!("expected a plain 502 on a query, got {other:?}"),
        }
    }

    #[test]
    fn order_reset_after_sending_is_outcome_unknown_and_refused_connection_is_not() {
        assert!(matches!(desk(&server(None)).place(&order()), Err(Error::OutcomeUnknown(_))));
        // Nothing listens here: the request never left.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        match desk(&url).place(&order()) {
            Err(Error::Transport(_)) => {}
            other => panic!("expected Transport, got {other:?}"),
        }
    }
}
