//! The executor's view of the account: open orders and balances.
//!
//! Open orders come from `executionReport`s (every order on the account, ours or not) and are
//! rebuilt from `GET /api/v3/openOrders` at start and after every reconnect, because a stream
//! that was down missed updates. Binance.US "User Data Streams", order update payload, and
//! "Current open orders (USER_DATA)": <https://docs.binance.us/#user-data-streams>.
//!
//! A rebuild races with the stream: an event may describe a change the snapshot already shows,
//! or one it missed. Two rules keep the book right: an order that closed is remembered (bounded)
//! so a late `NEW` cannot bring it back, and a snapshot keeps local orders changed after the
//! request went out (the snapshot cannot know them yet).

use crate::decimal::Decimal;
use crate::model::Side;
use crate::wire::{ExecutionReport, OrderReply};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Closed order ids remembered against late events.
const CLOSED_MEMORY: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOrder {
    pub symbol: String,
    pub order_id: u64,
    pub client_order_id: String,
    pub side: Side,
    pub price: Decimal,
    pub orig_qty: Decimal,
    pub executed_qty: Decimal,
    /// Local monotonic stamp of the last change we applied (ms since the book was made).
    pub(crate) changed_at: u64,
}

impl OpenOrder {
    /// The order as an `executionReport` describes it (`None` for a side we cannot read).
    pub fn from_report(r: &ExecutionReport) -> Option<OpenOrder> {
        Some(OpenOrder {
            symbol: r.symbol.clone(),
            order_id: r.order_id,
            client_order_id: r.order_client_id().to_string(),
            side: Side::parse(&r.side)?,
            price: r.price,
            orig_qty: r.quantity,
            executed_qty: r.cumulative_qty,
            changed_at: 0,
        })
    }

    pub fn remaining(&self) -> Decimal {
        self.orig_qty.checked_sub(self.executed_qty).unwrap_or(Decimal::ZERO).max(Decimal::ZERO)
    }

    /// price × remaining quantity: what the order still commits in the quote asset.
    pub fn notional(&self) -> Decimal {
        self.price.checked_mul(self.remaining()).unwrap_or(Decimal::ZERO)
    }
}

fn is_open(status: &str) -> bool {
    matches!(status, "NEW" | "PARTIALLY_FILLED" | "PENDING_NEW")
}

#[derive(Debug, Default)]
pub struct Book {
    /// By `(symbol, orderId)`: order ids are per symbol.
    orders: BTreeMap<(String, u64), OpenOrder>,
    by_client: HashMap<(String, String), u64>,
    closed: HashSet<(String, u64)>,
    closed_order: VecDeque<(String, u64)>,
    /// A logical clock for `changed_at`: bumps on every change.
    tick: u64,
}

impl Book {
    pub fn new() -> Book {
        Book::default()
    }

