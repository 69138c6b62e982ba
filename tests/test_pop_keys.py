"""PoP key distribution (draft-ietf-oauth-pop-key-distribution-07, RFC 9200/9201) end to end:
asymmetric req_cnf with the token request signed by it, symmetric keys from the token's random
generator kept sealed in Redis, RFC 9421 proofs at the resource server, introspection, revocation,
and every refusal (invalid_request, unsupported_pop_key)."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from flask import jsonify
from jwcrypto import jwe as jc_jwe, jwk as jc_jwk

from as_helpers import RS1, ClientKey, assertion_form, b64, claims_for
from flask_oauth_hsm import ResourceProtector
from flask_oauth_hsm.binding.pop_keys import VAULT_NAMESPACE, SymmetricKey, decrypt_key
from pop_helpers import (
    POP_SETTINGS,
    RS_ENC_KEY,
    RSH,
    RSN,
    RSP,
    TOKEN_URL,
    dpop_jwk,
    jkt,
    pop_as,
    pop_world,
    post_token,
    req_cnf,
    rs_settings,
    signed_headers,
    symmetric_secret,
    token_form,
    with_old_epoch,
)

__all__ = ["pop_as", "pop_world"]
API = RSP + "/api/items"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def echo(make_as, pop_world):
    """Like pop_as, plus a POST route of rsp that reads a body (for the content-digest checks)."""
    env = make_as(pop_world.scenario, protect_api=True, **POP_SETTINGS, **rs_settings(RSP))
    guard = ResourceProtector()

    @env.app.post("/api/echo")
    @guard.require_token(scope="read")
    def echo():
        from flask import request

        return jsonify(got=request.get_data(as_text=True))

    return env


def expect(response, status, error=None):
    assert response.status_code == status, response.get_data(as_text=True)
    if error:
        assert response.get_json()["error"] == error
    return response.get_json()


# --- asymmetric ------------------------------------------------------------------------------------------


def asymmetric_request(
    env,
    key: ClientKey,
    client_id="p-both",
    *,
    sign_with=None,
    encode=True,
    created=None,
    nonce="auto",
    components=("@method", "@target-uri"),
    **form,
):
    """A token request asking for a pop token bound to ``key``, signed with ``sign_with`` (default: key)."""
    params = token_form(env, client_id, token_type="pop", req_cnf=req_cnf(key, encode), **form)
    body = urlencode(params).encode()
    signer = sign_with or key
    headers = signed_headers(
        "POST",
        TOKEN_URL,
        {"Content-Type": FORM},
        body,
        key=signer.private,
        alg=signer.alg,
        keyid=jkt(signer),
        components=components,
        created=created,
        nonce=nonce,
    )
    return env.client().post("/oauth2/token", data=body, headers=headers)


def pop_call(env, token, key, alg, keyid, *, method="GET", path="/api/items", body=None, send=None, **options):
    """A resource request with a PoP token, signed for (method, path, body); ``send`` overrides
    what is actually sent (to alter the request after signing)."""
    headers = {"Authorization": f"PoP {token}", **({"Content-Type": "application/json"} if body else {})}
    headers = signed_headers(method, RSP + path, headers, body, key=key, alg=alg, keyid=keyid, **options)
    send = {"method": method, "path": path, "body": body, **(send or {})}
    return env.client().open(send["path"], method=send["method"], data=send["body"], headers=headers)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "PS256"])
def test_asymmetric_pop_token_end_to_end(pop_as, alg):
    key = ClientKey.new(alg)
    body = expect(asymmetric_request(pop_as, key, resource=RSP), 200)
    assert body["token_type"] == "pop"
    assert body["rs_cnf"] == {"jwk": {k: v for k, v in pop_as.keys["rs-p"].public_jwk.items() if k not in ("use", "alg")}}
    from test_dpop import _claims

    assert _claims(pop_as, body["access_token"])["cnf"] == {"jwk": {**dpop_jwk(key), "kid": key.kid}}
    response = pop_call(pop_as, body["access_token"], key.private, alg, key.kid)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert pop_call(pop_as, body["access_token"], key.private, alg, jkt(key)).status_code == 200  # keyid: thumbprint too


def test_req_cnf_as_plain_json(pop_as):
    key = ClientKey.new()
    expect(asymmetric_request(pop_as, key, encode=False, resource=RSP), 200)


def test_the_token_request_must_be_signed_with_the_req_cnf_key(pop_as):
    key = ClientKey.new()
    expect(asymmetric_request(pop_as, key, sign_with=ClientKey.new(), resource=RSP), 400, "invalid_request")
    unsigned = urlencode(token_form(pop_as, "p-both", token_type="pop", req_cnf=req_cnf(key), resource=RSP))
    body = expect(pop_as.client().post("/oauth2/token", data=unsigned, headers={"Content-Type": FORM}), 400, "invalid_request")
    assert "RFC 9421" in body["error_description"]
    expect(asymmetric_request(pop_as, key, created=time.time() - 600, resource=RSP), 400, "invalid_request")  # stale
    expect(asymmetric_request(pop_as, key, components=("@method",), resource=RSP), 400, "invalid_request")  # no @target-uri


def test_a_signature_nonce_at_the_token_endpoint_is_used_once(pop_as):
    key = ClientKey.new()
    expect(asymmetric_request(pop_as, key, nonce="same-nonce-1", resource=RSP), 200)
    expect(asymmetric_request(pop_as, key, nonce="same-nonce-1", resource=RSP), 400, "invalid_request")


@pytest.mark.parametrize("alg", ["EdDSA", "PS256"])
def test_a_key_type_the_resource_server_does_not_verify(pop_as, alg):
    """RFC 9200 §5.8.3 unsupported_pop_key: rsh verifies ecdsa-p256-sha256 only."""
    expect(asymmetric_request(pop_as, ClientKey.new(alg), resource=RSH), 400, "unsupported_pop_key")


def test_a_p384_key_is_not_in_the_default_algorithms_of_a_resource_server(pop_as):
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP384R1())
    params = token_form(
        pop_as, "p-both", token_type="pop", resource=RSP, req_cnf=b64(json.dumps({"jwk": _p384_jwk(private)}).encode())
    )
    body = urlencode(params).encode()
    headers = signed_headers(
        "POST",
        TOKEN_URL,
        {"Content-Type": FORM},
        body,
        key=private,
        alg="ES384",
        keyid="p384",
        components=("@method", "@target-uri"),
    )
    expect(pop_as.client().post("/oauth2/token", data=body, headers=headers), 400, "unsupported_pop_key")


def _p384_jwk(private):
    n = private.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-384", "x": b64(n.x.to_bytes(48, "big")), "y": b64(n.y.to_bytes(48, "big")), "kid": "p384"}


# --- symmetric --------------------------------------------------------------------------------------------


def symmetric_token(env, client_id="p-both", resource=RSP):
    return expect(post_token(env, token_form(env, client_id, token_type="pop", resource=resource)), 200)


def test_symmetric_pop_token_end_to_end(pop_as, hsm):
    body = symmetric_token(pop_as)
    assert body["token_type"] == "pop" and set(body["cnf"]) == {"jwk"}
    jwk = body["cnf"]["jwk"]
    assert jwk["kty"] == "oct" and jwk["alg"] == "HS256" and len(symmetric_secret(body["cnf"])[0]) == 32  # RFC 7800 §3.2
    from test_dpop import _claims

    cnf = _claims(pop_as, body["access_token"])["cnf"]
    assert set(cnf) == {"jwe"} and jwk["k"] not in body["access_token"]  # never in clear in the token (RFC 7800 §3.3)
    assert decrypt_key(cnf["jwe"], hsm.key(RS_ENC_KEY)).secret == symmetric_secret(body["cnf"])[0]
    secret, kid = symmetric_secret(body["cnf"])
    assert pop_call(pop_as, body["access_token"], secret, "hmac", kid).status_code == 200


def test_symmetric_key_encrypted_to_the_clients_key(pop_as, pop_world):
    """The draft's Figure 3: a client with a registered encryption key gets cnf.jwe."""
    body = symmetric_token(pop_as, "p-enc")
    assert set(body["cnf"]) == {"jwe"}
    private = jc_jwk.JWK.from_pyca(pop_world.client_enc_key)
    token = jc_jwe.JWE()
    token.deserialize(body["cnf"]["jwe"], key=private)
    assert json.loads(token.objects["protected"])["cty"] == "jwk+json"
    key = SymmetricKey.from_jwk_bytes(token.payload)
    assert pop_call(pop_as, body["access_token"], key.secret, "hmac", key.kid).status_code == 200


