"""CIBA tests: a host with users and an authentication device, CIBA clients, requests and polls.

The host (tests/user_host.py) resolves a ``login_hint`` by user name or ``tel:`` number and keeps
the requests its device hook was asked to show in ``app.config["CIBA_NOTIFIED"]``; a test plays
the user by calling ``oauth.ciba.approve/deny`` inside the app's context.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from as_helpers import RS1, ClientKey, assertion_form, claims_for
from scenarios import Scenario, pkjwt_client, resource_server
from user_host import BY_SUBJECT, USERS

CIBA = "urn:openid:params:grant-type:ciba"
PAIRWISE_KEY = "ciba-pairwise-hmac"
PHONES = {"+15550001001": "user-1001", "+15550001002": "user-1002"}  # alice, bob
SECTOR_A, SECTOR_B = "https://sector-a.example.test/sector.json", "https://sector-b.example.test/sector.json"
CIBA_CLIENT = {
    "grant_types": [CIBA, "refresh_token"],
    "backchannel_token_delivery_mode": "poll",
    "scope": "openid profile email read",
    "resources": [RS1],
}


def ensure_pairwise_key(hsm: Any) -> None:
    from flask_oauth_hsm.errors import KeyNotFound

    try:
        hsm.secret_key(PAIRWISE_KEY)
    except KeyNotFound:
        hsm.generate_secret_key("hmac", PAIRWISE_KEY)


def ciba_scenario() -> Scenario:
    """CIBA clients (two of them pairwise, in different sectors), one per aud policy, and a
    pairwise code-flow client whose sector is its redirect URIs' host."""
    ids = (
        "ciba-app",
        "ciba-other",
        "ciba-ps",
        "ciba-pw-a",
        "ciba-pw-a2",
        "ciba-pw-b",
        "web-pw",
        "c-issuer",
        "c-es256",
        "c-endpoint",
        "c-legacy",
        "rs-1",
    )
    keys = {cid: ClientKey.new("ES256") for cid in ids}
    clients = [
        pkjwt_client("ciba-app", keys["ciba-app"], client_name="Ciba App", **CIBA_CLIENT),
        pkjwt_client("ciba-other", keys["ciba-other"], **CIBA_CLIENT),
        # signs its requests with ES256 but registered PS256: every signed request of it is refused
        pkjwt_client("ciba-ps", keys["ciba-ps"], backchannel_authentication_request_signing_alg="PS256", **CIBA_CLIENT),
        pkjwt_client("ciba-pw-a", keys["ciba-pw-a"], subject_type="pairwise", sector_identifier_uri=SECTOR_A, **CIBA_CLIENT),
        pkjwt_client("ciba-pw-a2", keys["ciba-pw-a2"], subject_type="pairwise", sector_identifier_uri=SECTOR_A, **CIBA_CLIENT),
        pkjwt_client("ciba-pw-b", keys["ciba-pw-b"], subject_type="pairwise", sector_identifier_uri=SECTOR_B, **CIBA_CLIENT),
        pkjwt_client(
            "web-pw",
            keys["web-pw"],
            resources=[RS1],
            grant_types=["authorization_code", "refresh_token"],
            redirect_uris=["https://web.example.test/cb"],
            scope="openid profile email read",
            subject_type="pairwise",
        ),
    ]
    for cid, policy in (("c-issuer", "issuer"), ("c-es256", None), ("c-endpoint", "endpoint"), ("c-legacy", "legacy")):
        clients.append(pkjwt_client(cid, keys[cid], **CIBA_CLIENT, **({"aud_policy": policy} if policy else {})))
    servers = [resource_server("rs-1", RS1, [keys["rs-1"].public_jwk], introspection_claims=["email"])]
    return Scenario({"clients": clients, "resource_servers": servers}, keys)


def configure_device(app: Any, oauth: Any) -> None:
    """The host's CIBA hooks: hints by user name or phone number; the device remembers requests."""
    app.config["CIBA_NOTIFIED"] = []
    app.extensions["test_oauth"] = oauth

    @oauth.ciba_user
    def ciba_user(kind: str, value: str) -> str | None:
        if kind == "login_hint" and value.startswith("tel:"):
            return PHONES.get(value[4:])
        if kind == "login_hint" and value in USERS:
            return USERS[value]["subject"]
        if kind == "id_token_hint" and value in BY_SUBJECT:
            return value
        if value == "broken-hook":
            return 42  # a host bug: not a subject
        return None

    @oauth.ciba_notify
    def ciba_notify(request: Any) -> None:
        if request.binding_message == "device-down":
            raise ConnectionError("the push service is down")
        app.config["CIBA_NOTIFIED"].append(request)


