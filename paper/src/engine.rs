//! The paper exchange's engine: symbols, a seeded market, one account, orders, trades, listen
//! keys and the user-data events they produce.
//!
//! Everything sits behind one mutex: requests are short, and one lock makes every response and
//! event consistent with every other (an order's `NEW` event is published before the response
//! that acknowledges it, as on Binance). Prices never touch `f64`: the market moves in whole
//! ticks chosen by a seeded xorshift generator, so a run with the same seed and the same
//! requests produces the same trades.
//!
//! Filters and precision are checked with the crate's own `filters` module, the same code the
//! daemon uses to pre-check, so there is one implementation of each rule. The JSON this module
//! emits is built here, field by field, from the Binance.US API docs, not from the daemon's
//! types: a misreading of the API must not be able to pass on both sides.
//!
//! The parts, each an `impl Engine` of its own: `market` (symbols, prices, market data, the
//! external trader), `account` (balances, listen keys), `matching` (order checks, fills,
//! cancels, queries) and `events` (every JSON body and event).

mod account;
mod book;
mod events;
mod market;
mod matching;
mod rules;

pub use account::ListenKeyEvent;
pub use events::fmt8;
pub use market::{Rng, SymbolSpec};

use super::hub::StreamHub;
use crate::order::{OrderType, Side};
use account::ListenKey;
use binance_syncd_plugin::Decimal;
use market::Market;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// An error the exchange answers with: HTTP status and Binance's `{code, msg}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: i64,
    pub msg: String,
}

impl ApiError {
    pub fn new(status: u16, code: i64, msg: impl Into<String>) -> ApiError {
        ApiError { status, code, msg: msg.into() }
    }

    pub fn bad(code: i64, msg: impl Into<String>) -> ApiError {
        ApiError::new(400, code, msg)
    }