@pytest.mark.parametrize(
    "client_id,resource,error",
    [
        ("p-both", [RSP, RS1], "invalid_request"),  # one key for one resource server (the draft)
        ("p-both", RSN, "unsupported_pop_key"),  # no encryption key: cannot receive the key
        ("p-both", RSH, "unsupported_pop_key"),  # does not verify hmac-sha256
        ("p-asym", RSP, "invalid_request"),  # not registered for symmetric keys
        ("d-plain", RSP, "invalid_request"),  # no pop tokens at all
    ],
)
def test_symmetric_refusals(pop_as, client_id, resource, error):
    form = token_form(pop_as, client_id, token_type="pop")
    form = {**form, "resource": resource} if isinstance(resource, str) else form
    data = urlencode(form) + "".join(f"&resource={r}" for r in (resource if isinstance(resource, list) else []))
    expect(pop_as.client().post("/oauth2/token", data=data, headers={"Content-Type": FORM}), 400, error)


def test_without_a_wrap_key_no_symmetric_keys(make_as, pop_world):
    registry = json.loads(json.dumps(pop_world.scenario.registry))
    for client in registry["clients"]:
        client.get("pop_keys") and client.update(pop_keys=[k for k in client["pop_keys"] if k != "symmetric"])
    from scenarios import Scenario

    env = make_as(Scenario(registry, pop_world.scenario.keys), OAUTH_HSM_DPOP_NONCE_KEY=POP_SETTINGS["OAUTH_HSM_DPOP_NONCE_KEY"])
    expect(post_token(env, token_form(env, "p-both", token_type="pop", resource=RSP)), 400, "invalid_request")
    meta = env.client().get("/.well-known/oauth-authorization-server").get_json()
    assert meta["pop_key_types_supported"] == ["asymmetric"] and "hmac-sha256" not in meta["pop_signature_alg_values_supported"]


