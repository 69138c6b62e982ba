"""Start-up checks for users: registry fields (errors naming entry and field), hooks each feature
needs, lifetimes that only make sense together, and the example host's login page."""

from __future__ import annotations

import copy
import json
import re

import pytest
from flask import Flask

from conftest import as_settings
from flask_oauth_hsm import OAuthHSM, User
from flask_oauth_hsm.clients import Registry
from flask_oauth_hsm.errors import ConfigError
from flask_oauth_hsm.settings import load_settings
from scenarios import user_scenario


@pytest.fixture(scope="module")
def doc():
    return user_scenario().registry


def registry_error(doc) -> str:
    with pytest.raises(ConfigError) as info:
        Registry.from_document(doc)
    assert "\n" not in str(info.value)
    return str(info.value)


def changed(doc, kind, index, **fields):
    doc = copy.deepcopy(doc)
    for name, value in fields.items():
        if value is None:
            doc[kind][index].pop(name, None)
        else:
            doc[kind][index][name] = value
    return doc


@pytest.mark.parametrize(
    "kind,index,fields,expected",
    [
        (
            "clients",
            0,
            {"redirect_uris": ["https://web.example.test/cb#x"]},
            r"clients\[0\] \(web\): redirect_uris: .*without fragment",
        ),
        ("clients", 0, {"redirect_uris": ["http://web.example.test/cb"]}, r"clients\[0\] \(web\): redirect_uris"),
        ("clients", 0, {"redirect_uris": ["javascript:alert(1)"]}, r"clients\[0\] \(web\): redirect_uris"),
        ("clients", 0, {"redirect_uris": ["myapp:/cb"]}, r"clients\[0\] \(web\): redirect_uris"),
        ("clients", 0, {"redirect_uris": []}, r"clients\[0\] \(web\): redirect_uris: the authorization_code grant needs"),
        ("clients", 0, {"redirect_uris": None}, r"clients\[0\] \(web\): redirect_uris: the authorization_code grant needs"),
        (
            "clients",
            0,
            {"grant_types": ["refresh_token"], "redirect_uris": None},
            r"clients\[0\] \(web\): grant_types: refresh_token",
        ),
        (
            "clients",
            3,
            {"redirect_uris": ["https://m.example.test/cb"]},
            r"clients\[3\] \(machine\): redirect_uris: redirect URIs are for",
        ),
        ("clients", 0, {"client_name": "x\n"}, r"clients\[0\] \(web\): client_name"),
        ("clients", 0, {"client_name": ""}, r"clients\[0\] \(web\): client_name"),
        ("clients", 0, {"grant_types": ["authorization_code", "device_code"]}, r"clients\[0\] \(web\): grant_types"),
        ("clients", 0, {"id_token_signed_response_alg": "HS256"}, r"clients\[0\] \(web\): id_token_signed_response_alg"),
        ("clients", 4, {"grant_types": ["client_credentials"]}, r"clients\[4\] \(native\): grant_types: a public client"),
        (
            "resource_servers",
            1,
            {"introspection_claims": ["sub"]},
            r"resource_servers\[1\] \(rs-4\): introspection_claims: 'sub'",
        ),
        ("resource_servers", 1, {"introspection_claims": ["email", "email"]}, r"introspection_claims: a claim is listed twice"),
        ("resource_servers", 1, {"introspection_claims": ["a b"]}, r"introspection_claims: 'a b' is not a claim name"),
    ],
)
def test_registry_errors_name_entry_and_field(doc, kind, index, fields, expected):
    message = registry_error(changed(doc, kind, index, **fields))
    assert message.startswith("OAUTH_HSM_REGISTRY: ") and re.search(expected, message), message


def test_valid_user_registry(doc):
    registry = Registry.from_document(doc)
    web = registry.client("web")
    assert web.redirect_uris == ("https://web.example.test/cb", "https://web.example.test/cb2") and web.client_name == "Web Shop"
    assert registry.client("native").public and not web.public
    assert registry.resource_server("rs-4").introspection_claims == ("email", "given_name", "birthdate", "username")


def app_with(env_settings, registry_doc, tmp_path, **hooks):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(registry_doc))
    app = Flask("hooks")
    app.config.update({**env_settings, "OAUTH_HSM_REGISTRY": str(path)})
    oauth = OAuthHSM()
    for name, fn in hooks.items():
        getattr(oauth, name)(fn)
    oauth.init_app(app)
    return app


