"""Codes, refresh tokens and what they lead to: single use (sequential and concurrent), PKCE,
binding to client and redirect URI, rotation with reuse detection, lifetimes, Redis losing the
rotation state, revocation, introspection claims (entitlement and consent), UserInfo, ID tokens."""

from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import jwt as pyjwt
import pytest

import support
from scenarios import RS1, RS4
from users_helpers import Flow, expect_error, introspect, token_post


def decode(token: str) -> dict:
    return pyjwt.decode(token, options={"verify_signature": False})


def active(env, token: str, rs: str = "rs-1") -> bool:
    r = introspect(env, rs, token)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["active"]


def at_the_same_time(count: int, fn) -> list:
    barrier = Barrier(count)

    def attempt(i: int):
        barrier.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(attempt, range(count)))


# --- codes -------------------------------------------------------------------------------------------------


def test_a_code_used_twice_revokes_what_the_first_use_issued(user_env):
    flow = Flow(user_env)
    code = flow.code()
    first = flow.redeem(code)
    assert first.status_code == 200
    tokens = first.get_json()
    assert active(user_env, tokens["access_token"])
    expect_error(flow.redeem(code), 400, "invalid_grant")
    assert not active(user_env, tokens["access_token"])
    expect_error(flow.refresh(tokens["refresh_token"]), 400, "invalid_grant")


@pytest.mark.parametrize("client_id", ["web", "native"])
def test_twenty_concurrent_redemptions_one_wins_and_is_revoked(user_env, client_id):
    flow = Flow(user_env, client_id)
    code = flow.code()
    answers = at_the_same_time(20, lambda i: flow.redeem(code))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [400] * 19, statuses
    assert all(a.get_json()["error"] == "invalid_grant" for a in answers if a.status_code == 400)
    winner = next(a.get_json() for a in answers if a.status_code == 200)
    assert not active(user_env, winner["access_token"])  # the losers revoked the grant
    expect_error(flow.refresh(winner["refresh_token"]), 400, "invalid_grant")


def test_expired_code(user_env, fake_clock):
    flow = Flow(user_env)
    code = flow.code()
    fake_clock.advance(user_env.state.settings.code_lifetime)
    expect_error(flow.redeem(code), 400, "invalid_grant")


def test_a_code_of_client_a_redeemed_by_b(user_env):
    flow = Flow(user_env)
    code = flow.code()
    other = Flow(user_env, "web-2")
    other.verifier = flow.verifier
    body = expect_error(other.redeem(code, redirect_uri=flow.params["redirect_uri"]), 400, "invalid_grant")
    assert "another client" in body["error_description"]
    assert flow.redeem(code).status_code == 200  # the attempt did not burn the code


@pytest.mark.parametrize("redirect_uri", ["https://web.example.test/cb2", "https://web.example.test/cb/", None])
def test_redirect_uri_must_be_repeated_exactly(user_env, redirect_uri):
    flow = Flow(user_env)
    code = flow.code()
    expect_error(flow.redeem(code, redirect_uri=redirect_uri), 400, "invalid_grant")


@pytest.mark.parametrize(
    "verifier,error",
    [
        (None, "invalid_grant"),  # missing
        (secrets.token_urlsafe(48), "invalid_grant"),  # wrong
        ("a" * 42, "invalid_request"),  # too short (RFC 7636 §4.1: 43-128)
        ("a" * 129, "invalid_request"),  # too long
        ("a" * 42 + "+", "invalid_request"),  # outside the unreserved characters
        ("a" * 42 + " ", "invalid_request"),
    ],
)
def test_pkce_failures(user_env, verifier, error):
    flow = Flow(user_env)
    code = flow.code()
    body = flow.redeem(code, code_verifier=verifier)
    expect_error(body, 400, error)
    assert flow.redeem(code).status_code == 200  # checked before the code is consumed


def test_a_verifier_for_a_code_issued_without_challenge(user_env):
    """Every code we issue has a challenge (PKCE is mandatory); a record without one, as an older
    server might have written, refuses a verifier (OAuth 2.1 §4.1.3)."""
    from flask_oauth_hsm.tokens import codes

    flow = Flow(user_env)
    code = flow.code()
    state = user_env.state
    record = codes.find(state, code).record
    forged = secrets.token_urlsafe(32)
    state.store.put(codes.NAMESPACE, forged, codes.CodeRecord(**{**record.__dict__, "code_challenge": None}).encode(), 60)
    expect_error(flow.redeem(forged), 400, "invalid_grant")
    assert flow.redeem(forged, code_verifier=None).status_code == 200


