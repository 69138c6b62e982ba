"""Pairwise ``sub`` (OpenID Connect Core §8.1; CAMARA): per sector, stable, computed in the HSM."""

from __future__ import annotations

import base64
import json

from ciba_helpers import (
    PAIRWISE_KEY,
    decide,
    handle_of,
    poll,
    started,
)
from users_helpers import Flow, introspect


def decode(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def ciba_tokens(env, client_id: str, hint: str = "alice") -> dict:
    auth_req_id = started(env, client_id, login_hint=hint)["auth_req_id"]
    decide(env, handle_of(auth_req_id), username=hint)
    r = poll(env, auth_req_id, client_id)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def expected_sub(hsm, sector: str, subject: str) -> str:
    mac = hsm.secret_key(PAIRWISE_KEY).hmac_sha256(b"pairwise\0" + sector.encode() + b"\0" + subject.encode())
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_pairwise_sub_differs_per_sector_and_is_stable(ciba_env, hsm):
    a1, a2, b = (ciba_tokens(ciba_env, c) for c in ("ciba-pw-a", "ciba-pw-a2", "ciba-pw-b"))
    subs = {
        name: (decode(t["access_token"])["sub"], decode(t["id_token"])["sub"]) for name, t in (("a1", a1), ("a2", a2), ("b", b))
    }
    assert all(at == idt for at, idt in subs.values())  # access token and ID token agree
    assert subs["a1"] == subs["a2"]  # one sector: one sub
    assert subs["a1"] != subs["b"] and "user-1001" not in {s[0] for s in subs.values()}
    assert subs["a1"][0] == expected_sub(hsm, "sector-a.example.test", "user-1001")
    again = ciba_tokens(ciba_env, "ciba-pw-a")
    assert decode(again["access_token"])["sub"] == subs["a1"][0]  # stable
    bob = ciba_tokens(ciba_env, "ciba-pw-a", "bob")
    assert decode(bob["access_token"])["sub"] not in (subs["a1"][0], "user-1002")
    assert decode(ciba_tokens(ciba_env, "ciba-app")["id_token"])["sub"] == "user-1001"  # a public client: the user's own


def test_userinfo_and_introspection_use_the_pairwise_sub_and_the_users_claims(ciba_env, hsm):
    sub = expected_sub(hsm, "sector-b.example.test", "user-1001")
    auth_req_id = started(ciba_env, "ciba-pw-b", scope="openid email read")["auth_req_id"]
    decide(ciba_env, handle_of(auth_req_id))
    tokens = poll(ciba_env, auth_req_id, "ciba-pw-b").get_json()
    r = ciba_env.client().get("/oauth2/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert r.get_json() == {"sub": sub, "email": "alice@example.test", "email_verified": True}
    body = introspect(ciba_env, "rs-1", tokens["access_token"]).get_json()
    assert body["active"] is True and body["sub"] == sub and "email" not in body  # not consented for rs-1
    r = ciba_env.client().post(
        "/oauth2/token",
        data=__import__("ciba_helpers").signed_form(
            ciba_env, "ciba-pw-b", grant_type="refresh_token", refresh_token=tokens["refresh_token"]
        ),
    )
    refreshed = r.get_json()
    assert decode(refreshed["access_token"])["sub"] == sub and decode(refreshed["id_token"])["sub"] == sub
    r = ciba_env.client().get("/oauth2/userinfo", headers={"Authorization": "Bearer " + refreshed["access_token"]})
    assert r.get_json()["email"] == "alice@example.test"


def test_code_flow_pairwise_sector_is_the_redirect_host(ciba_env, hsm):
    flow = Flow(ciba_env, "web-pw")
    flow.params = {}
    answer = flow.browser.authorize(
        {
            "response_type": "code",
            "client_id": "web-pw",
            "redirect_uri": "https://web.example.test/cb",
            "scope": "openid email",
            "code_challenge": flow.challenge,
            "code_challenge_method": "S256",
            "state": "s1",
        }
    )
    assert answer.code, answer.page[:300]
    flow.params = {"redirect_uri": "https://web.example.test/cb"}
    r = flow.redeem(answer.code)
    assert r.status_code == 200, r.get_json()
    sub = expected_sub(hsm, "web.example.test", "user-1001")
    assert decode(r.get_json()["access_token"])["sub"] == decode(r.get_json()["id_token"])["sub"] == sub


def test_discovery_says_pairwise_only_with_a_key(ciba_env, make_user_as):
    doc = ciba_env.client().get("/.well-known/openid-configuration").get_json()
    assert doc["subject_types_supported"] == ["public", "pairwise"]
    doc = make_user_as().client().get("/.well-known/openid-configuration").get_json()
    assert doc["subject_types_supported"] == ["public"]
