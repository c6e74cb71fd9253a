# consul-leader as an Alpine image: one musl binary built by Bun, run as a
# non-root user under tini (PID 1 reaps the exec mode's children and passes
# signals on), with a HEALTHCHECK on /liveness when the status server is on.
#
#   docker build -t consul-leader .
#   docker run --rm --network host -e CONSUL_LEADER_SERVICE_NAME=redis \
#     -e CONSUL_LEADER_REDIS_ADDR=127.0.0.1:6379 consul-leader

ARG BUN_VERSION=1.4.5
ARG ALPINE_VERSION=3.20

# ---- build: the official Bun image on Alpine compiles for musl natively.
FROM oven/bun:${BUN_VERSION}-alpine AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
RUN bun install --production --ignore-scripts
COPY src ./src
# No .env or bunfig.toml autoloading at run time: the sidecar reads ./.env itself (scripts/build.sh).
RUN bun build --compile --minify --no-compile-autoload-dotenv --no-compile-autoload-bunfig src/main.ts --outfile /out/consul-leader \
 && /out/consul-leader --version

# ---- run: plain Alpine with only what the binary links (readelf -d: libstdc++.so.6,
# libgcc_s via libstdc++, musl) and tini.
FROM alpine:${ALPINE_VERSION}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="consul-leader" \
      org.opencontainers.image.description="Leader-election sidecar for Consul and Nomad that keeps exactly one Redis primary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/consul-leader/consul-leader"
RUN apk add --no-cache libstdc++ libgcc tini \
 && adduser -D -H -u 10001 -s /sbin/nologin consul-leader
COPY --from=build /out/consul-leader /usr/local/bin/consul-leader
USER 10001:10001
# Only meaningful with the status server on (CONSUL_LEADER_HTTP_ADDR); healthy otherwise.
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s --retries=3 \
  CMD [ -z "$CONSUL_LEADER_HTTP_ADDR" ] || wget -q -O /dev/null "http://$CONSUL_LEADER_HTTP_ADDR/liveness" || exit 1
ENTRYPOINT ["/sbin/tini", "--", "/usr/local/bin/consul-leader"]
