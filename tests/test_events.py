"""Security events: structured log lines and blinker signals, never a secret or a token."""

from __future__ import annotations

import json
import logging

import pytest

from as_helpers import RS1, assertion_form, claims_for
from flask_oauth_hsm import events


@pytest.fixture()
def captured():
    seen: list[tuple[str, dict]] = []
    receivers = {}
    for name in ("token_issued", "token_refused", "client_auth_failed", "replay_detected", "token_revoked", "token_introspected"):

        def receiver(app, _name=name, **fields):
            seen.append((_name, fields))

        receivers[name] = receiver
        getattr(events, name).connect(receiver)
    yield seen
    for name, receiver in receivers.items():
        getattr(events, name).disconnect(receiver)


def test_events_for_issue_replay_refusal_revocation(as_env, captured, caplog):
    caplog.set_level(logging.INFO, logger="flask_oauth_hsm.security")
    client = as_env.client()
    form = assertion_form(as_env.keys["c-es256"].jws(claims_for("c-es256", as_env.issuer)), scope="read")
    token = client.post("/oauth2/token", data=form).get_json()["access_token"]
    client.post("/oauth2/token", data=form)  # replay
    bad_scope = assertion_form(as_env.keys["c-es256"].jws(claims_for("c-es256", as_env.issuer)), scope="admin")
    client.post("/oauth2/token", data=bad_scope)
    revoke = assertion_form(as_env.keys["c-es256"].jws(claims_for("c-es256", as_env.issuer)), token=token)
    client.post("/oauth2/revoke", data={**revoke, "grant_type": ""})
    names = [name for name, _ in captured]
    assert names == ["token_issued", "replay_detected", "token_refused", "token_revoked"]
    issued, replay, refused, revoked = (fields for _, fields in captured)
    assert issued["client_id"] == "c-es256" and issued["aud"] == RS1 and issued["jti"] == revoked["jti"]
    assert replay["client_id"] == "c-es256" and replay["endpoint"] == "token"
    assert refused["error"] == "invalid_scope"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "flask_oauth_hsm.security"]
    assert [line["event"] for line in lines] == ["token-issued", "replay-detected", "token-refused", "token-revoked"]
    text = caplog.text
    assert token not in text and form["client_assertion"] not in text and "eyJ" not in text


def test_client_id_is_named_even_without_a_form_client_id(as_env, captured):
    forged = as_env.keys["c-other"].jws(claims_for("c-es256", as_env.issuer), {"kid": as_env.keys["c-es256"].kid})
    as_env.client().post("/oauth2/token", data=assertion_form(forged))
    [(name, fields)] = captured
    assert name == "client_auth_failed" and fields["client_id"] == "c-es256" and "eyJ" not in fields["reason"]


def test_a_failing_receiver_does_not_fail_the_request(as_env, caplog):
    def broken(app, **fields):
        raise RuntimeError("audit database down")

    events.token_issued.connect(broken)
    try:
        form = assertion_form(as_env.keys["c-es256"].jws(claims_for("c-es256", as_env.issuer)))
        assert as_env.client().post("/oauth2/token", data=form).status_code == 200
        assert "a receiver of oauth-hsm-token-issued failed" in caplog.text
    finally:
        events.token_issued.disconnect(broken)


def test_any_method_gets_json(as_env):
    for method in ("LOCK", "FOO", "MKCOL"):
        r = as_env.client().open("/oauth2/token", method=method)
        assert r.status_code == 405 and r.get_json()["error"] == "invalid_request"
    r = as_env.client().open("/.well-known/oauth-authorization-server", method="FOO")
    assert r.status_code == 405 and r.mimetype == "application/json"


def test_readiness_runs_the_replay_script(as_env):
    r = as_env.client().get("/oauth2/ready")
    assert r.status_code == 200 and r.get_json() == {"status": "ok", "hsm": "ok", "redis": "ok"}


@pytest.mark.parametrize(
    "form,headers",
    [
        ({"grant_type": "client_credentials"}, {"Authorization": "Basic !!!"}),  # malformed Basic credentials
        ({"grant_type": "client_credentials", "client_assertion": "x"}, {}),  # no client_assertion_type
        ({"grant_type": "client_credentials", "client_assertion_type": "urn:other", "client_assertion": "x"}, {}),
        ({"grant_type": "client_credentials"}, {}),  # no credentials at all
    ],
)
def test_every_failed_client_authentication_is_an_event(as_env, captured, form, headers):
    """Review defect: failures raised while reading the credentials emitted no event."""
    r = as_env.client().post("/oauth2/token", data=form, headers=headers)
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"
    assert [name for name, _ in captured] == ["client_auth_failed"]


def test_event_endpoint_names_are_the_endpoints(as_env, captured):
    """Review defect: events named endpoints inconsistently (oauth_hsm.introspect vs revocation)."""
    form = {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x", "token": "t"}
    for path in ("/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"):
        as_env.client().post(path, data=form)
    assert [fields["endpoint"] for _, fields in captured] == ["token", "introspection", "revocation"]
