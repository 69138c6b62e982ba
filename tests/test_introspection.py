"""Introspection (RFC 7662, RFC 9701) and revocation (RFC 7009): who may ask, and what they learn."""

from __future__ import annotations

import json
import time

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from as_helpers import RS1, RS3, assertion_form, claims_for
from flask_oauth_hsm.jose import jwt as our_jwt

INTROSPECT = "/oauth2/introspect"
REVOKE = "/oauth2/revoke"
JWT_TYPE = "application/token-introspection+jwt"


def access_token(env, client_id="c-es256", resource=RS1, scope="read write", **extra):
    a = env.keys[client_id].jws(claims_for(client_id, env.issuer))
    r = env.client().post("/oauth2/token", data=assertion_form(a, resource=resource, scope=scope, **extra))
    assert r.status_code == 200, r.get_json()
    return r.get_json()["access_token"]


def caller_form(env, caller: str, aud=None, **form):
    """Form authenticating ``caller`` (a software-key RS or client) with private_key_jwt."""
    aud = aud or (env.introspection_url if caller == "rs-3" else env.issuer)
    a = env.keys[caller].jws(claims_for(caller, aud))
    return assertion_form(a, **form) | {"grant_type": None}


def introspect(env, caller: str, token: str, headers=None, aud=None, **extra):
    form = {k: v for k, v in caller_form(env, caller, aud, token=token, **extra).items() if v is not None}
    return env.client().post(INTROSPECT, data=form, headers=headers or {})


def revoke(env, client_id: str, token: str, **extra):
    form = {k: v for k, v in caller_form(env, client_id, token=token, **extra).items() if v is not None}
    return env.client().post(REVOKE, data=form)


def jwks(env) -> KeySet:
    return KeySet.import_key_set(json.loads(env.client().get("/oauth2/jwks").data))


# --- who may ask ------------------------------------------------------------------------------------


def test_resource_server_learns_the_minimal_claim_set(as_env):
    token = access_token(as_env)
    r = introspect(as_env, "rs-1", token)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    body = r.get_json()
    assert body["active"] is True and body["token_type"] == "Bearer"
    assert set(body) == {"active", "token_type", "scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti"}
    assert body["client_id"] == "c-es256" and body["aud"] == RS1 and body["scope"] == "read write"


def test_an_ordinary_client_is_refused_even_with_valid_credentials(as_env):
    token = access_token(as_env)
    r = introspect(as_env, "c-es256", token)
    assert r.status_code == 403 and r.get_json()["error"] == "access_denied"
    assert "active" not in r.get_data(as_text=True)


def test_bad_resource_server_credentials(as_env):
    token = access_token(as_env)
    forged = as_env.keys["rs-3"].jws(claims_for("rs-1", as_env.issuer), {"kid": as_env.keys["rs-1"].kid})
    r = as_env.client().post(INTROSPECT, data={**assertion_form(forged, token=token), "grant_type": ""})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"
    r = as_env.client().post(INTROSPECT, data={"token": token})
    assert r.status_code == 401


def rs3_answer(env, response) -> dict:
    """rs-3 gets encrypted JWTs only: decrypt with its key (jwcrypto), verify with joserfc."""
    from jwcrypto import jwe as jw_jwe, jwk as jw_jwk

    assert response.status_code == 200 and response.mimetype == JWT_TYPE
    outer = jw_jwe.JWE()
    outer.deserialize(response.get_data(as_text=True), key=jw_jwk.JWK.from_pyca(env.rs_enc_key))
    return jose_jwt.decode(outer.payload.decode(), jwks(env), algorithms=["PS256"]).claims["token_introspection"]


def test_resource_server_a_learns_nothing_about_tokens_for_b(as_env):
    token = access_token(as_env, resource=RS1)
    assert rs3_answer(as_env, introspect(as_env, "rs-3", token, headers={"Accept": JWT_TYPE})) == {"active": False}
    assert introspect(as_env, "rs-1", token).get_json()["active"] is True
    token3 = access_token(as_env, resource=RS3)
    assert introspect(as_env, "rs-1", token3).get_json() == {"active": False}


def test_token_for_several_audiences_is_active_for_each(as_env):
    a = as_env.keys["c-es256"].jws(claims_for("c-es256", as_env.issuer))
    r = as_env.client().post("/oauth2/token", data=assertion_form(a, resource=[RS1, "https://rs1.example.test"], scope="read"))
    assert r.status_code == 400  # repeated resource
    # audience arrays come from distinct non-encrypting resource servers; only RS1 qualifies here
    token = access_token(as_env)
    assert introspect(as_env, "rs-1", token).get_json()["aud"] == RS1


