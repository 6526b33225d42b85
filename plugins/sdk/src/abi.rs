//! The plugin ABI, version 1: `#[repr(C)]` types shared by the host and every plugin.
//!
//! `plugins/include/binance_syncd_plugin.h` declares the same types for C. Rules:
//! - Both tables ([`HostV1`], [`PluginV1`]) start with `abi_major`, `abi_minor`, `size`. The host
//!   refuses another major version; within a major, fields are only ever added at the end (the
//!   minor grows), and each side reads only the fields inside the other's `size`.
//! - Strings are UTF-8 pointer + length ([`Str`]), never NUL-terminated, valid for the duration
//!   of the call that passes them. Prices and quantities are the exchange's exact decimal strings;
//!   no floating point crosses. Integers are fixed-width.
//! - Every callback returns a status ([`STATUS_OK`] or a negative error); a panic must never
//!   unwind out of one (it aborts the process since Rust 1.81): the SDK catches it and returns
//!   [`STATUS_PANICKED`].
//! - Memory is freed by the side that allocated it: nothing here transfers ownership.

use std::ffi::c_void;

pub const ABI_MAJOR: u32 = 1;
pub const ABI_MINOR: u32 = 5;
/// The one exported symbol: `const PluginV1 *syncd_plugin_entry_v1(const HostV1 *host)`.
pub const ENTRY_SYMBOL: &[u8] = b"syncd_plugin_entry_v1\0";

pub type Status = i32;
pub const STATUS_OK: Status = 0;
/// The plugin panicked; the host disables it.
pub const STATUS_PANICKED: Status = -1;
/// The plugin failed (an error it reports); the host disables it.
pub const STATUS_ERROR: Status = -2;
/// A host callback refused the request for good (a malformed argument, the plugin being
/// stopped).
pub const STATUS_REFUSED: Status = -3;
/// `submit`: nothing was queued, try again from a later callback: this plugin's budget of
/// intents not yet answered to it is spent (answers to earlier intents, order updates after
/// the current callback, free it), or the daemon's order queue is full (busy, or held by a
/// 429), or the plugin is paused. Since 1.3: a plugin that declares an older minor gets
/// [`STATUS_REFUSED`].
pub const STATUS_BUSY: Status = -4;

/// Borrowed UTF-8 text.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Str {
    pub ptr: *const u8,
    pub len: usize,
}

impl Str {
    pub const EMPTY: Str = Str { ptr: std::ptr::null(), len: 0 };

    /// Borrows `text` for as long as `text` lives; the caller keeps it alive across the call.
    pub fn of(text: &str) -> Str {
        Str { ptr: text.as_ptr(), len: text.len() }
    }
}

pub const SIDE_BUY: u8 = 0;
pub const SIDE_SELL: u8 = 1;

/// One fill from the fill log.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Fill {
    /// The fill log's sequence number: gap-free and increasing, one per line.
    pub seq: u64,
    pub trade_id: u64,
    pub order_id: u64,
    pub time_ms: i64,
    pub symbol: Str,
    pub client_order_id: Str,
    pub price: Str,
    pub qty: Str,
    pub quote_qty: Str,
    pub commission: Str,
    pub commission_asset: Str,
    pub side: u8,
    pub maker: u8,
    /// 1: this fill may have reached the plugin before (a daemon crash came in between).
    pub replayed: u8,
    /// 1: the order was placed by this daemon (its instance's client ids), whichever strategy
    /// asked; 0: another client's, the web UI's, another daemon's. Since 1.4 (a reserved byte
    /// before): a plugin that declares an older minor gets 0.
    pub own: u8,
}

