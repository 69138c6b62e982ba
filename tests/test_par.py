"""Pushed authorization requests (RFC 9126) and request objects at the authorization endpoint
(RFC 9101), through the real pipeline: SoftHSM, Redis, the host's login and consent page."""

from __future__ import annotations

import pytest

from as_helpers import ClientKey
from par_helpers import (
    AUTHORIZE_URL,
    ISSUER,
    PAR_URL,
    encrypt,
    par_scenario,
    push,
    redirect_for,
    request_claims,
    sign,
)
from pop_proofs import dpop_proof, jkt
from user_host import Browser, pkce_pair
from users_helpers import expect_error, token_post


@pytest.fixture(scope="module")
def scenario():
    return par_scenario()


@pytest.fixture(scope="module")
def env(make_user_as, scenario):
    return make_user_as(scenario, OAUTH_HSM_CONSENT_LIFETIME="0")


@pytest.fixture(scope="module")
def par_required_env(make_user_as, scenario):
    return make_user_as(scenario, OAUTH_HSM_CONSENT_LIFETIME="0", OAUTH_HSM_REQUIRE_PAR="true")


def pushed_params(client_id: str, challenge: str, **extra):
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_for(client_id),
        "scope": "openid read",
        "state": "st-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def push_ok(env, client_id: str = "jar", challenge: str | None = None, headers=None, **extra) -> str:
    challenge = challenge or pkce_pair()[1]
    r = push(env, client_id, headers=headers, **pushed_params(client_id, challenge, **extra))
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:") and body["expires_in"] == 60
    assert r.headers["Cache-Control"] == "no-store"
    return body["request_uri"]


def authorize(env, params: dict, **kw):
    return Browser(env.app).authorize(params, **kw)


def redeem(env, client_id: str, code: str, verifier: str, headers=None, **form):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_for(client_id),
        "code_verifier": verifier,
        **form,
    }
    if headers:
        from as_helpers import assertion_form, claims_for
        from par_helpers import now

        t = now()
        data = assertion_form(env.keys[client_id].jws(claims_for(client_id, ISSUER, iat=t, exp=t + 60)), **data)
        return env.client().post("/oauth2/token", data=data, headers=headers)
    return token_post(env, client_id, **data)


# --- PAR ---------------------------------------------------------------------------------------------------


def test_par_then_code_flow(env):
    verifier, challenge = pkce_pair()
    uri = push_ok(env, "jar", challenge)
    answer = authorize(env, {"client_id": "jar", "request_uri": uri})
    assert answer.code and answer.params["state"] == "st-1" and answer.params["iss"] == ISSUER
    assert answer.location.startswith(redirect_for("jar"))
    r = redeem(env, "jar", answer.code, verifier)
    assert r.status_code == 200, r.get_json()


def test_a_request_uri_is_used_once(env):
    uri = push_ok(env)
    assert authorize(env, {"client_id": "jar", "request_uri": uri}).code
    again = authorize(env, {"client_id": "jar", "request_uri": uri})
    assert again.params["error"] == "invalid_request_uri" and "code" not in again.params


def test_a_request_uri_expires(env, fake_clock):
    uri = push_ok(env)
    fake_clock.advance(61)
    answer = authorize(env, {"client_id": "jar", "request_uri": uri})
    assert answer.params["error"] == "invalid_request_uri"


def test_another_clients_request_uri_is_refused(env):
    uri = push_ok(env, "jar")
    answer = authorize(env, {"client_id": "jar-typ", "request_uri": uri})
    assert answer.params["error"] == "invalid_request_uri" and answer.location.startswith(redirect_for("jar-typ"))


@pytest.mark.parametrize(
    "uri",
    [
        "https://attacker.example/request.jwt",
        "urn:ietf:params:oauth:request_uri:short",
        "urn:ietf:params:oauth:request_uri:" + "A" * 43,
    ],
)
def test_foreign_or_unknown_request_uris_are_refused_never_fetched(env, uri):
    answer = authorize(env, {"client_id": "jar", "request_uri": uri})
    assert answer.params["error"] == "invalid_request_uri"