# --- what they learn ------------------------------------------------------------------------------------


def test_revoked_token_is_inactive(as_env):
    token = access_token(as_env)
    assert introspect(as_env, "rs-1", token).get_json()["active"] is True
    r = revoke(as_env, "c-es256", token)
    assert r.status_code == 200 and r.data == b""
    assert introspect(as_env, "rs-1", token).get_json() == {"active": False}


def test_a_client_may_revoke_only_its_own_tokens(as_env):
    token = access_token(as_env, "c-es256")
    r = revoke(as_env, "c-other", token)
    assert r.status_code == 400 and r.get_json()["error"] == "unauthorized_client"
    assert introspect(as_env, "rs-1", token).get_json()["active"] is True


def test_revocation_of_unknown_or_garbage_tokens_is_200(as_env):
    for junk in ("not-a-token", "a.b.c", "x" * 5000, access_token(as_env).replace(".", "x", 1)):
        assert revoke(as_env, "c-es256", junk).status_code == 200
    assert revoke(as_env, "c-es256", "t", token_type_hint="refresh_token").status_code == 200
    r = as_env.client().post(REVOKE, data={k: v for k, v in caller_form(as_env, "c-es256").items() if v})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"
    r = as_env.client().post(REVOKE, data={"token": "x"})
    assert r.status_code == 401


def test_expired_and_foreign_tokens_are_inactive(as_env):
    key = as_env.state.keys.ring.signing
    now = int(time.time())
    base = {"iss": as_env.issuer, "aud": RS1, "sub": "c-es256", "client_id": "c-es256", "jti": "j", "scope": "read"}
    expired = our_jwt.sign_jwt({**base, "iat": now - 600, "exp": now - 300}, key, "at+jwt")
    assert introspect(as_env, "rs-1", expired).get_json() == {"active": False}
    not_at = our_jwt.sign_jwt({**base, "iat": now, "exp": now + 60}, key, "JWT")  # typ is not at+jwt
    assert introspect(as_env, "rs-1", not_at).get_json() == {"active": False}
    other_iss = our_jwt.sign_jwt({**base, "iss": "https://evil.example", "iat": now, "exp": now + 60}, key, "at+jwt")
    assert introspect(as_env, "rs-1", other_iss).get_json() == {"active": False}
    unknown_client = our_jwt.sign_jwt({**base, "client_id": "gone", "iat": now, "exp": now + 60}, key, "at+jwt")
    assert introspect(as_env, "rs-1", unknown_client).get_json() == {"active": False}
    assertion = as_env.keys["c-es256"].jws(claims_for("c-es256", as_env.issuer))  # another JWT kind
    assert introspect(as_env, "rs-1", assertion).get_json() == {"active": False}


@pytest.mark.parametrize("junk", ["", "abc", "a.b.c", "a.b.c.d.e", "é" * 100, "eyJhbGciOiJub25lIn0.e30.", "x" * 15000])
def test_hostile_tokens_are_inactive_or_400(as_env, junk):
    r = introspect(as_env, "rs-1", junk)
    if junk == "":
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"
    else:
        assert r.status_code in (200, 413) and (r.status_code == 413 or r.get_json() == {"active": False})


def test_requester_ip(as_env):
    token = access_token(as_env, "c-cip")
    assert introspect(as_env, "rs-1", token, requester_ip="10.1.2.3").get_json()["active"] is True
    assert introspect(as_env, "rs-1", token, requester_ip="192.0.2.77").get_json()["active"] is True
    assert introspect(as_env, "rs-1", token, requester_ip="203.0.113.5").get_json() == {"active": False}
    assert introspect(as_env, "rs-1", token, requester_ip="2001:db8::1").get_json() == {"active": False}
    assert introspect(as_env, "rs-1", token).get_json()["active"] is True  # no requester_ip: no check
    r = introspect(as_env, "rs-1", token, requester_ip="not-an-ip")
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"
    other = access_token(as_env, "c-es256")  # no ranges registered: any address
    assert introspect(as_env, "rs-1", other, requester_ip="203.0.113.5").get_json()["active"] is True


