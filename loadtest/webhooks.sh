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
source loadtest/lib.sh
out_dir webhooks
RUNS=${RUNS:-2}
PORT=18090
ADMIN=$(admin_key WebhookBench)
build_release
trap stop_all EXIT
run() { # name, binary, env (one word or -), loadtest args...
  local name=$1 bin=$2 env=$3; shift 3
  if [ "$env" = - ]; then start_roomcast "$bin" $PORT "$OUT/hub.err"; else start_roomcast "$bin" $PORT "$OUT/hub.err" "$env"; fi
  run_local "$name" "$@"
  stop_all
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