def test_the_key_lives_in_redis_sealed_for_the_tokens_lifetime_only(pop_as):
    body = symmetric_token(pop_as)
    from test_dpop import _claims

    jti = _claims(pop_as, body["access_token"])["jti"]
    store = pop_as.state.store
    redis_key = store.key(VAULT_NAMESPACE, jti)
    sealed = store.client.get(redis_key)
    secret, _ = symmetric_secret(body["cnf"])
    assert sealed and secret not in sealed and b64(secret).encode() not in sealed  # AES-GCM under the HSM key
    assert 290 <= store.client.ttl(redis_key) <= 300  # OAUTH_HSM_ACCESS_TOKEN_LIFETIME


# --- introspection and revocation -----------------------------------------------------------------------------


def introspect(env, token, rs="rs-p"):
    a = env.keys[rs].jws(claims_for(rs, env.issuer))
    form = {**assertion_form(a, token=token)}
    form.pop("grant_type")
    return expect(env.client().post("/oauth2/introspect", data=form), 200)


def test_introspection_returns_the_key_encrypted_to_that_resource_server(pop_as, hsm):
    body = symmetric_token(pop_as)
    answer = introspect(pop_as, body["access_token"])
    assert answer["active"] and answer["token_type"] == "pop" and set(answer["cnf"]) == {"jwe"}
    assert decrypt_key(answer["cnf"]["jwe"], hsm.key(RS_ENC_KEY)).secret == symmetric_secret(body["cnf"])[0]


def test_introspection_of_an_asymmetric_pop_token(pop_as):
    key = ClientKey.new()
    body = expect(asymmetric_request(pop_as, key, resource=RSP), 200)
    answer = introspect(pop_as, body["access_token"])
    assert answer["token_type"] == "pop" and answer["cnf"]["jwk"]["x"] == key.public_jwk["x"]


