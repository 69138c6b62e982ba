# Development settings, sourced by the scripts here (and by you: `source softhsm/env.sh`).
# Every value can be overridden from the environment: a variable already set (and not empty) is
# kept. Kept OAUTH_HSM_* values that differ from the dev ones are named on stderr (values are
# never printed: one may be a PIN), so a stale export in your shell does not go unnoticed.
# _OAUTH_HSM_ENV_QUIET=1 silences that. The PINs are dev defaults, nothing else.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_kept=()

_dev_default() {  # NAME DEFAULT: export NAME, keeping a value already set
  local name=$1 default=$2
  if [ -n "${!name:-}" ]; then
    export "${name?}=${!name}"
    if [[ $name == OAUTH_HSM_* && ${!name} != "$default" ]]; then _kept+=("$name"); fi
  else
    export "${name?}=$default"
  fi
}

_dev_default DEV_DIR "$_root/.dev"
_dev_default SOFTHSM2_CONF "$DEV_DIR/softhsm/softhsm2.conf"
_dev_default SOFTHSM_SO_PIN 5678-dev-so
_dev_default EXAMPLE_HOST 127.0.0.1
_dev_default EXAMPLE_PORT 5000
_dev_default DEV_REDIS_PORT 6390
_dev_default OAUTH_HSM_PKCS11_MODULE /usr/lib/softhsm/libsofthsm2.so
_dev_default OAUTH_HSM_TOKEN_LABEL oauth-hsm-dev
_dev_default OAUTH_HSM_PIN 1234-dev
_dev_default OAUTH_HSM_ISSUER "http://$EXAMPLE_HOST:$EXAMPLE_PORT"
_dev_default OAUTH_HSM_SIGNING_KEY as-sig-es256
_dev_default OAUTH_HSM_PUBLISHED_KEYS as-sig-ps256
_dev_default OAUTH_HSM_ENCRYPTION_KEYS as-enc-rsa
_dev_default OAUTH_HSM_REDIS_URL "redis://127.0.0.1:$DEV_REDIS_PORT/0"
_dev_default OAUTH_HSM_REGISTRY "$DEV_DIR/registry.json"
_dev_default EXAMPLE_RESOURCE "$OAUTH_HSM_ISSUER/api"
# Proof of possession (docs/proof-of-possession.md): DPoP nonces and symmetric PoP keys, keys in the dev token.
_dev_default OAUTH_HSM_DPOP_NONCE optional
_dev_default OAUTH_HSM_DPOP_NONCE_KEY as-dpop-nonce
_dev_default OAUTH_HSM_POP_KEY_WRAP_KEY as-pop-wrap
# Pairwise sub values (docs/ciba.md): an HMAC key in the dev token.
_dev_default OAUTH_HSM_PAIRWISE_KEY as-pairwise
# The example app is also a resource server (GET /api/items): these configure its helper.
_dev_default OAUTH_HSM_RS_ISSUER "$OAUTH_HSM_ISSUER"
_dev_default OAUTH_HSM_RS_RESOURCE "$EXAMPLE_RESOURCE"
_dev_default OAUTH_HSM_RS_MODE local
_dev_default OAUTH_HSM_RS_CLIENT_ID demo-rs
_dev_default OAUTH_HSM_RS_SIGNING_KEY demo-rs-sig
_dev_default OAUTH_HSM_RS_DECRYPTION_KEY demo-rs-enc
# The example host's demo user (./dev run prints it; dev defaults only) and the redirect URI
# `demo-client --flow code` listens on.
_dev_default EXAMPLE_DEMO_USER demo
_dev_default EXAMPLE_DEMO_PASSWORD demo-password
_dev_default EXAMPLE_DEMO_CALLBACK http://127.0.0.1:8765/callback
# CIBA (docs/ciba.md): the demo user's phone number, for login_hint=tel:+… (E.164; a dev default).
_dev_default EXAMPLE_DEMO_PHONE +15550100123

# Said once per set of names: the scripts source this file again from inside each other.
if [ ${#_kept[@]} -gt 0 ] && [ -z "${_OAUTH_HSM_ENV_QUIET:-}" ] && [ "${_OAUTH_HSM_ENV_KEPT:-}" != "${_kept[*]}" ]; then
  echo "softhsm/env.sh: keeping ${_kept[*]} from your environment instead of the dev values" \
       "(unset them for the dev setup)" >&2
  export _OAUTH_HSM_ENV_KEPT="${_kept[*]}"
fi
unset -f _dev_default
unset _root _kept
