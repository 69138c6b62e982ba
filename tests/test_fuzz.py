"""Property-based tests (hypothesis): hostile input gets a 4xx JSON error or a correct answer,
in bounded time, never a 5xx or a stack trace — for the JOSE parser and for every endpoint."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from as_helpers import ASSERTION_TYPE, b64, b64json
from flask_oauth_hsm.errors import JoseError
from flask_oauth_hsm.jose import compact, jwe, jwk, jws

FUZZ = settings(
    max_examples=120, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
ENDPOINTS = ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"]
READ_ONLY = ["/oauth2/jwks", "/.well-known/oauth-authorization-server", "/oauth2/health", "/oauth2/ready"]

odd_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
segment = st.one_of(st.binary(max_size=200).map(b64), odd_text, st.sampled_from(["", "=", "e30", "bnVsbA", "W10"]))
headers_json = st.dictionaries(
    st.sampled_from(["alg", "enc", "kid", "typ", "crit", "b64", "zip", "epk", "jwk", "cty", "apu", "x"]),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        odd_text,
        st.lists(odd_text, max_size=3),
        st.dictionaries(odd_text, odd_text, max_size=3),
        st.sampled_from(["ES256", "none", "HS256", "RSA-OAEP-256", "ECDH-ES", "A256GCM", "RSA1_5", "dir"]),
    ),
    max_size=6,
)
compact_tokens = st.one_of(
    st.lists(segment, min_size=1, max_size=7).map(".".join),
    st.tuples(headers_json.map(b64json), segment, segment).map(".".join),
    st.tuples(headers_json.map(b64json), segment, segment, segment, segment).map(".".join),
    st.binary(max_size=400).map(lambda b: b.decode("latin-1")),
)


def _bounded(fn):
    start = time.monotonic()
    with contextlib.suppress(JoseError):
        fn()
    assert time.monotonic() - start < 10.0  # bounded, not a speed test


@FUZZ
@given(token=compact_tokens)
def test_jws_verify_raises_only_jose_errors(hsm, token):
    key = jwk.load_jwk(hsm.key("sig-es256").public_jwk())
    _bounded(lambda: jws.verify(token, lambda h: key, ["ES256", "PS256"]))


@FUZZ
@given(token=compact_tokens)
def test_jwe_decrypt_raises_only_jose_errors(hsm, token):
    keys = {"RSA-OAEP-256": hsm.key("enc-rsa-oaep-256"), "ECDH-ES": hsm.key("enc-ecdh-es")}

    def key_for(header):
        return keys.get(header.get("alg"), keys["ECDH-ES"])

    _bounded(lambda: jwe.decrypt(token, key_for, list(keys), ["A128GCM", "A256GCM", "A128CBC-HS256"]))


@FUZZ
@given(
    doc=st.dictionaries(
        st.sampled_from(["kty", "crv", "x", "y", "n", "e", "d", "kid", "alg", "use", "key_ops"]),
        st.one_of(st.none(), st.integers(), odd_text, segment, st.lists(odd_text, max_size=3)),
        max_size=7,
    )
)
def test_jwk_loading_raises_only_jose_errors(doc):
    _bounded(lambda: jwk.load_jwk(doc))


@FUZZ
@given(data=st.binary(max_size=2000))
def test_json_parser_is_strict_and_bounded(data):
    _bounded(lambda: compact.parse_json_object(data))


def test_deeply_nested_json_is_refused_quickly():
    for depth in (10_000, 100_000):
        _bounded(lambda: compact.parse_json_object(b"[" * depth + b"]" * depth))  # noqa: B023 - called now
        header = b64(b'{"alg":' + b"[" * depth + b"]" * depth + b"}")
        _bounded(lambda: jws.verify(header + ".e30.AA", lambda h: None, ["ES256"], max_len=10**7))  # noqa: B023 - called now


# --- endpoints -----------------------------------------------------------------------------------------

param_names = st.sampled_from(
    [
        "grant_type",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "scope",
        "resource",
        "token",
        "token_type_hint",
        "requester_ip",
        "x",
        "",
    ]
)
param_values = st.one_of(
    odd_text,
    compact_tokens,
    st.sampled_from(["client_credentials", ASSERTION_TYPE, "read", "https://rs1.example.test", "10.0.0.1"]),
    st.integers(0, 10**6).map(lambda n: "x" * n if n < 40000 else "y"),
)
forms = st.lists(st.tuples(param_names, param_values), max_size=8)
content_types = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=zz",
        "",
        "application/x-www-form-urlencoded; charset=utf-16",
    ]
)
auth_headers = st.one_of(
    st.none(),
    odd_text.map(lambda t: "Basic " + t),
    st.binary(max_size=80).map(lambda b: "Basic " + b64(b)),
    odd_text.map(lambda t: "Bearer " + t),
    st.just("Basic " + b64(b"c-basic:" + b"x" * 50)),
)


def _check_response(response):
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.get_data()[:300])
    body = response.get_data(as_text=True)
    assert "Traceback" not in body and "pkcs11" not in body.lower() and "CKR_" not in body
    if response.status_code >= 400:
        assert response.mimetype == "application/json"
        answer = json.loads(body)
        assert isinstance(answer.get("error"), str)
        # RFC 6749 §5.2: %x20-21 / %x23-5B / %x5D-7E only, and never the request echoed back
        assert all(c in " !" or "#" <= c <= "[" or "]" <= c <= "~" for c in answer.get("error_description", ""))
    return response


@FUZZ
@given(
    path=st.sampled_from(ENDPOINTS),
    form=forms,
    content_type=content_types,
    auth=auth_headers,
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE"]),
)
def test_endpoints_answer_hostile_forms_with_oauth_errors(as_env, path, form, content_type, auth, method):
    from urllib.parse import urlencode

    headers = {"Content-Type": content_type} if content_type else {}
    if auth is not None:
        # HTTP cannot carry CR/LF in a header value (the test client refuses to send them)
        headers["Authorization"] = auth.encode("utf-8", "replace").decode("latin-1").replace("\r", "").replace("\n", "")
    start = time.monotonic()
    response = as_env.client().open(path, method=method, data=urlencode(form), headers=headers)
    assert time.monotonic() - start < 10.0  # bounded, not a speed test
    _check_response(response)
    assert "access_token" not in response.get_data(as_text=True) or response.status_code == 200


@FUZZ
@given(path=st.sampled_from(ENDPOINTS), body=st.binary(max_size=3000), content_type=content_types)
def test_endpoints_answer_random_bytes(as_env, path, body, content_type):
    _check_response(as_env.client().post(path, data=body, headers={"Content-Type": content_type} if content_type else {}))


@FUZZ
@given(path=st.sampled_from(READ_ONLY), method=st.sampled_from(["GET", "HEAD", "POST", "DELETE", "PATCH"]), query=odd_text)
def test_read_only_endpoints(as_env, path, method, query):
    response = as_env.client().open(path, method=method, query_string={"q": query})
    _check_response(response)
    assert response.status_code in (200, 304, 405)


def test_huge_bodies_cost_bounded_time(as_env):
    client = as_env.client()
    for size in (10**5, 10**6, 10**7):
        start = time.monotonic()
        for path in ENDPOINTS:
            r = client.post(path, data=b"a=" + b"x" * size, headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert r.status_code == 413 and r.get_json()["error"] == "invalid_request"
        assert time.monotonic() - start < 15.0  # bounded, not a speed test


@pytest.mark.parametrize("path", ENDPOINTS)
def test_repeated_parameters(as_env, path):
    r = as_env.client().post(
        path, data="token=a&token=b&client_id=x&client_id=y", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_request"


# --- the user-facing endpoints (issue 11): an error page or an error redirect, never a 5xx ------------

AUTHZ_NAMES = st.sampled_from(
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
        "response_mode",
        "id",
        "csrf_token",
        "decision",
        "x",
    ]
)
AUTHZ_VALUES = st.one_of(
    odd_text,
    st.sampled_from(
        [
            "code",
            "token",
            "web",
            "native",
            "https://web.example.test/cb",
            "http://127.0.0.1:8765/callback",
            "openid read",
            "S256",
            "plain",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "https://rs1.example.test",
            "none",
            "login consent",
            "0",
            "-1",
            '{"introspection": {"email": null}}',
            '{"userinfo": []}',
            "[]",
            "approve",
            "deny",
            "query",
        ]
    ),
)
authz_params = st.lists(st.tuples(AUTHZ_NAMES, AUTHZ_VALUES), max_size=12)
REGISTERED = (
    "https://web.example.test/cb",
    "http://127.0.0.1:8765/callback",
    "com.example.app:/cb",
    "https://web2.example.test/cb",
    "https://login.example.test/cb",
)


def _check_browser_response(response):
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.get_data()[:300])
    body = response.get_data(as_text=True)
    assert "Traceback" not in body and "pkcs11" not in body.lower() and "CKR_" not in body
    if response.status_code in (302, 303):
        location = response.headers["Location"]
        # only to a registered redirect URI (an error or a code), or to the host's login page
        assert location.startswith(REGISTERED) or location.startswith("/login?"), location
    elif response.status_code >= 400:
        assert response.mimetype == "text/html" and "<h1>" in body


@FUZZ
@given(params=authz_params, method=st.sampled_from(["GET", "POST", "PUT"]), signed_in=st.booleans())
def test_authorization_endpoint_answers_hostile_requests(user_env, params, method, signed_in):
    from urllib.parse import urlencode

    client = user_env.client()
    if signed_in:
        client.post("/login", data={"username": "alice", "password": "alice-password-1"})
    start = time.monotonic()
    if method == "GET":
        response = client.get("/oauth2/authorize?" + urlencode(params))
    else:
        response = client.open(
            "/oauth2/authorize",
            method=method,
            data=urlencode(params),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert time.monotonic() - start < 10.0  # bounded, not a speed test
    _check_browser_response(response)


@FUZZ
@given(params=authz_params, method=st.sampled_from(["GET", "POST"]), cookie=st.one_of(st.none(), odd_text))
def test_consent_endpoint_answers_hostile_requests(user_env, params, method, cookie):
    from urllib.parse import urlencode

    client = user_env.client()
    if cookie is not None:
        client.set_cookie("oauth_hsm_browser", cookie.encode("ascii", "replace").decode()[:200], path="/oauth2")
    query = urlencode([p for p in params if p[0] == "id"])
    response = client.open(
        "/oauth2/consent?" + query,
        method=method,
        data=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _check_browser_response(response)


user_grant_forms = st.lists(
    st.tuples(
        st.sampled_from(
            ["grant_type", "code", "code_verifier", "redirect_uri", "refresh_token", "scope", "resource", "client_id"]
        ),
        st.one_of(odd_text, compact_tokens, st.sampled_from(["authorization_code", "refresh_token", "native", "read"])),
    ),
    max_size=8,
)


@FUZZ
@given(form=user_grant_forms)
def test_token_endpoint_user_grants(user_env, form):
    from urllib.parse import urlencode

    data = urlencode([("client_id", "native"), *[(k, v) for k, v in form if k != "client_id"]])
    response = user_env.client().post("/oauth2/token", data=data, headers={"Content-Type": "application/x-www-form-urlencoded"})
    _check_response(response)
    assert response.status_code != 200


@FUZZ
@given(auth=auth_headers, method=st.sampled_from(["GET", "POST", "DELETE"]))
def test_userinfo_answers_hostile_tokens(user_env, auth, method):
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth.encode("utf-8", "replace").decode("latin-1").replace("\r", "").replace("\n", "")
    response = user_env.client().open("/oauth2/userinfo", method=method, headers=headers)
    _check_response(response)
    assert response.status_code in (401, 405)
