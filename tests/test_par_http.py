"""PAR + an encrypted request object + the code flow over real HTTP (gunicorn serving example_app),
by an independent client: Authlib's OAuth2Session authenticates (private_key_jwt) and redeems the
code, joserfc signs the request object and encrypts it to the AS's key found through the metadata
and the JWKS; a person signs in and approves through the example's pages."""

from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwe, jwt
from joserfc.jwk import ECKey, import_key

from as_helpers import ClientKey
from test_http_server import ShortLivedPrivateKeyJWT, pem, stop
from test_users_http import APP_REDIRECT, approve_in_browser, serve_example


@pytest.fixture(scope="module")
def server(hsm, redis_server, tmp_path_factory):
    key = ClientKey.new("ES256")

    def clients(issuer, api):
        return [
            {
                "client_id": "fapi-app",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [key.public_jwk]},
                "grant_types": ["authorization_code", "refresh_token"],
                "redirect_uris": [APP_REDIRECT],
                "scope": "openid email read",
                "resources": [api],
                "require_pushed_authorization_requests": True,
                "request_object_signing_alg": "ES256",
                "request_object_encryption_alg": "RSA-OAEP-256",
                "request_object_encryption_enc": "A256GCM",
                "request_object_typ_required": True,
            }
        ]

    proc, issuer, api, _ = serve_example(hsm, redis_server, tmp_path_factory, "http-par", clients)
    yield {"issuer": issuer, "api": api, "key": key}
    stop(proc)


def encrypted_request_object(issuer: str, client_key: ECKey, kid: str, claims: dict) -> str:
    """What a FAPI client does: sign with its key, encrypt to the AS's key from the JWKS."""
    meta = requests.get(issuer + "/.well-known/oauth-authorization-server", timeout=10).json()
    assert "RSA-OAEP-256" in meta["request_object_encryption_alg_values_supported"]
    jwks = requests.get(meta["jwks_uri"], timeout=10).json()
    as_key = import_key(next(k for k in jwks["keys"] if k.get("use") == "enc" and k.get("alg") == "RSA-OAEP-256"))
    signed = jwt.encode({"alg": "ES256", "kid": kid, "typ": "oauth-authz-req+jwt"}, claims, client_key)
    return jwe.encrypt_compact(
        {"alg": "RSA-OAEP-256", "enc": "A256GCM", "cty": "JWT", "kid": as_key.kid},
        signed,
        as_key,
        algorithms=["RSA-OAEP-256", "A256GCM"],
    )


def test_par_with_an_encrypted_request_object_then_the_code_flow(server):
    issuer, key = server["issuer"], server["key"]
    meta = requests.get(issuer + "/.well-known/oauth-authorization-server", timeout=10).json()
    client_key = ECKey.import_key(pem(key))
    session = OAuth2Session(
        "fapi-app",
        client_key,
        scope="openid email read",
        redirect_uri=APP_REDIRECT,
        token_endpoint_auth_method=ShortLivedPrivateKeyJWT(issuer, alg="ES256", headers={"kid": key.kid}),
    )
    verifier = secrets.token_urlsafe(48)
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    now = int(time.time())
    claims = {
        "iss": "fapi-app",
        "aud": issuer,
        "client_id": "fapi-app",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(16),
        "response_type": "code",
        "redirect_uri": APP_REDIRECT,
        "scope": "openid email read",
        "state": "par-state",
        "nonce": "par-nonce",
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    request_object = encrypted_request_object(issuer, client_key, key.kid, claims)
    pushed = session.post(
        meta["pushed_authorization_request_endpoint"],
        data={"client_id": "fapi-app", "request": request_object},
        auth=session.client_auth(session.token_endpoint_auth_method),
        withhold_token=True,
        timeout=10,
    )
    assert pushed.status_code == 201, pushed.text
    body = pushed.json()
    assert body["expires_in"] == 60

    # PAR is required for this client: a plain request is refused, the pushed one goes through.
    plain = requests.get(
        meta["authorization_endpoint"]
        + "?"
        + urlencode(
            {
                "client_id": "fapi-app",
                "response_type": "code",
                "redirect_uri": APP_REDIRECT,
                "code_challenge": "x" * 43,
                "code_challenge_method": "S256",
            }
        ),
        allow_redirects=False,
        timeout=10,
    )
    assert parse_qs(urlsplit(plain.headers["Location"]).query)["error"] == ["invalid_request"]
    url = meta["authorization_endpoint"] + "?" + urlencode({"client_id": "fapi-app", "request_uri": body["request_uri"]})
    back = approve_in_browser(requests.Session(), url, APP_REDIRECT)
    params = parse_qs(urlsplit(back).query)
    assert params["state"] == ["par-state"] and params["iss"] == [issuer]
    token = session.fetch_token(meta["token_endpoint"], authorization_response=back, code_verifier=verifier)
    assert token["id_token"] and token["refresh_token"]
    id_claims = jwt.decode(token["id_token"], _as_keys(meta["jwks_uri"])).claims
    assert id_claims["nonce"] == "par-nonce" and id_claims["aud"] == "fapi-app"
    api = requests.get(server["api"] + "/items", headers={"Authorization": "Bearer " + token["access_token"]}, timeout=10)
    assert api.status_code == 200, api.text

    # The request_uri was used once.
    again = requests.get(url, allow_redirects=False, timeout=10)
    assert parse_qs(urlsplit(again.headers["Location"]).query)["error"] == ["invalid_request_uri"]


def _as_keys(jwks_uri: str):
    from joserfc.jwk import KeySet

    keys = [k for k in requests.get(jwks_uri, timeout=10).json()["keys"] if k.get("use") == "sig"]
    return KeySet.import_key_set({"keys": keys})