def test_request_uri_inside_a_par_body_is_refused(env):
    r = push(env, "jar", **pushed_params("jar", pkce_pair()[1]), request_uri="urn:ietf:params:oauth:request_uri:x")
    expect_error(r, 400, "invalid_request")


def test_par_validates_the_whole_request_and_answers_the_client(env):
    """RFC 9126 §2.3: errors go to the client, not through a redirect."""
    expect_error(
        push(env, "jar", **pushed_params("jar", pkce_pair()[1], redirect_uri="https://evil.example/cb")), 400, "invalid_request"
    )
    expect_error(push(env, "jar", **pushed_params("jar", None, code_challenge=None)), 400, "invalid_request")
    expect_error(push(env, "jar", **pushed_params("jar", pkce_pair()[1], scope="admin")), 400, "invalid_scope")
    expect_error(
        push(env, "jar", **pushed_params("jar", pkce_pair()[1], response_type="token")), 400, "unsupported_response_type"
    )


def test_par_needs_client_authentication(env):
    r = env.client().post("/oauth2/par", data=pushed_params("jar", pkce_pair()[1]))
    expect_error(r, 401, "invalid_client")
    r = push(env, "jar", aud="https://other.example.test", **pushed_params("jar", pkce_pair()[1]))
    expect_error(r, 401, "invalid_client")


def test_par_is_for_clients_of_the_code_flow(env):
    expect_error(push(env, "machine", **pushed_params("machine", pkce_pair()[1])), 400, "unauthorized_client")


def test_par_answers_get_with_405(env):
    assert env.client().get("/oauth2/par").status_code == 405


def test_par_required_per_client_but_skipped(env):
    _, challenge = pkce_pair()
    answer = authorize(env, pushed_params("par-only", challenge))
    assert answer.params["error"] == "invalid_request" and "code" not in answer.params
    uri = push_ok(env, "par-only")
    assert authorize(env, {"client_id": "par-only", "request_uri": uri}).code


def test_par_required_globally_but_skipped(par_required_env):
    env = par_required_env
    answer = authorize(env, pushed_params("jar", pkce_pair()[1]))
    assert answer.params["error"] == "invalid_request" and "code" not in answer.params
    uri = push_ok(env, "jar")
    answer = authorize(env, {"client_id": "jar", "request_uri": uri, "scope": "openid"})
    assert answer.params["error"] == "invalid_request", "only client_id and request_uri"
    uri = push_ok(env, "jar")
    assert authorize(env, {"client_id": "jar", "request_uri": uri}).code
    assert env.client().get("/.well-known/oauth-authorization-server").get_json()["require_pushed_authorization_requests"]


def test_without_par_required_other_parameters_beside_request_uri_are_ignored(env):
    """RFC 9126 §4: the pushed parameters are the request; a state or scope beside it changes nothing."""
    uri = push_ok(env)
    answer = authorize(env, {"client_id": "jar", "request_uri": uri, "state": "other", "scope": "openid"})
    assert answer.code and answer.params["state"] == "st-1"


# --- JAR at /authorize and at /par -------------------------------------------------------------------------


def test_a_signed_request_object_at_authorize(env):
    verifier, challenge = pkce_pair()
    claims = request_claims("jar", challenge=challenge, state="from-object")
    answer = authorize(
        env, {"client_id": "jar", "request": sign(env, "jar", claims), "state": "from-query", "scope": "openid read write"}
    )
    assert answer.code and answer.params["state"] == "from-object"
    assert redeem(env, "jar", answer.code, verifier).get_json()["scope"] == "openid read"


def test_request_object_client_id_must_match_the_query(env):
    raw = sign(env, "jar", request_claims("jar"))
    answer = authorize(env, {"client_id": "jar-typ", "request": raw})
    assert answer.params["error"] == "invalid_request_object"


