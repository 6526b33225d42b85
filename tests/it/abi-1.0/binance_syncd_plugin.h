/* The plugin ABI header as released at 1.0 (commit 83a8b90), kept for tests/it/plugins.rs:
 * a plugin built against it must keep loading and get nothing 1.0 did not know.
 *
 * binance-syncd strategy plugin ABI, version 1 (C).
 *
 * The same types as plugins/sdk/src/abi.rs. A plugin exports one symbol:
 *     const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *host);
 * Both tables start with abi_major, abi_minor, size: the host refuses another major version,
 * and within a major fields are only added at the end. Strings are UTF-8 pointer + length,
 * valid for the duration of the call that passes them. Prices and quantities are exact decimal
 * strings: no floating point crosses. Every callback returns a status (0 ok, negative error);
 * an error disables the plugin until its file changes. Memory is freed by whoever allocated it.
 */
#ifndef BINANCE_SYNCD_PLUGIN_H
#define BINANCE_SYNCD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define SYNCD_ABI_MAJOR 1
#define SYNCD_ABI_MINOR 0

#define SYNCD_STATUS_OK 0
#define SYNCD_STATUS_PANICKED (-1)
#define SYNCD_STATUS_ERROR (-2)
#define SYNCD_STATUS_REFUSED (-3)

#define SYNCD_SIDE_BUY 0
#define SYNCD_SIDE_SELL 1

#define SYNCD_UPDATE_PLACED 0
#define SYNCD_UPDATE_CANCELED 1
#define SYNCD_UPDATE_REPLACED 2
#define SYNCD_UPDATE_REFUSED 3
#define SYNCD_UPDATE_REJECTED 4
#define SYNCD_UPDATE_UNKNOWN 5
#define SYNCD_UPDATE_NOT_DONE 6
#define SYNCD_UPDATE_CANCELED_ALL 7

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
    uint8_t side, maker, replayed, _reserved;
} syncd_fill;

typedef struct {
    uint64_t request, order_id;
    int64_t code;
    syncd_str symbol, client_order_id, price, qty, status, reason;
    uint8_t kind, side, resolved, _reserved[5];
} syncd_order_update;

typedef struct { syncd_str symbol, bid, ask; } syncd_price;
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
} syncd_plugin_v1;

const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *host);

#endif
