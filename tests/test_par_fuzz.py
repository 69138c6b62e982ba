"""Hostile input at /par and in request objects: always an OAuth error (JSON at /par, an error
redirect or page at /authorize), never a 5xx or a trace, never a request_uri for a bad request."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from hypothesis import given, strategies as st

from par_helpers import par_scenario, push, request_claims, sign
from test_fuzz import FUZZ, _check_browser_response, _check_response, compact_tokens, odd_text

PAR_NAMES = st.sampled_from(
    [
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "resource",
        "nonce",
        "prompt",
        "max_age",
        "claims",
        "request",
        "request_uri",
        "dpop_jkt",
        "client_assertion",
        "client_assertion_type",
        "x",
    ]
)
PAR_VALUES = st.one_of(
    odd_text,
    compact_tokens,
    st.sampled_from(
        [
            "code",
            "native",
            "http://127.0.0.1:8765/callback",
            "openid read",
            "S256",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "https://rs1.example.test",
            "none",
            "0",
            '{"id_token": {"email": null}}',
            "urn:ietf:params:oauth:request_uri:x",
        ]
    ),
)
CLAIM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True),
    odd_text,
    st.lists(odd_text, max_size=9),
    st.dictionaries(odd_text, odd_text, max_size=3),
)


@pytest.fixture(scope="module")
def env(make_user_as):
    return make_user_as(par_scenario(), OAUTH_HSM_CONSENT_LIFETIME="0")


@FUZZ
@given(form=st.lists(st.tuples(PAR_NAMES, PAR_VALUES), max_size=10), dpop=st.one_of(st.none(), compact_tokens))
def test_par_answers_hostile_forms(env, form, dpop):
    """The public client (auth method none) gets past authentication: validation itself is fuzzed."""
    body = urlencode([("client_id", "native"), *[(k, v) for k, v in form if k != "client_id"]])
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if dpop is not None:
        headers["DPoP"] = dpop.encode("ascii", "replace").decode().replace("\r", "").replace("\n", "")
    response = _check_response(env.client().post("/oauth2/par", data=body, headers=headers))
    if response.status_code == 201:
        assert set(response.get_json()) == {"request_uri", "expires_in"}


@FUZZ
@given(
    claims=st.dictionaries(
        st.sampled_from(
            [
                "response_type",
                "redirect_uri",
                "scope",
                "state",
                "resource",
                "claims",
                "max_age",
                "prompt",
                "nonce",
                "dpop_jkt",
                "request",
                "exp",
                "nbf",
                "iat",
                "jti",
                "aud",
                "iss",
                "client_id",
                "sub",
                "x",
            ]
        ),
        CLAIM_VALUES,
        max_size=6,
    )
)
def test_signed_request_objects_with_hostile_claims(env, claims):
    """Authentic request objects (signed by the client) whose claims are anything: an error, or a
    request that passed every check."""
    raw = sign(env, "jar", {**request_claims("jar"), **claims})
    pushed = _check_response(push(env, "jar", request=raw))
    assert pushed.status_code in (201, 400), pushed.status_code
    response = env.client().get("/oauth2/authorize?" + urlencode({"client_id": "jar", "request": raw}))
    _check_browser_response_for(response)


def _check_browser_response_for(response):
    if response.status_code in (302, 303):
        location = response.headers["Location"]
        assert location.startswith("https://jar.example.test/cb") or location.startswith("/login?"), location
        return
    _check_browser_response(response)
    json.dumps(response.status_code)