    fn stamp(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The stamp a snapshot taken now would be compared against.
    pub fn mark(&mut self) -> u64 {
        self.stamp()
    }

    fn remember_closed(&mut self, symbol: &str, order_id: u64) {
        let key = (symbol.to_string(), order_id);
        if self.closed.insert(key.clone()) {
            self.closed_order.push_back(key);
            while self.closed_order.len() > CLOSED_MEMORY {
                if let Some(old) = self.closed_order.pop_front() {
                    self.closed.remove(&old);
                }
            }
        }
    }

    fn remove(&mut self, symbol: &str, order_id: u64) -> Option<OpenOrder> {
        let gone = self.orders.remove(&(symbol.to_string(), order_id));
        if let Some(o) = &gone {
            self.by_client.remove(&(o.symbol.clone(), o.client_order_id.clone()));
        }
        self.remember_closed(symbol, order_id);
        gone
    }

    fn upsert(&mut self, mut order: OpenOrder) {
        order.changed_at = self.stamp();
        let key = (order.symbol.clone(), order.order_id);
        self.by_client.insert((order.symbol.clone(), order.client_order_id.clone()), order.order_id);
        self.orders.insert(key, order);
    }

    /// Applies one order update from the stream. Returns the order as it now stands (`None`
    /// once it is closed or if the report is not about an open order).
    pub fn apply_report(&mut self, r: &ExecutionReport) -> Option<&OpenOrder> {
        let key = (r.symbol.clone(), r.order_id);
        if !is_open(&r.status) {
            self.remove(&r.symbol, r.order_id);
            return None;
        }
        if self.closed.contains(&key) {
            return None; // a late report of an order we already saw close
        }
        let order = OpenOrder::from_report(r)?;
        // A report older than what we hold (executed qty only grows) changes nothing.
        if self.orders.get(&key).is_some_and(|o| o.executed_qty > order.executed_qty) {
            return self.orders.get(&key);
        }
        self.upsert(order);
        self.orders.get(&key)
    }

    /// Records an order from a REST answer (placement, lookup).
    pub fn apply_reply(&mut self, o: &OrderReply) {
        let status = o.status.as_deref().unwrap_or("NEW");
        if !is_open(status) {
            self.remove(&o.symbol, o.order_id);
            return;
        }
        if self.closed.contains(&(o.symbol.clone(), o.order_id)) {
            return;
        }
        let (Some(side), Some(price), Some(orig_qty)) = (o.side.as_deref().and_then(Side::parse), o.price, o.orig_qty)
        else {
            return;
        };
        let executed_qty = o.executed_qty.unwrap_or(Decimal::ZERO);
        if self.orders.get(&(o.symbol.clone(), o.order_id)).is_some_and(|held| held.executed_qty > executed_qty) {
            return;
        }
        self.upsert(OpenOrder {
            symbol: o.symbol.clone(),
            order_id: o.order_id,
            client_order_id: o.order_client_id().to_string(),
            side,
            price,
            orig_qty,
            executed_qty,
            changed_at: 0,
        });
    }

    /// Marks an order gone after our own cancel (the stream will say so too).
    pub fn close(&mut self, symbol: &str, order_id: u64) {
        self.remove(symbol, order_id);
    }

    /// Replaces `symbol`'s orders by a REST snapshot whose request left at stamp `mark`.
    /// Orders changed locally since then are kept: the snapshot may predate them. Only a
    /// terminal report closes an order for good: one the snapshot lacks is dropped but may come
    /// back with its next report (`openOrders` can lag), and the snapshot never reopens an
    /// order a terminal report closed.
    pub fn replace_symbol(&mut self, symbol: &str, snapshot: &[OrderReply], mark: u64) {
        let stale: Vec<u64> = self
            .orders
            .values()
            .filter(|o| o.symbol == symbol && o.changed_at < mark)
            .map(|o| o.order_id)
            .filter(|id| !snapshot.iter().any(|s| s.order_id == *id))
            .collect();
        for id in stale {
            if let Some(o) = self.orders.remove(&(symbol.to_string(), id)) {
                self.by_client.remove(&(o.symbol.clone(), o.client_order_id.clone()));
            }
        }
        for o in snapshot.iter().filter(|o| o.symbol == symbol) {
            let fresher_here =
                self.orders.get(&(symbol.to_string(), o.order_id)).is_some_and(|held| held.changed_at >= mark);
            if !fresher_here {
                self.apply_reply(o); // ignores ids a terminal report closed
            }
        }
    }

    pub fn get(&self, symbol: &str, order_id: u64) -> Option<&OpenOrder> {
        self.orders.get(&(symbol.to_string(), order_id))
    }

    pub fn by_client_id(&self, symbol: &str, client_order_id: &str) -> Option<&OpenOrder> {
        let id = self.by_client.get(&(symbol.to_string(), client_order_id.to_string()))?;
        self.get(symbol, *id)
    }

    pub fn orders(&self) -> impl Iterator<Item = &OpenOrder> {
        self.orders.values()
    }

    pub fn count_symbol(&self, symbol: &str) -> u64 {
        self.orders.values().filter(|o| o.symbol == symbol).count() as u64
    }

    pub fn count_total(&self) -> u64 {
        self.orders.len() as u64
    }

    /// Open BUY quantity on `symbol` (for MAX_POSITION).
    pub fn open_buy_qty(&self, symbol: &str) -> Decimal {
        self.orders
            .values()
            .filter(|o| o.symbol == symbol && o.side == Side::Buy)
            .fold(Decimal::ZERO, |acc, o| acc.checked_add(o.remaining()).unwrap_or(acc))
    }
}

/// Free and locked amounts per asset.
///
/// The exchange's numbers (`account`, `outboundAccountPosition`) are absolute, but an event
/// written before one of our placements can arrive after it. So each placement's cost is held
/// as a reservation, keyed by its client id, until the stream has reported that order *and* a
/// position event of that asset has come after the report (Binance sends the order's report,
/// then the position with its lock); free is the exchange's free minus what is still reserved.
#[derive(Debug, Default, Clone)]
pub struct Balances {
    assets: HashMap<String, (Decimal, Decimal)>,
    /// client id → (asset, amount, reported by the stream yet).
    reserved: HashMap<String, (String, Decimal, bool)>,
    /// Orders the stream reported before their placement's answer came back (bounded).
    reported: HashSet<String>,
    reported_order: VecDeque<String>,
    known: bool,
}

impl Balances {
    /// Absolute values from `GET /account`.
    pub fn set(&mut self, asset: &str, free: Decimal, locked: Decimal) {
        self.assets.insert(asset.to_string(), (free, locked));
        self.known = true;
    }

