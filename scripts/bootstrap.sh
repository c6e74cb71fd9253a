#!/bin/sh
# Set-up for one purpose, done only when missing (safe to run every time):
#
#   sh scripts/bootstrap.sh npm     npm deps only: what building and simulating need
#   sh scripts/bootstrap.sh demo    npm deps, redis-server, Consul: what `npm run demo` runs
#   sh scripts/bootstrap.sh bench   the demo's, plus redis-sentinel and the go-redis client:
#                                   what `npm run bench` compares with and measures through
#   sh scripts/bootstrap.sh test    the demo's, plus what the tests drive: Nomad, shellcheck,
#                                   dig (dnsutils), chromium (headless), redis-py
#                                   (python3-redis) and the go-redis client
#   sh scripts/bootstrap.sh --needs PURPOSE   only print what PURPOSE needs, one "debian: PKG"
#                                   or "build: NAME" per line, installing nothing
#
# npm dependencies come from the npm registry (Bun itself is the npm package
# "bun"); Debian packages from apt-get when running as root (otherwise it
# says what to install); Consul and Nomad from CONSUL_BIN/NOMAD_BIN, from
# PATH, or built once from the Go module proxy and cached outside the
# checkout (scripts/build-hashicorp.sh; needs Go, and for Nomad a C
# compiler; a few minutes each the first time). The go-redis test client
# (test/clients/go-failover) is built the same way by scripts/build-go-client.sh
# (GO_FAILOVER_BIN overrides it).
#
# Prints CONSUL_BIN=... (NOMAD_BIN=... for test, GO_FAILOVER_BIN=... for
# bench and test) as its last lines.
set -eu
cd "$(dirname "$0")/.."

needs() {
  case $1 in
    npm) ;;
    demo) echo "debian: redis-server"; echo "build: consul" ;;
    bench) needs demo; echo "debian: redis-sentinel"; echo "build: go-failover" ;;
    test)
      needs demo
      echo "debian: shellcheck"; echo "debian: dnsutils"; echo "debian: chromium"; echo "debian: python3-redis"
      echo "build: nomad"; echo "build: go-failover"
      ;;
    *) echo "bootstrap: unknown purpose '$1' (npm, demo, bench or test)" >&2; exit 2 ;;
  esac
}

if [ "${1:-}" = "--needs" ]; then
  needs "${2:-}"
  exit 0
fi
purpose=${1:?usage: bootstrap.sh npm|demo|bench|test}
list=$(needs "$purpose")

if [ -L node_modules ]; then
  # Shared with another checkout (a git worktree): `npm ci` through the link
  # would empty that checkout's node_modules before reinstalling here.
  if [ ! -x node_modules/.bin/bun ] || [ ! -x node_modules/.bin/tsc ]; then
    echo "bootstrap: node_modules links to $(readlink node_modules), which lacks bun or tsc; run npm ci there" >&2
    exit 1
  fi
elif [ ! -x node_modules/.bin/bun ] || [ ! -x node_modules/.bin/tsc ] || [ ! -f node_modules/.package-lock.json ] ||
  [ -n "$(find package-lock.json -newer node_modules/.package-lock.json)" ]; then
  echo "bootstrap: installing npm dependencies" >&2
  npm ci --no-audit --no-fund >&2
fi

# The command each Debian package provides.
command_of() {
  case $1 in
    dnsutils) echo dig ;;
    *) echo "$1" ;;
  esac
}
# Whether a Debian package is there: its command, or for a library its import.
present() {
  case $1 in
    # Debian's python3 with Debian's redis-py (a python3 earlier on PATH may be another one).
    python3-redis) /usr/bin/python3 -c "import redis.sentinel" >/dev/null 2>&1 ;;
    *) command -v "$(command_of "$1")" >/dev/null 2>&1 ;;
  esac
}
missing=""
for pkg in $(printf '%s\n' "$list" | sed -n 's/^debian: //p'); do
  present "$pkg" || missing="$missing $pkg"
done
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
# A HashiCorp binary: $<NAME>_BIN, else on PATH, else built and cached.
binary() {
  name=$1 version=$2 given=$3
  if [ -n "$given" ]; then
    echo "$given"
  elif command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
  else
    sh scripts/build-hashicorp.sh "$name" "$version"
  fi
}
for what in $(printf '%s\n' "$list" | sed -n 's/^build: //p'); do
  case $what in
    consul) echo "CONSUL_BIN=$(binary consul "$CONSUL_VERSION" "${CONSUL_BIN:-}")" ;;
    nomad) echo "NOMAD_BIN=$(binary nomad "$NOMAD_VERSION" "${NOMAD_BIN:-}")" ;;
    go-failover) echo "GO_FAILOVER_BIN=${GO_FAILOVER_BIN:-$(sh scripts/build-go-client.sh)}" ;;
  esac
done
