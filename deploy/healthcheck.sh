#!/usr/bin/env bash
# The container's HEALTHCHECK: GET /healthz on SYNCD_METRICS_ADDR's port over loopback, healthy
# on a 200. bash's /dev/tcp, so the image needs no HTTP client.
set -euo pipefail
addr="${SYNCD_METRICS_ADDR:-127.0.0.1:9464}"
port="${addr##*:}"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS= read -r -t 5 status <&3
case "$status" in
    "HTTP/1."?" 200 "*) exit 0 ;;
    *) echo "unhealthy: ${status%$'\r'}" >&2; exit 1 ;;
esac
