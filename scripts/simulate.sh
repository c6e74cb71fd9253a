#!/bin/sh
# `npm run simulate -- [options]`: the deterministic simulation of a whole
# group, for as many seeds as asked (options: see scripts/simulate.ts).
# Needs only the npm dependencies: no Consul, no Redis.
set -eu
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh npm
exec node_modules/.bin/bun scripts/simulate.ts "$@"
