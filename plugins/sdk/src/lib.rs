//! Write a binance-syncd strategy plugin in safe Rust.
//!
//! A plugin is a `cdylib` that the daemon loads from `SYNCD_PLUGIN_DIR`, feeds every fill on the
//! account (exactly once, in order, across hot swaps and restarts), and lets place maker-only
//! orders through the daemon's executor, which checks every order against the exchange's filters,
//! the account and the strategy's limits before anything is sent.
//!
//! Implement [`Strategy`] and export it with [`export_strategy!`]:
//!
//! ```
//! use binance_syncd_plugin::{export_strategy, Fill, Host, StartInfo, Strategy};
//!
//! struct Counter {
//!     host: Host,
//!     fills: u64,
//! }
//!
//! impl Strategy for Counter {
//!     fn start(host: Host, start: &StartInfo<'_>) -> Result<Self, String> {
//!         host.info(&format!("{} starting with settings {:?}", start.name, start.setting("levels")));
//!         Ok(Counter { host, fills: 0 })
//!     }
//!
//!     fn on_fill(&mut self, fill: &Fill<'_>) -> Result<(), String> {
//!         self.fills += 1;
//!         self.host.info(&format!("fill #{} {} {} @ {}", fill.seq, fill.symbol, fill.qty, fill.price));
//!         Ok(())
//!     }
//! }
//!
//! export_strategy!(Counter, env!("CARGO_PKG_VERSION"));
//! ```
//!
//! # Settings
//! `NAME.conf` beside `NAME.so` holds `key = value` lines (`#` starts a comment); the daemon
//! hands them to [`Strategy::start`] ([`StartInfo::setting`]) and restarts the plugin, with the
//! same fill cursor, when the file changes. Keys the daemon reads itself: `tag` (1-8 letters or
//! digits, carried in every client order id; default: the file name's first 8 letters and
//! digits), `history = all` (a plugin seen for the first time starts at the start of the fill
//! log instead of its end) and `cancel_on_stop = true` (when its file is removed, its open orders
//! are cancelled; otherwise they stay, and a swapped-in version inherits them).
//!
//! # Installing and swapping
//! Copy the new `.so` beside the directory and `rename` it over the old name (a file is picked
//! up once it has stayed the same for one scan); never overwrite a loaded file in place. The
//! daemon stops the old version (its thread joined) before the new one starts: two versions never
//! trade at once, and the new one continues from the old one's fill cursor.
//!
//! # Rules a plugin lives by
//! - Every callback runs on the plugin's own thread and must return promptly; one that runs
//!   longer than `SYNCD_PLUGIN_STALL_S` marks the plugin stalled, and its intents are refused
//!   until it returns.
//! - A panic is caught at the boundary and disables the plugin until its file changes. Build
//!   plugins with the default `panic = "unwind"`: with `panic = "abort"` a panic ends the daemon.
//! - Strings passed in are valid only during the call; copy what you keep.
//! - Log through [`Host::log`]: a plugin's own `log`/`println!` does not reach the daemon's log.

pub mod abi;
pub mod decimal;

pub use decimal::Decimal;

use std::ffi::c_void;

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    fn from_abi(v: u8) -> Side {
        if v == abi::SIDE_SELL {
            Side::Sell
        } else {
            Side::Buy
        }
    }

    fn to_abi(self) -> u8 {
        match self {
            Side::Buy => abi::SIDE_BUY,
            Side::Sell => abi::SIDE_SELL,
        }
    }

    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// One fill on the account.
#[derive(Debug, Clone, Copy)]
pub struct Fill<'a> {
    pub seq: u64,
    pub trade_id: u64,
    pub order_id: u64,
    pub time_ms: i64,
    pub symbol: &'a str,
    pub client_order_id: &'a str,
    pub side: Side,
    pub price: &'a str,
    pub qty: &'a str,
    pub quote_qty: &'a str,
    pub commission: &'a str,
    pub commission_asset: &'a str,
    pub maker: bool,
    /// This fill may have reached the plugin before a daemon crash.
    pub replayed: bool,
    /// This daemon placed the order (any of its strategies; tell yours by the `sd-TAG-` prefix
    /// of `client_order_id`); false for another client's, the web UI's or another daemon's
    /// order on the account. Decided by the daemon, which knows its instance: do not guess it
    /// from the client id.
    pub own: bool,
}