pub const UPDATE_PLACED: u8 = 0;
pub const UPDATE_CANCELED: u8 = 1;
pub const UPDATE_REPLACED: u8 = 2;
pub const UPDATE_REFUSED: u8 = 3;
pub const UPDATE_REJECTED: u8 = 4;
pub const UPDATE_UNKNOWN: u8 = 5;
pub const UPDATE_NOT_DONE: u8 = 6;
pub const UPDATE_CANCELED_ALL: u8 = 7;
/// Not an answer to an intent (`request` 0): the stream's report of one of the plugin's orders
/// (`status` its state, `reason` what happened and how much is filled). Added in ABI 1.1.
pub const UPDATE_REPORT: u8 = 8;
/// A resolved `UPDATE_UNKNOWN` whose lookups gave up (`resolved` 1): the order
/// `client_order_id` may or may not exist; it is never sent again and counts as open against
/// the strategy's limits until the daemon knows. Not `UPDATE_NOT_DONE`, which says the exchange
/// never got it. Added in ABI 1.2; a plugin built for 1.0 or 1.1 gets a resolved
/// `UPDATE_UNKNOWN` instead.
pub const UPDATE_UNRESOLVED: u8 = 9;

/// What became of an intent (the executor's outcome), as an order update.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OrderUpdate {
    /// The id `submit` returned.
    pub request: u64,
    pub order_id: u64,
    /// The exchange's error code for `UPDATE_REJECTED`, else 0.
    pub code: i64,
    pub symbol: Str,
    pub client_order_id: Str,
    /// What was sent (after rounding), for placed and replaced orders.
    pub price: Str,
    pub qty: Str,
    /// The exchange's order status (`NEW`, ...), or the rule that refused it.
    pub status: Str,
    /// Why, in words, for refusals, rejections and adjustments.
    pub reason: Str,
    pub kind: u8,
    pub side: u8,
    /// 1: this update answers an earlier `UPDATE_UNKNOWN`.
    pub resolved: u8,
    /// Why, as a number ([`REASON_NONE`], `REASON_*`), for refusals, rejections, `NOT_DONE` and
    /// `UNRESOLVED`; `status` and `reason` say it in words. Since 1.4 (a reserved byte before):
    /// a plugin that declares an older minor gets [`REASON_NONE`].
    pub reason_code: u8,
    pub _reserved: [u8; 4],
}

/// Not a refusal, or a plugin that declared a minor below 4.
pub const REASON_NONE: u8 = 0;
/// A refusal without a more specific code (a newer daemon's may be more specific).
pub const REASON_OTHER: u8 = 1;
/// The symbol is not one the daemon trades (`SYNCD_SYMBOLS`) or the exchange knows.
pub const REASON_SYMBOL: u8 = 2;
/// An exchange filter or the symbol's precision; `status` names it (`LOT_SIZE`, ...). Also an
/// exchange rejection `-1013`/`-1111`.
pub const REASON_FILTER: u8 = 3;
/// A maker order that would cross the book and take: refused here, or rejected by the exchange
/// (`-2010`) because the book moved on the way.
pub const REASON_CROSSES_BOOK: u8 = 4;
/// Not enough free balance.
pub const REASON_BALANCE: u8 = 5;
/// The strategy's `max open orders`.
pub const REASON_MAX_OPEN_ORDERS: u8 = 6;
/// The strategy's `max orders per 10 s`: the same order later may pass.
pub const REASON_ORDER_RATE: u8 = 7;
/// The strategy's `max order notional`.
pub const REASON_ORDER_NOTIONAL: u8 = 8;
/// The strategy's `max symbol notional`.
pub const REASON_SYMBOL_NOTIONAL: u8 = 9;
/// No such open order (cancel, replace).
pub const REASON_UNKNOWN_ORDER: u8 = 10;
/// The order is another strategy's, or another client's.
pub const REASON_NOT_ITS_ORDER: u8 = 11;
/// The strategy's queue in the executor is full (the update-side twin of [`STATUS_BUSY`]).
pub const REASON_BUSY: u8 = 12;
/// The plugin was stopped (swap, removal) before its intent was served.
pub const REASON_REVOKED: u8 = 13;
/// The daemon is stopping.
pub const REASON_SHUTDOWN: u8 = 14;
/// The exchange refused the daemon's API key; the daemon is stopping.
pub const REASON_KEY_REFUSED: u8 = 15;
/// Not sent: a local error (`NOT_DONE` also says the exchange never got it).
pub const REASON_NOT_SENT: u8 = 16;
/// `UPDATE_UNRESOLVED`: the daemon could not learn what became of it.
pub const REASON_UNRESOLVED: u8 = 17;
/// The exchange said no for another reason: `code` is its error code.
pub const REASON_REJECTED: u8 = 18;

