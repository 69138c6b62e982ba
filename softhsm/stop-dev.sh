#!/usr/bin/env bash
# `./dev stop`: stop the example server (if it still runs) and the dev Redis of this checkout
# (DEV_DIR). `stop-dev.sh redis` stops only the Redis. Idempotent: nothing running is fine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
_OAUTH_HSM_ENV_QUIET=1 source "$here/env.sh"
what=${1:-all}

stop_pidfile() {  # name pidfile: TERM the process, wait up to 10 s for it to go, then KILL
  local name=$1 pidfile=$2 pid
  if ! { [ -f "$pidfile" ] && pid=$(cat "$pidfile") && kill -0 "$pid" 2>/dev/null; }; then
    echo "[$name] not running" >&2
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true  # it may be on its way out already (./dev run's own exit)
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { echo "[$name] stopped (pid $pid)" >&2; rm -f "$pidfile"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "[$name] killed (pid $pid)" >&2
}

[ "$what" = redis ] || stop_pidfile server "$DEV_DIR/server.pid"
stop_pidfile redis "$DEV_DIR/redis/redis.pid"
