#!/usr/bin/env bash
# What ships, measured (issue 9): the release binary's size, its dynamic dependencies (`ldd`:
# only the C library family, no OpenSSL), the newest glibc symbol version it needs (the
# oldest glibc it runs on), then its idle RSS and fill latency with metrics on (below).
#
#   bash deploy/measure.sh            # builds target/release/binance-syncd first
#   bash deploy/measure.sh PATH       # measures PATH as it is
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-}"
if [ -z "$bin" ]; then
    cargo build --release --locked -p binance-syncd --bin binance-syncd >&2
    bin="${CARGO_TARGET_DIR:-target}/release/binance-syncd"
fi

size=$(stat -c %s "$bin")
echo "binary:        $bin"
echo "size:          $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }') MiB; target < 8 MiB)"
if [ "$size" -ge $((8 * 1024 * 1024)) ]; then
    echo "size: OVER the 8 MiB target" >&2
    status=1
fi
echo "ldd:"
ldd "$bin" | sed 's/^/    /'
# Anything outside libc, libm, libgcc_s, ld-linux and the vDSO is a dependency the host must have.
if ldd "$bin" | grep -vE 'linux-vdso|libc\.so|libm\.so|libgcc_s\.so|ld-linux|libdl\.so|libpthread\.so|librt\.so' | grep -q '\S'; then
    echo "ldd: a library outside the C library family" >&2
    status=1
fi
if command -v objdump >/dev/null; then
    glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)
    echo "glibc needed:  ${glibc#GLIBC_} or newer (built against $(ldd --version | head -1 | awk '{ print $NF }'))"
fi
strip_state=$(file -b "$bin" 2>/dev/null | grep -o 'not stripped\|stripped' || true)
[ -n "$strip_state" ] && echo "symbols:       $strip_state"

# Idle RSS with SYNCD_METRICS_ADDR set and /metrics scraped every second, one scrape's time,
# and the fill-latency histogram's p50/p99 after the demo (benches/metrics.rs, about a minute).
# MEASURE_QUICK=1 leaves them out.
if [ -z "${MEASURE_QUICK:-}" ] && [ -z "${1:-}" ]; then
    cargo bench --quiet --bench metrics 2>/dev/null | grep -E '^(idle RSS|one scrape|demo: (fill latency|[0-9]+ trades))' \
        || { echo "metrics bench failed" >&2; status=1; }
fi

exit "${status:-0}"
