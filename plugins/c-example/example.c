/* A binance-syncd plugin in C: counts fills and logs each through the daemon.
 * Build: cc -shared -fPIC -I plugins/include -o c_example.so plugins/c-example/example.c
 * Settings: `record = PATH` appends one `fill SEQ` line per fill to PATH.
 */
#include "binance_syncd_plugin.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const syncd_host_v1 *host;
    FILE *record;
    uint64_t fills;
} state_t;

static syncd_str str_of(const char *s) { syncd_str r = { (const uint8_t *)s, strlen(s) }; return r; }

static void *create(const syncd_host_v1 *host) {
    state_t *s = calloc(1, sizeof(state_t));
    if (s) s->host = host;
    return s;
}

static void destroy(void *p) {
    state_t *s = p;
    if (s && s->record) fclose(s->record);
    free(s);
}

/* Finds `key = value` in the settings text; copies the value into out. */
static int setting(syncd_str settings, const char *key, char *out, size_t cap) {
    size_t klen = strlen(key), i = 0;
    while (i < settings.len) {
        size_t end = i;
        while (end < settings.len && settings.ptr[end] != '\n') end++;
        const char *line = (const char *)settings.ptr + i;
        size_t len = end - i, k = 0;
        while (k < len && line[k] == ' ') k++;
        if (len - k > klen && memcmp(line + k, key, klen) == 0) {
            size_t v = k + klen;
            while (v < len && (line[v] == ' ' || line[v] == '=')) v++;
            size_t n = len - v < cap - 1 ? len - v : cap - 1;
            memcpy(out, line + v, n);
            out[n] = 0;
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

static syncd_status start(void *p, const syncd_start *st) {
    state_t *s = p;
    char path[1024];
    if (setting(st->settings, "record", path, sizeof path)) {
        s->record = fopen(path, "a");
        if (!s->record) return SYNCD_STATUS_ERROR;
    }
    s->host->log(s->host->ctx, SYNCD_LOG_INFO, str_of("c-example started"));
    return SYNCD_STATUS_OK;
}

static syncd_status on_fill(void *p, const syncd_fill *f) {
    state_t *s = p;
    char msg[128];
    s->fills++;
    snprintf(msg, sizeof msg, "c-example: fill #%llu (%llu so far)", (unsigned long long)f->seq, (unsigned long long)s->fills);
    s->host->log(s->host->ctx, SYNCD_LOG_INFO, str_of(msg));
    if (s->record) {
        fprintf(s->record, "fill c %llu %u\n", (unsigned long long)f->seq, (unsigned)f->replayed);
        fflush(s->record);
    }
    return SYNCD_STATUS_OK;
}

static const char VERSION[] = "c-example 1";

static syncd_plugin_v1 table = {
    SYNCD_ABI_MAJOR, SYNCD_ABI_MINOR, sizeof(syncd_plugin_v1), 0,
    { (const uint8_t *)VERSION, sizeof VERSION - 1 },
    create, destroy,
    start, on_fill, NULL, NULL, NULL, NULL, NULL,
};

const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *host) {
    (void)host;
    return &table;
}