def test_resources_and_scope_narrow_at_the_token_request(user_env):
    flow = Flow(user_env)
    code = flow.code(scope="openid read write", resource=[RS1, RS4])
    expect_error(flow.redeem(code, resource="https://rs2.example.test"), 400, "invalid_target")
    expect_error(flow.redeem(code, scope="read write email"), 400, "invalid_scope")
    body = flow.redeem(code, resource=RS4, scope="read").get_json()
    at = decode(body["access_token"])
    assert at["aud"] == RS4 and at["scope"] == "read"


def test_garbage_codes(user_env):
    flow = Flow(user_env)
    for code in ("x", "A" * 43, "é" * 43, "A" * 5000):
        expect_error(flow.redeem(code), 400, "invalid_grant")
    expect_error(token_post(user_env, "web", grant_type="authorization_code"), 400, "invalid_request")


def test_a_client_credentials_client_cannot_redeem(user_env):
    expect_error(token_post(user_env, "machine", grant_type="authorization_code", code="A" * 43), 400, "unauthorized_client")


# --- refresh tokens ---------------------------------------------------------------------------------------


def test_rotation_and_reuse_detection(user_env):
    flow = Flow(user_env)
    first = flow.tokens()
    second = flow.refresh(first["refresh_token"]).get_json()
    third = flow.refresh(second["refresh_token"]).get_json()
    assert active(user_env, third["access_token"])
    expect_error(flow.refresh(first["refresh_token"]), 400, "invalid_grant")  # rotated out: the grant goes
    assert not active(user_env, third["access_token"]) and not active(user_env, second["access_token"])
    expect_error(flow.refresh(third["refresh_token"]), 400, "invalid_grant")


def test_concurrent_refreshes_one_wins_then_the_grant_is_revoked(user_env):
    flow = Flow(user_env)
    tokens = flow.tokens()
    answers = at_the_same_time(20, lambda i: flow.refresh(tokens["refresh_token"]))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [400] * 19, statuses
    winner = next(a.get_json() for a in answers if a.status_code == 200)
    assert not active(user_env, winner["access_token"])
    expect_error(flow.refresh(winner["refresh_token"]), 400, "invalid_grant")


def test_scope_can_only_shrink(user_env):
    flow = Flow(user_env)
    tokens = flow.tokens(scope="read write")
    expect_error(flow.refresh(tokens["refresh_token"], scope="read write openid"), 400, "invalid_scope")
    narrow = flow.refresh(tokens["refresh_token"], scope="read").get_json()
    assert narrow["scope"] == "read"
    wide_again = flow.refresh(narrow["refresh_token"]).get_json()  # the grant kept its scope
    assert wide_again["scope"] == "read write"


def test_a_refresh_token_of_client_a_used_by_b(user_env):
    flow = Flow(user_env)
    tokens = flow.tokens()
    expect_error(flow.refresh(tokens["refresh_token"], client_id="web-2"), 400, "invalid_grant")
    assert flow.refresh(tokens["refresh_token"]).status_code == 200  # not burned


@pytest.mark.parametrize("lifetime", ["absolute", "idle"])
def test_expired_refresh_tokens(make_user_as, fake_clock, lifetime):
    env = make_user_as(
        OAUTH_HSM_CONSENT_LIFETIME="0", OAUTH_HSM_REFRESH_TOKEN_LIFETIME="600", OAUTH_HSM_REFRESH_TOKEN_IDLE_LIFETIME="400"
    )
    flow = Flow(env)
    tokens = flow.tokens()
    if lifetime == "absolute":  # refreshed within the idle lifetime each time, until the absolute one ends
        fake_clock.advance(300)
        tokens = flow.refresh(tokens["refresh_token"]).get_json()
        fake_clock.advance(300)
    else:
        fake_clock.advance(400)
    body = expect_error(flow.refresh(tokens["refresh_token"]), 400, "invalid_grant")
    assert "expired" in body["error_description"]