/// What became of an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    Placed,
    Canceled,
    Replaced,
    Refused,
    Rejected,
    Unknown,
    /// The exchange never got it (known, not guessed).
    NotDone,
    CanceledAll,
    /// Not an answer (`request` is 0): the stream reported one of the plugin's orders:
    /// `status` is its state (NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, ...), `reason`
    /// says what happened and how much is filled.
    Report,
    /// A resolved `Unknown` whose lookups gave up: the order `client_order_id` may or may not
    /// exist. The daemon never sends it again and counts it as open against the strategy's
    /// limits until it knows; do not place it again blindly: watch for `Report`s of that
    /// client id.
    Unresolved,
}

/// Why an intent was refused or rejected, as a number to match (`status` and `reason` say it
/// in words, for people). [`Reason::Other`] for any code this SDK does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a refusal.
    None,
    Other,
    /// Not a symbol the daemon trades.
    Symbol,
    /// An exchange filter or the symbol's precision (`status` names it).
    Filter,
    /// A maker order that would cross the book and take.
    CrossesBook,
    Balance,
    /// The strategy's `max open orders`.
    MaxOpenOrders,
    /// The strategy's `max orders per 10 s`: the same order a little later may pass.
    OrderRate,
    /// The strategy's `max order notional`.
    OrderNotional,
    /// The strategy's `max symbol notional`.
    SymbolNotional,
    /// Cancel or replace of an order that is not open.
    UnknownOrder,
    /// Cancel or replace of another strategy's or client's order.
    NotItsOrder,
    /// The strategy's queue in the executor is full.
    Busy,
    /// The plugin was stopped before its intent was served.
    Revoked,
    /// The daemon is stopping.
    Shutdown,
    /// The exchange refused the daemon's API key.
    KeyRefused,
    /// Nothing reached the exchange (a local error).
    NotSent,
    /// The daemon could not learn what became of it (`UpdateKind::Unresolved`).
    Unresolved,
    /// The exchange said no for another reason (`code`).
    Rejected,
}

impl Reason {
    /// Its `SYNCD_REASON_*` number.
    pub fn code(self) -> u8 {
        match self {
            Reason::Other => abi::REASON_OTHER,
            Reason::None => abi::REASON_NONE,
            Reason::Symbol => abi::REASON_SYMBOL,
            Reason::Filter => abi::REASON_FILTER,
            Reason::CrossesBook => abi::REASON_CROSSES_BOOK,
            Reason::Balance => abi::REASON_BALANCE,
            Reason::MaxOpenOrders => abi::REASON_MAX_OPEN_ORDERS,
            Reason::OrderRate => abi::REASON_ORDER_RATE,
            Reason::OrderNotional => abi::REASON_ORDER_NOTIONAL,
            Reason::SymbolNotional => abi::REASON_SYMBOL_NOTIONAL,
            Reason::UnknownOrder => abi::REASON_UNKNOWN_ORDER,
            Reason::NotItsOrder => abi::REASON_NOT_ITS_ORDER,
            Reason::Busy => abi::REASON_BUSY,
            Reason::Revoked => abi::REASON_REVOKED,
            Reason::Shutdown => abi::REASON_SHUTDOWN,
            Reason::KeyRefused => abi::REASON_KEY_REFUSED,
            Reason::NotSent => abi::REASON_NOT_SENT,
            Reason::Unresolved => abi::REASON_UNRESOLVED,
            Reason::Rejected => abi::REASON_REJECTED,
        }
    }

