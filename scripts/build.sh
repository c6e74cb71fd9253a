#!/bin/sh
# Builds the two release binaries with `bun build --compile`:
#   dist/consul-leader       linux x64, glibc
#   dist/consul-leader-musl  linux x64, musl (the Alpine image)
# The Bun compiler strips types without checking them; `npm test` runs tsc.
#
# A compiled Bun executable would otherwise load .env, .env.production and
# bunfig.toml from whatever directory it starts in, before main.ts runs: the
# sidecar reads ./.env itself (and says which knobs came from it), and no
# bunfig.toml should change how it runs.
set -eu
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh npm
mkdir -p dist
no_autoload="--no-compile-autoload-dotenv --no-compile-autoload-bunfig"
# shellcheck disable=SC2086 # two flags
node_modules/.bin/bun build --compile --minify $no_autoload src/main.ts --outfile dist/consul-leader
if [ "${1:-}" != "--glibc-only" ]; then
  # shellcheck disable=SC2086 # two flags
  node_modules/.bin/bun build --compile --minify $no_autoload --target=bun-linux-x64-musl src/main.ts --outfile dist/consul-leader-musl
fi
