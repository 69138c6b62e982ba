"""Helpers of the user-flow tests: authorization requests, code redemption, refresh, introspection."""

from __future__ import annotations

import secrets
from typing import Any

from as_helpers import assertion_form, claims_for
from scenarios import WEB_REDIRECT
from user_host import Answer, Browser, pkce_pair

REDIRECTS = {
    "web": WEB_REDIRECT,
    "web-2": "https://web2.example.test/cb",
    "native": "http://127.0.0.1:8765/callback",
    "oidc-only": "https://login.example.test/cb",
}


def auth_params(
    client_id: str = "web", *, challenge: str | None, scope: str | None = "openid read", **extra: Any
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECTS.get(client_id),
        "state": secrets.token_urlsafe(12),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if scope is not None:
        params["scope"] = scope
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def token_post(env, client_id: str, **form: Any):
    """A token request authenticated as ``client_id`` (private_key_jwt, or ``none`` for native)."""
    from flask_oauth_hsm import clock

    if client_id == "native":
        data = {"client_id": client_id, **form}
    else:
        now = int(clock.now())  # the package's clock: tests that move it get assertions that fit
        data = assertion_form(env.keys[client_id].jws(claims_for(client_id, env.issuer, iat=now, exp=now + 60)), **form)
    return env.client().post("/oauth2/token", data={k: v for k, v in data.items() if v is not None})


class Flow:
    """One user's authorization code flow against an env: authorize, redeem, refresh."""

    def __init__(self, env, client_id: str = "web", username: str = "alice"):
        self.env, self.client_id, self.username = env, client_id, username
        self.browser = Browser(env.app)
        self.verifier, self.challenge = pkce_pair()
        self.params: dict[str, Any] = {}

    def authorize(self, *, decision: str | None = "approve", **extra: Any) -> Answer:
        self.params = auth_params(self.client_id, challenge=self.challenge, **extra)
        return self.browser.authorize(self.params, username=self.username, decision=decision)

    def code(self, **extra: Any) -> str:
        answer = self.authorize(**extra)
        assert answer.code, (answer.status, answer.params, answer.page[:500])
        assert answer.params["state"] == self.params["state"] and answer.params["iss"] == self.env.issuer
        return answer.code

    def redeem(self, code: str, **form: Any):
        fields = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.params.get("redirect_uri"),
            "code_verifier": self.verifier,
            **form,
        }
        return token_post(self.env, self.client_id, **fields)

    def tokens(self, **extra: Any) -> dict[str, Any]:
        r = self.redeem(self.code(**extra))
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    def refresh(self, refresh_token: str, client_id: str | None = None, **form: Any):
        return token_post(self.env, client_id or self.client_id, grant_type="refresh_token", refresh_token=refresh_token, **form)


def introspect(env, rs: str, token: str):
    from flask_oauth_hsm import clock

    now = int(clock.now())
    form = assertion_form(env.keys[rs].jws(claims_for(rs, env.issuer, iat=now, exp=now + 60)), token=token)
    del form["grant_type"]
    return env.client().post("/oauth2/introspect", data=form)


def expect_error(response, status: int, error: str) -> dict[str, Any]:
    body = response.get_json()
    assert response.status_code == status and body["error"] == error, (response.status_code, body)
    return body
