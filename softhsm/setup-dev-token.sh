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
# The dev keys of softhsm/dev-keys.json, made in one process (those already there are kept):
#   as-sig-es256 signs access tokens; as-sig-ps256 for resource servers that want PS256;
#   as-enc-rsa decrypts nested client assertions; demo-client-sig is the demo client's own key;
#   demo-rs-sig and demo-rs-enc are the demo resource server's (demo-rs-enc receives encrypted
#   introspection responses and PoP keys); demo-client-dpop is the demo client's DPoP / PoP key;
#   as-dpop-nonce makes stateless DPoP nonces (OAUTH_HSM_DPOP_NONCE_KEY); as-pop-wrap seals
#   symmetric PoP keys in Redis (OAUTH_HSM_POP_KEY_WRAP_KEY); as-pairwise makes pairwise sub values
#   (OAUTH_HSM_PAIRWISE_KEY, docs/ciba.md).
"$FLASK" --app example_app oauth-hsm keys provision "$here/dev-keys.json" >&2