def test_a_lost_key_record_makes_the_token_invalid_never_bearer(pop_as):
    body = symmetric_token(pop_as)
    from test_dpop import _claims

    jti = _claims(pop_as, body["access_token"])["jti"]
    pop_as.state.store.client.delete(pop_as.state.store.key(VAULT_NAMESPACE, jti))  # expired, flushed, lost in failover
    assert introspect(pop_as, body["access_token"]) == {"active": False}


def test_a_tampered_key_record_makes_the_token_invalid(pop_as):
    body = symmetric_token(pop_as)
    from test_dpop import _claims

    key = pop_as.state.store.key(VAULT_NAMESPACE, _claims(pop_as, body["access_token"])["jti"])
    sealed = bytearray(pop_as.state.store.client.get(key))
    sealed[-1] ^= 1
    pop_as.state.store.client.set(key, bytes(sealed))
    assert introspect(pop_as, body["access_token"]) == {"active": False}


def test_revocation_drops_the_key(pop_as):
    body = symmetric_token(pop_as)
    from test_dpop import _claims

    jti = _claims(pop_as, body["access_token"])["jti"]
    a = pop_as.keys["p-both"].jws(claims_for("p-both", pop_as.issuer))
    form = assertion_form(a, token=body["access_token"])
    form.pop("grant_type")
    assert pop_as.client().post("/oauth2/revoke", data=form).status_code == 200
    assert pop_as.state.store.client.get(pop_as.state.store.key(VAULT_NAMESPACE, jti)) is None


# --- the proof at the resource server: refusals ------------------------------------------------------------


@pytest.fixture(scope="module")
def symmetric(echo):
    body = symmetric_token(echo)
    secret, kid = symmetric_secret(body["cnf"])
    return body["access_token"], secret, kid


@pytest.mark.parametrize(
    "case",
    [
        "wrong key",
        "wrong keyid",
        "stale created",
        "future created",
        "no nonce",
        "method",
        "uri",
        "query",
        "no authorization",
        "expired",
    ],
)
def test_resource_refusals(echo, symmetric, case):
    token, secret, kid = symmetric
    args = {
        "wrong key": dict(key=b"x" * 32, keyid=kid),
        "wrong keyid": dict(key=secret, keyid="other"),
        "stale created": dict(key=secret, keyid=kid, created=time.time() - 200),
        "future created": dict(key=secret, keyid=kid, created=time.time() + 200),
        "no nonce": dict(key=secret, keyid=kid, nonce=None),
        "method": dict(key=secret, keyid=kid, send={"method": "POST", "path": "/api/echo"}, path="/api/echo", method="PUT"),
        "uri": dict(key=secret, keyid=kid, path="/api/items", send={"path": "/api/echo", "method": "POST"}),
        "query": dict(key=secret, keyid=kid, path="/api/items?x=1", send={"path": "/api/items?x=2"}),
        "no authorization": dict(key=secret, keyid=kid, components=("@method", "@target-uri")),
        "expired": dict(key=secret, keyid=kid, expires=_past()),
    }[case]
    response = pop_call(echo, token, alg="hmac", **args)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith('PoP realm="api", error="invalid_token"')


def _past():
    import datetime

    return datetime.datetime.fromtimestamp(time.time() - 60, datetime.UTC)  # beyond the 30 s leeway


def test_body_is_covered_by_the_digest(echo, symmetric):
    token, secret, kid = symmetric
    ok = pop_call(echo, token, secret, "hmac", kid, method="POST", path="/api/echo", body=b'{"a":1}')
    assert ok.status_code == 200 and ok.get_json()["got"] == '{"a":1}'
    altered = pop_call(
        echo, token, secret, "hmac", kid, method="POST", path="/api/echo", body=b'{"a":1}', send={"body": b'{"a":2}'}
    )
    assert altered.status_code == 401
    undigested = pop_call(
        echo, token, secret, "hmac", kid, method="POST", path="/api/echo", body=None, send={"body": b'{"a":1}'}
    )  # a body the signature knows nothing about
    assert undigested.status_code == 401


def test_the_target_uri_is_the_one_the_client_sent(echo, symmetric):
    """RFC 9421 §2.2.2: the request target as written, percent-encoding and query included."""
    token, secret, kid = symmetric
    path = "/api/items?name=%7Ea%20b&x=1"
    assert pop_call(echo, token, secret, "hmac", kid, path=path).status_code == 200
    assert pop_call(echo, token, secret, "hmac", kid, path=path, send={"path": "/api/items?name=~a%20b&x=1"}).status_code == 401


