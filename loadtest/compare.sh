#!/usr/bin/env bash
# Runs the same load scenarios against roomcast and Sockudo 5.2.0 (a Rust, Pusher-protocol hub),
# alternately, in one run, and prints a table with ratios. Not part of CI: it takes ~15 minutes
# plus ~7 to build Sockudo the first time. Everything listens on 127.0.0.1 only.
#
#   bash loadtest/compare.sh                 # every scenario
#   SCENARIOS="idle fanout" bash loadtest/compare.sh
#   BEFORE=/tmp/before/roomcast SCENARIOS="idle connect peak publish" bash loadtest/compare.sh
#
# With BEFORE (another roomcast binary), that binary takes Sockudo's place: a before/after run
# of roomcast itself, same scenarios, same alternation, plus hub CPU per delivered event.
#
# With PUSHER=1, roomcast also runs over its Pusher protocol (/app/{key} and the signed
# /apps/{id}/events), the same binary: three hubs in turn (Sockudo, roomcast over Pusher, roomcast
# native), and the table compares roomcast-over-Pusher with each of the other two.
#
# Results (JSON per run, and table.md) go to $OUT (default target/compare-<date>).
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh

SOCKUDO_VERSION=5.2.0
SOCKUDO_ROOT=${SOCKUDO_ROOT:-/opt/sockudo}
SOCKUDO=$SOCKUDO_ROOT/bin/sockudo
SCENARIOS=${SCENARIOS:-"idle connect fanout slow peak sustained rooms publish churn"}
# Publication rates of the sustained scenario.
RATES=${RATES:-"40 80 120 160 200 240"}
RC_PORT=18080
SK_PORT=16001
ADMIN=$(admin_key CompareRunKy)
out_dir compare

OTHER=sockudo
OTHER_NAME="Sockudo $SOCKUDO_VERSION"
if [ -n "${BEFORE:-}" ]; then
  OTHER=before
  OTHER_NAME="roomcast before"
fi
# The hubs each scenario runs on, in order; THIS is the one the table is about.
HUBS="$OTHER roomcast"
THIS=roomcast
if [ -n "${PUSHER:-}" ]; then
  HUBS="$OTHER roomcast-pusher roomcast"
  THIS=roomcast-pusher
fi
if [ "$OTHER" = sockudo ] && [ ! -x "$SOCKUDO" ]; then
  echo "compare.sh: installing Sockudo $SOCKUDO_VERSION (about 7 minutes)"
  command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null; }
  cargo install sockudo --version "$SOCKUDO_VERSION" --no-default-features --features local --locked --root "$SOCKUDO_ROOT"
fi
build_release
trap stop_all EXIT

start_sockudo() {
  local dir; dir=$(mktemp -d)
  (cd "$dir" && HOST=127.0.0.1 PORT=$SK_PORT ADAPTER_DRIVER=local APP_MANAGER_DRIVER=memory CACHE_DRIVER=memory \
    QUEUE_DRIVER=none RATE_LIMITER_ENABLED=false METRICS_ENABLED=false \
    SOCKUDO_DEFAULT_APP_ID=lt-app SOCKUDO_DEFAULT_APP_KEY=lt-key SOCKUDO_DEFAULT_APP_SECRET=lt-secret \
    SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS=1000000 SOCKUDO_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SECOND=100000000 \
    SOCKUDO_DEFAULT_APP_MAX_CLIENT_EVENTS=100000000 SOCKUDO_DEFAULT_APP_MAX_READ_REQUESTS=100000000 \
    RUST_LOG=warn exec "$SOCKUDO" >/dev/null 2>"$OUT/sockudo.log") &
  hub_pid=$!
  pids+=("$hub_pid")
  wait_port $SK_PORT
}

# run NAME HUB ARGS... : one generator run against a freshly started hub; JSON to $OUT/NAME-HUB.json
run() {
  local name=$1 hub=$2; shift 2
  local target
  if [ "$hub" = roomcast ]; then
    start_roomcast "$AFTER" $RC_PORT "$OUT/roomcast.log"
    target=(--url "http://127.0.0.1:$RC_PORT" --admin-key "$ADMIN")
  elif [ "$hub" = roomcast-pusher ]; then
    start_roomcast "$AFTER" $RC_PORT "$OUT/roomcast-pusher.log"
    target=(--protocol pusher --url "http://127.0.0.1:$RC_PORT" --admin-key "$ADMIN")
  elif [ "$hub" = before ]; then
    start_roomcast "$BEFORE" $RC_PORT "$OUT/before.log"
    target=(--url "http://127.0.0.1:$RC_PORT" --admin-key "$ADMIN")
  else
    start_sockudo
    target=(--protocol pusher --url "http://127.0.0.1:$SK_PORT" --app-id lt-app --app-secret lt-secret --app-key lt-key)
  fi
  sleep 1
  "$LT" "$@" "${target[@]}" --hub-pid "$hub_pid" --json "$OUT/$name-$hub.json" >"$OUT/$name-$hub.txt" 2>&1 || true
  stop_all
  sed -n '1,8p' "$OUT/$name-$hub.txt" | sed "s/^/[$name $hub] /"
}

