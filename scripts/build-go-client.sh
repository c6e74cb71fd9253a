#!/bin/sh
# Builds the go-redis test client (test/clients/go-failover) from the Go module
# proxy and caches it outside the checkout, keyed by the hash of its source, so
# it is built once per change (~30 s) and reused by npm test and npm run bench.
#
#   scripts/build-go-client.sh   -> prints the cached binary's path
#
# Cache: ${CONSUL_LEADER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-leader}/go-failover/<hash>/go-failover
set -eu
cd "$(dirname "$0")/../test/clients/go-failover"
cache_root=${CONSUL_LEADER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-leader}
hash=$(cat go.mod go.sum main.go | sha256sum | cut -c1-16)
out_dir=$cache_root/go-failover/$hash
out=$out_dir/go-failover
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "build-go-client: go is not on PATH; install Go or set GO_FAILOVER_BIN" >&2; exit 1; }
echo "build-go-client: building the go-redis test client (first time only; cached in $out_dir)" >&2
mkdir -p "$out_dir"
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