    /// Absolute values from `outboundAccountPosition`: they include the locks of every order
    /// reported before them, whose reservations end here.
    pub fn position(&mut self, asset: &str, free: Decimal, locked: Decimal) {
        self.set(asset, free, locked);
        self.reserved.retain(|_, (a, _, reported)| !(*reported && a == asset));
    }

    /// A deposit or withdrawal (`balanceUpdate`).
    pub fn add_free(&mut self, asset: &str, delta: Decimal) {
        let e = self.assets.entry(asset.to_string()).or_insert((Decimal::ZERO, Decimal::ZERO));
        e.0 = e.0.checked_add(delta).unwrap_or(e.0);
    }

    /// Holds `amount` of `asset` for the order `client_order_id`.
    pub fn reserve(&mut self, client_order_id: &str, asset: &str, amount: Decimal) {
        // The stream may be faster than the placement's answer.
        let reported = self.reported.contains(client_order_id);
        self.reserved.insert(client_order_id.to_string(), (asset.to_string(), amount, reported));
    }

    /// The stream reported the order: the next position event of its asset includes its lock.
    pub fn reported(&mut self, client_order_id: &str) {
        match self.reserved.get_mut(client_order_id) {
            Some(r) => r.2 = true,
            None => {
                if self.reported.insert(client_order_id.to_string()) {
                    self.reported_order.push_back(client_order_id.to_string());
                    while self.reported_order.len() > CLOSED_MEMORY {
                        if let Some(old) = self.reported_order.pop_front() {
                            self.reported.remove(&old);
                        }
                    }
                }
            }
        }
    }

    /// The order never existed (or is settled otherwise): nothing to hold.
    pub fn release(&mut self, client_order_id: &str) {
        self.reserved.remove(client_order_id);
    }

    /// A rebuild read the account: every earlier reservation is in its numbers.
    pub fn release_all(&mut self) {
        self.reserved.clear();
    }

    pub fn free(&self, asset: &str) -> Decimal {
        let free = self.assets.get(asset).map_or(Decimal::ZERO, |b| b.0);
        let held = self
            .reserved
            .values()
            .filter(|(a, _, _)| a == asset)
            .fold(Decimal::ZERO, |acc, (_, amount, _)| acc.checked_add(*amount).unwrap_or(acc));
        free.checked_sub(held).unwrap_or(Decimal::ZERO).max(Decimal::ZERO)
    }

    pub fn total(&self, asset: &str) -> Decimal {
        self.assets.get(asset).map_or(Decimal::ZERO, |b| b.0.checked_add(b.1).unwrap_or(b.0))
    }

    /// False until the first account read or event: then nothing can be judged.
    pub fn known(&self) -> bool {
        self.known
    }

