#!/usr/bin/env bash
# The whole test suite: unit tests, the integration binary (real server, real SQLite file, real
# HTTP/WebSocket clients), the browser tests (Debian's Chromium driven by playwright-core), the
# webhook verification examples (Node and Python), cluster tests against real redis-server
# processes, and the JavaScript client's tests against the built hub.
# Installs the browser tooling when it is missing; needs root (or sudo) for apt-get then.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "test.sh: installing nodejs and npm"
  apt_install nodejs npm
fi
if ! command -v python3 >/dev/null; then
  echo "test.sh: installing python3 (the webhook receiver example runs in the suite)"
  apt_install python3
fi
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
  echo "test.sh: installing chromium"
  apt_install chromium
fi
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "test.sh: installing redis-server and redis-cli (cluster tests start their own servers on free ports)"
  apt_install redis-server redis-tools
fi
if ! command -v openssl >/dev/null; then
  echo "test.sh: installing openssl (the Redis TLS test makes its certificates with it)"
  apt_install openssl
fi
if ! command -v promtool >/dev/null; then
  echo "test.sh: installing promtool (Debian package prometheus)"
  apt_install prometheus
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "test.sh: installing playwright-core"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -d clients/js/node_modules/typescript ] || [ ! -d clients/js/node_modules/ws ]; then
  echo "test.sh: installing the JavaScript client's test tools (typescript, terser, ws, playwright-core)"
  (cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -d tests/pusher/node_modules/pusher ]; then
  echo "test.sh: installing Pusher's libraries for the compatibility tests"
  (cd tests/pusher && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! python3 -c 'import pusher' 2>/dev/null; then
  echo "test.sh: installing Pusher's Python SDK (PyPI pusher) for the compatibility tests"
  python3 -m pip install --quiet --disable-pip-version-check pusher==3.3.4
fi

cargo test --locked --workspace
# The JavaScript client (clients/js) against the hub binary cargo just built: Node tests, its
# size and types, and examples/browser.html in Chromium.
(cd clients/js && HUB_BIN="$PWD/../../target/debug/roomcast" npm test)
# Pusher's own libraries against the Pusher protocol and API (DESIGN §12).
(cd tests/pusher && HUB_BIN="$PWD/../../target/debug/roomcast" npm test)
# The dashboard in Chromium (screenshots in target/dashboard-screenshots/), and the operators'
# Grafana dashboard and alert rules against the hub's metrics and promtool.
(cd tests/dashboard && HUB_BIN="$PWD/../../target/debug/roomcast" node --test --test-concurrency=1 ./*.test.mjs)
bash scripts/schemathesis.sh
# The soak lane's short run: two nodes, churn of distinct users through presence rooms,
# broadcasts and webhooks, a Redis restart half way; fails on a lost event or webhook.
SOAK_S=${SOAK_S:-120} SAMPLE_S=10 PROFILE=debug REDIS_PORT=16611 A=18411 B=18412 bash loadtest/soak.sh
