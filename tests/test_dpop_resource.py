"""DPoP at the resource-server helper (RFC 9449 §7, §9): the proof checks with ath and the token's
key, the scheme, replay through Redis, nonces, and the §7.1 errors with ``algs``."""

from __future__ import annotations

import pytest

from as_helpers import ClientKey
from pop_helpers import (
    NONCE_KEY,
    POP_SETTINGS,
    RSP,
    ath,
    dpop_proof,
    pop_as,
    pop_world,
    post_token,
    rs_settings,
    token_form,
)

__all__ = ["pop_as", "pop_world"]
API = RSP + "/api/items"
ALGS = 'algs="ES256 ES384 PS256 EdDSA"'


def dpop_token(env, key, client_id="d-plain", scope="read"):
    response = post_token(env, token_form(env, client_id, resource=RSP, scope=scope), {"DPoP": dpop_proof(key)})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def call(env, token, key=None, *, scheme="DPoP", proof=None, path="/api/items", **claims):
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is None and key is not None:
        proof = dpop_proof(key, "GET", RSP + path, ath=ath(token), **claims)
    if proof is not None:
        headers["DPoP"] = proof
    return env.client().get(path, headers=headers)


def rejected(response, status, error, scheme="DPoP"):
    assert response.status_code == status, response.get_data(as_text=True)
    challenges = response.headers.getlist("WWW-Authenticate")
    assert challenges[0].startswith(scheme + " "), challenges
    if error:
        assert f'error="{error}"' in challenges[0] and response.get_json()["error"] == error
    if scheme == "DPoP":
        assert ALGS in challenges[0]  # RFC 9449 §7.1
    return challenges


def test_dpop_token_with_its_proof(pop_as):
    key = ClientKey.new()
    token = dpop_token(pop_as, key)
    response = call(pop_as, token, key)
    assert response.status_code == 200 and response.get_json()["client_id"] == "d-plain"
    assert "DPoP-Nonce" not in response.headers  # nonces are off at this resource server
    assert call(pop_as, token, key, scheme="dpop").status_code == 200  # the scheme is case-insensitive


def test_a_dpop_bound_token_is_no_bearer_token(pop_as):
    key = ClientKey.new()
    token = dpop_token(pop_as, key)
    challenges = rejected(call(pop_as, token, scheme="Bearer"), 401, "invalid_token", scheme="Bearer")
    assert challenges[1] == f"DPoP {ALGS}"  # and says what would have worked
    rejected(call(pop_as, token, key, scheme="Bearer"), 401, "invalid_token", scheme="Bearer")  # a proof changes nothing


def test_a_bearer_token_is_not_a_dpop_token(pop_as):
    token = post_token(pop_as, token_form(pop_as, "d-plain", resource=RSP)).get_json()["access_token"]
    key = ClientKey.new()
    rejected(call(pop_as, token, key), 401, "invalid_token")
    assert call(pop_as, token, scheme="Bearer").status_code == 200


def test_no_credentials_offers_both_schemes(pop_as):
    response = pop_as.client().get("/api/items")
    assert response.status_code == 401
    assert response.headers.getlist("WWW-Authenticate") == ['Bearer realm="api"', f"DPoP {ALGS}"]


@pytest.mark.parametrize(
    "case", ["no proof", "other key", "no ath", "wrong ath", "htm", "htu", "other path", "old iat", "typ", "two headers"]
)
def test_proof_checks(pop_as, case):
    key = ClientKey.new()
    token = dpop_token(pop_as, key)
    proofs = {
        "no proof": None,
        "other key": dpop_proof(ClientKey.new(), "GET", API, ath=ath(token)),
        "no ath": dpop_proof(key, "GET", API),
        "wrong ath": dpop_proof(key, "GET", API, ath=ath(token + "x")),
        "htm": dpop_proof(key, "POST", API, ath=ath(token)),
        "htu": dpop_proof(key, "GET", "https://as.example.test/api/items", ath=ath(token)),  # not our public URL
        "other path": dpop_proof(key, "GET", RSP + "/api/other", ath=ath(token)),
        "old iat": dpop_proof(key, "GET", API, ath=ath(token), iat=1_000_000),
        "typ": dpop_proof(key, "GET", API, ath=ath(token), header={"typ": "JWT"}),
        "two headers": dpop_proof(key, "GET", API, ath=ath(token)) + "," + dpop_proof(key, "GET", API, ath=ath(token)),
    }
    response = pop_as.client().get(
        "/api/items", headers={"Authorization": f"DPoP {token}", **({"DPoP": proofs[case]} if proofs[case] else {})}
    )
    rejected(response, 401, "invalid_dpop_proof")


