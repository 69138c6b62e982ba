#!/usr/bin/env bash
# Idempotent: creates the project-local token store, initialises the dev token by label and
# generates the dev keys inside it. Running it again changes nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
FLASK=${FLASK:-$(dirname "$0")/../.venv/bin/flask}

tokendir=$(dirname "$SOFTHSM2_CONF")/tokens
mkdir -p "$tokendir"
chmod 700 "$(dirname "$SOFTHSM2_CONF")" "$tokendir"
if [ ! -f "$SOFTHSM2_CONF" ]; then
  sed "s#@TOKENDIR@#$tokendir#" "$here/softhsm2.conf.in" >"$SOFTHSM2_CONF"
fi

if ! softhsm2-util --show-slots 2>/dev/null | grep -Eq "Label:[[:space:]]*$OAUTH_HSM_TOKEN_LABEL[[:space:]]*$"; then
  echo "[softhsm] initialising token '$OAUTH_HSM_TOKEN_LABEL' in $tokendir" >&2
  softhsm2-util --init-token --free --label "$OAUTH_HSM_TOKEN_LABEL" \
    --pin "$OAUTH_HSM_PIN" --so-pin "$SOFTHSM_SO_PIN" >/dev/null
fi

# The registry named by the settings may not exist yet: key commands do not need it.
export OAUTH_HSM_REGISTRY=${OAUTH_HSM_REGISTRY_FOR_KEYS:-$here/empty-registry.json}
gen() { "$FLASK" --app example_app oauth-hsm keys generate --if-missing "$@" >&2; }
gen --alg ES256 --use sig --label as-sig-es256            # signs access tokens
gen --alg PS256 --use sig --label as-sig-ps256            # for resource servers that want PS256
gen --alg RSA-OAEP-256 --use enc --label as-enc-rsa       # decrypts nested client assertions
gen --alg ES256 --use sig --label demo-client-sig         # the demo client's own key
gen --alg ES256 --use sig --label demo-rs-sig             # the demo resource server's key
gen --alg ECDH-ES+A256KW --use enc --label demo-rs-enc    # receives encrypted introspection responses and PoP keys
gen --alg ES256 --use sig --label demo-client-dpop        # the demo client's DPoP / PoP key
secret() { "$FLASK" --app example_app oauth-hsm keys generate-secret --if-missing "$@" >&2; }
secret --kind hmac --label as-dpop-nonce                  # stateless DPoP nonces (OAUTH_HSM_DPOP_NONCE_KEY)
secret --kind aes --label as-pop-wrap                     # seals symmetric PoP keys in Redis (OAUTH_HSM_POP_KEY_WRAP_KEY)
secret --kind hmac --label as-pairwise                    # pairwise sub values (OAUTH_HSM_PAIRWISE_KEY, docs/ciba.md)
