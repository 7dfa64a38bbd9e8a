#!/usr/bin/env bash
# The soak lane: a two-node cluster (one redis-server with AOF, the nodes sharing a SQLite file)
# under hours of mixed traffic, watched for memory growth and lost events:
#  - churn of distinct users through presence rooms (a member joining and leaving every cycle),
#  - broadcasts to steady subscribers on node B, published on node A (A -> Redis -> B),
#  - a webhook on every broadcast to a receiver in the generator,
#  - Redis restarted in the middle (SIGTERM, then started again on the same port).
# Every SAMPLE_S seconds it records the resident memory of both nodes and of Redis. It reports
# the deliveries lost (the goal is 0) and each node's RSS growth over the last three quarters of
# the run (45 minutes of an hour; the goal is under 5 %). Exits non-zero when an event was lost,
# a webhook never arrived, or the generator failed.
#
#   bash loadtest/soak.sh                              # one hour, release builds
#   SOAK_S=120 SAMPLE_S=10 PROFILE=debug bash loadtest/soak.sh    # what CI runs
#
# Results (rss.csv, soak.json, soak.txt, node logs) go to $OUT (default target/soak-<date>).
# Everything listens on 127.0.0.1 only, and the run stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh
out_dir soak
SOAK_S=${SOAK_S:-3600}
SAMPLE_S=${SAMPLE_S:-60}
PROFILE=${PROFILE:-release}
SUBSCRIBERS=${SUBSCRIBERS:-500}
RATE=${RATE:-20}
CHURN=${CHURN:-50}
REDIS_PORT=${REDIS_PORT:-16601} A=${A:-18401} B=${B:-18402}
ADMIN=$(admin_key SoakLaneKey1)
[ "$SOAK_S" -le 86400 ] || { echo "soak.sh: SOAK_S is at most a day"; exit 2; }
need_redis

if [ "$PROFILE" = release ]; then
  build_release
else
  cargo build --locked -p roomcast -p roomcast-loadtest
  LT=$PWD/target/debug/roomcast-loadtest
  AFTER=$PWD/target/debug/roomcast
  ulimit -n "$(ulimit -Hn)"
fi
work=$(mktemp -d)
sampler=
trap 'kill $sampler 2>/dev/null || true; stop_all; rm -rf "$work"' EXIT

redis_pid=
start_redis() {
  mkdir -p "$work/redis"
  (cd "$work/redis" && exec redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly yes >/dev/null) &
  redis_pid=$!
  pids+=("$redis_pid")
  wait_port $REDIS_PORT
}
node() { # port, node id
  start_roomcast "$AFTER" "$1" "$OUT/nodes.err" ROOMCAST_CLUSTER__NODE_ID="$2" \
    ROOMCAST_CLUSTER__REDIS_URL=redis://127.0.0.1:$REDIS_PORT ROOMCAST_STORE__PATH="$work/roomcast.db" \
    ROOMCAST_STORE__RELOAD_INTERVAL_MS=200 ROOMCAST_WEBHOOKS__ALLOW_PRIVATE_TARGETS=true
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

start_redis
node $A node-a; a_pid=$hub_pid
node $B node-b; b_pid=$hub_pid

echo "t_s,node_a_kib,node_b_kib,redis_kib" >"$OUT/rss.csv"
(
  started=$SECONDS
  while :; do
    echo "$((SECONDS - started)),$(rss_kib $a_pid),$(rss_kib $b_pid),$(rss_kib "$(pgrep -f "redis-server 127.0.0.1:$REDIS_PORT" | head -1)")" >>"$OUT/rss.csv"
    sleep "$SAMPLE_S"
  done
) &
sampler=$!

# Redis goes down and comes back half way through.
(
  sleep $((SOAK_S / 2))
  pkill -TERM -f "redis-server 127.0.0.1:$REDIS_PORT" || true
  while pgrep -f "redis-server 127.0.0.1:$REDIS_PORT" >/dev/null; do sleep 0.1; done
  sleep 2
  cd "$work/redis" && exec redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly yes >/dev/null
) &
pids+=($!)

status=0
"$LT" churn -n "$SUBSCRIBERS" -r "$RATE" -p 2 --churn-rate "$CHURN" --churn-presence --webhook -d "$SOAK_S" \
  --drain 60 --url "http://127.0.0.1:$B" --publish-url "http://127.0.0.1:$A" --admin-key "$ADMIN" \
  --json "$OUT/soak.json" >"$OUT/soak.txt" 2>&1 || status=$?
kill $sampler 2>/dev/null || true
echo "$(( SOAK_S + 60 )),$(rss_kib $a_pid),$(rss_kib $b_pid),0" >>"$OUT/rss.csv"
grep -v '^ *["{}]' "$OUT/soak.txt" | sed 's/^/[soak] /'

# Growth over the last three quarters: from the first sample at or after a quarter of the run
# to the last one taken while it ran, per node. The sample after the run (clients gone) is
# reported beside it.
growth() { # column
  awk -F, -v col="$1" -v from=$((SOAK_S / 4)) -v to="$SOAK_S" 'NR > 1 && $1 >= from && $1 <= to && $col > 0 { if (!first) first = $col; last = $col }
    END { if (first) printf "%.1f", (last - first) * 100 / first; else print "n/a" }' "$OUT/rss.csv"
}
lost=$(sed -n 's/.*"lost": \([0-9]*\).*/\1/p' "$OUT/soak.json" 2>/dev/null | head -1)
missing=$(sed -n 's/.*"missing": \([0-9]*\).*/\1/p' "$OUT/soak.json" 2>/dev/null | head -1)
echo "[soak] RSS growth over the last three quarters: node A $(growth 2) %, node B $(growth 3) % (goal: under 5 % over the last 45 minutes of an hour)"
echo "[soak] RSS after the run, its clients gone (KiB): node A $(tail -1 "$OUT/rss.csv" | cut -d, -f2), node B $(tail -1 "$OUT/rss.csv" | cut -d, -f3)"
echo "[soak] deliveries lost: ${lost:-?}; webhooks missing: ${missing:-?}; samples in $OUT/rss.csv"
if [ "$status" != 0 ] || [ "${lost:-1}" != 0 ] || [ "${missing:-1}" != 0 ]; then
  echo "soak.sh: FAILED (generator exit $status, lost ${lost:-?}, webhooks missing ${missing:-?})"
  exit 1
fi
echo "soak.sh: passed"
