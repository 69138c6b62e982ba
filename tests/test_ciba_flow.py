"""CIBA poll mode end to end (OpenID CIBA Core 1.0): request, device decision, polling, tokens."""

from __future__ import annotations

import base64
import json

import pytest

from ciba_helpers import bc_authorize, ciba_env, decide, handle_of, make_ciba_as, notified, poll, started  # noqa: F401
from users_helpers import expect_error, introspect


def decode(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_full_poll_cycle_approved(ciba_env, fake_clock):
    answer = started(ciba_env, binding_message="Code 4711", acr_values="urn:example:device")
    assert set(answer) == {"auth_req_id", "expires_in", "interval"} and answer["expires_in"] == 120 and answer["interval"] == 5
    assert len(answer["auth_req_id"]) >= 27  # ≥ 160 bits in base64url
    handle = handle_of(answer["auth_req_id"])
    shown = next(r for r in notified(ciba_env) if r.handle == handle)
    assert (shown.client_id, shown.client_name, shown.subject) == ("ciba-app", "Ciba App", "user-1001")
    assert shown.scope == ("openid", "read") and shown.binding_message == "Code 4711" and shown.acr_values == ("urn:example:device",)
    with ciba_env.app.app_context():
        from ciba_helpers import device

        assert handle in [r.handle for r in device(ciba_env).pending("user-1001")]
        assert handle not in [r.handle for r in device(ciba_env).pending("user-1002")]
    expect_error(poll(ciba_env, answer["auth_req_id"]), 400, "authorization_pending")
    fake_clock.advance(5)
    decide(ciba_env, handle)
    r = poll(ciba_env, answer["auth_req_id"])
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert {"access_token", "id_token", "refresh_token", "expires_in", "token_type"} <= set(body)
    at, idt = decode(body["access_token"]), decode(body["id_token"])
    assert at["sub"] == idt["sub"] == "user-1001" and idt["aud"] == "ciba-app" and idt["acr"] == "urn:example:device"
    assert at["scope"] == "openid read"
    # single use: the same auth_req_id never gives tokens again
    fake_clock.advance(5)
    expect_error(poll(ciba_env, answer["auth_req_id"]), 400, "invalid_grant")
    with ciba_env.app.app_context():
        from ciba_helpers import device

        assert handle not in [r.handle for r in device(ciba_env).pending("user-1001")]
    # the refresh token works like the code flow's
    r = ciba_env.client().post("/oauth2/token", data={**__import__("ciba_helpers").signed_form(
        ciba_env, "ciba-app", grant_type="refresh_token", refresh_token=body["refresh_token"])})
    assert r.status_code == 200, r.get_json()
