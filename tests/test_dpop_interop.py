"""An independent DPoP client — proofs made by joserfc, requests sent with plain ``requests``, no
code of ours — against the AS and the resource-server helper under gunicorn (several workers),
with server nonces on both sides; and PyJWT checking our DPoP-bound access token's cnf."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time

import jwt as pyjwt
import pytest
import requests
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey

import support
from as_helpers import assertion_form, claims_for
from pop_helpers import NONCE_KEY, POP_SETTINGS, RSP, pop_world, rs_settings
from test_http_server import start_gunicorn, stop

__all__ = ["pop_world"]  # fixture


@pytest.fixture(scope="module")
def server(make_as, pop_world):
    port = support.free_port()
    base = f"http://127.0.0.1:{port}"
    env = make_as(
        pop_world.scenario,
        OAUTH_HSM_ISSUER=base,
        OAUTH_HSM_DPOP_NONCE="required",
        **POP_SETTINGS,
        **rs_settings(
            RSP,
            OAUTH_HSM_RS_ISSUER=base,
            OAUTH_HSM_RS_PUBLIC_URL=base,
            OAUTH_HSM_RS_DPOP_NONCE="required",
            OAUTH_HSM_RS_DPOP_NONCE_KEY=NONCE_KEY,
        ),
    )
    proc, url = start_gunicorn(env.settings, workers=3, port=port)
    yield url, env
    stop(proc)


class JoserfcDPoP:
    """A DPoP client written from RFC 9449 with joserfc: nothing of flask_oauth_hsm."""

    def __init__(self, key):
        self.key = key
        self.nonce: dict[str, str] = {}

    def proof(self, htm: str, htu: str, token: str | None = None, role: str = "as") -> str:
        claims = {"jti": secrets.token_urlsafe(16), "htm": htm, "htu": htu, "iat": int(time.time())}
        if role in self.nonce:
            claims["nonce"] = self.nonce[role]
        if token:
            claims["ath"] = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
        alg = "ES256" if isinstance(self.key, ECKey) else "EdDSA"
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": self.key.as_dict(private=False)}
        return jws.serialize_compact(header, json.dumps(claims).encode(), self.key, algorithms=[alg])

    def send(self, method: str, url: str, role: str, token: str | None = None, **kwargs) -> requests.Response:
        for _ in range(2):  # RFC 9449 §8 / §9: once more with the nonce the server sent
            headers = {"DPoP": self.proof(method, url, token, role), **({"Authorization": f"DPoP {token}"} if token else {})}
            response = requests.request(method, url, headers=headers, timeout=10, **kwargs)
            if "DPoP-Nonce" in response.headers:
                self.nonce[role] = response.headers["DPoP-Nonce"]
            if response.status_code not in (400, 401) or "use_dpop_nonce" not in response.text + response.headers.get(
                "WWW-Authenticate", ""
            ):
                return response
        return response


@pytest.mark.parametrize("kind", ["EC", "OKP"])
def test_independent_client_gets_and_uses_a_dpop_token(server, kind):
    base, env = server
    client = JoserfcDPoP(ECKey.generate_key("P-256") if kind == "EC" else OKPKey.generate_key("Ed25519"))
    for _ in range(3):  # several requests, so that more than one worker answers and checks nonces
        form = assertion_form(env.keys["d-plain"].jws(claims_for("d-plain", base)), resource=RSP)
        response = client.send("POST", base + "/oauth2/token", "as", data=form)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "DPoP"
        jwks = pyjwt.PyJWKClient(base + "/oauth2/jwks")
        claims = pyjwt.decode(
            body["access_token"],
            jwks.get_signing_key_from_jwt(body["access_token"]).key,
            algorithms=["ES256"],
            audience=RSP,
            issuer=base,
        )
        assert claims["cnf"]["jkt"] == client.key.thumbprint()  # RFC 7638, computed by joserfc
        api = client.send("GET", base + "/api/items", "rs", body["access_token"])
        assert api.status_code == 200, api.text
        assert api.json()["client_id"] == "d-plain"


def test_independent_client_sees_rfc9449_errors(server):
    base, _ = server
    response = requests.get(base + "/api/items", headers={"Authorization": "DPoP abc", "DPoP": "not-a-proof"}, timeout=10)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("DPoP ") and 'algs="ES256 ES384 PS256 EdDSA"' in challenge and "error=" in challenge
    response = requests.post(
        base + "/oauth2/token", data={"grant_type": "client_credentials"}, headers={"DPoP": "x.y.z"}, timeout=10
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_dpop_proof"
