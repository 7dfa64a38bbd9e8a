# Shared by the load scripts (compare.sh, webhooks.sh, cluster.sh); sourced from the repository
# root. Everything listens on 127.0.0.1 only.

# out_dir NAME: $OUT (default target/NAME-<date>), created, as an absolute path.
out_dir() {
  OUT=${OUT:-target/$1-$(date +%Y%m%d-%H%M%S)}
  mkdir -p "$OUT"
  OUT=$(realpath "$OUT")
}

# admin_key ID12: a fresh admin key whose key id is ID12 (12 characters).
admin_key() { echo "rc_admin_$1_$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"; }

# build_release: release builds of the hub and the generator; sets $LT (the generator) and $AFTER
# (this tree's hub) and raises the open-files limit for the clients.
build_release() {
  cargo build --release --locked -p roomcast -p roomcast-loadtest
  LT=$PWD/target/release/roomcast-loadtest
  AFTER=$PWD/target/release/roomcast
  ulimit -n "$(ulimit -Hn)"
}

# wait_port PORT: waits up to 10 s for something to listen on PORT, or exits.
wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "$(basename "$0"): nothing listens on $1"
  exit 1
}

# Processes started by start_bg; stop_all ends them. The caller sets its EXIT trap.
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# start_roomcast BINARY PORT LOG [VAR=value...]: a hub in an empty directory (built-in defaults,
# whatever config/ this tree has), admin key $ADMIN, no upgrade rate limit, warnings appended to
# LOG; waits for its port. Sets $hub_pid.
start_roomcast() {
  local bin=$1 port=$2 log=$3 dir
  shift 3
  dir=$(mktemp -d)
  (cd "$dir" && exec env ROOMCAST_SERVER__LISTEN="127.0.0.1:$port" ROOMCAST_ADMIN_KEY="$ADMIN" \
    ROOMCAST_LOG__LEVEL=warn ROOMCAST_LIMITS__UPGRADE_RATE_LIMIT=0 "$@" "$bin" >/dev/null 2>>"$log") &
  hub_pid=$!
  pids+=("$hub_pid")
  wait_port "$port"
}

# run_local NAME [loadtest args...]: the generator against the hub on $PORT (whose process,
# $hub_pid, it measures); its JSON report goes to $OUT/NAME.json, its summary is printed.
run_local() {
  local name=$1
  shift
  "$LT" "$@" --url "http://127.0.0.1:$PORT" --admin-key "$ADMIN" --hub-pid "$hub_pid" --json "$OUT/$name.json" | report "$name"
}

# need_redis: installs redis-server and redis-cli when either is missing (as root).
need_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null
}

# start_redis_at PORT [redis-server args...]: an empty redis-server that writes nothing to disk, on
# 127.0.0.1:PORT in a directory under $work; stop_all ends it. Waits for its port.
start_redis_at() {
  local port=$1
  shift
  mkdir -p "$work/redis-$port"
  (cd "$work/redis-$port" && exec redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no "$@" >/dev/null) &
  pids+=($!)
  wait_port "$port"
}

# report NAME: the generator's text summary without its JSON lines, each line prefixed [NAME].
report() { grep -v '^ *["{}]' | sed "s/^/[$1] /"; }
