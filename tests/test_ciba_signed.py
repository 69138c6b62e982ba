"""Signed authentication requests (CIBA Core §7.1.1): the ``request`` parameter at /bc-authorize."""

from __future__ import annotations

import pytest

from ciba_helpers import (
    handle_of,
    notified,
    request_claims,
    signed_form,
    signed_request,
)
from users_helpers import expect_error


def test_a_signed_request_is_the_request(ciba_env):
    r = signed_request(ciba_env, claims=request_claims(ciba_env, requested_expiry=60, login_hint="tel:+15550001002"))
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["expires_in"] == 60  # requested_expiry as a JSON number
    shown = next(x for x in notified(ciba_env) if x.handle == handle_of(r.get_json()["auth_req_id"]))
    assert (shown.subject, shown.binding_message, shown.scope) == ("user-1002", "Signed 1", ("openid", "read"))


@pytest.mark.parametrize("typ", [None, "JWT", "oauth-authz-req+jwt", "application/oauth-authz-req+jwt"])
def test_no_typ_is_required(ciba_env, typ):
    assert signed_request(ciba_env, typ=typ).status_code == 200


@pytest.mark.parametrize("typ", ["at+jwt", "dpop+jwt", "secevent+jwt", "logout+jwt"])
def test_a_typ_of_another_kind_of_jwt_is_refused(ciba_env, typ):
    expect_error(signed_request(ciba_env, typ=typ), 400, "invalid_request")


@pytest.mark.parametrize("missing", ["exp", "iat", "nbf", "jti", "iss", "aud"])
def test_every_required_claim(ciba_env, missing):
    claims = request_claims(ciba_env)
    del claims[missing]
    expect_error(signed_request(ciba_env, claims=claims), 400, "invalid_request")


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "jti", "iss", "aud"])
def test_a_json_null_is_no_value(ciba_env, claim):
    expect_error(signed_request(ciba_env, claims=request_claims(ciba_env) | {claim: None}), 400, "invalid_request")


def test_time_rules(ciba_env):
    from flask_oauth_hsm import clock

    now = int(clock.now())
    for bad in (
        {"nbf": now - 3000, "exp": now + 700},
        {"exp": now + 3700},
        {"nbf": now + 120},
        {"iat": now + 120},
        {"exp": now - 60},
        {"exp": "soon"},
    ):
        expect_error(signed_request(ciba_env, claims=request_claims(ciba_env, **bad)), 400, "invalid_request")
    assert signed_request(ciba_env, claims=request_claims(ciba_env, nbf=now - 3000, exp=now + 500)).status_code == 200


def test_identity_claims(ciba_env):
    for bad in ({"iss": "ciba-other"}, {"client_id": "ciba-other"}, {"sub": "ciba-app"}):
        expect_error(signed_request(ciba_env, claims=request_claims(ciba_env, **bad)), 400, "invalid_request")
    assert signed_request(ciba_env, claims=request_claims(ciba_env, client_id="ciba-app")).status_code == 200


def test_signature_and_alg(ciba_env):
    claims = request_claims(ciba_env)
    other = ciba_env.keys["ciba-other"].jws(claims)  # signed with another client's key
    expect_error(
        ciba_env.client().post("/oauth2/bc-authorize", data=signed_form(ciba_env, "ciba-app", request=other)),
        400,
        "invalid_request",
    )
    head, body, sig = ciba_env.keys["ciba-app"].jws(claims).split(".")
    tampered = ".".join((head, body, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")))
    expect_error(
        ciba_env.client().post("/oauth2/bc-authorize", data=signed_form(ciba_env, "ciba-app", request=tampered)),
        400,
        "invalid_request",
    )
    import base64
    import json

    none = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode() + "." + body + "."
    expect_error(
        ciba_env.client().post("/oauth2/bc-authorize", data=signed_form(ciba_env, "ciba-app", request=none)),
        400,
        "invalid_request",
    )
    # ciba-ps registered backchannel_authentication_request_signing_alg PS256; its key signs ES256
    expect_error(signed_request(ciba_env, "ciba-ps", claims=request_claims(ciba_env, "ciba-ps")), 400, "invalid_request")
    for garbage in ("x", "a.b.c", "e30." * 4 + "e30", "\u00e9" * 50):
        expect_error(
            ciba_env.client().post("/oauth2/bc-authorize", data=signed_form(ciba_env, "ciba-app", request=garbage)),
            400,
            "invalid_request",
        )


def test_jti_single_use(ciba_env):
    claims = request_claims(ciba_env)
    assert signed_request(ciba_env, claims=claims).status_code == 200
    expect_error(signed_request(ciba_env, claims=claims), 400, "invalid_request")


def test_parameters_outside_the_signed_request_are_refused(ciba_env):
    for name, value in (("scope", "openid read"), ("login_hint", "alice"), ("binding_message", "x"), ("requested_expiry", "30")):
        expect_error(signed_request(ciba_env, **{name: value}), 400, "invalid_request")


def test_inside_the_signed_request_the_same_rules_apply(ciba_env):
    for claims, error in (
        ({"scope": "read"}, "invalid_scope"),
        ({"login_hint": None}, "invalid_request"),
        ({"login_hint_token": "t"}, "invalid_request"),
        ({"binding_message": "x" * 65}, "invalid_binding_message"),
        ({"login_hint": "nobody"}, "unknown_user_id"),
        ({"request": "a.b.c"}, "invalid_request"),
        ({"scope": ["openid"]}, "invalid_request"),
        ({"requested_expiry": True}, "invalid_request"),
    ):
        expect_error(signed_request(ciba_env, claims=request_claims(ciba_env, **claims)), 400, error)


def test_a_client_assertion_is_not_a_signed_request(ciba_env):
    from as_helpers import claims_for

    assertion = ciba_env.keys["ciba-app"].jws(claims_for("ciba-app", ciba_env.issuer, scope="openid", login_hint="alice"))
    r = ciba_env.client().post("/oauth2/bc-authorize", data=signed_form(ciba_env, "ciba-app", request=assertion))
    expect_error(r, 400, "invalid_request")  # sub = client_id: shaped like an assertion; and no nbf


def test_a_signed_request_is_not_a_client_assertion(ciba_env):
    from as_helpers import assertion_form

    plain = ciba_env.keys["ciba-app"].jws(request_claims(ciba_env))  # no sub: never a client assertion
    form = {k: v for k, v in assertion_form(plain).items() if k != "grant_type"}
    expect_error(
        ciba_env.client().post("/oauth2/bc-authorize", data={**form, "scope": "openid", "login_hint": "alice"}),
        401,
        "invalid_client",
    )