    /// The header's `SYNCD_REASON_*` number read.
    pub fn from_code(code: u8) -> Reason {
        match code {
            abi::REASON_NONE => Reason::None,
            abi::REASON_SYMBOL => Reason::Symbol,
            abi::REASON_FILTER => Reason::Filter,
            abi::REASON_CROSSES_BOOK => Reason::CrossesBook,
            abi::REASON_BALANCE => Reason::Balance,
            abi::REASON_MAX_OPEN_ORDERS => Reason::MaxOpenOrders,
            abi::REASON_ORDER_RATE => Reason::OrderRate,
            abi::REASON_ORDER_NOTIONAL => Reason::OrderNotional,
            abi::REASON_SYMBOL_NOTIONAL => Reason::SymbolNotional,
            abi::REASON_UNKNOWN_ORDER => Reason::UnknownOrder,
            abi::REASON_NOT_ITS_ORDER => Reason::NotItsOrder,
            abi::REASON_BUSY => Reason::Busy,
            abi::REASON_REVOKED => Reason::Revoked,
            abi::REASON_SHUTDOWN => Reason::Shutdown,
            abi::REASON_KEY_REFUSED => Reason::KeyRefused,
            abi::REASON_NOT_SENT => Reason::NotSent,
            abi::REASON_UNRESOLVED => Reason::Unresolved,
            abi::REASON_REJECTED => Reason::Rejected,
            _ => Reason::Other,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct OrderUpdate<'a> {
    pub request: u64,
    pub kind: UpdateKind,
    pub order_id: u64,
    pub code: i64,
    pub symbol: &'a str,
    pub client_order_id: &'a str,
    pub side: Side,
    pub price: &'a str,
    pub qty: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
    /// `reason` as a number to match (never match the words).
    pub reason_code: Reason,
    pub resolved: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Price<'a> {
    pub symbol: &'a str,
    pub bid: &'a str,
    pub ask: &'a str,
}

/// One side of a [`Book`]: its levels, best first, as `(price, qty)` exact decimal strings.
#[derive(Clone, Copy)]
pub struct Levels<'a>(&'a [abi::Level]);

impl<'a> Levels<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Level `i` (0 is the best): `(price, qty)`.
    pub fn get(&self, i: usize) -> Option<(&'a str, &'a str)> {
        self.0.get(i).map(|l| (text(l.price), text(l.qty)))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0.iter().map(|l| (text(l.price), text(l.qty)))
    }
}

impl std::fmt::Debug for Levels<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A symbol's order book after a change ([`Strategy::on_book`], ABI 1.5): its best
/// `book_depth` levels each side (`NAME.conf`, default 5, at most 20). A symbol's books come in
/// increasing `update_id`; a plugin busy with earlier callbacks gets only the newest, and
/// `skipped` counts this symbol's books it did not get since the previous one.
#[derive(Debug, Clone, Copy)]
pub struct Book<'a> {
    pub symbol: &'a str,
    pub update_id: u64,
    /// The exchange's event time of the last change (ms since the epoch; 0 unknown).
    pub event_time_ms: i64,
    /// When the daemon read it off the socket (ms since the epoch).
    pub received_ms: i64,
    pub skipped: u64,
    pub bids: Levels<'a>,
    pub asks: Levels<'a>,
}

impl Book<'_> {
    /// The best bid and ask prices, when both sides have a level.
    pub fn touch(&self) -> Option<(&str, &str)> {
        Some((self.bids.get(0)?.0, self.asks.get(0)?.0))
    }
}

/// One public trade of a symbol ([`Strategy::on_trade`], ABI 1.5). `dropped`: trades that went
/// from a full queue (1024 per plugin) just before this one.
#[derive(Debug, Clone, Copy)]
pub struct Trade<'a> {
    pub symbol: &'a str,
    pub trade_id: u64,
    pub price: &'a str,
    pub qty: &'a str,
    /// Trade time and event time (ms since the epoch; 0 unknown), when the daemon read it.
    pub time_ms: i64,
    pub event_time_ms: i64,
    pub received_ms: i64,
    /// The buyer was the maker: the taker sold.
    pub buyer_maker: bool,
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Balance<'a> {
    pub asset: &'a str,
    pub free: &'a str,
    pub locked: &'a str,
}

/// What the plugin starts with.
#[derive(Debug, Clone, Copy)]
pub struct StartInfo<'a> {
    pub name: &'a str,
    /// `NAME.conf` as written.
    pub settings: &'a str,
    /// JSON: `symbols` (exchangeInfo rules), `balances`, `open_orders` (its own), `tag`.
    pub snapshot: &'a str,
}

impl<'a> StartInfo<'a> {
    /// The value of `key` in the settings (`key = value`), trimmed.
    pub fn setting(&self, key: &str) -> Option<&'a str> {
        setting(self.settings, key)
    }
}

