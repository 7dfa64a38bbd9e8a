#!/usr/bin/env bash
# What checking credentials costs: this build against BEFORE (another roomcast binary, if given),
# alternately, on a single node (SQLite) and on a cluster node with its records in Redis:
#  - connect rate and memory (idle, 10,000 connections in 100 rooms);
#  - HTTP publish throughput (publish, 10 subscribers, 8 publishers, saturation);
#  - a flood of broadcasts with forged API keys (a new key each request, 8 connections, as fast
#    as answered) beside a legitimate publisher: the hub's store reads for unknown credentials
#    (roomcast_store_lookups_total) and, on the Redis store, the HGETs Redis itself counted.
# Release builds; not part of CI.
#
#   bash loadtest/credentials.sh                                   # OUT=target/credentials-<date>
#   BEFORE=/tmp/roomcast-before RUNS=2 bash loadtest/credentials.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh
out_dir credentials
RUNS=${RUNS:-2}
PORT=18201 REDIS_PORT=16401
ADMIN=$(admin_key CredsBench01)
need_redis
build_release
work=$(mktemp -d)
trap 'stop_all; rm -rf "$work"' EXIT

hgets() {
  local n
  n=$(redis-cli -p $REDIS_PORT info commandstats | tr -d '\r' | sed -n 's/^cmdstat_hget:calls=\([0-9]*\),.*/\1/p')
  echo "${n:-0}"
}

sides=after; [ -n "${BEFORE:-}" ] && sides="before after"
for i in $(seq "$RUNS"); do
  for side in $sides; do
    bin=$AFTER; [ "$side" = before ] && bin=$BEFORE
    start_roomcast "$bin" $PORT "$OUT/hub.err" ROOMCAST_STORE__PATH="$work/$side-$i.db"
    run_local "idle-$side-$i" idle -n 10000 -m 100 -d 1
    stop_all
    start_roomcast "$bin" $PORT "$OUT/hub.err" ROOMCAST_STORE__PATH="$work/$side-$i.db"
    run_local "publish-$side-$i" publish -n 10 -r 0 -p 8 -d 8
    stop_all
    start_roomcast "$bin" $PORT "$OUT/hub.err" ROOMCAST_STORE__PATH="$work/$side-$i.db"
    run_local "forged-sqlite-$side-$i" forged -r 0 -p 8 -d 10
    stop_all

    start_redis_at $REDIS_PORT
    start_roomcast "$bin" $PORT "$OUT/hub.err" ROOMCAST_CLUSTER__REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
      ROOMCAST_STORE__KIND=redis ROOMCAST_CLUSTER__NODE_ID=credentials
    before_hgets=$(hgets)
    run_local "forged-redis-$side-$i" forged -r 0 -p 8 -d 10
    echo "[forged-redis-$side-$i]   Redis HGET calls during the run (records, tickets and the rest): $(( $(hgets) - before_hgets ))"
    stop_all
  done
done
echo "credentials.sh: reports in $OUT"