def test_a_signature_nonce_is_used_once_at_the_resource_server(echo, symmetric):
    token, secret, kid = symmetric
    assert pop_call(echo, token, secret, "hmac", kid, nonce="n-once-1").status_code == 200
    assert pop_call(echo, token, secret, "hmac", kid, nonce="n-once-1").status_code == 401


def test_a_pop_token_is_neither_bearer_nor_dpop(echo, symmetric):
    token, _, _ = symmetric
    for scheme in ("Bearer", "DPoP"):
        response = echo.client().get("/api/items", headers={"Authorization": f"{scheme} {token}"})
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith(scheme)


def test_a_resource_server_that_does_not_take_the_keys_algorithm(make_as, pop_world):
    env = make_as(
        pop_world.scenario, protect_api=True, **POP_SETTINGS, **rs_settings(RSP, OAUTH_HSM_RS_SIGNATURE_ALGS="ecdsa-p256-sha256")
    )
    body = symmetric_token(env)
    secret, kid = symmetric_secret(body["cnf"])
    assert pop_call(env, body["access_token"], secret, "hmac", kid).status_code == 401


# --- req_cnf and token_type: refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"token_type": "mac"},
        {"token_type": "bearer", "req_cnf": "e30"},
        {"req_cnf": "not base64!"},
        {"req_cnf": b64(b"[1]")},
        {"req_cnf": '{"jwk": 1}'},
        {"req_cnf": json.dumps({"kid": "abc"})},
        {"req_cnf": json.dumps({"jwk": {"kty": "oct", "k": "AAAA"}})},  # RFC 9201 §3.1: no symmetric keys from clients
        {"req_cnf": json.dumps({"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}})},
        {"req_cnf": json.dumps({"jwk": {"kty": "OKP", "crv": "X25519", "x": b64(b"\x09" * 32)}})},
        {"req_cnf": json.dumps({"jwk": {**dpop_jwk(ClientKey.new()), "d": "AAAA"}})},
        {"req_cnf": json.dumps({"jwk": dpop_jwk(ClientKey.new()), "extra": 1})},
        {"req_cnf": "x" * 9000},
    ],
)
def test_req_cnf_refusals(pop_as, extra):
    body = expect(post_token(pop_as, token_form(pop_as, "p-both", resource=RSP, **extra)), 400, "invalid_request")
    assert "AAAA" not in body["error_description"]


def test_asymmetric_for_a_client_allowed_symmetric_only(pop_as):
    expect(asymmetric_request(pop_as, ClientKey.new(), "p-sym", resource=RSP), 400, "invalid_request")


def test_bearer_explicitly(pop_as):
    assert expect(post_token(pop_as, token_form(pop_as, "p-both", token_type="bearer")), 200)["token_type"] == "Bearer"


def test_settled_window_for_signatures(make_as, pop_world):
    """HTTP signature created window at the token endpoint (OAUTH_HSM_HTTP_SIGNATURE_MAX_AGE + skew)."""
    import uuid

    env = with_old_epoch(
        make_as(pop_world.scenario, OAUTH_HSM_REDIS_PREFIX=f"sig-window-{uuid.uuid4().hex[:8]}:", **POP_SETTINGS)
    )
    key = ClientKey.new()
    expect(asymmetric_request(env, key, created=time.time() - 85, resource=RSP), 200)
    expect(asymmetric_request(env, key, created=time.time() - 95, resource=RSP), 400, "invalid_request")


def test_metadata(pop_as):
    meta = pop_as.client().get("/.well-known/oauth-authorization-server").get_json()
    assert meta["pop_key_types_supported"] == ["asymmetric", "symmetric"]
    assert meta["pop_signature_alg_values_supported"] == [
        "hmac-sha256",
        "ecdsa-p256-sha256",
        "ecdsa-p384-sha384",
        "ed25519",
        "rsa-pss-sha512",
    ]
    assert "tls_client_certificate_bound_access_tokens" not in meta  # no mTLS configured here
