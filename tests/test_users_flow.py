"""The authorization code flow end to end in the test client: login at the host, consent, code,
tokens (access, refresh, ID), refresh, UserInfo, introspection claims, revocation."""

from __future__ import annotations

import jwt as pyjwt

from users_helpers import Flow


def decode(token: str) -> dict:
    return pyjwt.decode(token, options={"verify_signature": False})


def test_happy_path(user_env):
    flow = Flow(user_env)
    body = flow.tokens(scope="openid email read", nonce="n-123")
    assert body["token_type"] == "Bearer" and body["scope"] == "email openid read"
    at, idt = decode(body["access_token"]), decode(body["id_token"])
    assert at["sub"] == "user-1001" and at["client_id"] == "web" and at["acr"] == "urn:example:pwd" and at["amr"] == ["pwd"]
    assert "email" not in at and "name" not in at
    assert idt["nonce"] == "n-123" and idt["aud"] == "web" and idt["azp"] == "web" and idt["sub"] == "user-1001"
    assert "refresh_token" in body
    r = user_env.client().get("/oauth2/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"sub": "user-1001", "email": "alice@example.test", "email_verified": True}
    again = flow.refresh(body["refresh_token"])
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["refresh_token"] != body["refresh_token"]
