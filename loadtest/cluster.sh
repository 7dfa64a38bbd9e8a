#!/usr/bin/env bash
# Cross-node delivery in cluster mode: one redis-server and two roomcast nodes on 127.0.0.1
# (sharing a SQLite file, as nodes on one host may), clients on node B, broadcasts to node A,
# so every event travels A -> Redis -> B. Then the same with both on one node of the cluster,
# and on a single node without Redis, for comparison. Release builds; not part of CI.
#
#   bash loadtest/cluster.sh            # OUT=target/cluster-<date>
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/cluster-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
RUNS=${RUNS:-2}
REDIS_PORT=16390 A=18101 B=18102
ADMIN=rc_admin_ClusterBench_$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
cargo build --release --locked -p roomcast -p roomcast-loadtest
LT=$PWD/target/release/roomcast-loadtest
RC=$PWD/target/release/roomcast
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on $1"; exit 1; }
node() { # port, node id, redis url or -
  local env=(ROOMCAST_SERVER__LISTEN=127.0.0.1:$1 ROOMCAST_ADMIN_KEY=$ADMIN ROOMCAST_CLUSTER__NODE_ID=$2
    ROOMCAST_STORE__PATH=$work/roomcast.db ROOMCAST_STORE__RELOAD_INTERVAL_MS=100 ROOMCAST_LOG__LEVEL=warn
    ROOMCAST_LIMITS__UPGRADE_RATE_LIMIT=0)
  [ "$3" != - ] && env+=(ROOMCAST_CLUSTER__REDIS_URL=$3)
  (cd "$work" && exec env "${env[@]}" "$RC" >/dev/null 2>>"$OUT/nodes.err") &
  pids+=($!)
  wait_port "$1"
}
run() { # name, loadtest args...
  local name=$1; shift
  "$LT" "$@" --admin-key "$ADMIN" --json "$OUT/$name.json" | grep -v '^ *["{}]' | sed "s/^/[$name] /"
}

redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no >/dev/null &
pids+=($!)
wait_port $REDIS_PORT
node $A node-a redis://127.0.0.1:$REDIS_PORT
node $B node-b redis://127.0.0.1:$REDIS_PORT
for i in $(seq "$RUNS"); do
  run "cross-steady-$i" fanout -n 1000 -r 100 -d 10 --url http://127.0.0.1:$B --publish-url http://127.0.0.1:$A
  run "cross-saturation-$i" fanout -n 1000 -r 0 -p 4 -d 8 --url http://127.0.0.1:$B --publish-url http://127.0.0.1:$A
  run "cross-publish-$i" publish -n 10 -r 0 -p 8 -d 8 --url http://127.0.0.1:$B --publish-url http://127.0.0.1:$A
  run "same-node-steady-$i" fanout -n 1000 -r 100 -d 10 --url http://127.0.0.1:$B
done
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()
rm -f "$work"/roomcast.db*
node $A single -
for i in $(seq "$RUNS"); do
  run "single-steady-$i" fanout -n 1000 -r 100 -d 10 --url http://127.0.0.1:$A
  run "single-saturation-$i" fanout -n 1000 -r 0 -p 4 -d 8 --url http://127.0.0.1:$A
  run "single-publish-$i" publish -n 10 -r 0 -p 8 -d 8 --url http://127.0.0.1:$A
done
echo "cluster.sh: reports in $OUT"