def test_redis_losing_the_rotation_state_fails_closed(make_user_as, tmp_path):
    """docs/users.md: a grant whose record Redis lost cannot be refreshed: the user signs in again."""
    redis = support.RedisServer(tmp_path / "redis")
    redis.start()
    try:
        env = make_user_as(redis_url=redis.url, OAUTH_HSM_CONSENT_LIFETIME="0")
        flow = Flow(env)
        tokens = flow.tokens()
        for _ in range(2):
            tokens = flow.refresh(tokens["refresh_token"]).get_json()
        import redis as redis_py

        redis_py.Redis.from_url(redis.url).flushall()
        expect_error(flow.refresh(tokens["refresh_token"]), 400, "invalid_grant")
        assert not active(env, tokens["access_token"])
        assert flow.tokens()["refresh_token"]  # signing in again works
        redis.stop()
        r = flow.refresh(tokens["refresh_token"])
        assert r.status_code == 503 and r.headers["Retry-After"] and "access_token" not in r.get_json()
        answer = flow.authorize(decision=None)  # the browser gets a page, not JSON, and no redirect
        assert answer.status == 503 and "<h1>" in answer.page
    finally:
        redis.stop()


def test_forged_and_foreign_refresh_tokens(user_env):
    from flask_oauth_hsm.jose import jwe
    from flask_oauth_hsm.tokens.refresh import RT_TYP

    flow = Flow(user_env)
    tokens = flow.tokens()
    real = tokens["refresh_token"]
    _head, *_rest = real.split(".")
    for bad in (real[:-4] + "AAAA", "x.y.z.w.v", tokens["access_token"], tokens["id_token"], "", "a" * 9000):
        if bad:
            expect_error(flow.refresh(bad), 400, "invalid_grant")
    # Anyone can encrypt to our public key; without the current token id of a live grant it is nothing.
    ring = user_env.state.keys.ring
    forged_claims = {
        "gid": "g" * 24,
        "jti": "j" * 24,
        "client_id": "web",
        "sub": "user-1002",
        "scope": "read write",
        "aud": [RS1],
        "auth_time": 1,
        "acr": None,
        "amr": [],
        "iat": 4_000_000_000,
        "exp": 4_100_000_000,
    }
    forged = jwe.encrypt(json.dumps(forged_claims).encode(), ring.escrow, ring.escrow.alg, "A256GCM", {"typ": RT_TYP})
    expect_error(flow.refresh(forged), 400, "invalid_grant")
    assert flow.refresh(real).status_code == 200  # none of that touched the real grant


def test_revoking_a_refresh_token_revokes_the_grant(user_env):
    flow = Flow(user_env)
    tokens = flow.tokens()
    from as_helpers import assertion_form, claims_for

    form = assertion_form(user_env.keys["web-2"].jws(claims_for("web-2", user_env.issuer)), token=tokens["refresh_token"])
    del form["grant_type"]
    r = user_env.client().post("/oauth2/revoke", data=form)
    expect_error(r, 400, "unauthorized_client")  # not web-2's
    form = assertion_form(user_env.keys["web"].jws(claims_for("web", user_env.issuer)), token=tokens["refresh_token"])
    del form["grant_type"]
    assert user_env.client().post("/oauth2/revoke", data=form).status_code == 200
    assert not active(user_env, tokens["access_token"])
    expect_error(flow.refresh(tokens["refresh_token"]), 400, "invalid_grant")


def test_a_client_without_the_refresh_grant_gets_no_refresh_token(user_env):
    tokens = Flow(user_env, "oidc-only").tokens(scope="openid email")
    assert "refresh_token" not in tokens and "id_token" in tokens
    at = decode(tokens["access_token"])
    assert at["aud"] == user_env.issuer + "/oauth2/userinfo"


def test_public_client(user_env):
    flow = Flow(user_env, "native")
    tokens = flow.tokens(scope="openid email read")
    refreshed = flow.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200
    form = {"grant_type": "refresh_token", "refresh_token": refreshed.get_json()["refresh_token"]}
    r = user_env.client().post("/oauth2/token", data=form)
    expect_error(r, 401, "invalid_client")


# --- what tokens carry, and what resource servers and clients learn ----------------------------------------


def test_access_tokens_carry_no_personal_data(user_env):
    tokens = Flow(user_env).tokens(scope="openid profile email read", claims='{"introspection": {"email": null}}')
    at = decode(tokens["access_token"])
    assert set(at) == {"iss", "exp", "aud", "sub", "client_id", "iat", "jti", "scope", "auth_time", "acr", "amr", "grant_id"}


