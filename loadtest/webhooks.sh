#!/usr/bin/env bash
# Measures what webhooks cost and deliver, on release builds, everything on 127.0.0.1:
#  - the fan-out path with no webhook registered, this build against BEFORE (another roomcast
#    binary, e.g. the last revision without webhooks), alternately, RUNS times each;
#  - this build with a webhook on every broadcast: saturation and a steady rate.
#
#   BEFORE=/tmp/before-target/release/roomcast bash loadtest/webhooks.sh
#   BEFORE=… WEBHOOKS_BEFORE=1 bash loadtest/webhooks.sh     # both have webhooks: compare delivery
#
# Not part of CI (a few minutes). Reports go to $OUT (default target/webhooks-<date>).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/webhooks-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
RUNS=${RUNS:-2}
PORT=18090
ADMIN=rc_admin_WebhookBench_$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
mkdir -p "$OUT"
cargo build --release --locked -p roomcast -p roomcast-loadtest
LT=$PWD/target/release/roomcast-loadtest
AFTER=$PWD/target/release/roomcast
ulimit -n "$(ulimit -Hn)"

hub_pid=
stop_hub() { [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null; hub_pid=; }
trap stop_hub EXIT
start_hub() { # binary, extra env...
  local bin=$1; shift
  local dir; dir=$(mktemp -d)
  # Started in an empty directory: built-in defaults only, whatever config/ this tree has.
  (cd "$dir" && exec env ROOMCAST_SERVER__LISTEN=127.0.0.1:$PORT ROOMCAST_ADMIN_KEY=$ADMIN \
    ROOMCAST_LOG__LEVEL=warn ROOMCAST_LIMITS__UPGRADE_RATE_LIMIT=0 "$@" "$bin" >/dev/null 2>"$OUT/hub.err") &
  hub_pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0; sleep 0.1; done
  echo "webhooks.sh: the hub did not start"; cat "$OUT/hub.err"; exit 1
}
run() { # name, binary, env (one word or -), loadtest args...
  local name=$1 bin=$2 env=$3; shift 3
  if [ "$env" = - ]; then start_hub "$bin"; else start_hub "$bin" "$env"; fi
  "$LT" "$@" --url "http://127.0.0.1:$PORT" --admin-key "$ADMIN" --hub-pid "$hub_pid" --json "$OUT/$name.json" \
    | grep -v '^ *["{}]' | sed "s/^/[$name] /"
  stop_hub
}

if [ -n "${BEFORE:-}" ] && [ -z "${WEBHOOKS_BEFORE:-}" ]; then
  for i in $(seq "$RUNS"); do
    for side in before after; do
      bin=$AFTER; [ $side = before ] && bin=$BEFORE
      run "publish-$side-$i" "$bin" - publish -n 10 -r 0 -p 8 -d 8
      run "fanout-$side-$i" "$bin" - fanout -n 5000 -r 0 -p 4 -d 8
    done
  done
fi
private=ROOMCAST_WEBHOOKS__ALLOW_PRIVATE_TARGETS=true
# WEBHOOKS_BEFORE=1: BEFORE has webhooks too; compare their delivery, alternately.
sides=after; [ -n "${WEBHOOKS_BEFORE:-}" ] && sides="before after"
for i in $(seq "$RUNS"); do
  for side in $sides; do
    bin=$AFTER; [ $side = before ] && bin=$BEFORE
    run "webhook-saturation-$side-$i" "$bin" $private publish -n 10 -r 0 -p 8 -d 8 --webhook --drain 60
    run "webhook-steady-$side-$i" "$bin" $private publish -n 10 -r 500 -p 4 -d 20 --webhook
  done
done
echo "webhooks.sh: reports in $OUT"