/// Best bid and ask of a symbol, from the executor's poll.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Price {
    pub symbol: Str,
    pub bid: Str,
    pub ask: Str,
}

/// One price level of a book.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Level {
    pub price: Str,
    pub qty: Str,
}

/// `on_book` (since 1.5): a symbol's local order book after a change, its best levels each
/// side, best first (at most the plugin's `book_depth`, default 5, 1 to 20). A symbol's books
/// come in increasing `update_id`; conflated: a busy plugin gets only the newest, and
/// `skipped` counts this symbol's books it did not get since the previous one.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Book {
    pub update_id: u64,
    /// The exchange's event time of the last diff applied (ms since the epoch; 0 unknown).
    pub event_time_ms: i64,
    /// When the daemon read that frame (ms since the epoch).
    pub received_ms: i64,
    pub skipped: u64,
    pub symbol: Str,
    pub bids: *const Level,
    pub bid_count: usize,
    pub asks: *const Level,
    pub ask_count: usize,
}

/// `on_trade` (since 1.5): one public trade of a symbol. Trades queue (1024 per plugin); when
/// the queue is full the oldest go and `dropped` counts them, just before this one.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Trade {
    pub trade_id: u64,
    pub time_ms: i64,
    pub event_time_ms: i64,
    pub received_ms: i64,
    pub dropped: u64,
    pub symbol: Str,
    pub price: Str,
    pub qty: Str,
    /// 1: the buyer was the maker (the taker sold).
    pub buyer_maker: u8,
    pub _reserved: [u8; 7],
}

/// One asset's balance.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Balance {
    pub asset: Str,
    pub free: Str,
    pub locked: Str,
}

/// What `start` gets. `snapshot` is JSON: `{"symbols":{...exchangeInfo rules...},
/// "balances":[{"asset","free","locked"}], "open_orders":[{"symbol","order_id",
/// "client_order_id","side","price","orig_qty","executed_qty"}]}` with exact decimal strings.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Start {
    pub name: Str,
    /// The plugin's `NAME.conf`: `key = value` lines, as written.
    pub settings: Str,
    pub snapshot: Str,
}

pub const INTENT_PLACE: u8 = 0;
pub const INTENT_CANCEL: u8 = 1;
pub const INTENT_CANCEL_ALL: u8 = 2;
pub const INTENT_REPLACE: u8 = 3;

/// An intent from the plugin. For cancel and replace, `order_id` (non-zero) or
/// `client_order_id` (non-empty) names the order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Intent {
    pub kind: u8,
    pub side: u8,
    pub _reserved: [u8; 6],
    pub order_id: u64,
    pub symbol: Str,
    pub price: Str,
    pub qty: Str,
    pub client_order_id: Str,
}

pub const LOG_ERROR: i32 = 1;
pub const LOG_WARN: i32 = 2;
pub const LOG_INFO: i32 = 3;
pub const LOG_DEBUG: i32 = 4;

/// The host's table, valid from `create` to `destroy`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HostV1 {
    pub abi_major: u32,
    pub abi_minor: u32,
    pub size: u32,
    pub _reserved: u32,
    pub ctx: *mut c_void,
    /// Queues an intent; writes its request id. Its outcome arrives as `on_order`.
    pub submit: unsafe extern "C" fn(ctx: *mut c_void, intent: *const Intent, request: *mut u64) -> Status,
    /// Logs through the daemon's logger, under the plugin's name.
    pub log: unsafe extern "C" fn(ctx: *mut c_void, level: i32, msg: Str),
    /// Calls `sink(user, json)` once with the current rules of `symbol` (exchangeInfo's
    /// symbol object as JSON) during this call; `STATUS_REFUSED` for an unknown symbol.
    pub rules: unsafe extern "C" fn(
        ctx: *mut c_void,
        symbol: Str,
        sink: Option<unsafe extern "C" fn(user: *mut c_void, json: Str)>,
        user: *mut c_void,
    ) -> Status,
}

