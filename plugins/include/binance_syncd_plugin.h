/* binance-syncd strategy plugin ABI, version 1 (C).
 *
 * The same types as plugins/sdk/src/abi.rs. A plugin exports one symbol:
 *     const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *host);
 * Both tables start with abi_major, abi_minor, size: the host refuses another major version,
 * and within a major fields are only added at the end (or in bytes that were reserved and
 * zero). The host sends a plugin only what the minor in its table knows: an update kind,
 * status or field added later is withheld or replaced as its #define says (1.5: on_book and
 * on_trade, the market as it moves, only to a plugin whose table has them). Strings are UTF-8 pointer + length,
 * valid for the duration of the call that passes them. Prices and quantities are exact decimal
 * strings: no floating point crosses. Every callback returns a status (0 ok, negative error);
 * an error disables the plugin until its file changes. Memory is freed by whoever allocated it.
 */
#ifndef BINANCE_SYNCD_PLUGIN_H
#define BINANCE_SYNCD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
/* A C++ plugin's entry symbol keeps its C name: syncd_plugin_entry_v1, not a mangled one. */
extern "C" {
#endif

#define SYNCD_ABI_MAJOR 1
#define SYNCD_ABI_MINOR 5

#define SYNCD_STATUS_OK 0
#define SYNCD_STATUS_PANICKED (-1)
#define SYNCD_STATUS_ERROR (-2)
#define SYNCD_STATUS_REFUSED (-3)
/* submit (1.3): nothing was queued, try again from a later callback: the plugin's budget of
 * intents not yet answered to it is spent (the answers to earlier ones, order updates after
 * this callback, free it), or the daemon's order queue is full (busy, or held by a 429), or
 * the plugin is paused. SYNCD_STATUS_REFUSED from submit means never: a malformed intent or
 * a plugin being stopped. A plugin declaring an older minor gets SYNCD_STATUS_REFUSED. */
#define SYNCD_STATUS_BUSY (-4)

#define SYNCD_SIDE_BUY 0
#define SYNCD_SIDE_SELL 1

#define SYNCD_UPDATE_PLACED 0
#define SYNCD_UPDATE_CANCELED 1
#define SYNCD_UPDATE_REPLACED 2
#define SYNCD_UPDATE_REFUSED 3
#define SYNCD_UPDATE_REJECTED 4
/* the request may or may not have taken effect; a second update (resolved = 1) follows */
#define SYNCD_UPDATE_UNKNOWN 5
/* the exchange never got it: only sent when that is known */
#define SYNCD_UPDATE_NOT_DONE 6
#define SYNCD_UPDATE_CANCELED_ALL 7
/* request 0: the stream's report of one of the plugin's orders (ABI 1.1; a plugin whose table
 * says minor 0 gets no reports: its fills still come to on_fill) */
#define SYNCD_UPDATE_REPORT 8
/* resolved = 1: the lookups of an UNKNOWN gave up; the order client_order_id may or may not
 * exist, is never sent again and counts as open against the plugin's limits until the daemon
 * knows. Watch for REPORTs of that client id rather than placing it again (ABI 1.2; a plugin
 * whose table says minor 0 or 1 gets a resolved UNKNOWN instead). */
#define SYNCD_UPDATE_UNRESOLVED 9

/* syncd_order_update.reason_code (ABI 1.4): why, as a number, for REFUSED, REJECTED,
 * NOT_DONE and UNRESOLVED; status and reason say it in words (for people: do not match them).
 * A plugin whose table says a minor below 4 gets SYNCD_REASON_NONE (the byte was reserved).
 * Match the codes you act on and treat any other, including one added later, as OTHER. */
#define SYNCD_REASON_NONE 0
#define SYNCD_REASON_OTHER 1
/* not one of SYNCD_SYMBOLS, or unknown to the exchange */
#define SYNCD_REASON_SYMBOL 2
/* an exchange filter or the symbol's precision (status names it: LOT_SIZE, ...), also an
 * exchange rejection -1013 or -1111 */
#define SYNCD_REASON_FILTER 3
/* a maker order that would cross the book and take: refused here, or rejected -2010 by the
 * exchange because the book moved on the way */
#define SYNCD_REASON_CROSSES_BOOK 4
#define SYNCD_REASON_BALANCE 5
/* the strategy's limits: max open orders, max orders per 10 s (the same order later may
 * pass), max order notional, max symbol notional */
#define SYNCD_REASON_MAX_OPEN_ORDERS 6
#define SYNCD_REASON_ORDER_RATE 7
#define SYNCD_REASON_ORDER_NOTIONAL 8
#define SYNCD_REASON_SYMBOL_NOTIONAL 9
/* cancel/replace: no such open order; the order is another strategy's or client's */
#define SYNCD_REASON_UNKNOWN_ORDER 10
#define SYNCD_REASON_NOT_ITS_ORDER 11
/* the strategy's queue in the executor is full (submit's SYNCD_STATUS_BUSY is the same
 * budget seen earlier) */
#define SYNCD_REASON_BUSY 12
/* the plugin was stopped before its intent was served; the daemon is stopping; the exchange
 * refused the daemon's API key (the daemon is stopping) */
#define SYNCD_REASON_REVOKED 13
#define SYNCD_REASON_SHUTDOWN 14
#define SYNCD_REASON_KEY_REFUSED 15
/* nothing reached the exchange (a local error; NOT_DONE) */
#define SYNCD_REASON_NOT_SENT 16
/* UPDATE_UNRESOLVED: the daemon could not learn what became of it */
#define SYNCD_REASON_UNRESOLVED 17
/* the exchange said no for another reason: code is its error code */
#define SYNCD_REASON_REJECTED 18

#define SYNCD_INTENT_PLACE 0
#define SYNCD_INTENT_CANCEL 1
#define SYNCD_INTENT_CANCEL_ALL 2
#define SYNCD_INTENT_REPLACE 3

#define SYNCD_LOG_ERROR 1
#define SYNCD_LOG_WARN 2
#define SYNCD_LOG_INFO 3
#define SYNCD_LOG_DEBUG 4

typedef int32_t syncd_status;

typedef struct { const uint8_t *ptr; size_t len; } syncd_str;

typedef struct {
    uint64_t seq, trade_id, order_id;
    int64_t time_ms;
    syncd_str symbol, client_order_id, price, qty, quote_qty, commission, commission_asset;
    /* own (ABI 1.4): 1 when this daemon placed the order (its instance's client ids, any
     * strategy's), 0 for another client's, the web UI's or another daemon's. A plugin whose
     * table says a minor below 4 gets 0 (the byte was reserved). */
    uint8_t side, maker, replayed, own;
} syncd_fill;

typedef struct {
    uint64_t request, order_id;
    int64_t code;
    syncd_str symbol, client_order_id, price, qty, status, reason;
    /* reason_code (ABI 1.4): a SYNCD_REASON_; 0 for a plugin whose table says a minor below 4 */
    uint8_t kind, side, resolved, reason_code, _reserved[4];
} syncd_order_update;

typedef struct { syncd_str symbol, bid, ask; } syncd_price;

/* One price level of a book: exact decimal strings. */
typedef struct { syncd_str price, qty; } syncd_level;

/* on_book (ABI 1.5): a symbol's local order book (kept from the exchange's depth stream and
 * snapshots) after a change, its best levels each side, best first: bid_count and ask_count
 * are at most the plugin's book_depth setting (NAME.conf, default 5, 1 to 20), fewer when the
 * book is thinner. Books of a symbol come in increasing update_id. Conflated: a plugin still
 * busy with earlier callbacks gets only the newest book of each symbol; skipped says how many
 * of this symbol's books it did not get since the previous one. event_time_ms is the
 * exchange's event time of the last diff applied (0 unknown), received_ms the local time its
 * frame was read (both ms since the epoch): their difference is the feed's delay. */
typedef struct {
    uint64_t update_id;
    int64_t event_time_ms, received_ms;
    uint64_t skipped;
    syncd_str symbol;
    const syncd_level *bids;
    size_t bid_count;
    const syncd_level *asks;
    size_t ask_count;
} syncd_book;

/* on_trade (ABI 1.5): one public trade of a symbol (anyone's), in the exchange's order.
 * buyer_maker: 1 when the buyer was the maker (the taker sold). Trades wait in a queue of
 * 1024 per plugin; when it is full the oldest go, and dropped says how many went (of any
 * symbol) just before this one. */
typedef struct {
    uint64_t trade_id;
    int64_t time_ms, event_time_ms, received_ms;
    uint64_t dropped;
    syncd_str symbol, price, qty;
    uint8_t buyer_maker, _reserved[7];
} syncd_trade;
typedef struct { syncd_str asset, free, locked; } syncd_balance;
typedef struct { syncd_str name, settings, snapshot; } syncd_start;

typedef struct {
    uint8_t kind, side, _reserved[6];
    uint64_t order_id;
    syncd_str symbol, price, qty, client_order_id;
} syncd_intent;

typedef struct syncd_host_v1 {
    uint32_t abi_major, abi_minor, size, _reserved;
    void *ctx;
    syncd_status (*submit)(void *ctx, const syncd_intent *intent, uint64_t *request);
    void (*log)(void *ctx, int32_t level, syncd_str msg);
    /* sink must not be NULL (NULL is refused). */
    syncd_status (*rules)(void *ctx, syncd_str symbol, void (*sink)(void *user, syncd_str json), void *user);
} syncd_host_v1;

typedef struct syncd_plugin_v1 {
    uint32_t abi_major, abi_minor, size, _reserved;
    syncd_str version;
    void *(*create)(const syncd_host_v1 *host);
    void (*destroy)(void *state);
    /* Optional from here on: NULL means "not interested". */
    syncd_status (*start)(void *state, const syncd_start *start);
    syncd_status (*on_fill)(void *state, const syncd_fill *fill);
    syncd_status (*on_order)(void *state, const syncd_order_update *update);
    syncd_status (*on_price)(void *state, const syncd_price *price);
    syncd_status (*on_balance)(void *state, const syncd_balance *balance);
    syncd_status (*on_tick)(void *state, int64_t now_ms);
    syncd_status (*stop)(void *state);
    /* ABI 1.5: the market as it moves. Leave NULL to get none (it then costs nothing): a
     * plugin with on_book gets books, one with on_trade public trades, of every symbol the
     * daemon trades, while the daemon's market stream (SYNCD_MARKET_STREAM) is up. on_price
     * keeps coming at each tick either way. */
    syncd_status (*on_book)(void *state, const syncd_book *book);
    syncd_status (*on_trade)(void *state, const syncd_trade *trade);
} syncd_plugin_v1;

const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *host);

