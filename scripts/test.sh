#!/bin/sh
# The whole test suite, from a fresh clone: set-up, type check, build, unit and
# integration tests against real Consul and Redis. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.." || exit 1
started=$(date +%s)

bins=$(sh scripts/bootstrap.sh test) || { echo "0 passed, 1 failed (set-up failed)"; exit 1; }
CONSUL_BIN=$(printf '%s\n' "$bins" | sed -n 's/^CONSUL_BIN=//p')
NOMAD_BIN=$(printf '%s\n' "$bins" | sed -n 's/^NOMAD_BIN=//p')
GO_FAILOVER_BIN=$(printf '%s\n' "$bins" | sed -n 's/^GO_FAILOVER_BIN=//p')
export CONSUL_BIN NOMAD_BIN GO_FAILOVER_BIN
echo "consul: $("$CONSUL_BIN" version | head -n 1) ($CONSUL_BIN)"
echo "nomad:  $("$NOMAD_BIN" version | head -n 1) ($NOMAD_BIN)"
echo "redis:  $(redis-server --version)"
echo "bun:    $(node_modules/.bin/bun --version)"

failed=0
if node_modules/.bin/tsc --noEmit -p .; then echo "tsc --noEmit: ok"; else echo "tsc --noEmit: FAILED"; failed=1; fi
if ! sh scripts/build.sh >/dev/null; then echo "build: FAILED"; echo "0 passed, $((failed + 1)) failed"; exit 1; fi

log=$(mktemp)
# Every process the tests start carries this run's id, and the harness notes
# every port, temp dir and network namespace it makes in the ledger, so the
# check below can tell that nothing of this run is left running.
CL_TEST_RUN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
CL_TEST_LEDGER=$(mktemp)
export CL_TEST_RUN CL_TEST_LEDGER
node_modules/.bin/bun test --timeout 120000 "$@" 2>&1 | tee "$log"
pass=$(grep -E '^ *[0-9]+ pass$' "$log" | tail -n 1 | tr -dc '0-9')
fail=$(grep -E '^ *[0-9]+ fail$' "$log" | tail -n 1 | tr -dc '0-9')
rm -f "$log"
pass=${pass:-0}
fail=$(( ${fail:-0} + failed ))
# The suite ends with the check that it left nothing behind; what it finds counts as a failure (and is removed).
if node_modules/.bin/bun test/harness/leftovers.ts; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
rm -f "$CL_TEST_LEDGER"
[ "$pass" -gt 0 ] || fail=$((fail + 1))
echo "suite took $(( $(date +%s) - started ))s"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
