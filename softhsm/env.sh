# Development settings, sourced by the scripts here (and by you: `source softhsm/env.sh`).
# Every value can be overridden from the environment. The PINs are dev defaults, nothing else.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DEV_DIR=${DEV_DIR:-$_root/.dev}
export SOFTHSM2_CONF=${SOFTHSM2_CONF:-$DEV_DIR/softhsm/softhsm2.conf}
export SOFTHSM_SO_PIN=${SOFTHSM_SO_PIN:-5678-dev-so}
export EXAMPLE_HOST=${EXAMPLE_HOST:-127.0.0.1}
export EXAMPLE_PORT=${EXAMPLE_PORT:-5000}
export DEV_REDIS_PORT=${DEV_REDIS_PORT:-6390}
export OAUTH_HSM_PKCS11_MODULE=${OAUTH_HSM_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
export OAUTH_HSM_TOKEN_LABEL=${OAUTH_HSM_TOKEN_LABEL:-oauth-hsm-dev}
export OAUTH_HSM_PIN=${OAUTH_HSM_PIN:-1234-dev}
export OAUTH_HSM_ISSUER=${OAUTH_HSM_ISSUER:-http://$EXAMPLE_HOST:$EXAMPLE_PORT}
export OAUTH_HSM_SIGNING_KEY=${OAUTH_HSM_SIGNING_KEY:-as-sig-es256}
export OAUTH_HSM_PUBLISHED_KEYS=${OAUTH_HSM_PUBLISHED_KEYS:-as-sig-ps256}
export OAUTH_HSM_ENCRYPTION_KEYS=${OAUTH_HSM_ENCRYPTION_KEYS:-as-enc-rsa}
export OAUTH_HSM_REDIS_URL=${OAUTH_HSM_REDIS_URL:-redis://127.0.0.1:$DEV_REDIS_PORT/0}
export OAUTH_HSM_REGISTRY=${OAUTH_HSM_REGISTRY:-$DEV_DIR/registry.json}
export EXAMPLE_RESOURCE=${EXAMPLE_RESOURCE:-$OAUTH_HSM_ISSUER/api}
# The example app is also a resource server (GET /api/items): these configure its helper.
export OAUTH_HSM_RS_ISSUER=${OAUTH_HSM_RS_ISSUER:-$OAUTH_HSM_ISSUER}
export OAUTH_HSM_RS_RESOURCE=${OAUTH_HSM_RS_RESOURCE:-$EXAMPLE_RESOURCE}
export OAUTH_HSM_RS_MODE=${OAUTH_HSM_RS_MODE:-local}
export OAUTH_HSM_RS_CLIENT_ID=${OAUTH_HSM_RS_CLIENT_ID:-demo-rs}
export OAUTH_HSM_RS_SIGNING_KEY=${OAUTH_HSM_RS_SIGNING_KEY:-demo-rs-sig}
export OAUTH_HSM_RS_DECRYPTION_KEY=${OAUTH_HSM_RS_DECRYPTION_KEY:-demo-rs-enc}
# The example host's demo user and session key (./dev run prints the user and password; dev defaults only).
export EXAMPLE_DEMO_USER=${EXAMPLE_DEMO_USER:-demo}
export EXAMPLE_DEMO_PASSWORD=${EXAMPLE_DEMO_PASSWORD:-demo-password}
export EXAMPLE_DEMO_CALLBACK=${EXAMPLE_DEMO_CALLBACK:-http://127.0.0.1:8765/callback}