/* The layout the daemon reads (plugins/sdk/src/abi.rs), checked where the plugin is compiled:
 * a build for LP64 (Linux x86_64, aarch64) whose layout differs fails here rather than
 * misreading fields at run time. A test of the SDK reads these lines and checks them against
 * the Rust types. */
#ifdef __cplusplus
#define SYNCD_LAYOUT(what, n) static_assert((what) == (n), #what)
#else
#define SYNCD_LAYOUT(what, n) _Static_assert((what) == (n), #what)
#endif
#if UINTPTR_MAX == 0xFFFFFFFFFFFFFFFFu
SYNCD_LAYOUT(sizeof(syncd_str), 16);
SYNCD_LAYOUT(offsetof(syncd_str, len), 8);
SYNCD_LAYOUT(sizeof(syncd_fill), 152);
SYNCD_LAYOUT(offsetof(syncd_fill, time_ms), 24);
SYNCD_LAYOUT(offsetof(syncd_fill, symbol), 32);
SYNCD_LAYOUT(offsetof(syncd_fill, commission_asset), 128);
SYNCD_LAYOUT(offsetof(syncd_fill, side), 144);
SYNCD_LAYOUT(offsetof(syncd_fill, maker), 145);
SYNCD_LAYOUT(offsetof(syncd_fill, replayed), 146);
SYNCD_LAYOUT(offsetof(syncd_fill, own), 147);
SYNCD_LAYOUT(sizeof(syncd_order_update), 128);
SYNCD_LAYOUT(offsetof(syncd_order_update, code), 16);
SYNCD_LAYOUT(offsetof(syncd_order_update, symbol), 24);
SYNCD_LAYOUT(offsetof(syncd_order_update, reason), 104);
SYNCD_LAYOUT(offsetof(syncd_order_update, kind), 120);
SYNCD_LAYOUT(offsetof(syncd_order_update, side), 121);
SYNCD_LAYOUT(offsetof(syncd_order_update, resolved), 122);
SYNCD_LAYOUT(offsetof(syncd_order_update, reason_code), 123);
SYNCD_LAYOUT(sizeof(syncd_price), 48);
SYNCD_LAYOUT(sizeof(syncd_level), 32);
SYNCD_LAYOUT(offsetof(syncd_level, qty), 16);
SYNCD_LAYOUT(sizeof(syncd_book), 80);
SYNCD_LAYOUT(offsetof(syncd_book, event_time_ms), 8);
SYNCD_LAYOUT(offsetof(syncd_book, received_ms), 16);
SYNCD_LAYOUT(offsetof(syncd_book, skipped), 24);
SYNCD_LAYOUT(offsetof(syncd_book, symbol), 32);
SYNCD_LAYOUT(offsetof(syncd_book, bids), 48);
SYNCD_LAYOUT(offsetof(syncd_book, bid_count), 56);
SYNCD_LAYOUT(offsetof(syncd_book, asks), 64);
SYNCD_LAYOUT(offsetof(syncd_book, ask_count), 72);
SYNCD_LAYOUT(sizeof(syncd_trade), 96);
SYNCD_LAYOUT(offsetof(syncd_trade, time_ms), 8);
SYNCD_LAYOUT(offsetof(syncd_trade, dropped), 32);
SYNCD_LAYOUT(offsetof(syncd_trade, symbol), 40);
SYNCD_LAYOUT(offsetof(syncd_trade, qty), 72);
SYNCD_LAYOUT(offsetof(syncd_trade, buyer_maker), 88);
SYNCD_LAYOUT(sizeof(syncd_balance), 48);
SYNCD_LAYOUT(sizeof(syncd_start), 48);
SYNCD_LAYOUT(sizeof(syncd_intent), 80);
SYNCD_LAYOUT(offsetof(syncd_intent, side), 1);
SYNCD_LAYOUT(offsetof(syncd_intent, order_id), 8);
SYNCD_LAYOUT(offsetof(syncd_intent, symbol), 16);
SYNCD_LAYOUT(offsetof(syncd_intent, client_order_id), 64);
SYNCD_LAYOUT(sizeof(syncd_host_v1), 48);
SYNCD_LAYOUT(offsetof(syncd_host_v1, ctx), 16);
SYNCD_LAYOUT(offsetof(syncd_host_v1, submit), 24);
SYNCD_LAYOUT(offsetof(syncd_host_v1, log), 32);
SYNCD_LAYOUT(offsetof(syncd_host_v1, rules), 40);
SYNCD_LAYOUT(sizeof(syncd_plugin_v1), 120);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, version), 16);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, create), 32);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, destroy), 40);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, start), 48);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, on_fill), 56);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, on_order), 64);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, on_price), 72);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, on_balance), 80);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, on_tick), 88);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, stop), 96);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, on_book), 104);
SYNCD_LAYOUT(offsetof(syncd_plugin_v1, on_trade), 112);
#endif

#ifdef __cplusplus
}
#endif

#endif