def test_id_token_signature_and_at_hash(user_env):
    import base64
    import hashlib

    tokens = Flow(user_env).tokens(scope="openid", nonce="abc")
    jwks = pyjwt.PyJWKSet.from_dict(user_env.client().get("/oauth2/jwks").get_json())
    header = pyjwt.get_unverified_header(tokens["id_token"])
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = pyjwt.decode(tokens["id_token"], key.key, algorithms=["ES256"], audience="web", issuer=user_env.issuer)
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert claims["nonce"] == "abc" and claims["exp"] - claims["iat"] == 300 and claims["auth_time"] <= claims["iat"]


def test_introspection_claims_need_entitlement_and_consent(user_env):
    claims = '{"introspection": {"email": null, "birthdate": null, "name": null}}'
    tokens = Flow(user_env).tokens(scope="read", resource=[RS1, RS4], claims=claims)
    rs4 = introspect(user_env, "rs-4", tokens["access_token"]).get_json()
    assert rs4["active"] and rs4["email"] == "alice@example.test" and rs4["birthdate"] == "1990-05-04"
    assert "name" not in rs4 and "username" not in rs4 and "given_name" not in rs4  # not entitled / not consented
    rs1 = introspect(user_env, "rs-1", tokens["access_token"]).get_json()
    assert rs1["active"] and "email" not in rs1  # consented, but rs-1 is not entitled
    r = introspect(user_env, "web", tokens["access_token"])
    assert r.status_code == 403  # an ordinary client learns nothing


def test_entitled_without_consent_gets_the_minimal_set(user_env):
    tokens = Flow(user_env).tokens(scope="read", resource=[RS4])
    body = introspect(user_env, "rs-4", tokens["access_token"]).get_json()
    assert body["active"] and set(body) == {
        "active",
        "token_type",
        "scope",
        "client_id",
        "sub",
        "aud",
        "iss",
        "exp",
        "iat",
        "jti",
        "auth_time",
        "acr",
        "amr",
    }


def test_consent_page_choices_decide_what_is_released(user_env):
    flow = Flow(user_env)
    flow.params = {}
    from users_helpers import auth_params

    params = auth_params(
        "web",
        challenge=flow.challenge,
        scope="read",
        resource=[RS4],
        claims='{"introspection": {"email": null, "birthdate": null}}',
    )
    answer = flow.browser.authorize(params, uncheck=("claims:rs-4=birthdate",))
    flow.params = params
    tokens = flow.redeem(answer.code).get_json()
    body = introspect(user_env, "rs-4", tokens["access_token"]).get_json()
    assert body["email"] == "alice@example.test" and "birthdate" not in body
    # ticking a claim the request did not ask for releases it too (granted on the consent page)
    flow2 = Flow(user_env)
    page = flow2.authorize(decision=None, scope="read", resource=[RS4]).page
    r = flow2.browser.submit_consent(page, "approve", **{"claims:rs-4": "username"})
    code = r.headers["Location"].split("code=")[1].split("&")[0]
    body = introspect(user_env, "rs-4", flow2.redeem(code).get_json()["access_token"]).get_json()
    assert body["username"] == "alice"


def test_userinfo(user_env):
    client = user_env.client()
    tokens = Flow(user_env).tokens(scope="openid profile", claims='{"userinfo": {"email": null}}')
    info = client.get("/oauth2/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]}).get_json()
    assert info["sub"] == "user-1001" and info["name"] == "Alice Liddell" and info["email"] == "alice@example.test"
    assert "birthdate" in info and "username" not in info
    r = client.post("/oauth2/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert r.status_code == 200
    r = client.get("/oauth2/userinfo")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    no_openid = Flow(user_env).tokens(scope="read")
    r = client.get("/oauth2/userinfo", headers={"Authorization": "Bearer " + no_openid["access_token"]})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"  # not meant for UserInfo
    from as_helpers import assertion_form, claims_for

    form = assertion_form(user_env.keys["machine"].jws(claims_for("machine", user_env.issuer)))
    machine = user_env.client().post("/oauth2/token", data=form).get_json()["access_token"]
    assert client.get("/oauth2/userinfo", headers={"Authorization": "Bearer " + machine}).status_code == 401


def test_userinfo_after_the_grant_is_revoked(user_env):
    flow = Flow(user_env)
    tokens = flow.tokens(scope="openid email")
    flow.refresh(tokens["refresh_token"])
    flow.refresh(tokens["refresh_token"])  # reuse: the grant is revoked
    r = user_env.client().get("/oauth2/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert r.status_code == 401