@pytest.fixture(scope="session")
def make_ciba_as(make_user_as, hsm):
    ensure_pairwise_key(hsm)
    shared: dict[str, Scenario] = {}

    def make(**overrides: Any):
        scenario = shared.get("ciba") or shared.setdefault("ciba", ciba_scenario())
        overrides.setdefault("OAUTH_HSM_PAIRWISE_KEY", PAIRWISE_KEY)
        overrides.setdefault("OAUTH_HSM_CONSENT_LIFETIME", "0")
        return make_user_as(scenario, host={"configure": configure_device}, **overrides)

    return make


@pytest.fixture(scope="session")
def ciba_env(make_ciba_as):
    return make_ciba_as()


def signed_form(env: Any, client_id: str, aud: Any = None, **form: Any) -> dict[str, Any]:
    from flask_oauth_hsm import clock

    now = int(clock.now())  # the package's clock: tests that move it get assertions that fit
    claims = claims_for(client_id, env.issuer if aud is None else aud, iat=now, exp=now + 60)
    data = assertion_form(env.keys[client_id].jws(claims))
    del data["grant_type"]
    data.update(form)
    return {k: v for k, v in data.items() if v is not None}


def bc_authorize(env: Any, client_id: str = "ciba-app", *, scope: str | None = "openid read", **form: Any):
    if not any(k in form for k in ("login_hint", "id_token_hint", "login_hint_token", "no_hint")):
        form["login_hint"] = "alice"
    form.pop("no_hint", None)
    return env.client().post("/oauth2/bc-authorize", data=signed_form(env, client_id, scope=scope, **form))


def request_claims(env: Any, client_id: str = "ciba-app", aud: Any = None, **overrides: Any) -> dict[str, Any]:
    """The claims of a good signed authentication request (CIBA Core §7.1.1); ``None`` removes one."""
    from flask_oauth_hsm import clock

    now = int(clock.now())
    claims = {
        "iss": client_id,
        "aud": env.issuer if aud is None else aud,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(12),
        "scope": "openid read",
        "login_hint": "alice",
        "binding_message": "Signed 1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def signed_request(
    env: Any,
    client_id: str = "ciba-app",
    claims: dict[str, Any] | None = None,
    *,
    assertion_aud: Any = None,
    typ: str | None = None,
    **form: Any,
):
    """POST /bc-authorize with a signed request (``claims``, signed with the client's key) and nothing else."""
    jwt = env.keys[client_id].jws(claims if claims is not None else request_claims(env, client_id), {"typ": typ})
    return env.client().post("/oauth2/bc-authorize", data=signed_form(env, client_id, assertion_aud, request=jwt, **form))


def started(env: Any, client_id: str = "ciba-app", **form: Any) -> dict[str, Any]:
    r = bc_authorize(env, client_id, **form)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def poll(env: Any, auth_req_id: str, client_id: str = "ciba-app", headers: dict[str, str] | None = None, **form: Any):
    return env.client().post(
        "/oauth2/token", data=signed_form(env, client_id, grant_type=CIBA, auth_req_id=auth_req_id, **form), headers=headers
    )


def device(env: Any) -> Any:
    return env.app.extensions["test_oauth"].ciba


def notified(env: Any) -> list[Any]:
    return env.app.config["CIBA_NOTIFIED"]


def user(username: str = "alice", auth_time: int | None = None, acr: str | None = "urn:example:device") -> Any:
    from flask_oauth_hsm import User, clock

    return User(USERS[username]["subject"], auth_time if auth_time is not None else int(clock.now()), acr=acr, amr=("hwk",))


def decide(env: Any, handle: str, approve: bool = True, username: str = "alice") -> None:
    with env.app.app_context():
        if approve:
            device(env).approve(handle, user=user(username))
        else:
            device(env).deny(handle, user=user(username))


def handle_of(auth_req_id: str) -> str:
    from flask_oauth_hsm.ciba.records import handle_of as h

    return h(auth_req_id)
