# redis-sidecar container image: built on Debian 12, run on debian:bookworm-slim as a non-root user.
#
#   buildah bud --format docker -t redis-sidecar .      (or: docker build -t redis-sidecar .)
#   docker run -e REDIS_SIDECAR_UPSTREAM=rediss://user:pass@host:6380/0 -p 6379:6379 -p 9379:9379 redis-sidecar
#
# Listen addresses live in the environment (REDIS_SIDECAR_LISTEN, REDIS_SIDECAR_METRICS_LISTEN), not in
# ENTRYPOINT, so `-e` or a flag after the image name changes them (a flag wins over the variable).
# PID 1 is redis-sidecar itself: it handles SIGTERM and SIGINT (stop accepting, drain in-flight
# requests for up to --command-timeout-ms, exit 0) and starts no child processes, so no init process
# is needed to forward signals or reap zombies. `--init` (docker/podman) is harmless if you prefer one.
# tests/packaging/run.sh builds this file and checks the image.

ARG DEBIAN_RELEASE=bookworm

# ---- build ------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ cmake make pkg-config libboost1.81-dev libboost-url1.81-dev \
      libhiredis-dev prometheus-cpp-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
ARG BUILD_JOBS=2

# .dockerignore admits only the sources the binary is built from. After the build, the Debian
# packages that hold the libraries it links (from ldd) go to /out/runtime-packages for the runtime
# stage, so a library added later cannot be forgotten there.
COPY . /src
RUN cmake -S /src -B /build -DCMAKE_BUILD_TYPE=Release -DREDIS_SIDECAR_TESTS=OFF \
 && cmake --build /build -j"${BUILD_JOBS}" --target redis-sidecar \
 && install -D -m 0755 -s /build/proxy/redis-sidecar /out/usr/local/bin/redis-sidecar \
 && ldd /out/usr/local/bin/redis-sidecar | awk '/=> \//{print $3}' \
    | while read -r lib; do dpkg -S "*/$(basename "$lib")" 2>/dev/null | head -n1; done \
    | cut -d: -f1 | sort -u | grep -vxE 'libc6|libgcc-s1|libstdc\+\+6' > /out/runtime-packages \
 && cat /out/runtime-packages

# ---- runtime ----------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

# Runtime libraries only (named, plus whatever ldd found in the build stage), CA certificates for the
# default upstream trust store, and a numeric non-root user. The ldd check fails the build if a
# library is missing.
COPY --from=build /out/runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libssl3 libhiredis0.14 libboost-url1.81.0 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libcivetweb1 \
      $(cat /tmp/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log /tmp/runtime-packages \
 && groupadd --system --gid 10001 redis-sidecar \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin redis-sidecar
COPY --from=build /out/usr/local/bin/redis-sidecar /usr/local/bin/redis-sidecar
RUN if ldd /usr/local/bin/redis-sidecar | grep 'not found'; then exit 1; fi \
 && /usr/local/bin/redis-sidecar --version

USER 10001:10001
# Inside a pod the Helm chart passes --listen=127.0.0.1:6379 (only the app may connect); a standalone
# container listens on every interface so a published port reaches it.
ENV REDIS_SIDECAR_LISTEN=0.0.0.0:6379 \
    REDIS_SIDECAR_METRICS_LISTEN=0.0.0.0:9379
EXPOSE 6379 9379

# GET /healthz on the metrics address from REDIS_SIDECAR_METRICS_LISTEN, with bash's /dev/tcp (the
# slim image has no curl or wget). Kubernetes ignores HEALTHCHECK and uses the chart's probes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/bin/bash", "-c", "\
a=${REDIS_SIDECAR_METRICS_LISTEN:-0.0.0.0:9379}; h=${a%:*}; p=${a##*:}; \
case $h in ''|0.0.0.0) h=127.0.0.1;; '[::]') h=::1;; \\[*) h=${h#[}; h=${h%]};; esac; \
exec 3<>/dev/tcp/$h/$p || exit 1; \
printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3; \
read -r -t 2 proto code rest <&3; [ \"$code\" = 200 ]"]

ENTRYPOINT ["/usr/local/bin/redis-sidecar"]
CMD []

# Last, so that a new revision or date does not invalidate the cached layers above.
ARG DEBIAN_RELEASE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="redis-sidecar" \
      org.opencontainers.image.description="Local Redis proxy with an in-process cache tier: apps speak plain RESP to localhost, the sidecar forwards to a remote (TLS) Redis and exports Prometheus metrics." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/debian:${DEBIAN_RELEASE}-slim"
