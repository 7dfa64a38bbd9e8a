#!/usr/bin/env bash
# What history costs, and recovery under jitter (issue 16). Release builds; not part of CI.
#  - history off (history.size = 0) and on (the default, 100 events per room) alternately, RUNS
#    times: peak fan-out to one room of 5,000, HTTP publishes, and idle memory per connection,
#    each with hub CPU per delivered event;
#  - the jitter scenario on one node, and on two nodes sharing a redis-server (clients on B,
#    publishers on A): 5,000 subscribers in 100 rooms, 500 broadcasts/s, every subscriber cut
#    every 5-15 s and recovering with `since`, for JITTER_S seconds (60).
#
#   bash loadtest/history.sh                 # OUT=target/history-<date>
#   RUNS=0 bash loadtest/history.sh          # the jitter runs only
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh
out_dir history
RUNS=${RUNS:-2}
JITTER_S=${JITTER_S:-60}
PORT=18301 B=18302 REDIS_PORT=16396
ADMIN=$(admin_key HistoryBench)
need_redis
build_release
work=$(mktemp -d)
trap 'stop_all; rm -rf "$work"' EXIT

for i in $(seq "$RUNS"); do
  for side in off on; do
    size=100; [ "$side" = off ] && size=0
    for scenario in peak publish idle; do
      start_roomcast "$AFTER" $PORT "$OUT/hub.err" ROOMCAST_STORE__PATH="$work/$side-$i-$scenario.db" ROOMCAST_HISTORY__SIZE=$size
      case $scenario in
        peak) run_local "peak-$side-$i" fanout -n 5000 -r 0 -p 4 -d 10 ;;
        publish) run_local "publish-$side-$i" publish -n 10 -r 0 -p 8 -d 8 ;;
        idle) run_local "idle-$side-$i" idle -n 10000 -m 100 -d 1 ;;
      esac
      stop_all
    done
  done
done

start_roomcast "$AFTER" $PORT "$OUT/hub.err" ROOMCAST_STORE__PATH="$work/jitter.db"
run_local "jitter-single" jitter -n 5000 -m 100 -r 500 -p 4 -d "$JITTER_S" --connect-concurrency 128
stop_all

start_redis_at $REDIS_PORT
for node in "$PORT node-a" "$B node-b"; do
  set -- $node
  start_roomcast "$AFTER" "$1" "$OUT/nodes.err" ROOMCAST_STORE__PATH="$work/cluster.db" ROOMCAST_STORE__RELOAD_INTERVAL_MS=100 \
    ROOMCAST_CLUSTER__REDIS_URL=redis://127.0.0.1:$REDIS_PORT ROOMCAST_CLUSTER__NODE_ID="$2"
done
"$LT" jitter -n 5000 -m 100 -r 500 -p 4 -d "$JITTER_S" --connect-concurrency 128 --url "http://127.0.0.1:$B" \
  --publish-url "http://127.0.0.1:$PORT" --admin-key "$ADMIN" --hub-pid "$hub_pid" --json "$OUT/jitter-cluster.json" \
  | report jitter-cluster
stop_all
echo "history.sh: reports in $OUT"
