"""Refresh tokens of public clients are sender-constrained like their access tokens: to the DPoP
key (RFC 9449 §5; tests/test_par.py) or to the TLS client certificate (RFC 8705 §4), checked at
every refresh. The certificate comes in the proxy's header from a trusted address (the nginx path
itself is tested in tests/test_mtls.py)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization

from mtls_support import CA, CERT_HEADER, _name
from scenarios import RS1, Scenario, resource_server
from user_host import Browser, pkce_pair
from users_helpers import expect_error

REDIRECT = "http://127.0.0.1:8765/callback"


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_user_as):
    from as_helpers import ClientKey

    ca = CA(tmp_path_factory.mktemp("public-mtls"))
    rs_key = ClientKey.new("ES256")
    registry = {
        "clients": [
            {
                "client_id": "m-native",
                "token_endpoint_auth_method": "none",
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "scope": "openid read",
                "resources": [RS1],
                "tls_client_certificate_bound_access_tokens": True,
            }
        ],
        "resource_servers": [resource_server("rs-1", RS1, [rs_key.public_jwk])],
    }
    env = make_user_as(
        Scenario(registry, {"rs-1": rs_key}),
        OAUTH_HSM_CONSENT_LIFETIME="0",
        OAUTH_HSM_MTLS_CERT_HEADER=CERT_HEADER,
        OAUTH_HSM_TRUSTED_PROXIES="127.0.0.1/32",
    )
    return env, ca.issue("device", _name("device-1")), ca.issue("other", _name("device-2"))


def _header(issued) -> dict[str, str]:
    return {CERT_HEADER: quote(issued.cert.public_bytes(serialization.Encoding.PEM).decode())}


def test_a_public_clients_refresh_token_is_bound_to_its_certificate(world):
    env, device, other = world
    verifier, challenge = pkce_pair()
    answer = Browser(env.app).authorize(
        {
            "response_type": "code",
            "client_id": "m-native",
            "redirect_uri": REDIRECT,
            "scope": "openid read",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    client = env.client()
    r = client.post(
        "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "client_id": "m-native",
            "code": answer.code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        headers=_header(device),
    )
    assert r.status_code == 200, r.get_json()
    refresh = r.get_json()["refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": "m-native", "refresh_token": refresh}
    expect_error(client.post("/oauth2/token", data=form), 400, "invalid_request")  # no certificate: no bound token
    expect_error(client.post("/oauth2/token", data=form, headers=_header(other)), 400, "invalid_grant")
    r = client.post("/oauth2/token", data=form, headers=_header(device))
    assert r.status_code == 200 and r.get_json()["refresh_token"] != refresh
