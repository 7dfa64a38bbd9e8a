#!/usr/bin/env bash
# Cross-node delivery in cluster mode: two roomcast nodes on 127.0.0.1 (sharing a SQLite file,
# as nodes on one host may), clients on node B, broadcasts to node A, so every event travels
# A -> Redis -> B. In turn:
#  - on one redis-server: this build, and BEFORE (another roomcast binary) alternately if given;
#  - on a Redis Cluster of three primaries with cluster.sharded_pubsub (this build);
#  - on a single node without Redis, for comparison.
# Release builds; not part of CI.
#
#   bash loadtest/cluster.sh                                      # OUT=target/cluster-<date>
#   BEFORE=/tmp/before-target/release/roomcast bash loadtest/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh
out_dir cluster
RUNS=${RUNS:-2}
REDIS_PORT=16390 A=18101 B=18102 SHARDS=(16391 16392 16393)
ADMIN=$(admin_key ClusterBench)
need_redis
build_release
work=$(mktemp -d)
trap 'stop_all; rm -rf "$work"' EXIT

node() { # binary, port, node id, redis url or -, more env...
  local bin=$1 port=$2 id=$3 url=$4; shift 4
  local env=(ROOMCAST_CLUSTER__NODE_ID=$id ROOMCAST_STORE__PATH=$work/roomcast.db ROOMCAST_STORE__RELOAD_INTERVAL_MS=100 "$@")
  [ "$url" != - ] && env+=(ROOMCAST_CLUSTER__REDIS_URL=$url)
  start_roomcast "$bin" "$port" "$OUT/nodes.err" "${env[@]}"
}
run() { # name, loadtest args...
  local name=$1; shift
  "$LT" "$@" --admin-key "$ADMIN" --json "$OUT/$name.json" | report "$name"
}
cross() { # name suffix
  run "cross-steady-$1" fanout -n 1000 -r 100 -d 10 --url http://127.0.0.1:$B --publish-url http://127.0.0.1:$A
  run "cross-saturation-$1" fanout -n 1000 -r 0 -p 4 -d 8 --url http://127.0.0.1:$B --publish-url http://127.0.0.1:$A
  run "cross-publish-$1" publish -n 10 -r 0 -p 8 -d 8 --url http://127.0.0.1:$B --publish-url http://127.0.0.1:$A
}

sides=after; [ -n "${BEFORE:-}" ] && sides="before after"
for i in $(seq "$RUNS"); do
  for side in $sides; do
    bin=$AFTER; [ "$side" = before ] && bin=$BEFORE
    rm -f "$work"/roomcast.db*
    start_redis_at $REDIS_PORT
    node "$bin" $A node-a redis://127.0.0.1:$REDIS_PORT
    node "$bin" $B node-b redis://127.0.0.1:$REDIS_PORT
    cross "$side-$i"
    run "same-node-steady-$side-$i" fanout -n 1000 -r 100 -d 10 --url http://127.0.0.1:$B
    stop_all
  done
done

rm -f "$work"/roomcast.db*
for port in "${SHARDS[@]}"; do start_redis_at "$port" --cluster-enabled yes --cluster-config-file nodes.conf; done
redis-cli --cluster create "${SHARDS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
until redis-cli -p "${SHARDS[0]}" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
seeds=$(printf 'redis://127.0.0.1:%s,' "${SHARDS[@]}"); seeds=${seeds%,}
node "$AFTER" $A node-a "$seeds" ROOMCAST_CLUSTER__SHARDED_PUBSUB=true
node "$AFTER" $B node-b "$seeds" ROOMCAST_CLUSTER__SHARDED_PUBSUB=true
for i in $(seq "$RUNS"); do cross "sharded-$i"; done
stop_all

rm -f "$work"/roomcast.db*
node "$AFTER" $A single -
for i in $(seq "$RUNS"); do
  run "single-steady-$i" fanout -n 1000 -r 100 -d 10 --url http://127.0.0.1:$A
  run "single-saturation-$i" fanout -n 1000 -r 0 -p 4 -d 8 --url http://127.0.0.1:$A
  run "single-publish-$i" publish -n 10 -r 0 -p 8 -d 8 --url http://127.0.0.1:$A
done
echo "cluster.sh: reports in $OUT"
