#!/bin/sh
# How long the quick start takes a new operator: clones this repository's
# HEAD (or REV) into a temporary directory, runs `npm run demo` there with an
# empty consul-leader cache, so Consul is built from the Go module proxy as on
# a new machine, and prints the seconds from the start to the demo's first
# failover, and what it set up (npm packages, Debian packages, builds).
#
#   sh scripts/quickstart-time.sh [REV] [--cold-go]
#
# --cold-go also empties Go's build cache (GOCACHE) for the run: what a
# machine that never built Go code pays. Go's module download cache stays.
# Not part of npm test: a cold build takes minutes.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
rev=HEAD
cold=
for a in "$@"; do
  case $a in
    --cold-go) cold=1 ;;
    *) rev=$a ;;
  esac
done
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
git clone -q "$root" "$work/clone"
git -C "$work/clone" checkout -q "$rev"
mkdir "$work/cache" "$work/gocache"
export CONSUL_LEADER_CACHE="$work/cache"
[ -n "$cold" ] && export GOCACHE="$work/gocache"
unset CONSUL_BIN NOMAD_BIN
cd "$work/clone"
log="$work/demo.log"
start=$(date +%s.%N)
# Every line stamped with the moment it was printed.
status=0
{ npm run demo 2>&1 || echo "quickstart: the demo exited $?"; } | while IFS= read -r line; do echo "$(date +%s.%N) $line"; done >"$log"
grep -q '^[0-9.]* quickstart: the demo exited' "$log" && status=1
end=$(date +%s.%N)
since() { awk -v a="$start" -v b="$1" 'BEGIN { printf "%.1f", b - a }'; }
failover=$(grep -m1 ' new primary: ' "$log" || true)
echo "revision:       $(git rev-parse --short HEAD)"
echo "Go build cache: $([ -n "$cold" ] && echo "empty" || echo "as it is")"
[ -n "$failover" ] && echo "first failover: $(since "${failover%% *}")s after npm run demo started (${failover#* })"
echo "demo finished:  $(since "$end")s"
echo "set up:"
grep -E ' (bootstrap: installing|added [0-9]+ packages|build-hashicorp: built)' "$log" | cut -d' ' -f2- | sed 's/^/  /' || echo "  nothing"
if [ "$status" != 0 ] || [ -z "$failover" ]; then
  cut -d' ' -f2- "$log" >&2
  exit 1
fi
