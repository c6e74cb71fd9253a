#!/bin/sh
# redis-cli as a script uses it with Sentinel: ask a sentinel for the
# primary (SENTINEL get-master-addr-by-name), write there (see README.md).
set -u
stop=0
trap 'stop=1' TERM
n=0
now() { date +%s%3N; }
auth=""
[ -n "${SENTINEL_PASSWORD:-}" ] && auth="--user default --pass $SENTINEL_PASSWORD --no-auth-warning"
list=$(echo "${SENTINELS:?}" | tr ',' ' ')
interval=$(awk "BEGIN { print ${INTERVAL_MS:-5} / 1000 }")
while [ "$stop" = 0 ]; do
  n=$((n + 1))
  addr=""
  for s in $list; do
    # shellcheck disable=SC2086 # $auth is a list of options
    addr=$(redis-cli -h "${s%:*}" -p "${s##*:}" $auth --raw SENTINEL get-master-addr-by-name "$MASTER" 2>/dev/null | tr '\n' ' ')
    case $addr in *[0-9]" "*[0-9]" ") break ;; *) addr="" ;; esac
  done
  if [ -z "$addr" ]; then
    echo "fail $n $(now) no sentinel named a primary"
  else
    # shellcheck disable=SC2086 # host and port, split on purpose
    set -- $addr
    out=$(redis-cli -h "$1" -p "$2" SET "$PREFIX:$n" "$n" 2>&1 | tr '\n' ' ')
    if [ "$out" = "OK " ]; then echo "ack $n $(now)"; else echo "fail $n $(now) $out"; fi
  fi
  sleep "$interval"
done
echo "done $n"
