"""A small OAuth client for demonstrations: ``flask oauth-hsm demo-client`` and example_app's
``/demo`` pages. It authenticates with ``private_key_jwt``, its key in the (dev) token, and runs the
client side of the flows: client credentials, the authorization code flow with PKCE (S256),
``state``, ``nonce``, the RFC 9207 ``iss`` check, redemption and refresh, and CIBA in poll mode
(a backchannel request, then polling at the interval the server asks for).

It is a client like any other: it talks HTTP to the server, never reaches into it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from .client_auth import ASSERTION_TYPE
from .jose import jws, jwt
from .jose.jwk import JWKSet

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class DemoClient:
    client_id: str
    issuer: str
    key: jws.Signer  # the client's signing key (a key in the dev token)
    prefix: str = "/oauth2"

    def url(self, path: str) -> str:
        return self.issuer.rstrip("/") + self.prefix + path

    def assertion(self) -> str:
        """RFC 7523 §3: iss = sub = client_id, aud = the issuer, a fresh jti, one minute."""
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.issuer,
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.sign_jwt(claims, self.key, "JWT")

    def token(self, **form: str) -> tuple[int, dict[str, Any]]:
        """POST to the token endpoint, authenticated with a fresh assertion."""
        body = {**form, "client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion()}
        return post(self.url("/token"), body)


@dataclass
class CodeFlow:
    """One authorization code flow: the request's secrets, kept by the client until the callback."""

    client: DemoClient
    redirect_uri: str
    scope: str
    resource: str | None = None
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    state: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def challenge(self) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=").decode()

    def authorization_url(self) -> str:
        params = {
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
        }
        if self.resource:
            params["resource"] = self.resource
        return self.client.url("/authorize") + "?" + urllib.parse.urlencode(params)

    def code_from(self, params: dict[str, str]) -> str:
        """The code of the authorization response, after the checks a client must make."""
        if params.get("state") != self.state:
            raise ValueError("the state does not match: not the answer to our request")
        if params.get("iss") != self.client.issuer:  # RFC 9207 §2.4: mix-up defence
            raise ValueError("the iss does not match our authorization server")
        if "error" in params:
            raise ValueError(f"the authorization failed: {params['error']} ({params.get('error_description', '')})")
        code = params.get("code")
        if not code:
            raise ValueError("no code in the answer")
        return code

    def redeem(self, code: str) -> tuple[int, dict[str, Any]]:
        return self.client.token(
            grant_type="authorization_code", code=code, redirect_uri=self.redirect_uri, code_verifier=self.verifier
        )

    def refresh(self, refresh_token: str) -> tuple[int, dict[str, Any]]:
        return self.client.token(grant_type="refresh_token", refresh_token=refresh_token)


CIBA_GRANT = "urn:openid:params:grant-type:ciba"


@dataclass
class CibaFlow:
    """One CIBA request in poll mode (OpenID CIBA Core §7, §10.1): start it, then poll until the
    user decided, waiting ``interval`` seconds between polls and 5 more after each ``slow_down``."""

    client: DemoClient
    scope: str
    login_hint: str
    binding_message: str | None = None
    auth_req_id: str = ""
    interval: int = 5
    expires_at: float = 0.0

    def start(self) -> tuple[int, dict[str, Any]]:
        form = {
            "scope": self.scope,
            "login_hint": self.login_hint,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.client.assertion(),
        }
        if self.binding_message:
            form["binding_message"] = self.binding_message
        status, body = post(self.client.url("/bc-authorize"), form)
        if status == 200:
            self.auth_req_id, self.interval = body["auth_req_id"], int(body.get("interval", 5))
            self.expires_at = time.monotonic() + int(body["expires_in"])
        return status, body

    def poll(self, sleep: Any = time.sleep) -> tuple[int, dict[str, Any]]:
        """Poll until tokens or a final error (access_denied, expired_token, ...)."""
        while True:
            sleep(self.interval)
            status, body = self.client.token(grant_type=CIBA_GRANT, auth_req_id=self.auth_req_id)
            error = body.get("error")
            if error == "slow_down":  # CIBA Core §11: this and every later poll waits 5 s more
                self.interval += 5
            if error not in ("authorization_pending", "slow_down") or time.monotonic() > self.expires_at + self.interval:
                return status, body


def post(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode()
    return _json(urllib.request.Request(url, data=data, headers=FORM))


def get(url: str, access_token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    return _json(urllib.request.Request(url, headers=headers))


def _json(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def verified_claims(token: str, jwks_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a JWS signed by the server, checked with its JWKS."""
    with urllib.request.urlopen(jwks_url, timeout=10) as resp:
        keyset = JWKSet.from_dict(json.loads(resp.read()), skip_unusable=True)
    algs = ["ES256", "ES384", "PS256", "RS256", "EdDSA"]
    verified = jws.verify(token, lambda h: keyset.select(h["alg"], "sig", h.get("kid")), algs)
    return verified.header, jwt.decode_claims(verified.payload)
