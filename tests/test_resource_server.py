"""Resource-server helpers: local RFC 9068 validation and introspection mode (RFC 6750 errors)."""

from __future__ import annotations

import time

import pytest
import requests
from flask import g, jsonify

from as_helpers import RS1, RS2, assertion_form, claims_for
from conftest import local_token_only
from flask_oauth_hsm import ResourceProtector
from flask_oauth_hsm.errors import InvalidKey
from flask_oauth_hsm.jose import jwe, jwk, jwt as our_jwt
from flask_oauth_hsm.rs.state import JWKSCache as _JWKSCache
from test_http_server import start_gunicorn, stop


def rs_settings(resource: str, **extra) -> dict:
    base = {"OAUTH_HSM_RS_ISSUER": "https://as.example.test", "OAUTH_HSM_RS_RESOURCE": resource}
    base.update(extra)
    return base


@pytest.fixture(scope="module")
def rs2_app(as_env):
    """AS and resource server rs-2 in one app; rs-2 decrypts its tokens in the HSM token."""
    from example_app import create_app

    local_token_only("ECDH-ES+A256KW decryption (CKM_ECDH1_DERIVE)")
    app = create_app(
        {
            **as_env.settings,
            **rs_settings(RS2, OAUTH_HSM_RS_DECRYPTION_KEY="enc-ecdh-es-a256kw", OAUTH_HSM_RS_REQUIRE_ENCRYPTED_TOKENS="true"),
        }
    )
    protector = ResourceProtector()  # the app already has one; this one only lends its decorator

    @app.get("/api/admin")
    @protector.require_token(scope="read admin")
    def admin():
        return jsonify(ok=True, who=g.oauth_token["client_id"])

    return app


@pytest.fixture(scope="module")
def rs1_app(as_env):
    from example_app import create_app

    app = create_app({**as_env.settings, **rs_settings(RS1)})
    return app


def token_for(env, resource: str, scope: str = "read", client_id: str = "c-es256") -> str:
    a = env.keys[client_id].jws(claims_for(client_id, env.issuer))
    r = env.client().post("/oauth2/token", data=assertion_form(a, resource=resource, scope=scope))
    assert r.status_code == 200, r.get_json()
    return r.get_json()["access_token"]


def call(app, token: str | None, path="/api/items", header=None):
    headers = {"Authorization": header or f"Bearer {token}"} if (token or header) else {}
    return app.test_client().get(path, headers=headers)


def expect_rejection(response, status: int, error: str | None):
    assert response.status_code == status, response.get_data(as_text=True)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="api"')
    if error:
        assert f'error="{error}"' in challenge and response.get_json()["error"] == error
    else:
        assert "error=" not in challenge
    return challenge


# --- local mode ------------------------------------------------------------------------------------


def test_encrypted_token_decrypted_in_the_token_and_validated(as_env, rs2_app):
    token = token_for(as_env, RS2)
    assert token.count(".") == 4
    r = call(rs2_app, token)
    assert r.status_code == 200 and r.get_json()["client_id"] == "c-es256"


def test_plain_token_refused_where_encryption_is_required(as_env, rs2_app):
    expect_rejection(call(rs2_app, token_for(as_env, RS1)), 401, "invalid_token")


def test_wrong_audience(as_env, rs1_app):
    expect_rejection(call(rs1_app, token_for(as_env, "https://rs3.example.test")), 401, "invalid_token")


def test_plain_token_accepted_by_rs1(as_env, rs1_app):
    r = call(rs1_app, token_for(as_env, RS1, "read write"))
    assert r.status_code == 200 and r.get_json()["scope"] == "read write"


def test_missing_and_malformed_authorization(rs1_app):
    expect_rejection(call(rs1_app, None), 401, None)
    for header in ("Basic abc", "Bearer", "Bearer a b", "bearer"):
        expect_rejection(call(rs1_app, None, header=header), 400, "invalid_request")
    for junk in ("abc", "a.b.c", "a.b.c.d.e", "x" * 70000, "eyJhbGciOiJub25lIn0.e30."):
        expect_rejection(call(rs1_app, junk), 401, "invalid_token")


def test_insufficient_scope(as_env, rs2_app):
    challenge = expect_rejection(call(rs2_app, token_for(as_env, RS2), "/api/admin"), 403, "insufficient_scope")
    assert 'scope="admin read"' in challenge


def _forged(env, claims: dict, typ="at+jwt") -> str:
    now = int(time.time())
    base = {
        "iss": env.issuer,
        "aud": RS1,
        "sub": "c-es256",
        "client_id": "c-es256",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
        "scope": "read",
    }
    return our_jwt.sign_jwt({**base, **claims}, env.state.keys.ring.signing, typ)


def test_claims_checked_locally(as_env, rs1_app):
    now = int(time.time())
    assert call(rs1_app, _forged(as_env, {})).status_code == 200  # signed by the AS: fine
    for bad in (
        {"exp": now - 120},
        {"iss": "https://evil.example"},
        {"aud": ["https://other"]},
        {"iat": now + 600},
        {"nbf": now + 600},
        {"exp": "soon"},
    ):
        expect_rejection(call(rs1_app, _forged(as_env, bad)), 401, "invalid_token")
    expect_rejection(call(rs1_app, _forged(as_env, {}, typ="JWT")), 401, "invalid_token")
    assert call(rs1_app, _forged(as_env, {"exp": now - 10})).status_code == 200  # within leeway


