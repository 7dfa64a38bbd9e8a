#!/usr/bin/env bash
# roomcast native against roomcast over Pusher, one scenario, alternating on one binary, with
# the hub pinned to core 0 and the generator to core 1: on this two-core machine neither then
# takes the other's CPU, so hub CPU per operation is the hub's own. Not part of CI.
#
#   ROUNDS=5 bash loadtest/pinned.sh publish -n 10 -r 0 -p 8 -d 10
#
# Prints one line per run (publishes/s, deliveries/s, hub CPU per publish and per delivery);
# the JSON of the last run per protocol goes to $OUT (default target/pinned-<date>).
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh
[ $# -gt 0 ] || { echo "usage: bash loadtest/pinned.sh SCENARIO ARGS..." >&2; exit 2; }
ADMIN=$(admin_key PinnedRunKey)
PORT=18095
out_dir pinned
build_release
trap stop_all EXIT
for round in $(seq 1 "${ROUNDS:-3}"); do
  for proto in roomcast pusher; do
    start_roomcast "$AFTER" $PORT "$OUT/hub.log"
    taskset -a -pc 0 "$hub_pid" >/dev/null
    taskset -c 1 "$LT" "$@" --protocol $proto --url "http://127.0.0.1:$PORT" --admin-key "$ADMIN" \
      --hub-pid "$hub_pid" --json "$OUT/$proto.json" > "$OUT/$proto.txt" 2>&1
    stop_all
    jq -r --arg r "$round" --arg p "$proto" '"\($r) \($p): \(.publishes_per_second|floor) publishes/s, \(.deliveries_per_second|floor) deliveries/s, hub \(.hub_cpu_seconds) s: \(.hub_cpu_seconds*1e6/(if .published > 0 then .published else 1 end)*100|floor/100) µs per publish, \(.hub_cpu_seconds*1e9/(if .delivered > 0 then .delivered else 1 end)|floor) ns per delivery"' "$OUT/$proto.json"
  done
done
