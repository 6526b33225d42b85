#!/usr/bin/env bash
# Runs the demo with metrics on, a real Prometheus (Debian's `prometheus` package) scraping it
# every second, and captures Prometheus's graph page with headless Chromium:
#   deploy/prometheus/demo-graph.sh [OUT.png] [DEMO_SECONDS]
# Needs: target/release/binance-syncd (cargo build --release --workspace), prometheus, chromium.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-docs/demo-metrics.png}"
seconds="${2:-60}"
bin=target/release/binance-syncd
for tool in prometheus chromium "$bin"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool" >&2; exit 1; }
done
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/prometheus.yml" <<EOF
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: binance-syncd
    static_configs: [ { targets: ["127.0.0.1:9464"] } ]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address=127.0.0.1:9090 >"$work/prometheus.log" 2>&1 &
SYNCD_METRICS_ADDR=127.0.0.1:9464 RUST_LOG=warn "$bin" demo --seconds "$seconds" --dir "$work/demo" --quiet \
    | tee "$work/demo.log" &
demo=$!
# Capture while the demo still runs (its daemon stops at the end): 5 s before it finishes.
sleep $((seconds - 5))
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }
range="$((seconds - 5))s"
url="http://127.0.0.1:9090/graph?"
i=0
for q in \
    'sum by (source) (rate(syncd_fills_total[10s])) * 60' \
    'histogram_quantile(0.99, sum by (le) (rate(syncd_fill_latency_seconds_bucket[10s])))' \
    'syncd_stream_up' \
    'syncd_rest_weight_used{interval="1m"}'; do
    url+="g$i.expr=$(enc "$q")&g$i.tab=0&g$i.range_input=$range&"
    i=$((i + 1))
done
mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --user-data-dir="$work/chrome" --hide-scrollbars \
    --window-size=1400,3100 --virtual-time-budget=15000 --screenshot="$out" "$url" 2>"$work/chrome.log"
wait "$demo"
echo "saved $out"