/// A plugin's table: static data in the plugin. `version`, `create` and `destroy` come first
/// and are required; every callback after them may be absent (null), and a table from an
/// older minor version simply ends earlier (its `size` says where).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PluginV1 {
    pub abi_major: u32,
    pub abi_minor: u32,
    pub size: u32,
    pub _reserved: u32,
    /// The plugin's version string (static).
    pub version: Str,
    /// Makes the plugin's state; null means it could not.
    pub create: unsafe extern "C" fn(host: *const HostV1) -> *mut c_void,
    pub destroy: unsafe extern "C" fn(state: *mut c_void),
    pub start: Option<unsafe extern "C" fn(state: *mut c_void, start: *const Start) -> Status>,
    pub on_fill: Option<unsafe extern "C" fn(state: *mut c_void, fill: *const Fill) -> Status>,
    pub on_order: Option<unsafe extern "C" fn(state: *mut c_void, update: *const OrderUpdate) -> Status>,
    pub on_price: Option<unsafe extern "C" fn(state: *mut c_void, price: *const Price) -> Status>,
    pub on_balance: Option<unsafe extern "C" fn(state: *mut c_void, balance: *const Balance) -> Status>,
    pub on_tick: Option<unsafe extern "C" fn(state: *mut c_void, now_ms: i64) -> Status>,
    pub stop: Option<unsafe extern "C" fn(state: *mut c_void) -> Status>,
    /// Since 1.5; null: no books are sent (and none are kept for it).
    pub on_book: Option<unsafe extern "C" fn(state: *mut c_void, book: *const Book) -> Status>,
    /// Since 1.5; null: no public trades are sent.
    pub on_trade: Option<unsafe extern "C" fn(state: *mut c_void, trade: *const Trade) -> Status>,
}

/// Bytes of a [`PluginV1`] every plugin must provide: the header, `version`, `create`, `destroy`.
pub const PLUGIN_REQUIRED_SIZE: usize = std::mem::offset_of!(PluginV1, start);

// SAFETY: a plugin table is immutable static data; the pointers in it are functions and a
// static string, safe to read from any thread.
unsafe impl Sync for PluginV1 {}
// SAFETY: as above; the host copies the table onto the plugin's thread.
unsafe impl Send for PluginV1 {}