def test_an_invalid_request_object_at_authorize_redirects_the_error(env):
    raw = sign(env, "jar", request_claims("jar", aud="https://other.example.test"))
    answer = authorize(env, {"client_id": "jar", "request": raw, "state": "s"})
    assert answer.params["error"] == "invalid_request_object" and answer.location.startswith(redirect_for("jar"))


def test_a_request_object_must_not_nest_request_uri(env):
    raw = sign(env, "jar", request_claims("jar", request_uri="urn:ietf:params:oauth:request_uri:x"))
    assert authorize(env, {"client_id": "jar", "request": raw}).params["error"] == "invalid_request_object"


def test_request_objects_with_resource_arrays_claims_and_max_age(env):
    _, challenge = pkce_pair()
    claims = request_claims(
        "jar", challenge=challenge, resource=["https://rs1.example.test"], max_age=3600, claims={"id_token": {"email": None}}
    )
    answer = authorize(env, {"client_id": "jar", "request": sign(env, "jar", claims)})
    assert answer.code, answer.params


def test_both_request_and_request_uri_is_refused(env):
    answer = authorize(env, {"client_id": "jar", "request": "a.b.c", "request_uri": "urn:x"})
    assert answer.params["error"] == "invalid_request"


def test_an_encrypted_request_object_pushed_then_the_code_flow(env):
    verifier, challenge = pkce_pair()
    raw = encrypt(env, sign(env, "jar-enc", request_claims("jar-enc", aud=ISSUER, challenge=challenge)))
    r = push(env, "jar-enc", request=raw, client_id="jar-enc")
    assert r.status_code == 201, r.get_json()
    answer = authorize(env, {"client_id": "jar-enc", "request_uri": r.get_json()["request_uri"]})
    assert answer.code
    assert redeem(env, "jar-enc", answer.code, verifier).status_code == 200


def test_a_request_object_at_par_is_checked_for_par(env):
    """Under the endpoint policy, a request object pushed to /par names /par, not /authorize."""
    ok = push(env, "jar-endpoint", aud=PAR_URL, request=sign(env, "jar-endpoint", request_claims("jar-endpoint", aud=PAR_URL)))
    assert ok.status_code == 201, ok.get_json()
    bad = push(
        env, "jar-endpoint", aud=PAR_URL, request=sign(env, "jar-endpoint", request_claims("jar-endpoint", aud=AUTHORIZE_URL))
    )
    expect_error(bad, 400, "invalid_request_object")


def test_a_pushed_request_object_with_another_clients_id_is_refused(env):
    raw = sign(env, "jar", request_claims("jar"))
    expect_error(push(env, "jar-typ", request=raw), 400, "invalid_request_object")


def test_a_client_assertion_pushed_as_request_object_is_refused(env):
    from as_helpers import claims_for

    assertion = env.keys["jar"].jws({**claims_for("jar", ISSUER), "client_id": "jar"})
    expect_error(push(env, "jar", request=assertion), 400, "invalid_request_object")


# --- dpop_jkt (RFC 9449 §10) -------------------------------------------------------------------------------


def test_dpop_jkt_at_authorize_binds_the_code(env):
    key, other = ClientKey.new("ES256"), ClientKey.new("ES256")
    verifier, challenge = pkce_pair()
    answer = authorize(env, pushed_params("jar", challenge, dpop_jkt=jkt(key)))
    assert answer.code
    r = redeem(env, "jar", answer.code, verifier, headers={"DPoP": dpop_proof(other)})
    expect_error(r, 400, "invalid_grant")
    answer = authorize(env, pushed_params("jar", challenge, dpop_jkt=jkt(key)))
    r = redeem(env, "jar", answer.code, verifier)
    expect_error(r, 400, "invalid_grant")
    answer = authorize(env, pushed_params("jar", challenge, dpop_jkt=jkt(key)))
    r = redeem(env, "jar", answer.code, verifier, headers={"DPoP": dpop_proof(key)})
    assert r.status_code == 200 and r.get_json()["token_type"] == "DPoP"


