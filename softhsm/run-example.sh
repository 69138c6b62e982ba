#!/usr/bin/env bash
# The README's first command ends here: dev token and keys, demo registry, a local Redis, and the
# example authorization server in the foreground (Ctrl-C stops it; Redis keeps running).
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
if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
  echo "[redis] starting on 127.0.0.1:$DEV_REDIS_PORT" >&2
  redis-server --port "$DEV_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$DEV_DIR/redis" --daemonize yes --pidfile "$pidfile" --logfile "$DEV_DIR/redis/redis.log"
  for _ in $(seq 50); do
    redis-cli -p "$DEV_REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

bash "$here/setup-dev-token.sh"

# The example host's session key: one per dev directory, the same in every worker.
if [ -z "${EXAMPLE_SECRET_KEY:-}" ]; then
  [ -f "$DEV_DIR/example-secret-key" ] || (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))' >"$DEV_DIR/example-secret-key")
  export EXAMPLE_SECRET_KEY=$(cat "$DEV_DIR/example-secret-key")
fi


# Demo registry: a client and a resource server whose keys are in the dev token too (a demo
# shortcut: in real life each party has its own HSM).
OAUTH_HSM_REGISTRY="$here/empty-registry.json" "$VENV/bin/python" - "$OAUTH_HSM_REGISTRY" <<'PY'
import json, os, subprocess, sys
def jwks(*labels):
    out = subprocess.run([os.environ["FLASK"], "--app", "example_app", "oauth-hsm", "keys", "jwks", *labels],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)
resource = os.environ["EXAMPLE_RESOURCE"]
issuer = os.environ["OAUTH_HSM_ISSUER"].rstrip("/")
registry = {
    "clients": [{
        "client_id": "demo-client",
        "client_name": "Demo client",
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "ES256",
        "jwks": jwks("demo-client-sig"),
        # the code flow: example_app's /demo pages, and `demo-client --flow code` on a loopback port
        "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
        "redirect_uris": [issuer + "/demo/callback", os.environ["EXAMPLE_DEMO_CALLBACK"]],
        "scope": "openid profile email read write",
        "resources": [resource],
    }],
    "resource_servers": [{
        "resource": resource,
        "client_id": "demo-rs",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": jwks("demo-rs-sig", "demo-rs-enc"),
        "scope": "read write",
        "introspection_signed_response_alg": "ES256",
        "introspection_encrypted_response_alg": "ECDH-ES+A256KW",
        "introspection_encrypted_response_enc": "A256GCM",
        "introspection_claims": ["email", "username"],
    }],
}
with open(sys.argv[1], "w") as fh:
    json.dump(registry, fh, indent=2)
print(f"[registry] wrote {sys.argv[1]}", file=sys.stderr)
PY

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

MSG
exec "$VENV/bin/gunicorn" --workers 2 --worker-class gthread --threads 8 \
  --bind "$EXAMPLE_HOST:$EXAMPLE_PORT" --access-logfile - "example_app:app"