/// Every `REASON_*` by name, for the header's test and the SDK's `Reason`.
pub const REASONS: &[(&str, u8)] = &[
    ("REASON_NONE", REASON_NONE),
    ("REASON_OTHER", REASON_OTHER),
    ("REASON_SYMBOL", REASON_SYMBOL),
    ("REASON_FILTER", REASON_FILTER),
    ("REASON_CROSSES_BOOK", REASON_CROSSES_BOOK),
    ("REASON_BALANCE", REASON_BALANCE),
    ("REASON_MAX_OPEN_ORDERS", REASON_MAX_OPEN_ORDERS),
    ("REASON_ORDER_RATE", REASON_ORDER_RATE),
    ("REASON_ORDER_NOTIONAL", REASON_ORDER_NOTIONAL),
    ("REASON_SYMBOL_NOTIONAL", REASON_SYMBOL_NOTIONAL),
    ("REASON_UNKNOWN_ORDER", REASON_UNKNOWN_ORDER),
    ("REASON_NOT_ITS_ORDER", REASON_NOT_ITS_ORDER),
    ("REASON_BUSY", REASON_BUSY),
    ("REASON_REVOKED", REASON_REVOKED),
    ("REASON_SHUTDOWN", REASON_SHUTDOWN),
    ("REASON_KEY_REFUSED", REASON_KEY_REFUSED),
    ("REASON_NOT_SENT", REASON_NOT_SENT),
    ("REASON_UNRESOLVED", REASON_UNRESOLVED),
    ("REASON_REJECTED", REASON_REJECTED),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The Rust value of one `SYNCD_LAYOUT(...)` expression of the C header.
    fn rust_layout(what: &str) -> Option<usize> {
        macro_rules! table {
            ($($c:literal => $t:ty { $($f:ident),* }),* $(,)?) => {
                $(
                    if what == concat!("sizeof(", $c, ")") {
                        return Some(size_of::<$t>());
                    }
                    $(
                        if what == concat!("offsetof(", $c, ", ", stringify!($f), ")") {
                            return Some(offset_of!($t, $f));
                        }
                    )*
                )*
            };
        }
        table!(
            "syncd_str" => Str { ptr, len },
            "syncd_fill" => Fill { seq, trade_id, order_id, time_ms, symbol, client_order_id, price, qty,
                quote_qty, commission, commission_asset, side, maker, replayed, own },
            "syncd_order_update" => OrderUpdate { request, order_id, code, symbol, client_order_id, price, qty,
                status, reason, kind, side, resolved, reason_code },
            "syncd_price" => Price { symbol, bid, ask },
            "syncd_level" => Level { price, qty },
            "syncd_book" => Book { update_id, event_time_ms, received_ms, skipped, symbol, bids, bid_count, asks,
                ask_count },
            "syncd_trade" => Trade { trade_id, time_ms, event_time_ms, received_ms, dropped, symbol, price, qty,
                buyer_maker },
            "syncd_balance" => Balance { asset, free, locked },
            "syncd_start" => Start { name, settings, snapshot },
            "syncd_intent" => Intent { kind, side, order_id, symbol, price, qty, client_order_id },
            "syncd_host_v1" => HostV1 { abi_major, abi_minor, size, ctx, submit, log, rules },
            "syncd_plugin_v1" => PluginV1 { abi_major, abi_minor, size, version, create, destroy, start, on_fill,
                on_order, on_price, on_balance, on_tick, stop, on_book, on_trade },
        );
        None
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_c_headers_layout_assertions_match_the_rust_types() {
        let header = include_str!("../../include/binance_syncd_plugin.h");
        let mut sizes = Vec::new();
        for line in header.lines().filter_map(|l| l.strip_prefix("SYNCD_LAYOUT(")?.strip_suffix(");")) {
            let (what, n) = line.rsplit_once(", ").unwrap_or_else(|| panic!("unreadable: {line}"));
            let n: usize = n.parse().unwrap_or_else(|_| panic!("unreadable: {line}"));
            let rust = rust_layout(what).unwrap_or_else(|| panic!("no Rust counterpart for {what}"));
            assert_eq!(rust, n, "{what}: the header says {n}, the Rust type {rust}");
            if let Some(t) = what.strip_prefix("sizeof(") {
                sizes.push(t.trim_end_matches(')').to_string());
            }
        }
        // Every type that crosses has its size asserted.
        for t in [
            "syncd_str",
            "syncd_fill",
            "syncd_order_update",
            "syncd_price",
            "syncd_level",
            "syncd_book",
            "syncd_trade",
            "syncd_balance",
            "syncd_start",
            "syncd_intent",
            "syncd_host_v1",
            "syncd_plugin_v1",
        ] {
            assert!(sizes.iter().any(|s| s == t), "no sizeof({t}) assertion in the header");
        }
    }

    #[test]
    fn the_headers_numbers_are_the_rust_ones() {
        let header = include_str!("../../include/binance_syncd_plugin.h");
        let define = |name: &str| -> Option<i64> {
            header.lines().find_map(|l| {
                let rest = l.strip_prefix("#define ")?.strip_prefix(name)?.trim();
                rest.trim_matches(|c| c == '(' || c == ')').parse().ok()
            })
        };
        assert_eq!(define("SYNCD_ABI_MINOR"), Some(i64::from(ABI_MINOR)));
        assert_eq!(define("SYNCD_STATUS_REFUSED"), Some(i64::from(STATUS_REFUSED)));
        assert_eq!(define("SYNCD_STATUS_BUSY"), Some(i64::from(STATUS_BUSY)));
        for (name, value) in REASONS {
            assert_eq!(define(&format!("SYNCD_{name}")), Some(i64::from(*value)), "SYNCD_{name}");
        }
        // Every SYNCD_REASON_ of the header is one of them.
        let in_header = header.lines().filter(|l| l.starts_with("#define SYNCD_REASON_")).count();
        assert_eq!(in_header, REASONS.len());
    }
}
