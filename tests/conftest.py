"""Fixtures: a throwaway SoftHSM2 store (set before the module is ever loaded), our own Redis, and
an app factory that builds an authorization server for a scenario.

Isolation: everything lives under one temporary directory removed at the end of the session.
Tests that may crash or corrupt a token (no OS locking, a token store pulled away) get their own
store through ``isolated_store`` and run against it in a child process: SoftHSM reads its store
when the module initialises, once per process, so no test in this process can damage it.

``OAUTH_HSM_TEST_REMOTE=1`` runs every test of the main token — the ``hsm`` fixture, every app
``make_as`` builds, every gunicorn they start — against a network HSM: the token is served by
``p11-kit server`` and reached through ``p11-kit-client.so`` (tests/ha_support.py). Keys are
generated through SoftHSM before the server starts (p11-kit 0.24 cannot forward EdDSA or ECDH
generation); a test that needs a mechanism p11-kit 0.24 does not forward is reported as skipped
with the token's own refusal ("this token cannot do …"). Tests of other tokens (crash tests, test
vectors, SoftHSM behaviour) stay on SoftHSM.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import ha_support
import support
from as_app import build_as_app
from ciba_helpers import ciba_env, make_ciba_as  # noqa: F401 (fixtures of the CIBA test modules)
from scenarios import Scenario, default_scenario

# SoftHSM reads SOFTHSM2_CONF when the module initialises: set it before any test imports pkcs11
# users, and never inherit a developer's store.
_BASE = Path(tempfile.mkdtemp(prefix="oauth-hsm-tests-"))
os.environ["SOFTHSM2_CONF"] = str(support.write_softhsm_conf(_BASE / "softhsm"))
os.environ["OAUTH_HSM_TEST_BASE"] = str(_BASE)  # for helpers that write logs (support.log_file)

MAIN_TOKEN = "test-main"
ISSUER = "https://as.example.test"
SIGNING_KEYS = {  # label -> (alg, use)
    "sig-es256": ("ES256", "sig"),
    "sig-es384": ("ES384", "sig"),
    "sig-ps256": ("PS256", "sig"),
    "sig-rs256": ("RS256", "sig"),
    "sig-eddsa": ("EdDSA", "sig"),
    "rs2-sig": ("ES256", "sig"),  # resource server rs-2's own key (its private_key_jwt)
}
ENCRYPTION_KEYS = {
    "enc-rsa-oaep-256": ("RSA-OAEP-256", "enc"),
    "enc-rsa-oaep": ("RSA-OAEP", "enc"),
    "enc-ecdh-es": ("ECDH-ES", "enc"),
    "enc-ecdh-es-a128kw": ("ECDH-ES+A128KW", "enc"),
    "enc-ecdh-es-a256kw": ("ECDH-ES+A256KW", "enc"),
}


# The module every test of the main token uses (OAUTH_HSM_TEST_REMOTE: the network HSM's client).
TEST_MODULE = ha_support.P11KIT_CLIENT_MODULE if support.REMOTE_HSM else support.SOFTHSM_MODULE
# The AS's decryption keys: ECDH-ES needs CKM_ECDH1_DERIVE, which p11-kit 0.24 does not forward.
AS_ENCRYPTION_KEYS = "enc-rsa-oaep-256" if support.REMOTE_HSM else "enc-rsa-oaep-256,enc-ecdh-es"
_CANNOT = "this token cannot do"


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    shutil.rmtree(_BASE, ignore_errors=True)


def pytest_report_header(config: Any) -> str:
    return f"HSM of the main test token: {TEST_MODULE}" + (
        " (OAUTH_HSM_TEST_REMOTE: p11-kit server)" if support.REMOTE_HSM else ""
    )


def local_token_only(why: str) -> None:
    """Remote runs: skip a test (or a fixture) that needs the main token in this process's SoftHSM,
    or a mechanism p11-kit 0.24 does not forward; ``why`` says which."""
    if support.REMOTE_HSM:
        pytest.skip(f"remote token: {why}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    """Remote runs: a test whose body failed only because the remote token lacks a mechanism is a
    skip (the token's refusal is the reason). Fixtures call local_token_only() instead."""
    outcome = yield
    report = outcome.get_result()
    if (
        support.REMOTE_HSM
        and call.when == "call"
        and report.failed
        and call.excinfo is not None
        and _CANNOT in str(call.excinfo.value)
    ):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: remote token: {str(call.excinfo.value)[:160]}")


@pytest.fixture(scope="session")
def tmp_base() -> Path:
    return _BASE


@pytest.fixture(scope="session")
def softhsm_conf() -> str:
    return os.environ["SOFTHSM2_CONF"]


@pytest.fixture(scope="session")
def hsm_config(tmp_base, softhsm_conf):
    from flask_oauth_hsm.hsm import HSMConfig

    support.init_token(MAIN_TOKEN)
    if support.REMOTE_HSM:
        support.generate_keys_in_child(MAIN_TOKEN, {**SIGNING_KEYS, **ENCRYPTION_KEYS})
        server = ha_support.P11KitServer(tmp_base / "p11kit-main", softhsm_conf, MAIN_TOKEN)
        server.start()
        os.environ["P11_KIT_SERVER_ADDRESS"] = server.address  # inherited by every child process too
        _REMOTE_SERVERS.append(server)
    return HSMConfig(module=TEST_MODULE, token_label=MAIN_TOKEN, pin=support.USER_PIN)


_REMOTE_SERVERS: list[Any] = []


@pytest.fixture(scope="session")
def hsm(hsm_config):
    """The main test token with one key of every supported algorithm, generated in the token."""
    from flask_oauth_hsm.hsm import HSM

    hsm = HSM(hsm_config)
    if not support.REMOTE_HSM:  # remote: generated before the server started (hsm_config)
        for label, (alg, use) in {**SIGNING_KEYS, **ENCRYPTION_KEYS}.items():
            hsm.generate_key(alg, use, label)
    yield hsm
    hsm.close()
    for server in _REMOTE_SERVERS:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_base):
    server = support.RedisServer(tmp_base / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def isolated_store(tmp_path) -> support.IsolatedStore:
    """A token store of this test's own, with a token and keys, for child processes."""
    return support.IsolatedStore.create(tmp_path / "softhsm")


@pytest.fixture()
def fake_clock():
    """The package's clock, frozen at now; ``fake_clock.advance(s)`` moves it."""
    from flask_oauth_hsm import clock

    fake = clock.FakeClock()
    with clock.use(fake):
        yield fake


# --- an authorization server app over the main token and the session Redis ------------------------


def as_settings(redis_url: str, registry_path: str, **overrides: Any) -> dict[str, Any]:
    settings = {
        "OAUTH_HSM_ISSUER": ISSUER,
        "OAUTH_HSM_PKCS11_MODULE": TEST_MODULE,
        "OAUTH_HSM_TOKEN_LABEL": MAIN_TOKEN,
        "OAUTH_HSM_PIN": support.USER_PIN,
        "OAUTH_HSM_SIGNING_KEY": "sig-es256",
        "OAUTH_HSM_PUBLISHED_KEYS": "sig-ps256",
        "OAUTH_HSM_ENCRYPTION_KEYS": AS_ENCRYPTION_KEYS,
        "OAUTH_HSM_REDIS_URL": redis_url,
        "OAUTH_HSM_REGISTRY": registry_path,
        # Off for the functional tests: the rate-limit tests turn them on explicitly.
        "OAUTH_HSM_RATE_LIMITS": "off",
    }
    settings.update(overrides)
    return settings


@dataclass
class ASEnv:
    """An AS app, the keys of its scenario's parties, and helpers."""

    app: Any
    keys: dict[str, Any]  # client_id -> ClientKey
    rs_enc_key: Any
    settings: dict[str, Any]

    @property
    def issuer(self) -> str:
        return self.settings["OAUTH_HSM_ISSUER"]

    @property
    def token_url(self) -> str:
        return self.issuer + "/oauth2/token"

    @property
    def introspection_url(self) -> str:
        return self.issuer + "/oauth2/introspect"

    @property
    def revocation_url(self) -> str:
        return self.issuer + "/oauth2/revoke"

    @property
    def state(self):
        return self.app.extensions["oauth_hsm"]

    def client(self):
        return self.app.test_client()


@pytest.fixture(scope="session")
def make_as(hsm, redis_server, tmp_base) -> Callable[..., ASEnv]:
    """``make_as(scenario=None, redis_url=None, protect_api=False, **settings)`` → an ASEnv."""
    count = iter(range(1_000_000))
    shared: dict[str, Scenario] = {}

    def make(
        scenario: Scenario | None = None, *, redis_url: str | None = None, protect_api: bool = False, **overrides: Any
    ) -> ASEnv:
        if scenario is None:
            scenario = shared.get("default") or shared.setdefault("default", default_scenario(hsm))
        path = tmp_base / f"registry-{next(count)}.json"
        path.write_text(json.dumps(scenario.registry))
        settings = as_settings(redis_url or redis_server.url, str(path), **overrides)
        return ASEnv(build_as_app(settings, protect_api=protect_api), scenario.keys, scenario.rs_enc_key, settings)

    return make


@pytest.fixture(scope="session")
def as_env(make_as) -> ASEnv:
    return make_as()


# --- a host app with users (the authorization code flow) --------------------------------------------


@pytest.fixture(scope="session")
def make_user_as(hsm, redis_server, tmp_base) -> Callable[..., ASEnv]:
    """``make_user_as(scenario=None, redis_url=None, host=None, **settings)`` → an ASEnv whose app is
    a host with users (tests/user_host.py); ``host`` passes options to ``build_user_app``."""
    from scenarios import user_scenario
    from user_host import build_user_app

    count = iter(range(1_000_000))
    shared: dict[str, Scenario] = {}

    def make(
        scenario: Scenario | None = None, *, redis_url: str | None = None, host: dict[str, Any] | None = None, **overrides: Any
    ) -> ASEnv:
        if scenario is None:
            scenario = shared.get("users") or shared.setdefault("users", user_scenario())
        path = tmp_base / f"user-registry-{next(count)}.json"
        path.write_text(json.dumps(scenario.registry))
        # These tests are about flows, not timeouts: a starved thread on a busy machine must not
        # turn a Redis answer into a 503 (the timeout itself is tested in test_redis_faults.py).
        overrides.setdefault("OAUTH_HSM_REDIS_TIMEOUT", "2")
        settings = as_settings(redis_url or redis_server.url, str(path), **overrides)
        return ASEnv(build_user_app(settings, **(host or {})), scenario.keys, scenario.rs_enc_key, settings)

    return make


@pytest.fixture(scope="session")
def user_env(make_user_as) -> ASEnv:
    """Shared by many tests in random order: consent is never remembered, so every flow sees the page."""
    return make_user_as(OAUTH_HSM_CONSENT_LIFETIME="0")


@pytest.fixture()
def own_redis(tmp_path):
    """A redis-server of the test's own (fault tests stop, restart and flush it)."""
    server = support.RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
