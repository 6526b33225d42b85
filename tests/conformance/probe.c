/* A C plugin that uses every host function once per kind of call, for
 * `binance-syncd conformance` through the .so host (tests/it/conformance.rs): each intent
 * kind, rules of a traded symbol and of one not traded, a log line at every level, and every
 * callback of ABI 1.5. It trades nothing sensible.
 * Build: cc -shared -fPIC -I plugins/include -o probe.so tests/conformance/probe.c */
#include "binance_syncd_plugin.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const syncd_host_v1 *host;
    int rules_seen;
} state_t;

static syncd_str str_of(const char *s) { syncd_str r = { (const uint8_t *)s, strlen(s) }; return r; }

static void say(state_t *s, int32_t level, const char *what, syncd_status st, uint64_t request) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s: status %d, request %llu", what, (int)st, (unsigned long long)request);
    s->host->log(s->host->ctx, level, str_of(msg));
}

/* One intent; a refusal (BUSY included) is logged and not retried in this call. */
static void submit(state_t *s, const char *what, uint8_t kind, uint8_t side, uint64_t order_id,
                   const char *price, const char *qty) {
    syncd_intent in;
    memset(&in, 0, sizeof in);
    in.kind = kind;
    in.side = side;
    in.order_id = order_id;
    in.symbol = str_of("BTCUSD");
    in.price = str_of(price);
    in.qty = str_of(qty);
    in.client_order_id = str_of("");
    uint64_t request = 0;
    syncd_status st = s->host->submit(s->host->ctx, &in, &request);
    say(s, st == SYNCD_STATUS_OK ? SYNCD_LOG_DEBUG : SYNCD_LOG_WARN, what, st, request);
}

static void *create(const syncd_host_v1 *host) {
    state_t *s = calloc(1, sizeof(state_t));
    if (s) s->host = host;
    return s;
}

static void destroy(void *p) { free(p); }

static void count_rules(void *user, syncd_str json) {
    state_t *s = user;
    if (json.len > 0) s->rules_seen++;
}

static syncd_status start(void *p, const syncd_start *st) {
    state_t *s = p;
    (void)st;
    s->host->log(s->host->ctx, SYNCD_LOG_INFO, str_of("probe started"));
    syncd_status known = s->host->rules(s->host->ctx, str_of("BTCUSD"), count_rules, s);
    syncd_status unknown = s->host->rules(s->host->ctx, str_of("NOPEUSD"), count_rules, s);
    if (known != SYNCD_STATUS_OK || unknown == SYNCD_STATUS_OK || s->rules_seen != 1) return SYNCD_STATUS_ERROR;
    return SYNCD_STATUS_OK;
}

static syncd_status on_tick(void *p, int64_t now_ms) {
    (void)now_ms;
    submit(p, "place", SYNCD_INTENT_PLACE, SYNCD_SIDE_BUY, 0, "59000.00", "0.001");
    return SYNCD_STATUS_OK;
}

static syncd_status on_price(void *p, const syncd_price *price) {
    (void)price;
    submit(p, "cancel", SYNCD_INTENT_CANCEL, SYNCD_SIDE_BUY, 1400, "", "");
    return SYNCD_STATUS_OK;
}

static syncd_status on_balance(void *p, const syncd_balance *b) {
    (void)b;
    submit(p, "cancel all", SYNCD_INTENT_CANCEL_ALL, SYNCD_SIDE_BUY, 0, "", "");
    return SYNCD_STATUS_OK;
}

static syncd_status on_fill(void *p, const syncd_fill *f) {
    submit(p, "replace", SYNCD_INTENT_REPLACE, f->side, f->order_id, "59990.00", "0.01");
    return SYNCD_STATUS_OK;
}

static syncd_status on_order(void *p, const syncd_order_update *u) {
    char msg[96];
    snprintf(msg, sizeof msg, "order kind %u of request %llu", (unsigned)u->kind, (unsigned long long)u->request);
    ((state_t *)p)->host->log(((state_t *)p)->host->ctx, SYNCD_LOG_DEBUG, str_of(msg));
    return SYNCD_STATUS_OK;
}

static syncd_status on_book(void *p, const syncd_book *b) {
    state_t *s = p;
    s->host->log(s->host->ctx, SYNCD_LOG_DEBUG, b->bid_count > 0 ? str_of("book with bids") : str_of("empty book"));
    return SYNCD_STATUS_OK;
}

static syncd_status on_trade(void *p, const syncd_trade *t) {
    state_t *s = p;
    (void)t;
    s->host->log(s->host->ctx, SYNCD_LOG_DEBUG, str_of("trade"));
    return SYNCD_STATUS_OK;
}

static syncd_status stop(void *p) {
    state_t *s = p;
    s->host->log(s->host->ctx, SYNCD_LOG_ERROR, str_of("probe stopping (logged as an error to use every level)"));
    return SYNCD_STATUS_OK;
}

static const char VERSION[] = "c probe 1";

static syncd_plugin_v1 table = {
    SYNCD_ABI_MAJOR, SYNCD_ABI_MINOR, sizeof(syncd_plugin_v1), 0,
    { (const uint8_t *)VERSION, sizeof VERSION - 1 },
    create, destroy,
    start, on_fill, on_order, on_price, on_balance, on_tick, stop, on_book, on_trade,
};

const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *host) {
    (void)host;
    return &table;
}