/// The value of `key` in a `NAME.conf` text: the first `key = value` line, trimmed; `#`
/// starts a comment. The daemon reads the same file with this function, so a plugin and its
/// host never disagree on what a line says.
pub fn setting<'a>(settings: &'a str, key: &str) -> Option<&'a str> {
    settings.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Log levels of [`Host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

/// Why the host refused an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub i32);

impl Refused {
    /// The plugin's budget of unanswered intents is spent ([`abi::STATUS_BUSY`]): try again
    /// once answers came, rather than in a loop.
    pub fn busy(&self) -> bool {
        self.0 == abi::STATUS_BUSY
    }
}

/// The daemon, as the plugin sees it. Copyable; valid until the plugin is destroyed, and only on
/// the plugin's own thread (so it is neither `Send` nor `Sync`).
#[derive(Clone, Copy)]
pub struct Host {
    raw: *const abi::HostV1,
}

impl Host {
    fn call_submit(&self, intent: &abi::Intent) -> Result<u64, Refused> {
        let mut request = 0u64;
        // SAFETY: `raw` is the host's table, valid from create to destroy, and we are on the
        // plugin's thread inside a callback; `intent` and its strings outlive the call.
        let status = unsafe { ((*self.raw).submit)((*self.raw).ctx, intent, &mut request) };
        if status == abi::STATUS_OK {
            Ok(request)
        } else {
            Err(Refused(status))
        }
    }

    /// A maker order (LIMIT_MAKER) at `price` for `qty` (exact decimal strings). Its outcome
    /// arrives as [`Strategy::on_order`] with the returned request id.
    pub fn place(&self, symbol: &str, side: Side, price: &str, qty: &str) -> Result<u64, Refused> {
        self.call_submit(&abi::Intent {
            kind: abi::INTENT_PLACE,
            side: side.to_abi(),
            _reserved: [0; 6],
            order_id: 0,
            symbol: abi::Str::of(symbol),
            price: abi::Str::of(price),
            qty: abi::Str::of(qty),
            client_order_id: abi::Str::EMPTY,
        })
    }

    /// Cancels one of this plugin's orders.
    pub fn cancel(&self, symbol: &str, order_id: u64) -> Result<u64, Refused> {
        self.call_submit(&abi::Intent {
            kind: abi::INTENT_CANCEL,
            side: 0,
            _reserved: [0; 6],
            order_id,
            symbol: abi::Str::of(symbol),
            price: abi::Str::EMPTY,
            qty: abi::Str::EMPTY,
            client_order_id: abi::Str::EMPTY,
        })
    }

    /// Cancels every open order of this plugin on `symbol`.
    pub fn cancel_all(&self, symbol: &str) -> Result<u64, Refused> {
        self.call_submit(&abi::Intent {
            kind: abi::INTENT_CANCEL_ALL,
            side: 0,
            _reserved: [0; 6],
            order_id: 0,
            symbol: abi::Str::of(symbol),
            price: abi::Str::EMPTY,
            qty: abi::Str::EMPTY,
            client_order_id: abi::Str::EMPTY,
        })
    }

    /// Replaces one of its orders by a new one in one request (nothing placed unless the
    /// cancel worked).
    pub fn replace(&self, symbol: &str, order_id: u64, side: Side, price: &str, qty: &str) -> Result<u64, Refused> {
        self.call_submit(&abi::Intent {
            kind: abi::INTENT_REPLACE,
            side: side.to_abi(),
            _reserved: [0; 6],
            order_id,
            symbol: abi::Str::of(symbol),
            price: abi::Str::of(price),
            qty: abi::Str::of(qty),
            client_order_id: abi::Str::EMPTY,
        })
    }

    pub fn log(&self, level: Level, msg: &str) {
        let level = match level {
            Level::Error => abi::LOG_ERROR,
            Level::Warn => abi::LOG_WARN,
            Level::Info => abi::LOG_INFO,
            Level::Debug => abi::LOG_DEBUG,
        };
        // SAFETY: as in `call_submit`; `msg` outlives the call.
        unsafe { ((*self.raw).log)((*self.raw).ctx, level, abi::Str::of(msg)) }
    }

    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg);
    }

    pub fn warn(&self, msg: &str) {
        self.log(Level::Warn, msg);
    }

    /// The current exchange rules of `symbol` (its exchangeInfo object, as JSON).
    pub fn rules(&self, symbol: &str) -> Option<String> {
        unsafe extern "C" fn sink(user: *mut c_void, json: abi::Str) {
            // SAFETY: `user` is the `Option<String>` below, alive for the whole `rules` call,
            // and `json` is valid during this call.
            unsafe { *(user as *mut Option<String>) = Some(text(json).to_string()) }
        }
        let mut out: Option<String> = None;
        // SAFETY: as in `call_submit`; `out` outlives the call that writes it.
        let status = unsafe {
            ((*self.raw).rules)(
                (*self.raw).ctx,
                abi::Str::of(symbol),
                Some(sink),
                &mut out as *mut Option<String> as *mut c_void,
            )
        };
        if status == abi::STATUS_OK {
            out
        } else {
            None
        }
    }
}

/// A strategy. Every method runs on the plugin's own thread; return promptly.
pub trait Strategy: Sized + 'static {
    /// Makes the strategy. `Err` refuses the start (logged; the previous version, if any, is
    /// already stopped, and this one is disabled until its file changes).
    fn start(host: Host, start: &StartInfo<'_>) -> Result<Self, String>;
    fn on_fill(&mut self, _fill: &Fill<'_>) -> Result<(), String> {
        Ok(())
    }
    /// What became of an intent (its `request` id), or, with `kind == Report` and request 0,
    /// the stream's report of one of the plugin's orders (fills, cancels by others, expiries).
    fn on_order(&mut self, _update: &OrderUpdate<'_>) -> Result<(), String> {
        Ok(())
    }
    fn on_price(&mut self, _price: &Price<'_>) -> Result<(), String> {
        Ok(())
    }
    fn on_balance(&mut self, _balance: &Balance<'_>) -> Result<(), String> {
        Ok(())
    }
    /// `true` to get [`Strategy::on_book`]: only then is the callback exported, so a strategy
    /// without it costs the daemon nothing.
    const WANTS_BOOKS: bool = false;
    /// `true` to get [`Strategy::on_trade`].
    const WANTS_TRADES: bool = false;
    /// The book of a symbol changed (with `WANTS_BOOKS`); see [`Book`].
    fn on_book(&mut self, _book: &Book<'_>) -> Result<(), String> {
        Ok(())
    }
    /// A public trade (with `WANTS_TRADES`); see [`Trade`].
    fn on_trade(&mut self, _trade: &Trade<'_>) -> Result<(), String> {
        Ok(())
    }
    fn on_tick(&mut self, _now_ms: i64) -> Result<(), String> {
        Ok(())
    }
    /// The plugin is being stopped (swap, removal, shutdown). Its open orders stay; with
    /// `cancel_on_stop = true` in its settings the daemon cancels them when its file is removed.
    fn stop(&mut self) {}
}

/// Borrowed text from the host; invalid UTF-8 reads as empty (the host sends only UTF-8).
fn text<'a>(s: abi::Str) -> &'a str {
    if s.ptr.is_null() || s.len == 0 {
        return "";
    }
    // SAFETY: the host passes a pointer and length of live memory, valid for this call.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    std::str::from_utf8(bytes).unwrap_or("")
}

/// What `export_strategy!` expands to; not for direct use.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    struct Slot<S> {
        host: Host,
        strategy: Option<S>,
    }

    fn guard(body: impl FnOnce() -> abi::Status) -> abi::Status {
        catch_unwind(AssertUnwindSafe(body)).unwrap_or(abi::STATUS_PANICKED)
    }

    fn done<S>(slot: &Slot<S>, r: Result<(), String>) -> abi::Status {
        match r {
            Ok(()) => abi::STATUS_OK,
            Err(e) => {
                slot.host.log(Level::Error, &e);
                abi::STATUS_ERROR
            }
        }
    }

    /// # Safety
    /// `state` is what `create::<S>` returned and not yet destroyed.
    unsafe fn slot<'a, S>(state: *mut c_void) -> &'a mut Slot<S> {
        // SAFETY: per the function's contract.
        unsafe { &mut *(state as *mut Slot<S>) }
    }

    pub unsafe extern "C" fn create<S: Strategy>(host: *const abi::HostV1) -> *mut c_void {
        catch_unwind(|| {
            if host.is_null() {
                return std::ptr::null_mut();
            }
            Box::into_raw(Box::new(Slot::<S> { host: Host { raw: host }, strategy: None })) as *mut c_void
        })
        .unwrap_or(std::ptr::null_mut())
    }

    pub unsafe extern "C" fn destroy<S: Strategy>(state: *mut c_void) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            if !state.is_null() {
                // SAFETY: `state` came from `create::<S>`'s Box and is destroyed once.
                drop(unsafe { Box::from_raw(state as *mut Slot<S>) });
            }
        }));
    }

    pub unsafe extern "C" fn start<S: Strategy>(state: *mut c_void, start: *const abi::Start) -> abi::Status {
        guard(|| {
            // SAFETY: the host passes the state `create` made and a live `Start`.
            let (slot, start) = unsafe { (slot::<S>(state), &*start) };
            let info =
                StartInfo { name: text(start.name), settings: text(start.settings), snapshot: text(start.snapshot) };
            match S::start(slot.host, &info) {
                Ok(s) => {
                    slot.strategy = Some(s);
                    abi::STATUS_OK
                }
                Err(e) => done(slot, Err(e)),
            }
        })
    }

    macro_rules! callback {
        ($name:ident, $abi:ty, $method:ident, |$raw:ident| $convert:expr) => {
            pub unsafe extern "C" fn $name<S: Strategy>(state: *mut c_void, arg: *const $abi) -> abi::Status {
                guard(|| {
                    // SAFETY: the host passes the state `create` made and a live argument.
                    let (slot, $raw) = unsafe { (slot::<S>(state), &*arg) };
                    let value = $convert;
                    let Some(s) = slot.strategy.as_mut() else { return abi::STATUS_ERROR };
                    let r = s.$method(&value);
                    done(slot, r)
                })
            }
        };
    }

    callback!(on_fill, abi::Fill, on_fill, |f| Fill {
        seq: f.seq,
        trade_id: f.trade_id,
        order_id: f.order_id,
        time_ms: f.time_ms,
        symbol: text(f.symbol),
        client_order_id: text(f.client_order_id),
        side: Side::from_abi(f.side),
        price: text(f.price),
        qty: text(f.qty),
        quote_qty: text(f.quote_qty),
        commission: text(f.commission),
        commission_asset: text(f.commission_asset),
        maker: f.maker != 0,
        replayed: f.replayed != 0,
        own: f.own != 0,
    });

    callback!(on_order, abi::OrderUpdate, on_order, |u| OrderUpdate {
        request: u.request,
        kind: match u.kind {
            abi::UPDATE_PLACED => UpdateKind::Placed,
            abi::UPDATE_CANCELED => UpdateKind::Canceled,
            abi::UPDATE_REPLACED => UpdateKind::Replaced,
            abi::UPDATE_REFUSED => UpdateKind::Refused,
            abi::UPDATE_REJECTED => UpdateKind::Rejected,
            abi::UPDATE_UNKNOWN => UpdateKind::Unknown,
            abi::UPDATE_CANCELED_ALL => UpdateKind::CanceledAll,
            abi::UPDATE_REPORT => UpdateKind::Report,
            abi::UPDATE_NOT_DONE => UpdateKind::NotDone,
            // A kind from a newer host: not knowing what happened is the only safe reading.
            _ => UpdateKind::Unresolved,
        },
        order_id: u.order_id,
        code: u.code,
        symbol: text(u.symbol),
        client_order_id: text(u.client_order_id),
        side: Side::from_abi(u.side),
        price: text(u.price),
        qty: text(u.qty),
        status: text(u.status),
        reason: text(u.reason),
        reason_code: Reason::from_code(u.reason_code),
        resolved: u.resolved != 0,
    });

    callback!(on_price, abi::Price, on_price, |p| Price { symbol: text(p.symbol), bid: text(p.bid), ask: text(p.ask) });

    callback!(on_balance, abi::Balance, on_balance, |b| Balance {
        asset: text(b.asset),
        free: text(b.free),
        locked: text(b.locked)
    });

    /// `count` levels at `ptr` (null when there are none) for the duration of the call.
    fn levels<'a>(ptr: *const abi::Level, count: usize) -> Levels<'a> {
        if ptr.is_null() || count == 0 {
            return Levels(&[]);
        }
        // SAFETY: the host passes `count` live levels at `ptr`, valid for this call.
        Levels(unsafe { std::slice::from_raw_parts(ptr, count) })
    }

    callback!(on_book, abi::Book, on_book, |b| Book {
        symbol: text(b.symbol),
        update_id: b.update_id,
        event_time_ms: b.event_time_ms,
        received_ms: b.received_ms,
        skipped: b.skipped,
        bids: levels(b.bids, b.bid_count),
        asks: levels(b.asks, b.ask_count),
    });

    callback!(on_trade, abi::Trade, on_trade, |t| Trade {
        symbol: text(t.symbol),
        trade_id: t.trade_id,
        price: text(t.price),
        qty: text(t.qty),
        time_ms: t.time_ms,
        event_time_ms: t.event_time_ms,
        received_ms: t.received_ms,
        buyer_maker: t.buyer_maker != 0,
        dropped: t.dropped,
    });

    pub unsafe extern "C" fn on_tick<S: Strategy>(state: *mut c_void, now_ms: i64) -> abi::Status {
        guard(|| {
            // SAFETY: the host passes the state `create` made.
            let slot = unsafe { slot::<S>(state) };
            let Some(s) = slot.strategy.as_mut() else { return abi::STATUS_ERROR };
            let r = s.on_tick(now_ms);
            done(slot, r)
        })
    }

    pub unsafe extern "C" fn stop<S: Strategy>(state: *mut c_void) -> abi::Status {
        guard(|| {
            // SAFETY: the host passes the state `create` made.
            let slot = unsafe { slot::<S>(state) };
            if let Some(s) = slot.strategy.as_mut() {
                s.stop();
            }
            abi::STATUS_OK
        })
    }

    /// The table `export_strategy!` puts in a static.
    pub const fn table<S: Strategy>(version: &'static str) -> abi::PluginV1 {
        abi::PluginV1 {
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
            size: std::mem::size_of::<abi::PluginV1>() as u32,
            _reserved: 0,
            version: abi::Str { ptr: version.as_ptr(), len: version.len() },
            create: create::<S>,
            destroy: destroy::<S>,
            start: Some(start::<S>),
            on_fill: Some(on_fill::<S>),
            on_order: Some(on_order::<S>),
            on_price: Some(on_price::<S>),
            on_balance: Some(on_balance::<S>),
            on_tick: Some(on_tick::<S>),
            stop: Some(stop::<S>),
            on_book: if S::WANTS_BOOKS { Some(on_book::<S>) } else { None },
            on_trade: if S::WANTS_TRADES { Some(on_trade::<S>) } else { None },
        }
    }
}

/// Exports `$strategy` as the plugin's one entry symbol, `syncd_plugin_entry_v1`, with
/// `$version` (a `&'static str`) as its version.
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty, $version:expr) => {
        #[no_mangle]
        pub extern "C" fn syncd_plugin_entry_v1(_host: *const $crate::abi::HostV1) -> *const $crate::abi::PluginV1 {
            static TABLE: $crate::abi::PluginV1 = $crate::__private::table::<$strategy>($version);
            &TABLE
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_reads_the_first_uncommented_line_of_the_key_trimmed() {
        let conf = "# spread = 9\n  spread =  0.25 # ticks\nlevels=3\nspread = 7\nempty =\nnoequals\n";
        assert_eq!(setting(conf, "spread"), Some("0.25"));
        assert_eq!(setting(conf, "levels"), Some("3"));
        assert_eq!(setting(conf, "empty"), Some(""));
        assert_eq!(setting(conf, "noequals"), None);
        assert_eq!(setting(conf, "missing"), None);
        // A value may hold `=`; only the first one splits.
        assert_eq!(setting("url = a=b", "url"), Some("a=b"));
    }

    #[test]
    fn every_reason_code_of_the_header_has_its_own_variant() {
        let mut seen = Vec::new();
        for (name, code) in abi::REASONS {
            let r = Reason::from_code(*code);
            assert!(r != Reason::Other || *code == abi::REASON_OTHER, "{name} reads as Other");
            assert!(!seen.contains(&r), "{name}: {r:?} twice");
            seen.push(r);
        }
        assert_eq!(Reason::from_code(200), Reason::Other, "a newer daemon's code");
        for r in seen {
            assert_eq!(Reason::from_code(r.code()), r);
        }
    }
}