def test_signature_by_another_key_is_refused(as_env, rs1_app, hsm):
    token = our_jwt.sign_jwt(
        {"iss": as_env.issuer, "aud": RS1, "exp": int(time.time()) + 60, "scope": "read"}, hsm.key("sig-es384"), "at+jwt"
    )
    expect_rejection(call(rs1_app, token), 401, "invalid_token")


def test_jwks_cache_refetches_once_on_unknown_kid(hsm):
    keys = [hsm.key("sig-es256").public_jwk()]
    fetches = []

    def fetch():
        fetches.append(time.monotonic())
        return {"keys": list(keys)}

    cache = _JWKSCache(fetch)
    cache.MIN_REFETCH_INTERVAL = 0.0
    assert cache.key_for({"alg": "ES256", "kid": keys[0]["kid"]}).kid == keys[0]["kid"]
    keys.append(hsm.key("sig-ps256").public_jwk())  # the AS rotated in a new key
    assert cache.key_for({"alg": "PS256", "kid": keys[1]["kid"]}).kid == keys[1]["kid"]
    assert len(fetches) == 2
    with pytest.raises(InvalidKey):
        cache.key_for({"alg": "ES256", "kid": "unknown"})
    assert len(fetches) == 3  # one refetch per unknown kid (rate-limited in production)


@pytest.mark.parametrize("cnf", [{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}, {"x5t#S256": "abc"}, {"jwk": {}}])
def test_sender_constrained_token_is_never_a_bearer_token(as_env, rs1_app, cnf):
    """Review defect: the helper ignored cnf and accepted a sender-bound token as a bearer token."""
    expect_rejection(call(rs1_app, _forged(as_env, {"cnf": cnf})), 401, "invalid_token")


def test_an_unusable_key_in_the_as_jwks_does_not_fail_every_token(as_env, hsm):
    """Review defect: one key the RS cannot parse (an ES512 key added during a rotation) made
    every token fail with 401."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from flask_oauth_hsm.jose.jwk import public_jwk_dict

    es512 = {**public_jwk_dict(ec.generate_private_key(ec.SECP521R1()).public_key()), "kid": "new", "alg": "ES512", "use": "sig"}
    doc = {
        "keys": [
            es512,
            {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "broken"},
            hsm.key("sig-es256").public_jwk(),
        ]
    }
    cache = _JWKSCache(lambda: doc)
    key = cache.key_for({"alg": "ES256", "kid": hsm.key("sig-es256").kid})
    assert key.kid == hsm.key("sig-es256").kid


# --- introspection mode over real HTTP ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def introspecting_server(as_env):
    import support

    local_token_only("ECDH-ES+A256KW decryption (CKM_ECDH1_DERIVE)")
    port = support.free_port()
    base = f"http://127.0.0.1:{port}"
    settings = {
        **as_env.settings,
        **rs_settings(
            RS2,
            OAUTH_HSM_RS_MODE="introspection",
            OAUTH_HSM_RS_CLIENT_ID="rs-2",
            OAUTH_HSM_RS_SIGNING_KEY="rs2-sig",
            OAUTH_HSM_RS_DECRYPTION_KEY="enc-ecdh-es-a256kw",
            OAUTH_HSM_RS_CACHE_TTL="0",
            OAUTH_HSM_RS_INTROSPECTION_ENDPOINT=base + "/oauth2/introspect",
            OAUTH_HSM_RS_JWKS_URI=base + "/oauth2/jwks",
        ),
    }
    proc, url = start_gunicorn(settings, workers=2, port=port)
    assert url == base
    yield base
    stop(proc)


def http_token(env, base: str, resource: str, client_id="c-es256") -> str:
    a = env.keys[client_id].jws(claims_for(client_id, env.issuer))
    r = requests.post(base + "/oauth2/token", data=assertion_form(a, resource=resource, scope="read"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_introspection_mode_end_to_end(as_env, introspecting_server):
    base = introspecting_server
    token = http_token(as_env, base, RS2)
    r = requests.get(base + "/api/items", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["client_id"] == "c-es256"
    # revoked at the AS -> the next introspection (no cache here) says inactive
    a = as_env.keys["c-es256"].jws(claims_for("c-es256", as_env.issuer))
    assert (
        requests.post(base + "/oauth2/revoke", data={**assertion_form(a, token=token), "grant_type": ""}, timeout=10).status_code
        == 200
    )
    r = requests.get(base + "/api/items", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_introspection_mode_rejects_tokens_for_other_resources(as_env, introspecting_server):
    base = introspecting_server
    token = http_token(as_env, base, RS1)
    r = requests.get(base + "/api/items", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 401


def test_encryption_to_the_rs_key_roundtrips_through_our_jwe(hsm):
    key = hsm.key("enc-ecdh-es-a256kw")
    token = jwe.encrypt(b"x", jwk.load_jwk(key.public_jwk()), "ECDH-ES+A256KW", "A256GCM")
    assert jwe.decrypt(token, lambda h: key, ["ECDH-ES+A256KW"], ["A256GCM"]).plaintext == b"x"
