"""The request-object verifier (authz/request_object.py, RFC 9101) on its own: every refusal, with
a real HSM for the encrypted ones and the real Redis for jti replay."""

from __future__ import annotations

import json

import pytest

from as_helpers import assertion_form, b64json, claims_for, unsigned
from par_helpers import (
    AUTHORIZE_URL,
    ISSUER,
    PAR_URL,
    TYP,
    encrypt,
    par_scenario,
    request_claims,
    sign,
)


@pytest.fixture(scope="module")
def env(make_user_as):
    return make_user_as(par_scenario(), OAUTH_HSM_CONSENT_LIFETIME="0")


def verify(env, client_id: str, raw: str, endpoint: str = PAR_URL):
    from flask_oauth_hsm.authz.request_object import verify_request_object

    ctx = env.state
    with env.app.test_request_context("/oauth2/par", method="POST"):
        return verify_request_object(ctx, ctx.registry.client(client_id), raw, receiving_endpoint=endpoint)


def refused(env, client_id: str, raw: str, endpoint: str = PAR_URL) -> str:
    from flask_oauth_hsm.errors import InvalidRequestObjectError

    with pytest.raises(InvalidRequestObjectError) as info:
        verify(env, client_id, raw, endpoint)
    assert info.value.error == "invalid_request_object"
    return info.value.description or ""


def test_a_good_request_object_gives_its_claims(env):
    claims = request_claims("jar")
    assert verify(env, "jar", sign(env, "jar", claims)) == claims


def test_typ_jwt_or_none_is_enough_unless_required(env):
    assert verify(env, "jar", sign(env, "jar", request_claims("jar"), typ="JWT"))["client_id"] == "jar"
    assert verify(env, "jar", sign(env, "jar", request_claims("jar"), typ=None))["client_id"] == "jar"
    assert "typ" in refused(env, "jar-typ", sign(env, "jar-typ", request_claims("jar-typ"), typ="JWT"))
    assert verify(env, "jar-typ", sign(env, "jar-typ", request_claims("jar-typ"), typ="application/" + TYP))


def test_alg_none_is_refused(env):
    assert refused(env, "jar", unsigned(request_claims("jar")))


def test_a_bad_signature_is_refused(env):
    good = sign(env, "jar", request_claims("jar"))
    head, _, sig = good.split(".")
    other = sign(env, "jar", request_claims("jar", state="tampered"))
    assert "signature" in refused(env, "jar", f"{head}.{other.split('.')[1]}.{sig}")


def test_another_clients_key_does_not_verify(env):
    assert refused(env, "jar", env.keys["web"].jws(request_claims("jar"), {"typ": TYP}))


def test_an_alg_other_than_the_registered_one_is_refused(env):
    from as_helpers import ClientKey

    # the registered key is ES256; the client registered ES256: an EdDSA header is refused before any key is used
    assert "algorithm" in refused(
        env, "jar", ClientKey.new("EdDSA").jws(request_claims("jar"), {"typ": TYP, "kid": env.keys["jar"].kid})
    )


def test_exp_is_required(env):
    assert "exp missing" in refused(env, "jar", sign(env, "jar", request_claims("jar", exp=None)))


def test_exp_minus_nbf_at_most_60_minutes(env):
    t = request_claims("jar")["iat"]
    assert "60 minutes" in refused(env, "jar", sign(env, "jar", request_claims("jar", nbf=t - 3000, exp=t + 700)))
    assert verify(env, "jar", sign(env, "jar", request_claims("jar", nbf=t - 2900, exp=t + 700)))


def test_exp_more_than_60_minutes_ahead_is_refused(env):
    t = request_claims("jar")["iat"]
    assert "far in the future" in refused(env, "jar", sign(env, "jar", request_claims("jar", nbf=None, exp=t + 4000)))


def test_nbf_in_the_future_is_refused(env):
    t = request_claims("jar")["iat"]
    assert "nbf" in refused(env, "jar", sign(env, "jar", request_claims("jar", nbf=t + 120)))


def test_jti_is_required_and_single_use(env):
    assert "jti" in refused(env, "jar", sign(env, "jar", request_claims("jar", jti=None)))
    raw = sign(env, "jar", request_claims("jar"))
    verify(env, "jar", raw)
    assert "already used" in refused(env, "jar", raw)


@pytest.mark.parametrize("claim,value", [("iss", "web"), ("client_id", "web"), ("client_id", None), ("iss", None)])
def test_iss_and_client_id_must_be_the_client(env, claim, value):
    assert refused(env, "jar", sign(env, "jar", request_claims("jar", **{claim: value})))


def test_wrong_aud_is_refused(env):
    for aud in ("https://other.example.test", AUTHORIZE_URL, [ISSUER, "https://other.example.test"]):
        assert "aud" in refused(env, "jar", sign(env, "jar", request_claims("jar", aud=aud)))


def test_endpoint_policy_takes_the_receiving_endpoint(env):
    assert verify(
        env, "jar-endpoint", sign(env, "jar-endpoint", request_claims("jar-endpoint", aud=AUTHORIZE_URL)), AUTHORIZE_URL
    )
    assert refused(env, "jar-endpoint", sign(env, "jar-endpoint", request_claims("jar-endpoint", aud=AUTHORIZE_URL)), PAR_URL)


# --- never a client assertion, never taken for one ---------------------------------------------------