def test_a_malformed_dpop_jkt_is_refused(env):
    assert authorize(env, pushed_params("jar", pkce_pair()[1], dpop_jkt="not a thumbprint")).params["error"] == "invalid_request"


def test_a_dpop_proof_at_par_binds_the_code(env):
    key, other = ClientKey.new("ES256"), ClientKey.new("ES256")
    verifier, challenge = pkce_pair()
    uri = push_ok(env, "jar", challenge, headers={"DPoP": dpop_proof(key, htu=PAR_URL)})
    answer = authorize(env, {"client_id": "jar", "request_uri": uri})
    expect_error(redeem(env, "jar", answer.code, verifier, headers={"DPoP": dpop_proof(other)}), 400, "invalid_grant")
    uri = push_ok(env, "jar", challenge, headers={"DPoP": dpop_proof(key, htu=PAR_URL)})
    answer = authorize(env, {"client_id": "jar", "request_uri": uri})
    assert redeem(env, "jar", answer.code, verifier, headers={"DPoP": dpop_proof(key)}).status_code == 200


def test_dpop_jkt_and_a_dpop_proof_at_par_must_agree(env):
    key, other = ClientKey.new("ES256"), ClientKey.new("ES256")
    r = push(
        env, "jar", headers={"DPoP": dpop_proof(key, htu=PAR_URL)}, **pushed_params("jar", pkce_pair()[1], dpop_jkt=jkt(other))
    )
    expect_error(r, 400, "invalid_request")
    r = push(env, "jar", headers={"DPoP": dpop_proof(key, htu=AUTHORIZE_URL)}, **pushed_params("jar", pkce_pair()[1]))
    expect_error(r, 400, "invalid_dpop_proof")


def test_public_client_refresh_tokens_are_bound_to_the_dpop_key(env):
    """RFC 9449 §5: a public client's refresh token needs a proof with the same key."""
    key, other = ClientKey.new("ES256"), ClientKey.new("ES256")
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": "native",
        "redirect_uri": "http://127.0.0.1:8765/callback",
        "scope": "openid read",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    answer = authorize(env, params)
    r = env.client().post(
        "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "client_id": "native",
            "code": answer.code,
            "redirect_uri": params["redirect_uri"],
            "code_verifier": verifier,
        },
        headers={"DPoP": dpop_proof(key)},
    )
    assert r.status_code == 200, r.get_json()
    refresh = r.get_json()["refresh_token"]

    def refresh_with(headers):
        return env.client().post(
            "/oauth2/token",
            data={"grant_type": "refresh_token", "client_id": "native", "refresh_token": refresh},
            headers=headers,
        )

    expect_error(refresh_with({}), 400, "invalid_grant")
    expect_error(refresh_with({"DPoP": dpop_proof(other)}), 400, "invalid_grant")
    r = refresh_with({"DPoP": dpop_proof(key)})
    assert r.status_code == 200 and r.get_json()["token_type"] == "DPoP"


# --- metadata --------------------------------------------------------------------------------------------


def test_metadata_says_what_is_enforced(env):
    meta = env.client().get("/.well-known/oauth-authorization-server").get_json()
    assert meta["pushed_authorization_request_endpoint"] == PAR_URL
    assert meta["require_pushed_authorization_requests"] is False
    assert meta["request_parameter_supported"] is True and meta["request_uri_parameter_supported"] is False
    assert meta["request_object_signing_alg_values_supported"] == ["ES256", "PS256", "EdDSA"]
    assert "RSA-OAEP-256" in meta["request_object_encryption_alg_values_supported"]
    assert meta["request_object_encryption_enc_values_supported"] == ["A128GCM", "A256GCM", "A128CBC-HS256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