    pub fn mandatory(param: &str) -> ApiError {
        ApiError::bad(-1102, format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."))
    }

    pub fn not_required(param: &str) -> ApiError {
        ApiError::bad(-1106, format!("Parameter '{param}' sent when not required."))
    }

    pub fn rejected(msg: &str) -> ApiError {
        ApiError::bad(-2010, msg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Expired,
    Rejected,
}

impl OrderStatus {
    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "NEW",
            OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
            OrderStatus::Filled => "FILLED",
            OrderStatus::Canceled => "CANCELED",
            OrderStatus::Expired => "EXPIRED",
            OrderStatus::Rejected => "REJECTED",
        }
    }

    fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInForce {
    Gtc,
    Ioc,
    Fok,
}

impl TimeInForce {
    pub fn parse(s: &str) -> Option<TimeInForce> {
        match s {
            "GTC" => Some(TimeInForce::Gtc),
            "IOC" => Some(TimeInForce::Ioc),
            "FOK" => Some(TimeInForce::Fok),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "GTC",
            TimeInForce::Ioc => "IOC",
            TimeInForce::Fok => "FOK",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespType {
    Ack,
    Result,
    Full,
}

impl RespType {
    pub fn parse(s: &str) -> Option<RespType> {
        match s {
            "ACK" => Some(RespType::Ack),
            "RESULT" => Some(RespType::Result),
            "FULL" => Some(RespType::Full),
            _ => None,
        }
    }
}

/// A validated new-order request, as the HTTP layer hands it over.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub symbol: String,
    pub side: Side,
    pub order_type: OrderType,
    pub time_in_force: Option<TimeInForce>,
    pub quantity: Option<Decimal>,
    pub quote_order_qty: Option<Decimal>,
    pub price: Option<Decimal>,
    pub new_client_order_id: Option<String>,
    pub resp_type: Option<RespType>,
    pub stp_mode: Option<String>,
    /// `order/test`: validate only.
    pub test: bool,
}

/// Who placed an order, for the report (the external trader stands for a web UI user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Api,
    External,
}

#[derive(Debug, Clone)]
struct Order {
    symbol: String,
    order_id: u64,
    client_order_id: String,
    side: Side,
    order_type: OrderType,
    tif: TimeInForce,
    price: Decimal,
    orig_qty: Decimal,
    executed_qty: Decimal,
    cum_quote: Decimal,
    orig_quote_qty: Decimal,
    status: OrderStatus,
    time: i64,
    update_time: i64,
    working_time: Option<i64>,
    stp_mode: String,
    origin: Origin,
    /// Quote (BUY) or base (SELL) still locked for the unfilled part.
    locked: Decimal,
}

/// One fill on the account: the ground truth a client's fill log is graded against.
#[derive(Debug, Clone, Serialize)]
pub struct TradeRecord {
    pub symbol: String,
    pub id: u64,
    pub order_id: u64,
    pub client_order_id: String,
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    pub quote_qty: Decimal,
    pub commission: Decimal,
    pub commission_asset: String,
    pub time: i64,
    pub maker: bool,
    pub origin: Origin,
    /// Whether the TRADE event reached at least one stream connection.
    pub streamed: bool,
}

/// Settings of the engine (the HTTP and WS layers have their own).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub symbols: Vec<SymbolSpec>,
    pub balances: Vec<(String, Decimal)>,
    pub seed: u64,
    pub maker_commission: Decimal,
    pub taker_commission: Decimal,
    pub listen_key_ttl: Duration,
    pub max_num_orders: u64,
    /// Percent chance per market tick that the external trader acts (0 = off).
    pub external_trader_pct: u64,
}

impl Default for EngineSettings {
    fn default() -> EngineSettings {
        EngineSettings {
            symbols: vec![SymbolSpec::btcusd(), SymbolSpec::ethusd()],
            balances: vec![
                ("USD".into(), Decimal::from_int(1_000_000)),
                ("BTC".into(), Decimal::from_int(10)),
                ("ETH".into(), Decimal::from_int(100)),
            ],
            seed: 1,
            maker_commission: Decimal::new(1, 3),
            taker_commission: Decimal::new(1, 3),
            listen_key_ttl: Duration::from_secs(3600),
            max_num_orders: 200,
            external_trader_pct: 0,
        }
    }
}

/// Faults the engine acts out itself (stream and HTTP faults live in their layers).
#[derive(Debug, Default, Clone)]
pub struct EngineFaults {
    /// Send the next N TRADE events twice.
    pub duplicate_trades: u64,
    /// Do not deliver the next N events to any stream.
    pub drop_events: u64,
    /// The market neither moves nor fills while set.
    pub quiesced: bool,
}

/// The engine's whole mutable state.
pub struct Engine {
    settings: EngineSettings,
    markets: BTreeMap<String, Market>,
    balances: BTreeMap<String, (Decimal, Decimal)>,
    rng: Rng,
    trades: Vec<TradeRecord>,
    listen_key: Option<ListenKey>,
    key_counter: u64,
    pub key_history: Vec<ListenKeyEvent>,
    pub faults: EngineFaults,
    hub: StreamHub,
    external_seq: u64,
    generated_ids: u64,
    /// Market steps taken (ticks and touches), which vary the synthetic book.
    steps: u64,
}

const SCALE: u8 = 8;

fn floor8(d: Decimal) -> Decimal {
    d.floor_to(Decimal::new(1, SCALE)).unwrap_or(d)
}

impl Engine {
    pub fn new(settings: EngineSettings, hub: StreamHub) -> Engine {
        let mut rng = Rng::new(settings.seed);
        let mut markets = BTreeMap::new();
        for spec in &settings.symbols {
            let mut info = spec.exchange_info(settings.max_num_orders);
            // The deliberately unknown filter is for clients; parsing it here would only log noise.
            if let Some(filters) = info.get_mut("filters").and_then(Value::as_array_mut) {
                filters.retain(|f| f.get("filterType").and_then(Value::as_str) != Some("PAPER_FUTURE_FILTER"));
            }
            let rules = rules::SymbolRules::from_info(&info);
            let half = spec.tick;
            markets.insert(
                spec.symbol.clone(),
                Market {
                    spec: spec.clone(),
                    rules,
                    bid: spec.start_price.checked_sub(half).unwrap_or(spec.start_price),
                    ask: spec.start_price.checked_add(half).unwrap_or(spec.start_price),
                    next_order_id: 1000 + rng.range(0, 999) as u64,
                    next_trade_id: 5000 + rng.range(0, 999) as u64,
                    prints: VecDeque::new(),
                    orders: BTreeMap::new(),
                    book: book::PublicBook::default(),
                },
            );
        }
        for m in markets.values_mut() {
            m.open_book(settings.seed);
        }
        let balances = settings.balances.iter().map(|(a, v)| (a.clone(), (*v, Decimal::ZERO))).collect();
        Engine {
            settings,
            markets,
            balances,
            rng,
            trades: Vec::new(),
            listen_key: None,
            key_counter: 0,
            key_history: Vec::new(),
            faults: EngineFaults::default(),
            hub,
            external_seq: 0,
            generated_ids: 0,
            steps: 0,
        }
    }

    pub fn set_external_pct(&mut self, pct: u64) {
        self.settings.external_trader_pct = pct;
    }

    pub fn trades(&self) -> &[TradeRecord] {
        &self.trades
    }
}