def test_a_client_assertion_is_not_a_request_object(env):
    """An assertion (sub = client_id) signed with the same key is refused as a request object."""
    assertion = env.keys["jar"].jws({**claims_for("jar", ISSUER), "client_id": "jar"})
    assert "sub" in refused(env, "jar", assertion)


def test_a_request_object_is_not_a_client_assertion(env):
    """At the token endpoint, a request object (typ oauth-authz-req+jwt) fails client authentication,
    even one that carries sub = client_id."""
    for claims in (request_claims("jar"), {**request_claims("jar"), "sub": "jar"}):
        form = assertion_form(sign(env, "jar", claims))
        r = env.client().post("/oauth2/token", data={**form, "grant_type": "authorization_code", "code": "x"})
        assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"


# --- encrypted request objects ---------------------------------------------------------------------------


def test_an_encrypted_request_object_is_decrypted_in_the_hsm(env):
    claims = request_claims("jar-enc")
    assert verify(env, "jar-enc", encrypt(env, sign(env, "jar-enc", claims))) == claims


def test_jws_where_jwe_is_required(env):
    assert "must encrypt" in refused(env, "jar-enc", sign(env, "jar-enc", request_claims("jar-enc")))


def test_jwe_where_jws_is_required(env):
    assert "not registered" in refused(env, "jar", encrypt(env, sign(env, "jar", request_claims("jar"))))


def test_encrypted_with_another_alg_of_ours(env):
    """ECDH-ES is one of the AS's keys, but the client registered RSA-OAEP-256."""
    if "ECDH-ES" not in env.settings["OAUTH_HSM_ENCRYPTION_KEYS"].upper():
        pytest.skip("the remote token has no ECDH-ES key")
    raw = encrypt(env, sign(env, "jar-enc", request_claims("jar-enc")), alg="ECDH-ES")
    assert "registered alg" in refused(env, "jar-enc", raw)


def test_encrypted_with_another_enc(env):
    raw = encrypt(env, sign(env, "jar-enc", request_claims("jar-enc")), enc="A128GCM")
    assert "registered alg" in refused(env, "jar-enc", raw)


@pytest.mark.parametrize("alg", ["RSA1_5", "dir", "A256KW", "PBES2-HS256+A128KW"])
def test_encrypted_with_an_unsupported_alg(env, alg):
    fake = ".".join(
        [b64json({"alg": alg, "enc": "A256GCM", "cty": "JWT"}), "AAAA", "AAAAAAAAAAAAAAAA", "AAAA", "AAAAAAAAAAAAAAAAAAAAAA"]
    )
    assert "registered alg" in refused(env, "jar-enc", fake)


def test_an_undecryptable_jwe_is_one_error(env):
    raw = encrypt(env, sign(env, "jar-enc", request_claims("jar-enc")))
    parts = raw.split(".")
    parts[3] = parts[3][:-4] + ("AAAA" if parts[3][-4:] != "AAAA" else "BBBB")
    assert "decryption" in refused(env, "jar-enc", ".".join(parts))


def test_garbage_is_malformed(env):
    for raw in ("", "a.b.c", "x" * 10, json.dumps({"a": 1})):
        assert refused(env, "jar", raw)


# --- registration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"request_object_encryption_alg": "RSA-OAEP-256"}, "go together"),
        ({"request_object_encryption_enc": "A256GCM"}, "go together"),
        ({"request_object_signing_alg": "HS256"}, "Must be one of"),
        ({"request_object_encryption_alg": "RSA1_5", "request_object_encryption_enc": "A256GCM"}, "Must be one of"),
    ],
)
def test_registration_of_request_object_fields(extra, message):
    from as_helpers import ClientKey
    from flask_oauth_hsm.clients import Registry
    from flask_oauth_hsm.errors import ConfigError
    from scenarios import pkjwt_client

    entry = pkjwt_client("x", ClientKey.new("ES256"), **extra)
    with pytest.raises(ConfigError, match=message):
        Registry.from_document({"clients": [entry], "resource_servers": []})


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"request_object_encryption_alg": "ECDH-ES+A128KW", "request_object_encryption_enc": "A256GCM"}, "of that alg"),
        ({"request_object_signing_alg": "RS256"}, "OAUTH_HSM_ASSERTION_ALGS does not allow"),
    ],
)
def test_a_client_whose_request_objects_could_never_pass_stops_start_up(make_user_as, extra, message):
    from as_helpers import ClientKey
    from flask_oauth_hsm.errors import ConfigError
    from scenarios import Scenario, pkjwt_client

    entry = {
        **pkjwt_client(
            "x", ClientKey.new("ES256"), grant_types=["authorization_code"], redirect_uris=["https://x.example.test/cb"], **extra
        ),
        "resources": [],
    }
    with pytest.raises(ConfigError, match=message):
        make_user_as(Scenario({"clients": [entry], "resource_servers": []}))


@pytest.mark.parametrize("claim", ["exp", "jti"])
def test_a_null_required_claim_is_missing(env, claim):
    """Found by tests/test_par_fuzz.py: "exp": null once passed as present and ended in a 500."""
    assert "missing" in refused(env, "jar", sign(env, "jar", request_claims("jar", **{claim: "placeholder"}) | {claim: None}))


def test_a_client_assertion_with_a_null_exp_is_refused_not_a_500(env):
    form = assertion_form(env.keys["jar"].jws({**claims_for("jar", ISSUER), "exp": None}))
    r = env.client().post("/oauth2/token", data={**form, "grant_type": "authorization_code", "code": "x"})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"