    pub fn all(&self) -> impl Iterator<Item = (&String, &(Decimal, Decimal))> {
        self.assets.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn report(order_id: u64, status: &str, executed: &str) -> ExecutionReport {
        let text = format!(
            r#"{{"e":"executionReport","E":1,"s":"BTCUSD","c":"sd-a-1-{order_id}","S":"BUY","o":"LIMIT_MAKER","q":"1.0","p":"100.0",
            "x":"NEW","X":"{status}","i":{order_id},"l":"0","z":"{executed}","L":"0","n":"0","N":null,"T":1,"t":-1,"m":false}}"#
        );
        match crate::wire::parse_event(&text).unwrap() {
            crate::wire::UserEvent::Execution(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    fn reply(order_id: u64, status: &str) -> OrderReply {
        serde_json::from_value(
            serde_json::json!({"symbol":"BTCUSD","orderId":order_id,"clientOrderId":format!("x{order_id}"),
            "price":"100.0","origQty":"1.0","executedQty":"0.0","status":status,"side":"SELL","type":"LIMIT_MAKER"}),
        )
        .unwrap()
    }

    #[test]
    fn reports_open_update_and_close_orders() {
        let mut b = Book::new();
        b.apply_report(&report(1, "NEW", "0"));
        b.apply_report(&report(2, "NEW", "0"));
        assert_eq!(b.count_symbol("BTCUSD"), 2);
        assert_eq!(b.by_client_id("BTCUSD", "sd-a-1-1").map(|o| o.order_id), Some(1));
        b.apply_report(&report(1, "PARTIALLY_FILLED", "0.4"));
        assert_eq!(b.get("BTCUSD", 1).unwrap().remaining(), d("0.6"));
        assert_eq!(b.open_buy_qty("BTCUSD"), d("1.6"));
        for status in ["FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"] {
            let mut b2 = Book::new();
            b2.apply_report(&report(7, "NEW", "0"));
            b2.apply_report(&report(7, status, "0"));
            assert_eq!(b2.count_total(), 0, "{status}");
        }
        // A stale partial fill does not undo a newer one.
        b.apply_report(&report(1, "PARTIALLY_FILLED", "0.2"));
        assert_eq!(b.get("BTCUSD", 1).unwrap().executed_qty, d("0.4"));
    }

    #[test]
    fn a_late_new_cannot_resurrect_a_closed_order() {
        let mut b = Book::new();
        b.apply_report(&report(1, "NEW", "0"));
        b.apply_report(&report(1, "FILLED", "1.0"));
        b.apply_report(&report(1, "NEW", "0"));
        assert_eq!(b.count_total(), 0);
    }

    #[test]
    fn a_snapshot_replaces_what_it_knows_and_keeps_what_is_newer() {
        let mut b = Book::new();
        b.apply_report(&report(1, "NEW", "0")); // closed while the stream was down
        let mark = b.mark();
        b.apply_report(&report(3, "NEW", "0")); // placed while the snapshot was on the wire
        b.replace_symbol("BTCUSD", &[reply(2, "NEW")], mark);
        let ids: Vec<u64> = b.orders().map(|o| o.order_id).collect();
        assert_eq!(ids, [2, 3]);
        // A snapshot never reopens an order a terminal report closed.
        b.apply_report(&report(4, "NEW", "0"));
        b.apply_report(&report(4, "CANCELED", "0"));
        let mark = b.mark();
        b.replace_symbol("BTCUSD", &[reply(2, "NEW"), reply(4, "NEW")], mark);
        assert!(b.get("BTCUSD", 4).is_none(), "a lagging snapshot brought back a closed order");
        // One the snapshot merely lacked comes back with its next report.
        b.apply_report(&report(1, "PARTIALLY_FILLED", "0.5"));
        assert!(b.get("BTCUSD", 1).is_some());
    }

    #[test]
    fn a_reservation_survives_a_stale_event_until_its_order_is_reported() {
        let mut bal = Balances::default();
        assert!(!bal.known());
        bal.set("USD", d("100"), d("0"));
        bal.reserve("sd-a-1-1", "USD", d("30"));
        assert_eq!((bal.free("USD"), bal.total("USD")), (d("70"), d("100")));
        // A position written before our order arrives after it: still 100 free at the exchange.
        bal.position("USD", d("100"), d("0"));
        assert_eq!(bal.free("USD"), d("70"), "the stale event must not undo the reservation");
        bal.add_free("USD", d("5"));
        assert_eq!(bal.free("USD"), d("75"));
        // The order's report came: still held until the position that follows it.
        bal.reported("sd-a-1-1");
        assert_eq!(bal.free("USD"), d("75"));
        bal.position("USD", d("75"), d("30"));
        assert_eq!(bal.free("USD"), d("75"), "the position carries the lock now");
        // A report before the placement's answer: the reservation is already a reported one.
        bal.reported("sd-a-1-2");
        bal.reserve("sd-a-1-2", "USD", d("10"));
        assert_eq!(bal.free("USD"), d("65"));
        bal.position("USD", d("65"), d("40"));
        assert_eq!(bal.free("USD"), d("65"));
    }
}
