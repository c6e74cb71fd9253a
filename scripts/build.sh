#!/bin/sh
# Builds the two release binaries with `bun build --compile`:
#   dist/consul-leader       linux x64, glibc
#   dist/consul-leader-musl  linux x64, musl (the Alpine image)
# The Bun compiler strips types without checking them; `npm test` runs tsc.
set -eu
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/bun ] || npm ci --no-audit --no-fund >&2
mkdir -p dist
node_modules/.bin/bun build --compile --minify src/main.ts --outfile dist/consul-leader
if [ "${1:-}" != "--glibc-only" ]; then
  node_modules/.bin/bun build --compile --minify --target=bun-linux-x64-musl src/main.ts --outfile dist/consul-leader-musl
fi
