#!/bin/sh
# `npm run bench`: set-up on a fresh clone (npm deps, redis-server and
# redis-sentinel, Consul: sh scripts/bootstrap.sh bench), build the sidecar binary, then run one of
# three benchmarks:
#   (no mode)     the failover benchmark against Redis Sentinel (bench/failover.ts);
#                 arguments: --trials N, --quick, --idle-seconds N, --faults a,b.
#   --soak DUR    one idle group watched for DUR ("2h", "30m") for growing memory,
#                 file descriptors, threads or CPU (bench/soak.ts).
#   --scale N     N groups of three on one Consul cluster: the servers' load and one
#                 group's failover (bench/scale.ts).
# --scale-bin PATH (any mode) measures that sidecar binary instead of building dist/.
#
# The benchmark runs a private copy of the binary, so a rebuild of dist/ while
# it runs (npm test, another checkout's build) cannot change what it measures.
set -eu
cd "$(dirname "$0")/.."
script=bench/failover.ts
given=
take_bin=
for a in "$@"; do
  if [ -n "$take_bin" ]; then given=$a; take_bin=; continue; fi
  case $a in
    --soak) script=bench/soak.ts ;;
    --scale) script=bench/scale.ts ;;
    --scale-bin) take_bin=1 ;;
  esac
done
bins=$(sh scripts/bootstrap.sh bench)
CONSUL_BIN=$(printf '%s\n' "$bins" | sed -n 's/^CONSUL_BIN=//p')
GO_FAILOVER_BIN=$(printf '%s\n' "$bins" | sed -n 's/^GO_FAILOVER_BIN=//p')
export CONSUL_BIN GO_FAILOVER_BIN
if [ -n "$given" ]; then
  [ -x "$given" ] || { echo "--scale-bin $given: not an executable file" >&2; exit 2; }
  CONSUL_LEADER_BIN_SOURCE=$(realpath "$given")
  export CONSUL_LEADER_BIN_SOURCE
else
  sh scripts/build.sh --glibc-only >/dev/null
  given=dist/consul-leader
fi
bin_dir=$(mktemp -d)
trap 'rm -rf "$bin_dir"' EXIT
trap 'exit 130' INT TERM
cp "$given" "$bin_dir/consul-leader"
CONSUL_LEADER_BIN="$bin_dir/consul-leader" node_modules/.bin/bun "$script" "$@"
