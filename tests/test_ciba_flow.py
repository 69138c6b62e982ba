"""CIBA poll mode end to end (OpenID CIBA Core 1.0): request, device decision, polling, tokens."""

from __future__ import annotations

import base64
import json
import threading

import pytest

from as_helpers import ClientKey
from ciba_helpers import (
    bc_authorize,
    decide,
    device,
    handle_of,
    notified,
    poll,
    signed_form,
    started,
    user,
)
from pop_proofs import dpop_proof, jkt
from users_helpers import expect_error


def decode(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def pending_handles(env, subject: str = "user-1001") -> list[str]:
    with env.app.app_context():
        return [r.handle for r in device(env).pending(subject)]


def test_full_poll_cycle_approved(ciba_env, fake_clock):
    answer = started(ciba_env, binding_message="Code 4711", acr_values="urn:example:device")
    assert set(answer) == {"auth_req_id", "expires_in", "interval"} and answer["expires_in"] == 120 and answer["interval"] == 5
    assert len(base64.urlsafe_b64decode(answer["auth_req_id"] + "=")) * 8 >= 160  # CIBA Core §7.3, CAMARA
    handle = handle_of(answer["auth_req_id"])
    shown = next(r for r in notified(ciba_env) if r.handle == handle)
    assert (shown.client_id, shown.client_name, shown.subject) == ("ciba-app", "Ciba App", "user-1001")
    assert (
        shown.scope == ("openid", "read") and shown.binding_message == "Code 4711" and shown.acr_values == ("urn:example:device",)
    )
    assert handle in pending_handles(ciba_env) and handle not in pending_handles(ciba_env, "user-1002")
    expect_error(poll(ciba_env, answer["auth_req_id"]), 400, "authorization_pending")
    fake_clock.advance(5)
    decide(ciba_env, handle)
    assert handle not in pending_handles(ciba_env)
    r = poll(ciba_env, answer["auth_req_id"])
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert {"access_token", "id_token", "refresh_token", "expires_in", "token_type"} <= set(body)
    at, idt = decode(body["access_token"]), decode(body["id_token"])
    assert at["sub"] == idt["sub"] == "user-1001" and idt["aud"] == "ciba-app" and idt["acr"] == "urn:example:device"
    assert at["scope"] == "openid read" and idt["amr"] == ["hwk"] and "nonce" not in idt
    fake_clock.advance(5)
    expect_error(poll(ciba_env, answer["auth_req_id"]), 400, "invalid_grant")  # single use
    r = ciba_env.client().post(
        "/oauth2/token", data=signed_form(ciba_env, "ciba-app", grant_type="refresh_token", refresh_token=body["refresh_token"])
    )
    assert r.status_code == 200, r.get_json()
    r = ciba_env.client().get("/oauth2/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert r.status_code == 200 and r.get_json() == {"sub": "user-1001"}


def test_denied(ciba_env, fake_clock):
    answer = started(ciba_env)
    decide(ciba_env, handle_of(answer["auth_req_id"]), approve=False)
    expect_error(poll(ciba_env, answer["auth_req_id"]), 400, "access_denied")
    fake_clock.advance(5)
    expect_error(poll(ciba_env, answer["auth_req_id"]), 400, "invalid_grant")


def test_polling_too_fast_slows_down_and_the_interval_grows(ciba_env, fake_clock):
    auth_req_id = started(ciba_env)["auth_req_id"]
    expect_error(poll(ciba_env, auth_req_id), 400, "authorization_pending")
    body = expect_error(poll(ciba_env, auth_req_id), 400, "slow_down")  # at once: interval 5 → 10
    assert "10 seconds" in body["error_description"]
    fake_clock.advance(5)  # what the old interval allowed: too fast again, 10 → 15
    assert "15 seconds" in expect_error(poll(ciba_env, auth_req_id), 400, "slow_down")["error_description"]
    fake_clock.advance(14)
    expect_error(poll(ciba_env, auth_req_id), 400, "slow_down")  # 20 now
    fake_clock.advance(20)
    expect_error(poll(ciba_env, auth_req_id), 400, "authorization_pending")
    decide(ciba_env, handle_of(auth_req_id))
    fake_clock.advance(19)
    expect_error(poll(ciba_env, auth_req_id), 400, "slow_down")  # approved, but still too fast: nothing issued
    fake_clock.advance(25)
    assert poll(ciba_env, auth_req_id).status_code == 200


def test_expiry(ciba_env, fake_clock):
    auth_req_id = started(ciba_env)["auth_req_id"]
    fake_clock.advance(120)
    expect_error(poll(ciba_env, auth_req_id), 400, "expired_token")
    from flask_oauth_hsm.ciba.device import RequestGone

    with ciba_env.app.app_context(), pytest.raises(RequestGone):
        device(ciba_env).approve(handle_of(auth_req_id), user=user())
    assert handle_of(auth_req_id) not in pending_handles(ciba_env)


def test_requested_expiry(ciba_env, fake_clock):
    answer = started(ciba_env, requested_expiry="30")
    assert answer["expires_in"] == 30
    fake_clock.advance(30)
    expect_error(poll(ciba_env, answer["auth_req_id"]), 400, "expired_token")
    assert started(ciba_env, requested_expiry="100000")["expires_in"] == 120  # at most our lifetime
    for bad in ("0", "-5", "abc", "1.5", "9" * 20, " 7"):
        expect_error(bc_authorize(ciba_env, requested_expiry=bad), 400, "invalid_request")


def test_hints(ciba_env):
    assert started(ciba_env, login_hint="tel:+15550001002")  # bob, by phone
    assert notified(ciba_env)[-1].subject == "user-1002"
    expect_error(bc_authorize(ciba_env, login_hint="nobody"), 400, "unknown_user_id")
    expect_error(bc_authorize(ciba_env, login_hint="tel:+15559999999"), 400, "unknown_user_id")
    expect_error(bc_authorize(ciba_env, login_hint_token="opaque-token-the-host-does-not-know"), 400, "unknown_user_id")
    expect_error(bc_authorize(ciba_env, no_hint=True), 400, "invalid_request")
    expect_error(bc_authorize(ciba_env, login_hint="alice", login_hint_token="x"), 400, "invalid_request")
    expect_error(bc_authorize(ciba_env, login_hint="alice", id_token_hint="x.y.z"), 400, "invalid_request")


def test_id_token_hint(ciba_env, fake_clock):
    auth_req_id = started(ciba_env)["auth_req_id"]
    decide(ciba_env, handle_of(auth_req_id))
    id_token = poll(ciba_env, auth_req_id).get_json()["id_token"]
    assert started(ciba_env, id_token_hint=id_token)
    assert notified(ciba_env)[-1].subject == "user-1001"
    fake_clock.advance(3600)  # an expired ID token still names its user (OIDC Core §3.1.2.1)
    assert started(ciba_env, id_token_hint=id_token)
    expect_error(bc_authorize(ciba_env, "ciba-other", id_token_hint=id_token), 400, "invalid_request")  # not its token
    expect_error(bc_authorize(ciba_env, id_token_hint="e30.e30.AAAA"), 400, "invalid_request")
    expect_error(bc_authorize(ciba_env, "ciba-pw-a", id_token_hint=id_token), 400, "invalid_request")


CAMARA_HINTS = {
    "tel:+15550001001": 200,
    "ipport:198.51.100.7:443": 400,
    "ipport:[2001:db8::1]:443": 400,
    "operatortoken:abc-123": 400,
    "alice": 400,
    "tel:15550001001": 400,
    "tel:+0155500": 400,
    "tel:+1234567890123456": 400,
    "tel:+1 555": 400,
    "ipport:198.51.100.7": 400,
    "ipport:198.51.100.7:70000": 400,
    "ipport:2001:db8::1:443": 400,
    "ipport:[198.51.100.7]:80": 400,
    "ipport:[2001:db8::1]": 400,
    "operatortoken:": 400,
    "mailto:a@b.test": 400,
    "tel:+15550001001\n": 400,
}


@pytest.mark.parametrize("hint", sorted(CAMARA_HINTS))
def test_camara_login_hint_formats(make_ciba_as, hint, request):
    env = request.getfixturevalue("camara_env")
    r = bc_authorize(env, login_hint=hint)
    if CAMARA_HINTS[hint] == 200:
        assert r.status_code == 200, r.get_json()
    else:
        well_formed = hint.startswith(("ipport:198.51.100.7:443", "ipport:[2001:db8::1]:443", "operatortoken:abc"))
        expect_error(r, 400, "unknown_user_id" if well_formed else "invalid_request")


@pytest.fixture(scope="module")
def camara_env(make_ciba_as):
    return make_ciba_as(OAUTH_HSM_CIBA_PROFILE="camara")


def test_camara_takes_login_hint_only(camara_env):
    expect_error(bc_authorize(camara_env, login_hint_token="token"), 400, "invalid_request")
    expect_error(bc_authorize(camara_env, id_token_hint="a.b.c"), 400, "invalid_request")


def test_another_clients_auth_req_id(ciba_env, fake_clock):
    auth_req_id = started(ciba_env)["auth_req_id"]
    decide(ciba_env, handle_of(auth_req_id))
    expect_error(poll(ciba_env, auth_req_id, "ciba-other"), 400, "invalid_grant")
    assert poll(ciba_env, auth_req_id).status_code == 200  # its own client still gets the tokens


def test_concurrent_polls_after_approval_only_one_gets_tokens(ciba_env):
    auth_req_id = started(ciba_env)["auth_req_id"]
    decide(ciba_env, handle_of(auth_req_id))
    forms = [
        signed_form(ciba_env, "ciba-app", grant_type="urn:openid:params:grant-type:ciba", auth_req_id=auth_req_id)
        for _ in range(12)
    ]
    barrier, results = threading.Barrier(len(forms)), []

    def one(form):
        client = ciba_env.client()
        barrier.wait()
        results.append(client.post("/oauth2/token", data=form))

    threads = [threading.Thread(target=one, args=(f,)) for f in forms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results).count(200) == 1
    assert {r.get_json()["error"] for r in results if r.status_code != 200} <= {"slow_down", "invalid_grant"}


def test_the_record_is_taken_once_whatever_the_timing(ciba_env):
    """Below the poll timing: of concurrent takes of an approved request exactly one gets it."""
    from flask_oauth_hsm.ciba import records

    auth_req_id = started(ciba_env)["auth_req_id"]
    decide(ciba_env, handle_of(auth_req_id))
    store, got = ciba_env.state.store, []
    barrier = threading.Barrier(16)

    def take():
        barrier.wait()
        got.append(records.take(store, handle_of(auth_req_id)))

    threads = [threading.Thread(target=take) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in got) == 1


def test_dpop_binds_the_tokens(ciba_env, fake_clock):
    auth_req_id = started(ciba_env)["auth_req_id"]
    decide(ciba_env, handle_of(auth_req_id))
    key = ClientKey.new("ES256")
    r = poll(ciba_env, auth_req_id, headers={"DPoP": dpop_proof(key)})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["token_type"] == "DPoP" and decode(r.get_json()["access_token"])["cnf"] == {"jkt": jkt(key)}


def test_device_api_rules(ciba_env):
    from flask_oauth_hsm.ciba.device import NotYourRequest, RequestGone

    handle = handle_of(started(ciba_env)["auth_req_id"])
    with ciba_env.app.app_context():
        with pytest.raises(NotYourRequest):
            device(ciba_env).approve(handle, user=user("bob"))
        assert device(ciba_env).request(handle).subject == "user-1001"
        device(ciba_env).deny(handle, user=user())
        with pytest.raises(RequestGone):
            device(ciba_env).approve(handle, user=user())  # decided once
        with pytest.raises(RequestGone):
            device(ciba_env).deny("no-such-handle", user=user())
        assert device(ciba_env).request("no-such-handle") is None


def test_request_errors(ciba_env):
    expect_error(bc_authorize(ciba_env, scope="read"), 400, "invalid_scope")  # CIBA Core §7.1: openid
    expect_error(bc_authorize(ciba_env, scope=None), 400, "invalid_request")
    expect_error(bc_authorize(ciba_env, scope="openid admin"), 400, "invalid_scope")
    expect_error(bc_authorize(ciba_env, scope="openid read", resource="https://elsewhere.example.test"), 400, "invalid_target")
    expect_error(bc_authorize(ciba_env, request_uri="urn:ietf:params:oauth:request_uri:x"), 400, "request_uri_not_supported")
    expect_error(bc_authorize(ciba_env, "web-pw"), 400, "unauthorized_client")  # not registered for CIBA
    expect_error(poll(ciba_env, "x", "web-pw"), 400, "unauthorized_client")
    expect_error(
        ciba_env.client().post("/oauth2/bc-authorize", data={"login_hint": "alice", "scope": "openid"}), 401, "invalid_client"
    )


@pytest.mark.parametrize("message", ["x" * 65, "line\nbreak", "tab\there", "\x00", "bell\x07"])
def test_bad_binding_messages(ciba_env, message):
    expect_error(bc_authorize(ciba_env, binding_message=message), 400, "invalid_binding_message")


def test_hostile_input(ciba_env):
    assert started(ciba_env, binding_message="Zahlung 12,50 € – Code ÄÖ")  # printable Unicode is fine
    expect_error(bc_authorize(ciba_env, login_hint="a" * 300), 400, "invalid_request")
    expect_error(bc_authorize(ciba_env, login_hint="ali\x00ce"), 400, "invalid_request")
    expect_error(bc_authorize(ciba_env, login_hint_token="t" * 5000), 400, "invalid_request")
    expect_error(bc_authorize(ciba_env, acr_values="a " * 20), 400, "invalid_request")
    expect_error(poll(ciba_env, "a" * 10000), 400, "invalid_grant")
    expect_error(poll(ciba_env, "\u00e9\u202e" * 10), 400, "invalid_grant")
    expect_error(
        ciba_env.client().post(
            "/oauth2/token", data=signed_form(ciba_env, "ciba-app", grant_type="urn:openid:params:grant-type:ciba")
        ),
        400,
        "invalid_request",
    )
    r = ciba_env.client().get("/oauth2/bc-authorize")
    assert r.status_code == 405 and r.get_json()["error"] == "invalid_request"


def test_a_hint_hook_answering_nonsense_is_503(ciba_env):
    r = bc_authorize(ciba_env, login_hint="broken-hook")
    assert r.status_code == 503 and r.get_json()["error"] == "temporarily_unavailable"


def test_device_hook_failure_is_503_and_nothing_lingers(ciba_env):
    before = len(notified(ciba_env))
    r = bc_authorize(ciba_env, binding_message="device-down")
    assert r.status_code == 503 and r.headers["Retry-After"] and len(notified(ciba_env)) == before
    assert not [h for h in pending_handles(ciba_env) if device_request(ciba_env, h).binding_message == "device-down"]


def device_request(env, handle):
    with env.app.app_context():
        return device(env).request(handle)


def test_redis_down_is_503_and_nothing_issued(make_ciba_as, own_redis):
    env = make_ciba_as(redis_url=own_redis.url)
    auth_req_id = started(env)["auth_req_id"]
    decide(env, handle_of(auth_req_id))
    own_redis.stop()
    r = poll(env, auth_req_id)
    assert r.status_code == 503 and "access_token" not in r.get_json() and r.headers["Retry-After"]
    r = bc_authorize(env)
    assert r.status_code == 503 and "auth_req_id" not in r.get_json()