@pytest.mark.parametrize(
    "hooks,expected",
    [
        ({"current_user": lambda: None}, "OAuthHSM: users needs @oauth.login_url"),
        (
            {"current_user": lambda: None, "login_url": lambda n: "/login"},
            "OAuthHSM: introspection_claims needs @oauth.user_claims",
        ),
    ],
)
def test_missing_hooks_stop_start_up_with_one_line(as_env, doc, tmp_path, hooks, expected):
    with pytest.raises(ConfigError) as info:
        app_with(as_env.settings, doc, tmp_path, **hooks)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_a_registry_with_user_clients_in_a_host_without_users(as_env, doc, tmp_path, caplog):
    """One registry may serve hosts with and without users: without the hooks the code flow is off
    (said once at start-up), and everything else works."""
    with caplog.at_level("WARNING", logger="flask_oauth_hsm"):
        app = app_with(as_env.settings, doc, tmp_path)
    assert "clients with the authorization_code grant (native, oidc-only, web, web-2)" in caplog.text
    assert app.test_client().get("/oauth2/authorize?client_id=web").status_code == 404
    doc_meta = app.test_client().get("/.well-known/oauth-authorization-server").get_json()
    assert doc_meta["grant_types_supported"] == ["client_credentials"] and "authorization_endpoint" not in doc_meta
    r = app.test_client().post("/oauth2/token", data={"grant_type": "refresh_token", "client_id": "native", "refresh_token": "x"})
    assert r.status_code == 400 and r.get_json()["error"] == "unsupported_grant_type"


def test_refresh_tokens_need_an_encryption_key(as_env, doc, tmp_path):
    settings = {**as_env.settings, "OAUTH_HSM_ENCRYPTION_KEYS": ""}
    hooks = {"current_user": lambda: None, "login_url": lambda n: "/login", "user_claims": lambda s: None}
    with pytest.raises(ConfigError, match=r"^OAUTH_HSM_ENCRYPTION_KEYS: client 'web' may use refresh_token"):
        app_with(settings, doc, tmp_path, **hooks)


def test_loader_entries_in_a_host_without_users(as_env, doc):
    entries = {c["client_id"]: c for c in doc["clients"]}
    app = Flask("loaders-users")
    app.config.update({k: v for k, v in as_env.settings.items() if k != "OAUTH_HSM_REGISTRY"})
    oauth = OAuthHSM()
    oauth.client_loader(lambda client_id: entries.get(client_id))
    oauth.init_app(app)
    registry = app.extensions["oauth_hsm"].registry
    assert registry.client("web") is not None and registry.client("machine") is not None
    assert app.test_client().get("/oauth2/authorize?client_id=web").status_code == 404  # no users: no endpoint


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            {"OAUTH_HSM_REFRESH_TOKEN_IDLE_LIFETIME": "90000", "OAUTH_HSM_REFRESH_TOKEN_LIFETIME": "86400"},
            "OAUTH_HSM_REFRESH_TOKEN_IDLE_LIFETIME: must not exceed OAUTH_HSM_REFRESH_TOKEN_LIFETIME",
        ),
        (
            {"OAUTH_HSM_REFRESH_TOKEN_IDLE_LIFETIME": "300", "OAUTH_HSM_ACCESS_TOKEN_LIFETIME": "600"},
            "OAUTH_HSM_REFRESH_TOKEN_IDLE_LIFETIME: must be at least OAUTH_HSM_ACCESS_TOKEN_LIFETIME",
        ),
        ({"OAUTH_HSM_CODE_LIFETIME": "601"}, "OAUTH_HSM_CODE_LIFETIME: Must be greater"),
        ({"OAUTH_HSM_CONSENT_LIFETIME": "-1"}, "OAUTH_HSM_CONSENT_LIFETIME: Must be greater"),
        ({"OAUTH_HSM_AUTHORIZATION_REQUEST_LIFETIME": "10"}, "OAUTH_HSM_AUTHORIZATION_REQUEST_LIFETIME: Must be greater"),
        ({"OAUTH_HSM_ID_TOKEN_LIFETIME": "x"}, "OAUTH_HSM_ID_TOKEN_LIFETIME: Not a valid integer"),
    ],
)
def test_lifetime_settings(overrides, expected):
    base = as_settings("redis://127.0.0.1:1/0", __file__)
    with pytest.raises(ConfigError) as info:
        load_settings({**base, **overrides}, environ={})
    assert str(info.value).startswith(expected), str(info.value)


def test_user_values_are_checked():
    with pytest.raises(ValueError):
        User("", 1)
    with pytest.raises(ValueError):
        User("a b", 1)
    with pytest.raises(ValueError):
        User("u-1", float("nan"))
    assert User("u-1", 1, amr=["pwd"]).amr == ("pwd",)


def test_a_failing_current_user_hook_is_an_outage(make_user_as, tmp_path):
    from user_host import pkce_pair
    from users_helpers import auth_params

    env = make_user_as()
    hooks = env.app.extensions["oauth_hsm"].hooks
    broken = dict(hooks)

    def down():
        raise ConnectionError("user database unreachable")

    broken["current_user"] = down
    object.__setattr__(env.app.extensions["oauth_hsm"], "hooks", broken)
    from urllib.parse import urlencode

    r = env.client().get("/oauth2/authorize?" + urlencode(auth_params("web", challenge=pkce_pair()[1])))
    assert r.status_code == 503 and r.mimetype == "text/html" and r.headers["Retry-After"]