# Each scenario runs on the other hub first, then on this build; AFTER_FIRST=1 reverses the
# order (a run can be disturbed by the one before it: sockets in TIME_WAIT, a warm page cache).
both() {
  local name=$1 hub hubs=$HUBS; shift
  [ -n "${AFTER_FIRST:-}" ] && hubs=$(echo "$HUBS" | tr ' ' '\n' | tac | tr '\n' ' ')
  for hub in $hubs; do run "$name" "$hub" "$@"; done
}

field() { jq -r "$2 // \"n/a\"" "$OUT/$1.json" 2>/dev/null || echo n/a; }

# ratio A B BETTER: how much better A is than B ("1.20x"), or n/a.
ratio() {
  awk -v a="$1" -v b="$2" -v better="$3" 'BEGIN {
    if (a == "n/a" || b == "n/a" || a + 0 == 0 || b + 0 == 0) { print "n/a"; exit }
    if (better == "high") printf "%.2fx", a / b; else printf "%.2fx", b / a }'
}

row() { # row LABEL NAME JQ-EXPR BETTER(high|low)
  local a b line
  a=$(field "$2-$THIS" "$3"); b=$(field "$2-$OTHER" "$3")
  line="| $1 | $a | $b | $(ratio "$a" "$b" "$4") |"
  if [ -n "${PUSHER:-}" ]; then
    local native; native=$(field "$2-roomcast" "$3")
    line="$line $native | $(ratio "$a" "$native" "$4") |"
  fi
  echo "$line" | tee -a "$OUT/table.md"
}

for s in $SCENARIOS; do
  case $s in
    idle) both idle idle -n 10000 -m 100 -d 2 ;;
    connect) both connect idle -n 19000 -m 100 -d 1 --connect-concurrency 512 ;;
    fanout) both fanout fanout -n 5000 -r 10 -d 20 ;;
    slow)
      # The same run twice per hub, the second with one subscriber that never reads.
      both slow-without fanout -n 2000 -r 50 -d 10 --payload-bytes 2000
      both slow-with fanout -n 2000 -r 50 -d 10 --payload-bytes 2000 --stalled 1 ;;
    peak) both peak fanout -n 5000 -r 0 -p 4 -d 10 ;;
    sustained)
      for r in $RATES; do both "sustained-$r" fanout -n 5000 -r "$r" -p 4 -d 10 --drain 5; done ;;
    rooms) both rooms rooms -n 10000 -m 1000 -r 2000 -p 8 -d 10 ;;
    publish) both publish publish -n 10 -r 0 -p 8 -d 10 ;;
    churn) both churn churn -n 1000 -r 10 --churn-rate 200 -d 10 ;;
  esac
done

{
  echo
  if [ -n "${PUSHER:-}" ]; then
    echo "| measure | roomcast over Pusher | $OTHER_NAME | advantage | roomcast native | Pusher vs native |"
    echo "| --- | --- | --- | --- | --- | --- |"
  else
    echo "| measure | roomcast | $OTHER_NAME | roomcast advantage |"
    echo "| --- | --- | --- | --- |"
  fi
} | tee -a "$OUT/table.md"
[ -f "$OUT/idle-$THIS.json" ] && row "idle: hub RSS per connection, bytes (10k conns)" idle .hub_rss_per_connection_bytes low
[ -f "$OUT/connect-$THIS.json" ] && row "connects per second (19k conns)" connect .connects_per_second high
[ -f "$OUT/connect-$THIS.json" ] && row "idle: hub RSS per connection, bytes (19k conns)" connect .hub_rss_per_connection_bytes low
[ -f "$OUT/fanout-$THIS.json" ] && row "10/s to 5,000: p99 ms" fanout .latency.p99_ms low
[ -f "$OUT/fanout-$THIS.json" ] && row "10/s to 5,000: p50 ms" fanout .latency.p50_ms low
[ -f "$OUT/slow-without-$THIS.json" ] && row "50/s to 2,000, 2 KB events: p99 ms" slow-without .latency.p99_ms low
[ -f "$OUT/slow-with-$THIS.json" ] && row "same, plus 1 subscriber that never reads: p99 ms" slow-with .latency.p99_ms low
[ -f "$OUT/slow-with-$THIS.json" ] && row "same: lost by the readers" slow-with .lost low
[ -f "$OUT/peak-$THIS.json" ] && row "peak deliveries/s, one room of 5,000" peak .deliveries_per_second high
[ -f "$OUT/peak-$THIS.json" ] && row "peak: lost" peak .lost low
[ -f "$OUT/peak-$THIS.json" ] && row "peak: hub CPU µs per delivered event" peak '(.hub_cpu_seconds * 1e6 / .delivered)' low
for r in $RATES; do
  [ -f "$OUT/sustained-$r-$THIS.json" ] && row "$r/s to 5,000: deliveries/s (p99 ms: $(field sustained-$r-$THIS .latency.p99_ms)/$(field sustained-$r-$OTHER .latency.p99_ms), lost $(field sustained-$r-$THIS .lost)/$(field sustained-$r-$OTHER .lost))" "sustained-$r" .deliveries_per_second high
done
[ -f "$OUT/rooms-$THIS.json" ] && row "10,000 subs / 1,000 rooms at 2,000/s: p99 ms" rooms .latency.p99_ms low
[ -f "$OUT/publish-$THIS.json" ] && row "HTTP publishes per second" publish .publishes_per_second high
[ -f "$OUT/churn-$THIS.json" ] && row "churn: cycles completed (200/s target)" churn .churn_cycles high
echo "compare.sh: results in $OUT"
