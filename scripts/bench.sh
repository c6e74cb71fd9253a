#!/bin/sh
# `npm run bench`: set-up on a fresh clone (npm deps, redis-server and
# redis-sentinel, Consul: sh scripts/bootstrap.sh bench), build the sidecar binary, then run the failover
# benchmark (bench/failover.ts) against consul-leader and Redis Sentinel.
# Arguments go to the benchmark: --trials N, --quick, --idle-seconds N, --faults a,b.
#
# The benchmark runs a private copy of the binary, so a rebuild of dist/ while
# it runs (npm test, another checkout's build) cannot change what it measures.
set -eu
cd "$(dirname "$0")/.."
bins=$(sh scripts/bootstrap.sh bench)
CONSUL_BIN=$(printf '%s\n' "$bins" | sed -n 's/^CONSUL_BIN=//p')
GO_FAILOVER_BIN=$(printf '%s\n' "$bins" | sed -n 's/^GO_FAILOVER_BIN=//p')
export CONSUL_BIN GO_FAILOVER_BIN
sh scripts/build.sh --glibc-only >/dev/null
bin_dir=$(mktemp -d)
trap 'rm -rf "$bin_dir"' EXIT
trap 'exit 130' INT TERM
cp dist/consul-leader "$bin_dir/consul-leader"
CONSUL_LEADER_BIN="$bin_dir/consul-leader" node_modules/.bin/bun bench/failover.ts "$@"
