#!/bin/sh
# `npm run demo`: set-up on a fresh clone (npm deps, redis-server, Consul:
# only what the demo runs), build the sidecar binary, then run the failover
# demo (scripts/demo.ts). Pass --keep to leave the group running until Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
CONSUL_BIN=$(sh scripts/bootstrap.sh demo | sed -n 's/^CONSUL_BIN=//p')
export CONSUL_BIN
sh scripts/build.sh --glibc-only >/dev/null
exec node_modules/.bin/bun scripts/demo.ts "$@"