def test_replay_at_the_resource_server(pop_as):
    key = ClientKey.new()
    token = dpop_token(pop_as, key)
    proof = dpop_proof(key, "GET", API, ath=ath(token))
    assert call(pop_as, token, proof=proof).status_code == 200
    rejected(call(pop_as, token, proof=proof), 401, "invalid_dpop_proof")


def test_insufficient_scope_answers_in_the_dpop_scheme(make_as, pop_world):
    from flask import jsonify

    from flask_oauth_hsm import ResourceProtector

    env = make_as(pop_world.scenario, protect_api=True, **POP_SETTINGS, **rs_settings(RSP))
    guard = ResourceProtector()

    @env.app.get("/api/admin")
    @guard.require_token(scope="admin")
    def admin():
        return jsonify(ok=True)

    key = ClientKey.new()
    token = dpop_token(env, key)
    challenges = rejected(call(env, token, key, path="/api/admin"), 403, "insufficient_scope")
    assert 'scope="admin"' in challenges[0]


def test_resource_server_with_its_own_redis(make_as, pop_world, redis_server):
    env = make_as(
        pop_world.scenario,
        protect_api=True,
        **POP_SETTINGS,
        **rs_settings(RSP, OAUTH_HSM_RS_REDIS_URL=redis_server.url, OAUTH_HSM_RS_REDIS_PREFIX="rs-own:"),
    )
    state = env.app.extensions["oauth_hsm_rs"]
    assert state.store is not env.state.store and state.store.prefix == "rs-own:"
    key = ClientKey.new()
    token = dpop_token(env, key)
    proof = dpop_proof(key, "GET", API, ath=ath(token))
    assert call(env, token, proof=proof).status_code == 200
    rejected(call(env, token, proof=proof), 401, "invalid_dpop_proof")


# --- nonces at the resource server (RFC 9449 §9) --------------------------------------------------------------


@pytest.fixture(scope="module")
def nonce_rs(make_as, pop_world):
    return make_as(
        pop_world.scenario,
        protect_api=True,
        **POP_SETTINGS,
        **rs_settings(RSP, OAUTH_HSM_RS_DPOP_NONCE="required", OAUTH_HSM_RS_DPOP_NONCE_KEY=NONCE_KEY),
    )


def test_resource_nonce_required_then_used(nonce_rs):
    key = ClientKey.new()
    token = dpop_token(nonce_rs, key)
    first = call(nonce_rs, token, key)
    rejected(first, 401, "use_dpop_nonce")
    nonce = first.headers["DPoP-Nonce"]
    second = call(nonce_rs, token, key, nonce=nonce)
    assert second.status_code == 200 and second.headers["DPoP-Nonce"]


def test_the_authorization_servers_nonce_is_not_the_resource_servers(make_as, pop_world, nonce_rs):
    as_nonce_env = make_as(pop_world.scenario, OAUTH_HSM_DPOP_NONCE="required", **POP_SETTINGS)
    as_nonce = post_token(as_nonce_env, token_form(as_nonce_env, "d-plain"), {"DPoP": dpop_proof(ClientKey.new())}).headers[
        "DPoP-Nonce"
    ]
    key = ClientKey.new()
    token = dpop_token(nonce_rs, key)
    response = call(nonce_rs, token, key, nonce=as_nonce)
    rejected(response, 401, "use_dpop_nonce")
    assert response.headers["DPoP-Nonce"] != as_nonce
