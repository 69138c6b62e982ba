"""Token endpoint and client authentication (docs/endpoints.md) against real SoftHSM and Redis."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from as_helpers import (
    ASSERTION_TYPE,
    RS1,
    RS2,
    RS3,
    ClientKey,
    assertion_form,
    claims_for,
    hs256_with_public_key,
    unsigned,
)
from flask_oauth_hsm.jose import jwe, jwk


def post(env, form, headers=None, url="/oauth2/token", **kw):
    return env.client().post(url, data=form, headers=headers or {}, **kw)


def assertion(env, client_id="c-es256", aud=None, header=None, key_of=None, **claims):
    key = env.keys[key_of or client_id]
    return key.jws(claims_for(client_id, env.issuer if aud is None else aud, **claims), header)


def token_request(env, client_id="c-es256", aud=None, header=None, extra=None, **claims):
    return post(env, assertion_form(assertion(env, client_id, aud, header, **claims), **(extra or {})))


def expect_error(response, status: int, error: str):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == error, body
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"
    return body


def jwks_of(env) -> KeySet:
    return KeySet.import_key_set(json.loads(env.client().get("/oauth2/jwks").data))


# --- success -------------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["c-es256", "c-ps256", "c-eddsa"])
def test_private_key_jwt_issues_an_rfc9068_access_token(as_env, client_id):
    response = token_request(as_env, client_id, extra={"scope": "read", "resource": RS1})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300 and body["scope"] == "read"
    # An independent JOSE library validates it as RFC 9068 with the JWKS endpoint's keys.
    token = jose_jwt.decode(body["access_token"], jwks_of(as_env), algorithms=["ES256"])
    assert token.header["typ"] == "at+jwt"
    claims = token.claims
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": as_env.issuer}, aud={"essential": True, "value": RS1}, exp={"essential": True}
    ).validate(claims)
    assert claims["sub"] == claims["client_id"] == client_id
    assert claims["scope"] == "read" and isinstance(claims["jti"], str) and claims["iat"] <= time.time()


def test_default_scope_and_resource(as_env):
    body = token_request(as_env).get_json()
    claims = jose_jwt.decode(body["access_token"], jwks_of(as_env), algorithms=["ES256"]).claims
    assert claims["aud"] == RS1 and claims["scope"] == "read write"


def test_several_resources_give_an_audience_array(as_env):
    form = assertion_form(assertion(as_env), resource=[RS1, RS2], scope="read")
    # RS2 wants encrypted tokens, so it must be the only audience.
    expect_error(post(as_env, form), 400, "invalid_target")


def test_token_for_an_encrypting_resource_server_is_a_nested_jwe(as_env):
    body = token_request(as_env, extra={"resource": RS3, "scope": "read"}).get_json()
    token = body["access_token"]
    assert token.count(".") == 4
    from jwcrypto import jwe as jw_jwe, jwk as jw_jwk

    rs_key = jw_jwk.JWK.from_pyca(as_env.rs_enc_key)
    outer = jw_jwe.JWE()
    outer.deserialize(token, key=rs_key)
    assert json.loads(outer.objects["protected"])["cty"] == "JWT"
    inner = jose_jwt.decode(outer.payload.decode(), jwks_of(as_env), algorithms=["ES256"])
    assert inner.header["typ"] == "at+jwt" and inner.claims["aud"] == RS3


def test_client_secret_basic_and_post(as_env):
    basic = base64.b64encode(b"c-basic:basic-secret-0123456789").decode()
    response = post(as_env, {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    response = post(
        as_env, {"grant_type": "client_credentials", "client_id": "c-post", "client_secret": "post-secret-0123456789"}
    )
    assert response.status_code == 200


def test_wrong_secrets_and_method_mismatch(as_env):
    basic = base64.b64encode(b"c-basic:wrong").decode()
    r = post(as_env, {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"})
    assert expect_error(r, 401, "invalid_client") and r.headers["WWW-Authenticate"].startswith("Basic")
    r = post(as_env, {"grant_type": "client_credentials", "client_id": "c-basic", "client_secret": "basic-secret-0123456789"})
    expect_error(r, 401, "invalid_client")  # registered for basic, used post
    r = post(as_env, {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"})
    expect_error(r, 401, "invalid_client")
    for bad in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer abc", "Basic"):
        expect_error(post(as_env, {"grant_type": "client_credentials"}, headers={"Authorization": bad}), 401, "invalid_client")


def test_public_client_cannot_use_client_credentials(as_env):
    expect_error(post(as_env, {"grant_type": "client_credentials", "client_id": "c-public"}), 400, "unauthorized_client")
    expect_error(post(as_env, {"grant_type": "client_credentials"}), 401, "invalid_client")


# --- aud (every cell of the policy table: test_aud_policy.py) ---------------------------------------

ISSUER, TOKEN_URL = "https://as.example.test", "https://as.example.test/oauth2/token"


def test_missing_aud_is_refused(as_env):
    key = as_env.keys["c-es256"]
    claims = claims_for("c-es256", ISSUER)
    del claims["aud"]
    expect_error(post(as_env, assertion_form(key.jws(claims))), 401, "invalid_client")


# --- replay ---------------------------------------------------------------------------------------


def test_replayed_assertion_is_refused(as_env):
    form = assertion_form(assertion(as_env))
    assert post(as_env, form).status_code == 200
    expect_error(post(as_env, form), 401, "invalid_client")


def test_twenty_concurrent_identical_assertions_give_exactly_one_token(as_env):
    form = assertion_form(assertion(as_env))
    statuses: list[int] = []
    barrier = threading.Barrier(20)

    def attempt():
        client = as_env.client()
        barrier.wait()
        statuses.append(client.post("/oauth2/token", data=form).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(statuses) == [200] + [401] * 19


def test_same_jti_from_two_clients_is_not_a_replay(as_env):
    jti = "shared-jti-value"
    assert token_request(as_env, "c-es256", jti=jti).status_code == 200
    assert token_request(as_env, "c-other", jti=jti).status_code == 200


# --- claims -----------------------------------------------------------------------------------------

NOW = int(time.time())


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": None},
        {"iss": "c-other"},
        {"sub": None},
        {"sub": "c-other"},
        {"jti": None},
        {"jti": ""},
        {"jti": 12345},
        {"exp": None},
        {"exp": "tomorrow"},
        {"exp": True},
        {"exp": -1},  # replaced below by "expired"
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_missing_or_invalid_claims(as_env, overrides):
    if overrides.get("exp") == -1:
        overrides = {"exp": int(time.time()) - 120, "iat": int(time.time()) - 180}
    expect_error(token_request(as_env, **overrides), 401, "invalid_client")


def _raw_claims_assertion(env, claims_json: str, client_id: str = "c-es256") -> str:
    """An assertion whose claims are exactly ``claims_json`` (JSON that json.dumps cannot produce)."""
    from as_helpers import b64, b64json

    key = env.keys[client_id]
    signing_input = f"{b64json({'alg': key.alg, 'kid': key.kid})}.{b64(claims_json.encode())}"
    return f"{signing_input}.{b64(key.sign_raw(signing_input.encode()))}"


@pytest.mark.parametrize(
    "name,value",
    [
        ("iat", "-1"),
        ("nbf", "-1"),
        ("iat", "-1e309"),
        ("nbf", "-1e309"),
        ("iat", "1e309"),
        ("exp", "1e309"),
        ("iat", "99999999999999"),
        ("exp", "-5"),
    ],
)
def test_numeric_dates_out_of_range_are_malformed(as_env, name, value):
    """Review defect: iat = -1, nbf = -1 and a JSON -1e309 (minus infinity to Python) were accepted."""
    claims = claims_for("c-es256", ISSUER)
    claims.pop(name, None)
    text = json.dumps(claims)[:-1] + f', "{name}": {value}}}'
    expect_error(post(as_env, assertion_form(_raw_claims_assertion(as_env, text))), 401, "invalid_client")


def test_unknown_clients_cost_a_verification_of_their_own_algorithm(as_env):
    """Review defect: the timing equaliser for unknown clients verified only for ES256."""
    from flask_oauth_hsm.client_auth import private_key_jwt

    private_key_jwt._DUMMY_KEYS.pop("PS256", None)
    forged = as_env.keys["c-ps256"].jws(claims_for("nobody-ps256", ISSUER))
    expect_error(post(as_env, assertion_form(forged)), 401, "invalid_client")
    assert private_key_jwt._DUMMY_KEYS["PS256"].kty == "RSA" and private_key_jwt._DUMMY_KEYS["PS256"].size == 2048


@pytest.mark.parametrize("grant_type", ['a"b', "x\\y", "p\u00e9", "<script>", "q\u0000"])
def test_error_descriptions_never_echo_the_request(as_env, grant_type):
    """Review defect: descriptions echoed input through repr; RFC 6749 §5.2 allows only
    %x20-21 / %x23-5B / %x5D-7E in error_description."""
    body = token_request(as_env, extra={"grant_type": grant_type}).get_json()
    assert body["error"] == "unsupported_grant_type"
    assert grant_type not in body["error_description"]
    assert all(c == " " or c == "!" or "#" <= c <= "[" or "]" <= c <= "~" for c in body["error_description"])


def test_missing_or_wrong_assertion_type_is_a_failed_authentication(as_env):
    """Review defect: it was 400 invalid_request; RFC 7521 §4.2.1 makes it a client authentication failure."""
    a = assertion(as_env)
    for form in (
        {"grant_type": "client_credentials", "client_assertion": a},
        {"grant_type": "client_credentials", "client_assertion": a, "client_assertion_type": "urn:x"},
    ):
        expect_error(post(as_env, form), 401, "invalid_client")


def test_time_claims(as_env):
    now = int(time.time())
    expect_error(token_request(as_env, exp=now - 60), 401, "invalid_client")  # expired beyond skew
    expect_error(token_request(as_env, exp=now + 3600), 401, "invalid_client")  # too far ahead
    expect_error(token_request(as_env, nbf=now + 300), 401, "invalid_client")
    expect_error(token_request(as_env, iat=now + 300), 401, "invalid_client")
    assert token_request(as_env, nbf=now + 5, iat=now + 5).status_code == 200  # within skew


def test_iat_is_optional_outside_the_window_after_a_replay_state_reset(as_env):
    """RFC 7523 §3 makes iat optional; right after Redis lost its replay state an undated assertion
    cannot show it is new (test_redis_faults.py has every boundary of that rule)."""
    store = as_env.state.store
    epoch_key = store.prefix + "epoch"
    saved = store.client.get(epoch_key)
    try:
        store.client.set(epoch_key, int((time.time() - 3600) * 1000))  # long past: no window
        assert token_request(as_env, iat=None).status_code == 200
        store.client.set(epoch_key, int(time.time() * 1000))  # a reset just now
        expect_error(token_request(as_env, iat=None), 401, "invalid_client")
        assert token_request(as_env).status_code == 200  # iat = now: minted after the reset
    finally:
        store.client.set(epoch_key, saved)


# --- hostile JOSE -------------------------------------------------------------------------------------


def test_alg_none(as_env):
    expect_error(post(as_env, assertion_form(unsigned(claims_for("c-es256", ISSUER)))), 401, "invalid_client")


def test_hs256_keyed_with_the_public_key(as_env):
    forged = hs256_with_public_key(as_env.keys["c-ps256"], claims_for("c-ps256", ISSUER))
    expect_error(post(as_env, assertion_form(forged)), 401, "invalid_client")


def test_unknown_kid_and_another_clients_kid(as_env):
    expect_error(token_request(as_env, header={"kid": "no-such-kid"}), 401, "invalid_client")
    other_kid = as_env.keys["c-other"].kid
    # signed with c-other's key, claiming to be c-es256 and naming c-other's kid
    forged = as_env.keys["c-other"].jws(claims_for("c-es256", ISSUER), {"kid": other_kid})
    expect_error(post(as_env, assertion_form(forged)), 401, "invalid_client")


def test_header_jwk_is_never_trusted(as_env):
    attacker = ClientKey.new("ES256", kid=as_env.keys["c-es256"].kid)
    forged = attacker.jws(claims_for("c-es256", ISSUER), {"jwk": attacker.public_jwk})
    expect_error(post(as_env, assertion_form(forged)), 401, "invalid_client")
    for member in ("jku", "x5u"):
        forged = attacker.jws(claims_for("c-es256", ISSUER), {member: "https://attacker.example/keys"})
        expect_error(post(as_env, assertion_form(forged)), 401, "invalid_client")


@pytest.mark.parametrize("typ", ["at+jwt", "dpop+jwt", "application/oauth-authz-req+jwt", "token-introspection+jwt", "AT+JWT"])
def test_typ_of_another_jwt_kind(as_env, typ):
    expect_error(token_request(as_env, header={"typ": typ}), 401, "invalid_client")


def test_rs256_is_not_accepted_by_default(as_env):
    expect_error(token_request(as_env, "c-rs256"), 401, "invalid_client")


def test_registered_alg_is_enforced(as_env):
    # c-ps256 registered token_endpoint_auth_signing_alg PS256; an ES256 key under its kid fails.
    key = ClientKey.new("ES256", kid=as_env.keys["c-ps256"].kid)
    expect_error(post(as_env, assertion_form(key.jws(claims_for("c-ps256", ISSUER)))), 401, "invalid_client")


def test_form_client_id_must_match_the_assertion(as_env):
    form = assertion_form(assertion(as_env), client_id="c-other")
    expect_error(post(as_env, form), 401, "invalid_client")
    form = assertion_form(assertion(as_env), client_id="c-es256")
    assert post(as_env, form).status_code == 200


def test_resource_server_cannot_get_tokens(as_env):
    expect_error(token_request(as_env, "rs-1"), 401, "invalid_client")


def test_garbage_assertions(as_env):
    for junk in ("", "a", "a.b", "a.b.c", "....", "é.é.é", "e30.e30.", "x" * 20000, "eyJhbGciOiJFUzI1NiJ9.W10.AAAA"):
        response = post(
            as_env, {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": junk}
        )
        assert response.status_code in (400, 401, 413), junk[:20]
        assert response.get_json()["error"] in ("invalid_client", "invalid_request")


# --- nested (encrypted) assertions ---------------------------------------------------------------


def _encrypted_assertion(env, client_id: str, alg="RSA-OAEP-256", enc="A256GCM", *, iss_header=False) -> str:
    inner = assertion(env, client_id)
    label = "enc-rsa-oaep-256" if alg.startswith("RSA") else "enc-ecdh-es"
    as_key = jwk.load_jwk(env.state.hsm.key(label).public_jwk())
    return jwe.encrypt(inner.encode(), as_key, alg, enc, {"cty": "JWT", **({"iss": client_id} if iss_header else {})})


def test_encrypted_assertion_for_clients_that_opted_in(as_env):
    assert post(as_env, assertion_form(_encrypted_assertion(as_env, "c-enc"), client_id="c-enc")).status_code == 200
    form = assertion_form(_encrypted_assertion(as_env, "c-enc-allowed", "ECDH-ES", "A128GCM", iss_header=True))
    assert post(as_env, form).status_code == 200  # named by a replicated iss header (RFC 7519 §5.3)
    assert token_request(as_env, "c-enc-allowed").status_code == 200  # allowed, not required


def test_encryption_required_or_refused_by_registration(as_env):
    expect_error(token_request(as_env, "c-enc"), 401, "invalid_client")  # plain JWS, but required
    expect_error(post(as_env, assertion_form(_encrypted_assertion(as_env, "c-es256"))), 401, "invalid_client")


def test_encrypted_assertion_with_a_tampered_ciphertext(as_env):
    token = _encrypted_assertion(as_env, "c-enc").split(".")
    token[3] = token[3][:-4] + ("AAAA" if token[3][-4:] != "AAAA" else "BBBB")
    expect_error(post(as_env, assertion_form(".".join(token), client_id="c-enc")), 401, "invalid_client")


@pytest.mark.parametrize(
    "client_id,reason",
    [
        (None, "must name its client"),  # anonymous: nobody to hold accountable
        ("c-es256", "not registered for this client"),  # this client never sends encrypted assertions
        ("nobody", "not registered for this client"),
    ],
)
def test_encrypted_assertion_is_refused_before_the_token_decrypts_it(as_env, client_id, reason):
    """Decrypting costs a private-key operation: decided from what is visible before decryption."""
    from flask_oauth_hsm import events

    seen = []
    with events.client_auth_failed.connected_to(lambda app, **fields: seen.append(fields["reason"])):
        form = assertion_form(_encrypted_assertion(as_env, "c-enc"), **({"client_id": client_id} if client_id else {}))
        expect_error(post(as_env, form), 401, "invalid_client")
    assert seen and reason in seen[0], seen


# --- request shape ---------------------------------------------------------------------------------


def test_duplicate_parameters(as_env):
    body = (
        f"grant_type=client_credentials&grant_type=client_credentials&client_assertion_type={ASSERTION_TYPE}"
        f"&client_assertion={assertion(as_env)}"
    )
    r = post(as_env, body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    expect_error(r, 400, "invalid_request")


def test_repeated_resource_is_allowed_but_not_duplicated(as_env):
    form = assertion_form(assertion(as_env), resource=[RS1, RS1])
    expect_error(post(as_env, form), 400, "invalid_target")


def test_two_authentication_methods(as_env):
    form = assertion_form(assertion(as_env), client_secret="x")
    expect_error(post(as_env, form), 400, "invalid_request")


def test_oversized_body(as_env):
    r = post(as_env, {"grant_type": "client_credentials", "pad": "x" * 20000})
    expect_error(r, 413, "invalid_request")


@pytest.mark.parametrize(
    "content_type,data",
    [
        ("application/json", '{"grant_type": "client_credentials"}'),
        ("text/plain", "grant_type=client_credentials"),
        ("multipart/form-data; boundary=x", "--x--"),
        ("application/x-www-form-urlencoded; charset=latin-1", "grant_type=client_credentials"),
        ("application/x-www-form-urlencoded", b"grant_type=\xff\xfe"),
        ("application/x-www-form-urlencoded", "a=1&&b"),
    ],
)
def test_non_form_bodies(as_env, content_type, data):
    expect_error(post(as_env, data, headers={"Content-Type": content_type}), 400, "invalid_request")


def test_get_is_not_allowed(as_env):
    r = as_env.client().get("/oauth2/token")
    expect_error(r, 405, "invalid_request")
    assert r.headers["Allow"] == "POST"
    for method in ("TRACE", "PUT", "DELETE", "OPTIONS"):
        expect_error(as_env.client().open("/oauth2/token", method=method), 405, "invalid_request")
    expect_error(as_env.client().get("/oauth2/no-such-endpoint"), 404, "invalid_request")
    expect_error(as_env.client().post("/oauth2/token/extra"), 404, "invalid_request")


def test_grant_type_checks(as_env):
    a = assertion(as_env)
    expect_error(post(as_env, {"client_assertion_type": ASSERTION_TYPE, "client_assertion": a}), 400, "invalid_request")
    expect_error(token_request(as_env, extra={"grant_type": "password"}), 400, "unsupported_grant_type")
    expect_error(token_request(as_env, extra={"grant_type": "authorization_code"}), 400, "unsupported_grant_type")
    expect_error(token_request(as_env, "c-nogrant"), 400, "unauthorized_client")


def test_scope_and_resource_checks(as_env):
    expect_error(token_request(as_env, extra={"scope": "admin"}), 400, "invalid_scope")
    expect_error(token_request(as_env, extra={"scope": "read\x00"}), 400, "invalid_scope")
    expect_error(token_request(as_env, extra={"scope": "write", "resource": RS2}), 400, "invalid_scope")
    expect_error(token_request(as_env, extra={"resource": "https://unknown.example"}), 400, "invalid_target")
    expect_error(token_request(as_env, extra={"resource": "https://rs1.example.test#frag"}), 400, "invalid_target")
    expect_error(token_request(as_env, extra={"resource": "relative/path"}), 400, "invalid_target")
    basic = base64.b64encode(b"c-basic:basic-secret-0123456789").decode()
    r = post(as_env, {"grant_type": "client_credentials", "resource": RS2}, headers={"Authorization": f"Basic {basic}"})
    expect_error(r, 400, "invalid_target")  # not one of c-basic's resources


# --- discovery -------------------------------------------------------------------------------------


def test_metadata_and_jwks(as_env):
    c = as_env.client()
    meta = c.get("/.well-known/oauth-authorization-server")
    assert meta.status_code == 200 and meta.headers["ETag"]
    doc = meta.get_json()
    assert doc["issuer"] == ISSUER and doc["token_endpoint"] == TOKEN_URL
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert "none" in doc["token_endpoint_auth_methods_supported"]
    assert "RS256" not in doc["token_endpoint_auth_signing_alg_values_supported"]
    keys = c.get("/oauth2/jwks")
    assert "max-age=300" in keys.headers["Cache-Control"]
    kids = [k["kid"] for k in keys.get_json()["keys"]]
    published = as_env.settings["OAUTH_HSM_PUBLISHED_KEYS"].split(",") + as_env.settings["OAUTH_HSM_ENCRYPTION_KEYS"].split(",")
    assert kids[0] == as_env.state.keys.ring.signing.kid and len(kids) == 1 + len(published)
    assert not any("d" in k for k in keys.get_json()["keys"])
    again = c.get("/oauth2/jwks", headers={"If-None-Match": keys.headers["ETag"]})
    assert again.status_code == 304


def test_well_known_path_insertion():
    from flask_oauth_hsm.endpoints.metadata import well_known_path

    assert well_known_path("https://as.example.test") == "/.well-known/oauth-authorization-server"
    assert well_known_path("https://as.example.test/tenant/a") == "/.well-known/oauth-authorization-server/tenant/a"
