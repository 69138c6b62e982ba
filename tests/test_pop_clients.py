"""flask_oauth_hsm.client over real HTTP (gunicorn), every client key in the SoftHSM test token:
Authlib sessions (requests and httpx) with private_key_jwt signed in the token, DPoP proofs signed
in the token with the nonce retries at the AS and at the resource server, symmetric and asymmetric
PoP tokens used with RFC 9421 signatures, and the resource-server helper in introspection mode."""

from __future__ import annotations

import httpx
import pytest
import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client as HttpxOAuth2Client
from authlib.integrations.requests_client import OAuth2Session

import support
from as_helpers import RS1
from flask_oauth_hsm.client import (
    DPoPAuth,
    DPoPClientAuth,
    DPoPKey,
    HSMPoPKey,
    HSMPrivateKeyJWT,
    HTTPSignatureAuth,
    PoPClientAuth,
    SymmetricPoPKey,
)
from flask_oauth_hsm.client.sessions import DPoPOAuth2Session
from pop_helpers import NONCE_KEY, POP_SETTINGS, RS_ENC_KEY, RSP, ensure_secret_keys, pop_scenario, rs_settings
from scenarios import resource_server
from test_http_server import start_gunicorn, stop

RSQ = "https://rsq.example.test"  # a resource server that introspects, its keys in the test token


@pytest.fixture(scope="module")
def world(hsm):
    ensure_secret_keys(hsm)
    world = pop_scenario(hsm)
    registry = world.scenario.registry
    resources = [RSP, RSQ, RS1]
    registry["clients"] += [
        {
            "client_id": "h-client",
            "token_endpoint_auth_method": "private_key_jwt",
            "scope": "read write",
            "resources": resources,
            "jwks": {"keys": [hsm.key("sig-es256").public_jwk()]},
            "pop_keys": ["symmetric", "asymmetric"],
        },
        {
            "client_id": "h-enc",
            "token_endpoint_auth_method": "private_key_jwt",
            "scope": "read",
            "resources": resources,
            "jwks": {"keys": [hsm.key("sig-es256").public_jwk(), hsm.key("enc-ecdh-es").public_jwk()]},
            "pop_keys": ["symmetric"],
        },
    ]
    registry["resource_servers"].append(
        resource_server("rs-q", RSQ, [hsm.key("rs2-sig").public_jwk(), hsm.key(RS_ENC_KEY).public_jwk()])
    )
    return world


def served(make_as, world, **settings):
    """gunicorn serving the scenario at a loopback address that is also the issuer: DPoP proofs
    and RFC 9421 signatures name the URLs the client calls."""
    port = support.free_port()
    base = f"http://127.0.0.1:{port}"
    public = {"OAUTH_HSM_ISSUER": base, "OAUTH_HSM_RS_ISSUER": base, "OAUTH_HSM_RS_PUBLIC_URL": base}
    env = make_as(world.scenario, **POP_SETTINGS, **{**settings, **public})
    return start_gunicorn(env.settings, workers=2, port=port)


@pytest.fixture(scope="module")
def server(make_as, world):
    """AS with DPoP nonces required, and resource server rsp (nonces required too) on /api/items."""
    proc, base = served(
        make_as,
        world,
        OAUTH_HSM_DPOP_NONCE="required",
        **rs_settings(RSP, OAUTH_HSM_RS_DPOP_NONCE="required", OAUTH_HSM_RS_DPOP_NONCE_KEY=NONCE_KEY),
    )
    yield base
    stop(proc)


def private_key_jwt(hsm, issuer, client_id="h-client"):
    return HSMPrivateKeyJWT(hsm.key("sig-es256"), client_id=client_id, audience=issuer)


def test_authlib_session_with_private_key_jwt_signed_in_the_token(server, hsm):
    session = OAuth2Session("h-client", token_endpoint_auth_method=private_key_jwt(hsm, server))
    token = session.fetch_token(server + "/oauth2/token", grant_type="client_credentials", resource=RS1)
    assert token["token_type"] == "Bearer"


def test_dpop_session_with_nonce_retries_at_the_as_and_the_resource_server(server, hsm):
    dpop = DPoPKey(hsm.key("sig-eddsa"))
    session = DPoPOAuth2Session("h-client", dpop=dpop, token_endpoint_auth_method=private_key_jwt(hsm, server))
    token = session.fetch_token(server + "/oauth2/token", grant_type="client_credentials", resource=RSP)  # after use_dpop_nonce
    assert token["token_type"] == "DPoP"
    response = session.get(server + "/api/items")  # use_dpop_nonce from the resource server, answered once
    assert response.status_code == 200, response.text
    assert [r.status_code for r in response.history] == [401]
    assert session.get(server + "/api/items").history == []  # the nonce is remembered


