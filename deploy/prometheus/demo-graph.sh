#!/usr/bin/env bash
# Runs the demo with metrics on, a real Prometheus (Debian's `prometheus` package) scraping it
# every second, and captures Prometheus's graph page with headless Chromium:
#   deploy/prometheus/demo-graph.sh [OUT.png] [DEMO_SECONDS]
# Needs: target/release/binance-syncd (cargo build --release --workspace), prometheus, chromium.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-docs/demo-metrics.png}"
seconds="${2:-60}"
# The capture is taken 5 s before the demo ends, after at least 5 s of data.
if [ "$seconds" -lt 10 ]; then
    echo "DEMO_SECONDS must be at least 10 (got $seconds)" >&2
    exit 2
fi
bin=target/release/binance-syncd
for tool in prometheus chromium curl python3 "$bin"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool" >&2; exit 1; }
done
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# Free ports, not 9090/9464: Debian's own prometheus service (or another daemon) may hold those.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
prom_port="$(free_port)"
syncd_port="$(free_port)"
cat > "$work/prometheus.yml" <<EOF
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: binance-syncd
    static_configs: [ { targets: ["127.0.0.1:$syncd_port"] } ]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$prom_port/-/ready" >/dev/null || { cat "$work/prometheus.log" >&2; exit 1; }
SYNCD_METRICS_ADDR="127.0.0.1:$syncd_port" RUST_LOG=warn "$bin" demo --seconds "$seconds" --dir "$work/demo" --quiet \
    | tee "$work/demo.log" &
demo=$!
# Capture while the demo still runs (its daemon stops at the end): 5 s before it finishes.
sleep $((seconds - 5))
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }
range="$((seconds - 5))s"
url="http://127.0.0.1:$prom_port/graph?"
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
