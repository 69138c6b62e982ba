#!/usr/bin/env bash
# The README's first command ends here: dev token and keys, demo registry, a local Redis, and the
# example authorization server in the foreground. Ctrl-C stops the server, and the Redis too if
# this run started it; `./dev stop` stops whatever is left (a server run in the background, a Redis).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
source "$here/env.sh"
VENV=${VENV:-$root/.venv}
export FLASK="$VENV/bin/flask"
cd "$root"

# A Redis of our own on loopback (no persistence: replay state is short-lived by design).
mkdir -p "$DEV_DIR/redis"
pidfile="$DEV_DIR/redis/redis.pid"
started_redis=
if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
  echo "[redis] starting on 127.0.0.1:$DEV_REDIS_PORT" >&2
  redis-server --port "$DEV_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$DEV_DIR/redis" --daemonize yes --pidfile "$pidfile" --logfile "$DEV_DIR/redis/redis.log"
  started_redis=1
  for _ in $(seq 50); do
    redis-cli -p "$DEV_REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
stop_redis() {
  if [ -n "$started_redis" ]; then
    echo "[redis] stopping (127.0.0.1:$DEV_REDIS_PORT)" >&2
    bash "$here/stop-dev.sh" redis >/dev/null
  fi
}
trap stop_redis EXIT

bash "$here/setup-dev-token.sh"

# The example host's session key: one per dev directory, the same in every worker.
if [ -z "${EXAMPLE_SECRET_KEY:-}" ]; then
  [ -f "$DEV_DIR/example-secret-key" ] || (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))' >"$DEV_DIR/example-secret-key")
  export EXAMPLE_SECRET_KEY=$(cat "$DEV_DIR/example-secret-key")
fi

# Demo registry: a client and a resource server whose keys are in the dev token too (a demo
# shortcut: in real life each party has its own HSM). The keys commands need no registry yet.
OAUTH_HSM_REGISTRY="$here/empty-registry.json" "$VENV/bin/python" "$here/write-demo-registry.py" "$OAUTH_HSM_REGISTRY"

cat >&2 <<MSG

  flask-oauth-hsm example authorization server: $OAUTH_HSM_ISSUER
  metadata  $OAUTH_HSM_ISSUER/.well-known/oauth-authorization-server
  jwks      $OAUTH_HSM_ISSUER/oauth2/jwks

  In a browser, the authorization code flow (sign in as $EXAMPLE_DEMO_USER / $EXAMPLE_DEMO_PASSWORD):

    $OAUTH_HSM_ISSUER/demo/start

  In another terminal, the same flow from the command line (it prints a URL to open), or a
  client-credentials token, both with private_key_jwt (the client's key is in the dev token):

    source softhsm/env.sh && .venv/bin/flask --app example_app oauth-hsm demo-client --flow code
    source softhsm/env.sh && .venv/bin/flask --app example_app oauth-hsm demo-client

  and use a DPoP-bound or a symmetric PoP token against the API:

    .venv/bin/flask --app example_app oauth-hsm demo-client --binding dpop --api $OAUTH_HSM_ISSUER/api/items
    .venv/bin/flask --app example_app oauth-hsm demo-client --binding pop-symmetric --api $OAUTH_HSM_ISSUER/api/items

  CIBA (poll mode): the demo client asks for the demo user by phone number ($EXAMPLE_DEMO_PHONE),
  you approve on the "authentication device" page $OAUTH_HSM_ISSUER/ciba (signed in as above):

    .venv/bin/flask --app example_app oauth-hsm demo-client --flow ciba --login-hint tel:$EXAMPLE_DEMO_PHONE

  Ctrl-C stops the server$( [ -n "$started_redis" ] && echo " and its Redis" ).

MSG
# In the background so that a signal sent to this script (Ctrl-C, TERM, a closed terminal) reaches
# the server through the trap below. The pid file lets `./dev stop` find a server whose terminal is gone.
# granian, as docs/operations.md recommends (docs/benchmarks.md: a quarter less CPU per token than
# gunicorn); no access log (the security events are the audit trail; access logs belong to the
# reverse proxy). gunicorn works the same: docs/operations.md has both commands. In a session of
# its own: granian 2.8 stops cleanly on a TERM to its main process, but a Ctrl-C that reaches its
# workers directly can leave one that refuses to stop (measured); so the trap below forwards it.
setsid "$VENV/bin/granian" --interface wsgi --workers 2 --blocking-threads 2 --pid-file "$DEV_DIR/server.pid" \
  --host "$EXAMPLE_HOST" --port "$EXAMPLE_PORT" --no-access-log --workers-kill-timeout 5 "example_app:app" &
server=$!
# TERM asks granian to stop its workers (each gets 5 s, --workers-kill-timeout); should granian
# itself not be gone 15 s later, its whole session goes (it is the leader: setsid above).
killer=
stop_server() {
  kill -TERM "$server" 2>/dev/null || true
  [ -n "$killer" ] || { ( sleep 15; kill -KILL -- "-$server" 2>/dev/null ) & killer=$!; }
}
trap stop_server INT TERM HUP
status=0
while kill -0 "$server" 2>/dev/null; do
  wait "$server" || status=$?  # a trapped signal interrupts wait; go on until the server is gone
done
[ -z "$killer" ] || kill "$killer" 2>/dev/null || true  # the server is gone: its pid must not be signalled later
exit "$status"
