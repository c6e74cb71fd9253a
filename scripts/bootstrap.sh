#!/bin/sh
# Set-up a fresh clone needs, done only when missing (safe to run every time):
#   - npm dependencies (Bun itself comes from the npm package "bun");
#   - from Debian (when running as root): redis-server and redis-sentinel, and
#     what the tests drive: shellcheck, dig (dnsutils), chromium (headless),
#     redis-py (python3-redis, for the Sentinel client tests);
#   - Consul and Nomad binaries: CONSUL_BIN/NOMAD_BIN, on PATH, or built once
#     from the Go module proxy and cached outside the checkout
#     (scripts/build-hashicorp.sh; ~7 min each the first time).
#   - the go-redis test client, built once from the Go module proxy and cached
#     outside the checkout (scripts/build-go-client.sh).
# Prints CONSUL_BIN=..., NOMAD_BIN=... and GO_FAILOVER_BIN=... as its last three lines.
set -eu
cd "$(dirname "$0")/.."

if [ ! -x node_modules/.bin/bun ] || [ ! -x node_modules/.bin/tsc ] || [ ! -f node_modules/.package-lock.json ] ||
  [ -n "$(find package-lock.json -newer node_modules/.package-lock.json)" ]; then
  echo "bootstrap: installing npm dependencies" >&2
  npm ci --no-audit --no-fund >&2
fi

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v redis-sentinel >/dev/null 2>&1 || missing="$missing redis-sentinel"
command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
command -v dig >/dev/null 2>&1 || missing="$missing dnsutils"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
# Debian's python3 with Debian's redis-py (a python3 earlier on PATH may be another one).
/usr/bin/python3 -c "import redis.sentinel" >/dev/null 2>&1 || missing="$missing python3-redis"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing$missing from Debian" >&2
    apt-get update -qq >&2
    # shellcheck disable=SC2086 # $missing is a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
  else
    echo "bootstrap: please install$missing (Debian: apt-get install$missing)" >&2
    exit 1
  fi
fi

# shellcheck source=scripts/versions.env
. ./scripts/versions.env
if [ -n "${CONSUL_BIN:-}" ]; then
  consul_bin=$CONSUL_BIN
elif command -v consul >/dev/null 2>&1; then
  consul_bin=$(command -v consul)
else
  consul_bin=$(sh scripts/build-hashicorp.sh consul "$CONSUL_VERSION")
fi
if [ -n "${NOMAD_BIN:-}" ]; then
  nomad_bin=$NOMAD_BIN
elif command -v nomad >/dev/null 2>&1; then
  nomad_bin=$(command -v nomad)
else
  nomad_bin=$(sh scripts/build-hashicorp.sh nomad "$NOMAD_VERSION")
fi
if [ -n "${GO_FAILOVER_BIN:-}" ]; then
  go_failover_bin=$GO_FAILOVER_BIN
else
  go_failover_bin=$(sh scripts/build-go-client.sh)
fi
echo "CONSUL_BIN=$consul_bin"
echo "NOMAD_BIN=$nomad_bin"
echo "GO_FAILOVER_BIN=$go_failover_bin"
