# syntax=docker/dockerfile:1
# binance-syncd in a container (docs/operations.md, "Container"): built in a full Rust image, shipped in
# debian:bookworm-slim (glibc for the binary and for dlopen'd plugins), running as a non-root
# user, with the state directory and the plugin directory as volumes.
#
#   docker build -t binance-syncd .
#   docker run -d --name syncd --env-file /etc/binance-syncd/env \
#       -v syncd-state:/var/lib/binance-syncd -v /srv/syncd-plugins:/plugins:ro binance-syncd
#
# With a binary built already (a release, or CI: .ci/container), the same shipping stage takes
# it from the build context instead of compiling, and no Rust image is needed:
#   mkdir -p ctx/prebuilt ctx/deploy && cp target/release/binance-syncd ctx/prebuilt/ \
#       && cp deploy/healthcheck.sh ctx/deploy/
#   docker build --build-arg BINARY_FROM=prebuilt -f Dockerfile -t binance-syncd ctx

# Which stage the binary comes from: `build` (compile here) or `prebuilt` (copy it).
ARG BINARY_FROM=build

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p binance-syncd --bin binance-syncd \
    && install -m 0755 target/release/binance-syncd /usr/local/bin/binance-syncd

FROM scratch AS prebuilt
COPY --chmod=0755 prebuilt/binance-syncd /usr/local/bin/binance-syncd

FROM ${BINARY_FROM} AS binary

FROM debian:bookworm-slim
COPY --from=binary /usr/local/bin/binance-syncd /usr/local/bin/binance-syncd
COPY --chmod=0755 deploy/healthcheck.sh /usr/local/bin/binance-syncd-healthcheck
RUN useradd --system --uid 10001 --home-dir /var/lib/binance-syncd --shell /usr/sbin/nologin syncd \
    && mkdir -p /var/lib/binance-syncd /plugins \
    && chown syncd:syncd /var/lib/binance-syncd \
    && chmod 0750 /var/lib/binance-syncd
ENV SYNCD_STATE_DIR=/var/lib/binance-syncd \
    SYNCD_PLUGIN_DIR=/plugins \
    SYNCD_METRICS_ADDR=127.0.0.1:9464
VOLUME ["/var/lib/binance-syncd", "/plugins"]
USER syncd
# /healthz is served on SYNCD_METRICS_ADDR (for an outside Prometheus: SYNCD_METRICS_ADDR=0.0.0.0:9464
# with SYNCD_METRICS_PUBLIC=true, and publish the port); the probe is bash's /dev/tcp, so the image needs no HTTP client.
# No core file: one would hold the API secret (the daemon also marks itself not dumpable). Set
# `--ulimit core=0` on `docker run` too where the host's default allows cores.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["/usr/local/bin/binance-syncd-healthcheck"]
# SIGTERM: flush the fill log, close the listen key, exit 0 (docker stop waits 10 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/binance-syncd"]
CMD ["run"]
