"""Settings and registry validation: every mistake stops start-up with one line naming it."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from as_helpers import RS1, ClientKey
from conftest import as_settings
from flask_oauth_hsm import OAuthHSM
from flask_oauth_hsm.clients import Registry
from flask_oauth_hsm.errors import ConfigError
from flask_oauth_hsm.settings import load_settings, variable_names
from scenarios import default_scenario

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def registry_doc(hsm):
    return default_scenario(hsm).registry


def settings_error(**overrides) -> str:
    base = as_settings("redis://127.0.0.1:1/0", __file__)
    base.update(overrides)
    with pytest.raises(ConfigError) as info:
        load_settings({k: v for k, v in base.items() if v is not None}, environ={})
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"OAUTH_HSM_ISSUER": None}, r"^OAUTH_HSM_ISSUER: is required"),
        ({"OAUTH_HSM_ISSUER": "http://as.example.test"}, r"^OAUTH_HSM_ISSUER: must be an https URL"),
        ({"OAUTH_HSM_ISSUER": "https://as.example.test/?x=1"}, r"^OAUTH_HSM_ISSUER: .*no query"),
        ({"OAUTH_HSM_PKCS11_MODULE": None}, r"^OAUTH_HSM_PKCS11_MODULE: is required"),
        ({"OAUTH_HSM_TOKEN_LABEL": None}, r"^OAUTH_HSM_TOKEN_LABEL: set exactly one"),
        ({"OAUTH_HSM_SLOT": "3"}, r"^OAUTH_HSM_TOKEN_LABEL: set exactly one"),
        ({"OAUTH_HSM_SLOT": "three", "OAUTH_HSM_TOKEN_LABEL": None}, r"^OAUTH_HSM_SLOT: Not a valid integer"),
        ({"OAUTH_HSM_PIN": None}, r"^OAUTH_HSM_PIN: set exactly one"),
        ({"OAUTH_HSM_PIN": None, "OAUTH_HSM_PIN_FILE": "/nonexistent/pin"}, r"^OAUTH_HSM_PIN_FILE: cannot read"),
        ({"OAUTH_HSM_SIGNING_KEY": None}, r"^OAUTH_HSM_SIGNING_KEY: is required"),
        ({"OAUTH_HSM_REDIS_URL": "http://localhost"}, r"^OAUTH_HSM_REDIS_URL: must be a redis://"),
        ({"OAUTH_HSM_REGISTRY": "/nonexistent.json"}, r"^OAUTH_HSM_REGISTRY: no such file"),
        ({"OAUTH_HSM_AUD_POLICY": "lenient"}, r"^OAUTH_HSM_AUD_POLICY: must be one of: issuer, endpoint, legacy"),
        ({"OAUTH_HSM_AUD_POLICY": "fapi2"}, r"^OAUTH_HSM_AUD_POLICY: 'fapi2' was renamed 'legacy'"),
        (
            {"OAUTH_HSM_ISSUER": "127.0.0.1:5000"},
            r"^OAUTH_HSM_ISSUER: '127.0.0.1:5000' is not an absolute URL \(did you forget https://\?\)",
        ),
        ({"OAUTH_HSM_RATE_LIMITS": "token=5/second"}, r"^OAUTH_HSM_RATE_LIMITS: 'token=5/second': expected kind=limit"),
        ({"OAUTH_HSM_RATE_LIMITS": "client=lots"}, r"^OAUTH_HSM_RATE_LIMITS: 'client=lots': 'lots' is not a rate limit"),
        ({"OAUTH_HSM_RESET_CLOCK_TOLERANCE": "61"}, r"^OAUTH_HSM_RESET_CLOCK_TOLERANCE: Must be greater"),
        ({"OAUTH_HSM_ASSERTION_ALGS": "ES256,HS256"}, r"^OAUTH_HSM_ASSERTION_ALGS: must name algorithms"),
        ({"OAUTH_HSM_ACCESS_TOKEN_LIFETIME": "10"}, r"^OAUTH_HSM_ACCESS_TOKEN_LIFETIME: Must be greater"),
        ({"OAUTH_HSM_TRUSTED_PROXIES": "10.0.0.0/8,not-an-ip"}, r"^OAUTH_HSM_TRUSTED_PROXIES: 'not-an-ip'"),
        ({"OAUTH_HSM_URL_PREFIX": "oauth/"}, r"^OAUTH_HSM_URL_PREFIX: must start"),
    ],
)
def test_bad_settings(overrides, expected):
    assert re.search(expected, settings_error(**overrides)), settings_error(**overrides)


def test_pin_file_and_environment_fallback(tmp_path):
    pin = tmp_path / "pin"
    pin.write_text("1234-from-file\n")
    base = as_settings("redis://127.0.0.1:1/0", __file__)
    env = {**base, "OAUTH_HSM_PIN_FILE": str(pin)}
    del env["OAUTH_HSM_PIN"]
    settings = load_settings({"OAUTH_HSM_ISSUER": "https://from-config.example"}, environ=env)
    assert settings.pin == "1234-from-file" and settings.issuer == "https://from-config.example"
    assert "1234" not in repr(settings)


def test_every_setting_is_documented():
    from flask_oauth_hsm.rs import rs_variable_names

    reference = (DOCS / "configuration.md").read_text()
    missing = [name for name in variable_names() + rs_variable_names() if f"`{name}`" not in reference]
    assert not missing, missing


def _documented_defaults() -> dict[str, str]:
    """The default column of every summary-table row of docs/configuration.md."""
    rows = {}
    for line in (DOCS / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`OAUTH_HSM_[A-Z0-9_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def _as_documented(value) -> str | None:
    """How a code default reads in the table (None: required or exclusive, documented in words)."""
    from flask_oauth_hsm.settings import RateLimits

    if value is None:
        return None
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "empty"
    if isinstance(value, RateLimits):
        return f"`address={value.address},client={value.client},hsm={value.hsm}`"
    return f"`{value}`"


def test_every_default_is_documented_as_it_is():
    from flask_oauth_hsm.rs import rs_defaults
    from flask_oauth_hsm.settings import defaults

    documented = _documented_defaults()
    for name, value in {**defaults(), **rs_defaults()}.items():
        expected = _as_documented(value)
        if expected is None:
            assert not documented[name].startswith("`"), (name, documented[name])  # "required", "—", "none"…
        else:
            assert documented[name] == expected, (name, documented[name], expected)


# --- registry ----------------------------------------------------------------------------------------


def registry_error(doc) -> str:
    with pytest.raises(ConfigError) as info:
        Registry.from_document(doc)
    assert "\n" not in str(info.value)
    return str(info.value)


def mutate(doc, path, value, delete=False):
    doc = copy.deepcopy(doc)
    target = doc
    for part in path[:-1]:
        target = target[part]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


def test_valid_registry(registry_doc):
    registry = Registry.from_document(registry_doc)
    assert registry.client("c-es256").scope == {"read", "write"}
    assert registry.resource_server("rs-1").resource == RS1
    assert registry.resource_server_for(RS1).client_id == "rs-1"
    assert registry.client("rs-1") is None and registry.resource_server("c-es256") is None


@pytest.mark.parametrize(
    "path,value,expected",
    [
        (["clients", 0, "client_id"], "", r"clients\[0\].*client_id"),
        (
            ["clients", 0, "token_endpoint_auth_method"],
            "tls_client_auth",
            r"clients\[0\] \(c-es256\): token_endpoint_auth_method",
        ),
        (["clients", 0, "jwks", "keys", 0, "d"], "AAAA", r"clients\[0\] \(c-es256\): jwks: .*private"),
        (["clients", 0, "jwks", "keys", 0, "crv"], "P-192", r"jwks: unsupported EC curve"),
        (["clients", 0, "scope"], "read  write", r"scope: scope must be"),
        (["clients", 0, "resources"], ["https://unregistered.example"], r"not a registered resource server"),
        (["clients", 0, "resources"], ["http://rs.example"], r"resources: .*https"),
        (["clients", 0, "grant_types"], ["password"], r"grant_types"),
        (["clients", 0, "unknown_field"], 1, r"unknown_field: Unknown field"),
        (["clients", 0, "client_secret"], "plain", r"client_secret: store client_secret_hash"),
        (["clients", 0, "token_endpoint_auth_signing_alg"], "HS256", r"token_endpoint_auth_signing_alg"),
        (["clients", 12, "client_secret_hash"], "md5:abc", r"clients\[12\] \(c-basic\): client_secret_hash"),
        (["clients", 14, "grant_types"], ["client_credentials"], r"public client"),
        (
            ["resource_servers", 1, "access_token_encrypted_response_alg"],
            "RSA-OAEP-256",
            r"jwks needs exactly one encryption key",
        ),
        (
            ["resource_servers", 0, "introspection_encrypted_response_enc"],
            "A256GCM",
            r"needs introspection_encrypted_response_alg",
        ),
        (
            ["resource_servers", 0, "token_endpoint_auth_method"],
            "none",
            r"resource_servers\[0\] \(rs-1\): token_endpoint_auth_method",
        ),
    ],
)
def test_registry_errors_name_entry_and_field(registry_doc, path, value, expected):
    message = registry_error(mutate(registry_doc, path, value))
    assert message.startswith("OAUTH_HSM_REGISTRY: ") and re.search(expected, message), message


def test_weak_rsa_and_duplicate_kids(registry_doc):
    from cryptography.hazmat.primitives.asymmetric import rsa

    from as_helpers import b64

    n = rsa.generate_private_key(65537, 1024).public_key().public_numbers().n
    weak = {"kty": "RSA", "n": b64(n.to_bytes(128, "big")), "e": "AQAB", "kid": "weak"}
    assert "at least 2048" in registry_error(mutate(registry_doc, ["clients", 0, "jwks", "keys"], [weak]))
    key = registry_doc["clients"][0]["jwks"]["keys"][0]
    assert "duplicate kid" in registry_error(
        mutate(registry_doc, ["clients", 0, "jwks", "keys"], [key, {**ClientKey.new().public_jwk, "kid": key["kid"]}])
    )


def test_id_used_by_a_client_and_a_resource_server(registry_doc):
    doc = mutate(registry_doc, ["resource_servers", 0, "client_id"], "c-es256")
    assert "both a client and a resource server" in registry_error(doc)
    doc = mutate(registry_doc, ["clients", 1, "client_id"], "c-es256")
    assert "listed twice" in registry_error(doc)


def test_not_json_and_wrong_shape(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Registry.from_file(str(bad))
    assert "must be an object" in registry_error([])
    assert "must be a list" in registry_error({"clients": {}})


# --- the extension ---------------------------------------------------------------------------------------


def test_init_app_twice_raises(as_env, tmp_path):
    app = Flask("twice")
    app.config.update(as_env.settings)
    ext = OAuthHSM(app)
    with pytest.raises(RuntimeError, match="already initialised"):
        ext.init_app(app)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"OAUTH_HSM_SIGNING_KEY": "no-such-key"}, "OAUTH_HSM_SIGNING_KEY: no key pair labelled 'no-such-key'"),
        ({"OAUTH_HSM_PUBLISHED_KEYS": "sig-ps256,gone"}, "OAUTH_HSM_PUBLISHED_KEYS: no key pair labelled 'gone'"),
        ({"OAUTH_HSM_ASSERTION_ALGS": "ES256,EdDSA"}, "'c-ps256' registered token_endpoint_auth_signing_alg PS256"),
        ({"OAUTH_HSM_REDIS_URL": None}, "OAUTH_HSM_REDIS_URL: is required but not set"),
        ({"OAUTH_HSM_SIGNING_KEY": "enc-rsa-oaep-256"}, "OAUTH_HSM_SIGNING_KEY: key 'enc-rsa-oaep-256' is an encryption key"),
        ({"OAUTH_HSM_ENCRYPTION_KEYS": "sig-es256"}, "OAUTH_HSM_ENCRYPTION_KEYS: key 'sig-es256' is a signing key"),
        ({"OAUTH_HSM_TOKEN_LABEL": "no-such-token"}, "OAUTH_HSM_TOKEN_LABEL: no token labelled 'no-such-token'"),
    ],
)
def test_key_and_token_errors_at_init_app(as_env, overrides, expected):
    app = Flask("bad")
    app.config.update({k: v for k, v in {**as_env.settings, **overrides}.items() if v is not None})
    with pytest.raises(ConfigError) as info:
        OAuthHSM(app)
    assert expected in str(info.value)


def test_example_app_exits_with_one_line(as_env):
    env = {**as_env.settings, "OAUTH_HSM_ISSUER": "ftp://nope"}
    code = "import example_app; example_app.create_app()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PATH": "/usr/bin:/bin", "SOFTHSM2_CONF": __import__("os").environ["SOFTHSM2_CONF"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 4  # flask_oauth_hsm.serving: the status every server treats as final
    assert (
        result.stderr.strip()
        == "flask-oauth-hsm: OAUTH_HSM_ISSUER: must be an https URL (http is allowed only for localhost, 127.0.0.1 and ::1)"
    )


def test_loader_callbacks(as_env, registry_doc):
    calls = []
    entries = {c["client_id"]: c for c in registry_doc["clients"]}
    servers = {r["client_id"]: r for r in registry_doc["resource_servers"]}
    app = Flask("loaders")
    app.config.update({k: v for k, v in as_env.settings.items() if k != "OAUTH_HSM_REGISTRY"})
    ext = OAuthHSM()

    @ext.client_loader
    def load_client(client_id):
        calls.append(client_id)
        return entries.get(client_id)

    @ext.resource_server_loader
    def load_rs(client_id=None, resource=None):
        if resource is not None:
            return next((r for r in servers.values() if r["resource"] == resource), None)
        return servers.get(client_id)

    ext.init_app(app)
    state = app.extensions["oauth_hsm"]
    assert state.registry.client("c-es256").client_id == "c-es256"
    assert state.registry.client("c-es256") is state.registry.client("c-es256")  # cached
    assert calls == ["c-es256"]
    assert state.registry.client("nobody") is None
    assert state.registry.resource_server_for(RS1).client_id == "rs-1"


def test_loader_answers_are_checked_against_what_was_asked(as_env):
    """Review defect: a loader returning another resource server for a resource produced a token
    whose aud was that other resource server."""
    from as_helpers import assertion_form, claims_for

    registry_doc = json.loads(Path(as_env.settings["OAUTH_HSM_REGISTRY"]).read_text())
    entries = {c["client_id"]: c for c in registry_doc["clients"]}
    servers = {r["client_id"]: r for r in registry_doc["resource_servers"]}
    app = Flask("loaders-wrong")
    app.config.update({k: v for k, v in as_env.settings.items() if k != "OAUTH_HSM_REGISTRY"})
    ext = OAuthHSM()
    ext.client_loader(lambda client_id: entries.get(client_id) if client_id != "c-other" else entries["c-es256"])
    ext.resource_server_loader(lambda client_id=None, resource=None: servers["rs-3"] if resource else servers.get(client_id))
    ext.init_app(app)
    state = app.extensions["oauth_hsm"]
    assert state.registry.resource_server_for(RS1) is None  # asked for rs-1's resource, got rs-3
    assert state.registry.client("c-other") is None  # asked for c-other, got c-es256
    form = assertion_form(as_env.keys["c-es256"].jws(claims_for("c-es256", as_env.issuer)), resource=RS1)
    r = app.test_client().post("/oauth2/token", data=form)
    assert r.status_code == 400 and r.get_json()["error"] == "invalid_target"


def test_loader_cache_is_bounded_without_a_cliff(as_env, registry_doc):
    """Review defect: misses for attacker-chosen ids filled the cache, which then cleared itself
    whole at 10,000 entries — a known client's entry went with it, at the attacker's will."""
    from flask_oauth_hsm.clients import LoaderRegistry

    entries = {c["client_id"]: c for c in registry_doc["clients"]}
    calls: list[str] = []

    def load(client_id):
        calls.append(client_id)
        return entries.get(client_id)

    registry = LoaderRegistry(load, None, ["private_key_jwt"], lambda entity: None)
    assert registry.client("c-es256") is not None
    for i in range(25_000):
        assert registry.client(f"attacker-{i}") is None
    calls.clear()
    assert registry.client("c-es256") is not None and calls == []  # still cached


def test_resource_server_only_app_reads_the_pool_settings():
    """Review defect: a resource-server-only app ignored OAUTH_HSM_POOL_*."""
    from flask_oauth_hsm.settings import load_hsm_settings

    config = load_hsm_settings(
        {
            "OAUTH_HSM_PKCS11_MODULE": "/m.so",
            "OAUTH_HSM_TOKEN_LABEL": "t",
            "OAUTH_HSM_PIN": "1234",
            "OAUTH_HSM_POOL_SIZE": "3",
            "OAUTH_HSM_POOL_TIMEOUT": "0.5",
        },
        environ={},
    )
    assert (config.pool_size, config.pool_timeout) == (3, 0.5)


def test_redis_client_injection_needs_no_url(as_env, redis_server):
    import redis

    app = Flask("injected")
    app.config.update({k: v for k, v in as_env.settings.items() if k != "OAUTH_HSM_REDIS_URL"})
    OAuthHSM(app, redis_client=redis.Redis.from_url(redis_server.url))
    assert app.extensions["oauth_hsm"].settings.redis_url is None


def test_config_empty_string_falls_back_to_the_environment():
    base = as_settings("redis://127.0.0.1:1/0", __file__)
    settings = load_settings({**base, "OAUTH_HSM_ISSUER": ""}, environ={"OAUTH_HSM_ISSUER": "https://env.example"})
    assert settings.issuer == "https://env.example"


def test_failing_or_broken_loaders(as_env, registry_doc):
    from as_helpers import assertion_form, claims_for

    app = Flask("loaders-fail")
    app.config.update({k: v for k, v in as_env.settings.items() if k != "OAUTH_HSM_REGISTRY"})
    ext = OAuthHSM()
    mode = {"value": "down"}

    @ext.client_loader
    def load_client(client_id):
        if mode["value"] == "down":
            raise ConnectionError("database unreachable")
        return {"client_id": client_id, "token_endpoint_auth_method": "private_key_jwt"}  # no jwks: invalid

    ext.init_app(app)
    form = assertion_form(as_env.keys["c-es256"].jws(claims_for("c-es256", as_env.issuer)))
    r = app.test_client().post("/oauth2/token", data=form)
    assert r.status_code == 503 and r.get_json()["error"] == "temporarily_unavailable"
    mode["value"] = "broken"
    r = app.test_client().post("/oauth2/token", data=form)
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_client"


def test_an_id_both_loaders_know_is_nobodys(as_env, registry_doc):
    app = Flask("loaders-collide")
    app.config.update({k: v for k, v in as_env.settings.items() if k != "OAUTH_HSM_REGISTRY"})
    ext = OAuthHSM()
    client = next(c for c in registry_doc["clients"] if c["client_id"] == "c-es256")
    server = {**registry_doc["resource_servers"][0], "client_id": "c-es256"}

    @ext.client_loader
    def load_client(client_id):
        return client if client_id == "c-es256" else None

    @ext.resource_server_loader
    def load_rs(client_id=None, resource=None):
        return server if client_id == "c-es256" or resource == server["resource"] else None

    ext.init_app(app)
    registry = app.extensions["oauth_hsm"].registry
    assert registry.client("c-es256") is None and registry.resource_server("c-es256") is None
