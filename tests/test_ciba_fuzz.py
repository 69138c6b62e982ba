"""Hostile input at /bc-authorize, in signed authentication requests and at the CIBA poll: always an
OAuth error (JSON), never a 5xx or a trace, never an auth_req_id or a token for a bad request."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given, strategies as st

from ciba_helpers import (
    CIBA,
    request_claims,
    signed_form,
    signed_request,
)
from test_fuzz import FUZZ, _check_response, compact_tokens, odd_text

NAMES = st.sampled_from(
    [
        "scope",
        "login_hint",
        "login_hint_token",
        "id_token_hint",
        "binding_message",
        "requested_expiry",
        "acr_values",
        "resource",
        "user_code",
        "request",
        "request_uri",
        "client_notification_token",
        "x",
    ]
)
VALUES = st.one_of(
    odd_text,
    compact_tokens,
    st.sampled_from(
        [
            "openid",
            "openid read",
            "alice",
            "tel:+15550001001",
            "ipport:[::1]:1",
            "operatortoken:x",
            "0",
            "120",
            "-1",
            "https://rs1.example.test",
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


@FUZZ
@given(form=st.lists(st.tuples(NAMES, VALUES), max_size=10))
def test_bc_authorize_answers_hostile_forms(ciba_env, form):
    """Authenticated as a CIBA client: the request's own validation is fuzzed."""
    body = urlencode(list(signed_form(ciba_env, "ciba-app").items()) + form)
    response = _check_response(
        ciba_env.client().post("/oauth2/bc-authorize", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    )
    if response.status_code == 200:
        assert set(response.get_json()) == {"auth_req_id", "expires_in", "interval"}


@FUZZ
@given(
    claims=st.dictionaries(
        st.sampled_from(
            [
                "scope",
                "login_hint",
                "binding_message",
                "requested_expiry",
                "acr_values",
                "resource",
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
def test_signed_requests_with_hostile_claims(ciba_env, claims):
    """Authentic signed requests (signed by the client) whose claims are anything."""
    response = _check_response(signed_request(ciba_env, claims={**request_claims(ciba_env), **claims}))
    assert response.status_code in (200, 400, 401), response.status_code


@FUZZ
@given(auth_req_id=st.one_of(odd_text, compact_tokens), extra=st.lists(st.tuples(NAMES, VALUES), max_size=4))
def test_polls_with_hostile_auth_req_ids(ciba_env, auth_req_id, extra):
    body = urlencode(list(signed_form(ciba_env, "ciba-app", grant_type=CIBA, auth_req_id=auth_req_id).items()) + extra)
    response = _check_response(
        ciba_env.client().post("/oauth2/token", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    )
    assert response.status_code in (400, 401), response.get_json()