# --- JWT responses (RFC 9701) ------------------------------------------------------------------------


def test_signed_jwt_response(as_env):
    token = access_token(as_env)
    r = introspect(as_env, "rs-1", token, headers={"Accept": JWT_TYPE})
    assert r.status_code == 200 and r.mimetype == JWT_TYPE and r.headers["Cache-Control"] == "no-store"
    decoded = jose_jwt.decode(r.get_data(as_text=True), jwks(as_env), algorithms=["ES256"])
    assert decoded.header["typ"] == "token-introspection+jwt"
    assert decoded.claims["iss"] == as_env.issuer and decoded.claims["aud"] == "rs-1"
    assert decoded.claims["token_introspection"]["active"] is True
    assert (
        decoded.claims["token_introspection"]["jti"] == jose_jwt.decode(token, jwks(as_env), algorithms=["ES256"]).claims["jti"]
    )


def test_encrypted_jwt_response_only_for_the_right_key(as_env):
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwcrypto import jwe as jw_jwe, jwk as jw_jwk
    from jwcrypto.common import JWException

    token = access_token(as_env, resource=RS3)
    r = introspect(as_env, "rs-3", token, headers={"Accept": JWT_TYPE})
    assert r.status_code == 200 and r.mimetype == JWT_TYPE
    body = r.get_data(as_text=True)
    assert body.count(".") == 4  # a JWE, never plaintext
    outer = jw_jwe.JWE()
    outer.deserialize(body, key=jw_jwk.JWK.from_pyca(as_env.rs_enc_key))
    decoded = jose_jwt.decode(outer.payload.decode(), jwks(as_env), algorithms=["PS256"])  # rs-3 registered PS256
    assert decoded.header["alg"] == "PS256" and decoded.claims["aud"] == "rs-3"
    assert decoded.claims["token_introspection"]["active"] is True
    wrong = jw_jwe.JWE()
    with pytest.raises(JWException):
        wrong.deserialize(body, key=jw_jwk.JWK.from_pyca(ec.generate_private_key(ec.SECP256R1())))


def test_resource_server_registered_for_encryption_never_gets_plaintext(as_env):
    token = access_token(as_env, resource=RS3)
    for accept in (None, "application/json", "*/*"):
        r = introspect(as_env, "rs-3", token, headers={"Accept": accept} if accept else {})
        assert r.status_code == 406 and r.get_json()["error"] == "invalid_request"
        assert "active" not in r.get_data(as_text=True)


def test_encrypted_access_tokens_are_read_back_through_the_escrowed_key(as_env):
    token = access_token(as_env, resource=RS3, scope="read")
    assert token.count(".") == 4
    r = introspect(as_env, "rs-3", token, headers={"Accept": JWT_TYPE})
    from jwcrypto import jwe as jw_jwe, jwk as jw_jwk

    outer = jw_jwe.JWE()
    outer.deserialize(r.get_data(as_text=True), key=jw_jwk.JWK.from_pyca(as_env.rs_enc_key))
    answer = jose_jwt.decode(outer.payload.decode(), jwks(as_env), algorithms=["PS256"]).claims["token_introspection"]
    assert answer["active"] is True and answer["aud"] == RS3
    assert revoke(as_env, "c-es256", token).status_code == 200
    r = introspect(as_env, "rs-3", token, headers={"Accept": JWT_TYPE})
    outer = jw_jwe.JWE()
    outer.deserialize(r.get_data(as_text=True), key=jw_jwk.JWK.from_pyca(as_env.rs_enc_key))
    assert jose_jwt.decode(outer.payload.decode(), jwks(as_env), algorithms=["PS256"]).claims["token_introspection"] == {
        "active": False
    }


def test_tampered_escrow_is_inactive(as_env):
    import base64

    token = access_token(as_env, resource=RS3, scope="read")
    head, *rest = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["oauth-hsm-cek"] = header["oauth-hsm-cek"][:-8] + "AAAAAAAA"
    forged_head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    r = introspect(as_env, "rs-3", ".".join([forged_head, *rest]), headers={"Accept": JWT_TYPE})
    assert rs3_answer(as_env, r) == {"active": False}


def test_introspection_request_shape(as_env):
    c = as_env.client()
    assert c.get(INTROSPECT).status_code == 405
    r = c.post(INTROSPECT, data="{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"
    r = c.post(INTROSPECT, data={"token": "x" * 20000})
    assert r.status_code == 413