def test_httpx_with_authlib_and_dpop(server, hsm):
    dpop = DPoPKey(hsm.key("sig-es256"))
    client = HttpxOAuth2Client(
        "h-client",
        token_endpoint_auth_method=DPoPClientAuth(dpop, private_key_jwt(hsm, server)),
        event_hooks={"response": [dpop.remember_response]},
    )
    with pytest.raises(OAuthError, match="use_dpop_nonce"):
        client.fetch_token(server + "/oauth2/token", grant_type="client_credentials", resource=RSP)
    token = client.fetch_token(server + "/oauth2/token", grant_type="client_credentials", resource=RSP)
    assert token["token_type"] == "DPoP"
    with httpx.Client(event_hooks={"response": [dpop.remember_response]}) as api:
        response = api.get(server + "/api/items", auth=DPoPAuth(dpop, token["access_token"]))  # the nonce retry in auth_flow
    assert response.status_code == 200, response.text


def test_symmetric_pop_token_with_requests_and_httpx(server, hsm):
    session = OAuth2Session("h-client", token_endpoint_auth_method=PoPClientAuth(private_key_jwt(hsm, server)))
    token = session.fetch_token(server + "/oauth2/token", grant_type="client_credentials", resource=RSP)
    assert token["token_type"] == "pop" and token["cnf"]["jwk"]["kty"] == "oct"
    auth = HTTPSignatureAuth(token["access_token"], SymmetricPoPKey.from_token_response(token))
    assert requests.get(server + "/api/items", auth=auth, timeout=10).status_code == 200
    assert requests.get(server + "/api/items?x=1", auth=auth, timeout=10).status_code == 200
    assert httpx.get(server + "/api/items", auth=auth).status_code == 200
    assert (
        requests.get(server + "/api/items", headers={"Authorization": f"PoP {token['access_token']}"}, timeout=10).status_code
        == 401
    )


def test_symmetric_key_encrypted_to_the_clients_token_key(server, hsm):
    session = OAuth2Session("h-enc", token_endpoint_auth_method=PoPClientAuth(private_key_jwt(hsm, server, "h-enc")))
    token = session.fetch_token(server + "/oauth2/token", grant_type="client_credentials", resource=RSP)
    assert set(token["cnf"]) == {"jwe"}
    key = SymmetricPoPKey.from_token_response(token, decrypter=hsm.key("enc-ecdh-es"))  # opened in the token
    assert requests.get(server + "/api/items", auth=HTTPSignatureAuth(token["access_token"], key), timeout=10).status_code == 200


@pytest.mark.parametrize("label", ["sig-es256", "sig-eddsa"])
def test_asymmetric_pop_token_with_a_key_in_the_token(server, hsm, label):
    pop = HSMPoPKey(hsm.key(label))
    session = OAuth2Session("h-client", token_endpoint_auth_method=PoPClientAuth(private_key_jwt(hsm, server), pop))
    token = session.fetch_token(server + "/oauth2/token", grant_type="client_credentials", resource=RSP)
    assert token["token_type"] == "pop" and token["rs_cnf"]["jwk"]["kty"] == "EC"
    response = requests.get(server + "/api/items", auth=HTTPSignatureAuth(token["access_token"], pop), timeout=10)
    assert response.status_code == 200, response.text
    other = HSMPoPKey(hsm.key("sig-eddsa" if label == "sig-es256" else "sig-es256"))
    assert (
        requests.get(server + "/api/items", auth=HTTPSignatureAuth(token["access_token"], other), timeout=10).status_code == 401
    )


def test_rsa_keys_in_a_token_cannot_sign_http_signatures(hsm):
    with pytest.raises(ValueError, match="ES256 or EdDSA"):
        HSMPoPKey(hsm.key("sig-ps256"))  # PS256 is bound to SHA-256; rsa-pss-sha512 needs SHA-512


# --- the resource-server helper in introspection mode -------------------------------------------------------------


@pytest.fixture(scope="module")
def introspecting(make_as, world):
    """The example app as AS and as resource server rsq asking the AS (over HTTP) about tokens."""
    proc, url = served(
        make_as,
        world,
        **rs_settings(
            RSQ,
            OAUTH_HSM_RS_MODE="introspection",
            OAUTH_HSM_RS_CLIENT_ID="rs-q",
            OAUTH_HSM_RS_SIGNING_KEY="rs2-sig",
            OAUTH_HSM_RS_CACHE_TTL="0",
        ),
    )
    yield url
    stop(proc)


def test_introspection_mode_with_dpop_and_symmetric_pop_tokens(introspecting, hsm):
    dpop = DPoPKey(hsm.key("sig-es256"))
    session = DPoPOAuth2Session("h-client", dpop=dpop, token_endpoint_auth_method=private_key_jwt(hsm, introspecting))
    session.fetch_token(introspecting + "/oauth2/token", grant_type="client_credentials", resource=RSQ)
    assert session.get(introspecting + "/api/items").status_code == 200  # cnf.jkt from the introspection answer

    pop = OAuth2Session("h-client", token_endpoint_auth_method=PoPClientAuth(private_key_jwt(hsm, introspecting)))
    token = pop.fetch_token(introspecting + "/oauth2/token", grant_type="client_credentials", resource=RSQ)
    auth = HTTPSignatureAuth(token["access_token"], SymmetricPoPKey.from_token_response(token))
    # the key from the introspection answer's cnf.jwe, opened with rsq's key in the token
    assert requests.get(introspecting + "/api/items", auth=auth, timeout=10).status_code == 200
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert requests.get(introspecting + "/api/items", headers=bearer, timeout=10).status_code == 401
