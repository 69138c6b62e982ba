"""Hostile input to the proof-of-possession paths (hypothesis): DPoP headers, req_cnf and
token_type, RFC 9421 signature fields, certificate headers, nonces, Authorization schemes at the
resource server. Every answer is a 4xx OAuth error (or a success), never a 5xx or a trace."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, strategies as st

from as_helpers import ClientKey, b64, b64json
from pop_helpers import (
    POP_SETTINGS,
    RSP,
    TOKEN_URL,
    dpop_jwk,
    dpop_proof,
    pop_as,
    pop_world,
    rs_settings,
    signed_headers,
    token_form,
)
from test_fuzz import FUZZ, _check_response, compact_tokens, odd_text

__all__ = ["pop_as", "pop_world"]

header_safe = odd_text.map(lambda t: t.encode("utf-8", "replace").decode("latin-1").replace("\r", "").replace("\n", ""))
proof_headers = st.dictionaries(
    st.sampled_from(["typ", "alg", "jwk", "kid", "crit", "b64", "jku", "x5c", "x"]),
    st.one_of(
        st.none(),
        st.integers(),
        odd_text,
        st.sampled_from(["dpop+jwt", "ES256", "none", "HS256"]),
        st.dictionaries(
            st.sampled_from(["kty", "crv", "x", "y", "n", "e", "d", "k"]), st.one_of(odd_text, st.integers()), max_size=5
        ),
    ),
    max_size=6,
)
proof_claims = st.dictionaries(
    st.sampled_from(["jti", "htm", "htu", "iat", "nonce", "ath", "exp", "nbf"]),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**12), 10**12),
        st.floats(allow_nan=True),
        odd_text,
        st.just(TOKEN_URL),
        st.just("POST"),
        st.lists(odd_text, max_size=2),
    ),
    max_size=8,
)
dpop_values = st.one_of(
    compact_tokens,
    st.tuples(proof_headers, proof_claims).map(lambda hc: f"{b64json(hc[0])}.{b64json(hc[1])}.AAAA"),
    proof_claims.map(lambda c: dpop_proof(_KEY, **{k: v for k, v in c.items() if v is not None})),
)
_KEY = ClientKey.new()


def _headers(value: str) -> dict[str, str]:
    return {"DPoP": value.encode("utf-8", "replace").decode("latin-1").replace("\r", "").replace("\n", "")}


@FUZZ
@given(value=dpop_values)
def test_token_endpoint_dpop_header(pop_as, value):
    response = _check_response(pop_as.client().post("/oauth2/token", data=token_form(pop_as, "d-plain"), headers=_headers(value)))
    assert response.status_code in (200, 400)


@FUZZ
@given(
    token_type=st.one_of(st.none(), odd_text, st.sampled_from(["pop", "POP", "bearer"])),
    req_cnf=st.one_of(
        st.none(),
        odd_text,
        compact_tokens,
        st.dictionaries(odd_text, odd_text, max_size=3).map(json.dumps),
        st.dictionaries(
            st.sampled_from(["jwk", "kid", "x"]),
            st.one_of(
                odd_text, st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "n", "e", "k", "d"]), odd_text, max_size=5)
            ),
            max_size=3,
        ).map(lambda d: b64(json.dumps(d).encode())),
    ),
)
def test_token_endpoint_req_cnf(pop_as, token_type, req_cnf):
    extra = {k: v for k, v in (("token_type", token_type), ("req_cnf", req_cnf)) if v is not None}
    response = _check_response(pop_as.client().post("/oauth2/token", data=token_form(pop_as, "p-both", resource=RSP, **extra)))
    assert response.status_code in (200, 400)


signature_fields = st.fixed_dictionaries(
    {
        "Signature-Input": st.one_of(header_safe, st.just('sig=("@method" "@target-uri");created=1;keyid="k"')),
        "Signature": st.one_of(header_safe, st.just("sig=:AAAA:")),
        "Content-Digest": st.one_of(header_safe, st.just("sha-256=:AAAA:"), st.just("sha-512=:x:")),
    }
)


@FUZZ
@given(fields=signature_fields)
def test_token_endpoint_signature_fields(pop_as, fields):
    key = ClientKey.new()
    form = token_form(pop_as, "p-both", resource=RSP, token_type="pop", req_cnf=b64(json.dumps({"jwk": dpop_jwk(key)}).encode()))
    headers = {"Content-Type": "application/x-www-form-urlencoded", **fields}
    response = _check_response(pop_as.client().post("/oauth2/token", data=urlencode(form), headers=headers))
    assert response.status_code == 400


@FUZZ
@given(
    scheme=st.one_of(st.sampled_from(["Bearer", "DPoP", "PoP", "dpop", "pop", "Basic"]), header_safe),
    token=st.one_of(compact_tokens, header_safe),
    dpop=st.one_of(st.none(), dpop_values),
    fields=st.one_of(st.none(), signature_fields),
)
def test_resource_server_authorization(pop_as, scheme, token, dpop, fields):
    headers = {
        "Authorization": f"{scheme} {token}".encode("utf-8", "replace").decode("latin-1").replace("\r", "").replace("\n", "")
    }
    if dpop is not None:
        headers.update(_headers(dpop))
    headers.update(fields or {})
    response = pop_as.client().get("/api/items", headers=headers)
    assert response.status_code in (400, 401, 413), response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True) and response.mimetype == "application/json"


@FUZZ
@given(fields=signature_fields, nonce=st.one_of(st.none(), header_safe))
def test_resource_server_with_a_real_pop_token_and_hostile_signatures(pop_symmetric, fields, nonce):
    env, token, secret, kid = pop_symmetric
    if nonce is not None:  # a signature that verifies, with a hostile nonce parameter
        try:
            fields = signed_headers(
                "GET", RSP + "/api/items", {"Authorization": f"PoP {token}"}, None, key=secret, alg="hmac", keyid=kid, nonce=nonce
            )
        except Exception:  # the package refuses to sign it: nothing to send
            return
    response = env.client().get("/api/items", headers={"Authorization": f"PoP {token}", **fields})
    assert response.status_code in (200, 401), response.get_data(as_text=True)


@FUZZ
@given(
    value=st.one_of(
        header_safe,
        st.binary(max_size=500).map(lambda b: quote(b)),
        st.just("-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----"),
    )
)
def test_certificate_header_from_a_trusted_proxy(mtls_as, value):
    form = {"grant_type": "client_credentials", "client_id": "m-fuzz"}
    response = mtls_as.client().post(
        "/oauth2/token", data=form, headers={"X-Cert": value, "X-Verify": "SUCCESS"}, environ_base={"REMOTE_ADDR": "127.0.0.1"}
    )
    _check_response(response)
    assert response.status_code == 401


@pytest.fixture(scope="module")
def pop_symmetric(make_as, pop_world):
    env = make_as(pop_world.scenario, protect_api=True, **POP_SETTINGS, **rs_settings(RSP))
    body = env.client().post("/oauth2/token", data=token_form(env, "p-both", resource=RSP, token_type="pop")).get_json()
    from pop_helpers import symmetric_secret

    secret, kid = symmetric_secret(body["cnf"])
    return env, body["access_token"], secret, kid


@pytest.fixture(scope="module")
def mtls_as(make_as, pop_world):
    from scenarios import Scenario

    registry = json.loads(json.dumps(pop_world.scenario.registry))
    registry["clients"].append(
        {
            "client_id": "m-fuzz",
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=fuzz",
            "tls_client_certificate_bound_access_tokens": True,
        }
    )
    return make_as(
        Scenario(registry, pop_world.scenario.keys),
        OAUTH_HSM_MTLS_CERT_HEADER="X-Cert",
        OAUTH_HSM_MTLS_VERIFY_HEADER="X-Verify",
        OAUTH_HSM_TRUSTED_PROXIES="127.0.0.1",
        **POP_SETTINGS,
    )


def test_huge_dpop_header_and_deep_json(pop_as):
    key = ClientKey.new()
    for value in ("a" * 100_000, dpop_proof(key, jti="j" * 7000), b64(b"[" * 50_000 + b"]" * 50_000) + ".e30.AA"):
        response = _check_response(
            pop_as.client().post("/oauth2/token", data=token_form(pop_as, "d-plain"), headers={"DPoP": value})
        )
        assert response.status_code == 400
