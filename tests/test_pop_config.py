"""Proof-of-possession settings, registry fields and start-up checks: every mistake stops start-up
with one line naming the variable or the entry; the CLI makes the secret keys."""

from __future__ import annotations

import copy
import re

import pytest

from as_helpers import ClientKey
from conftest import as_settings
from flask_oauth_hsm.clients import Registry
from flask_oauth_hsm.errors import ConfigError, KeyNotFound
from flask_oauth_hsm.settings import load_settings
from pop_helpers import NONCE_KEY, POP_SETTINGS, RSP, WRAP_KEY, pop_world, rs_settings
from scenarios import Scenario
from test_cli import dev_env

__all__ = ["dev_env", "pop_world"]  # fixtures


def settings_error(**overrides) -> str:
    base = as_settings("redis://127.0.0.1:1/0", __file__)
    base.update(overrides)
    with pytest.raises(ConfigError) as info:
        load_settings({k: v for k, v in base.items() if v is not None}, environ={})
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"OAUTH_HSM_DPOP_NONCE": "sometimes"}, r"^OAUTH_HSM_DPOP_NONCE: Must be one of: off, optional, required"),
        ({"OAUTH_HSM_DPOP_NONCE": "required"}, r"^OAUTH_HSM_DPOP_NONCE_KEY: required when OAUTH_HSM_DPOP_NONCE is required"),
        ({"OAUTH_HSM_DPOP_ALGS": "ES256,HS256"}, r"^OAUTH_HSM_DPOP_ALGS: must name algorithms"),
        ({"OAUTH_HSM_DPOP_PROOF_MAX_AGE": "1"}, r"^OAUTH_HSM_DPOP_PROOF_MAX_AGE: Must be greater"),
        ({"OAUTH_HSM_DPOP_NONCE_LIFETIME": "5"}, r"^OAUTH_HSM_DPOP_NONCE_LIFETIME: Must be greater"),
        ({"OAUTH_HSM_HTTP_SIGNATURE_MAX_AGE": "9999"}, r"^OAUTH_HSM_HTTP_SIGNATURE_MAX_AGE: Must be greater"),
        ({"OAUTH_HSM_MTLS_CERT_HEADER": "X Cert"}, r"^OAUTH_HSM_MTLS_CERT_HEADER: must be an HTTP header name"),
        ({"OAUTH_HSM_MTLS_CERT_HEADER": "X-Cert"}, r"^OAUTH_HSM_MTLS_CERT_HEADER: needs OAUTH_HSM_TRUSTED_PROXIES"),
        ({"OAUTH_HSM_MTLS_VERIFY_HEADER": "X-Verify"}, r"^OAUTH_HSM_MTLS_VERIFY_HEADER: needs OAUTH_HSM_MTLS_CERT_HEADER"),
    ],
)
def test_bad_settings(overrides, expected):
    message = settings_error(**overrides)
    assert re.search(expected, message), message


def test_missing_or_wrong_secret_keys_stop_start_up(make_as, pop_world):
    with pytest.raises(
        KeyNotFound, match=r"^OAUTH_HSM_DPOP_NONCE_KEY: no secret key labelled 'nope' .*generate-secret --kind hmac"
    ):
        make_as(pop_world.scenario, OAUTH_HSM_DPOP_NONCE_KEY="nope", OAUTH_HSM_POP_KEY_WRAP_KEY=WRAP_KEY)
    with pytest.raises(ConfigError, match=r"^OAUTH_HSM_POP_KEY_WRAP_KEY: secret key 'pop-nonce-hmac' is an hmac key, not aes"):
        make_as(pop_world.scenario, OAUTH_HSM_DPOP_NONCE_KEY=NONCE_KEY, OAUTH_HSM_POP_KEY_WRAP_KEY=NONCE_KEY)


@pytest.mark.parametrize(
    "client_id,missing,expected",
    [
        ("d-nonce", "OAUTH_HSM_DPOP_NONCE_KEY", "'d-nonce' requires DPoP nonces, but OAUTH_HSM_DPOP_NONCE_KEY is not set"),
        ("p-sym", "OAUTH_HSM_POP_KEY_WRAP_KEY", "'p-sym' may get symmetric PoP keys, but OAUTH_HSM_POP_KEY_WRAP_KEY is not set"),
    ],
)
def test_registrations_the_settings_cannot_serve(make_as, pop_world, client_id, missing, expected):
    registry = copy.deepcopy(pop_world.scenario.registry)
    others = {"d-nonce", "p-sym", "p-both", "p-enc"} - {client_id}
    registry["clients"] = [c for c in registry["clients"] if c["client_id"] not in others]
    settings = {k: v for k, v in POP_SETTINGS.items() if k != missing}
    with pytest.raises(ConfigError, match=re.escape(expected)):
        make_as(Scenario(registry, pop_world.scenario.keys), **settings)


def test_certificate_bound_tokens_need_the_header(make_as, pop_world):
    registry = copy.deepcopy(pop_world.scenario.registry)
    registry["clients"][0]["tls_client_certificate_bound_access_tokens"] = True
    with pytest.raises(ConfigError, match="wants certificate-bound tokens, but OAUTH_HSM_MTLS_CERT_HEADER is not set"):
        make_as(Scenario(registry, pop_world.scenario.keys), **POP_SETTINGS)


def _registry_error(doc) -> str:
    with pytest.raises(ConfigError) as info:
        Registry.from_document(doc)
    return str(info.value)


@pytest.mark.parametrize(
    "kind,field,value,expected",
    [
        ("clients", "pop_keys", ["symmetric", "quantum"], r"clients\[0\] \(c\): pop_keys: Must be one of: symmetric, asymmetric"),
        ("clients", "dpop_bound_access_tokens", "yes please", r"dpop_bound_access_tokens: Not a valid boolean"),
        ("clients", "dpop_nonce_required", [], r"dpop_nonce_required: Not a valid boolean"),
        (
            "resource_servers",
            "pop_signature_algs",
            ["hmac-sha1"],
            r"resource_servers\[0\] \(r\): pop_signature_algs: Must be one of",
        ),
        ("clients", "both bindings", True, r"dpop_bound_access_tokens: a client cannot require both DPoP and certificate-bound"),
    ],
)
def test_registry_fields(kind, field, value, expected):
    key = ClientKey.new()
    doc = {
        "clients": [{"client_id": "c", "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [key.public_jwk]}}],
        "resource_servers": [
            {
                "client_id": "r",
                "resource": RSP,
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [ClientKey.new().public_jwk]},
            }
        ],
    }
    if field == "both bindings":
        doc[kind][0].update(dpop_bound_access_tokens=True, tls_client_certificate_bound_access_tokens=True)
    else:
        doc[kind][0][field] = value
    assert re.search(expected, _registry_error(doc)), _registry_error(doc)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            {"OAUTH_HSM_RS_DPOP_NONCE": "required"},
            r"^OAUTH_HSM_RS_DPOP_NONCE_KEY: required when OAUTH_HSM_RS_DPOP_NONCE is required",
        ),
        ({"OAUTH_HSM_RS_PUBLIC_URL": "https://api.example/v1"}, r"^OAUTH_HSM_RS_PUBLIC_URL: must be an origin"),
        ({"OAUTH_HSM_RS_SIGNATURE_ALGS": "hmac-sha1"}, r"^OAUTH_HSM_RS_SIGNATURE_ALGS: must name RFC 9421 algorithms"),
        ({"OAUTH_HSM_RS_MTLS_CERT_HEADER": "X-Cert"}, r"^OAUTH_HSM_RS_MTLS_CERT_HEADER: needs OAUTH_HSM_TRUSTED_PROXIES"),
        ({"OAUTH_HSM_RS_REDIS_URL": "http://x"}, r"^OAUTH_HSM_RS_REDIS_URL: must be a redis://"),
    ],
)
def test_resource_server_settings(overrides, expected):
    from flask_oauth_hsm.rs.settings import load_rs_settings

    with pytest.raises(ConfigError) as info:
        load_rs_settings({**rs_settings(RSP), **overrides})
    assert re.search(expected, str(info.value)), str(info.value)


def test_resource_server_nonce_key_must_exist(make_as, pop_world):
    with pytest.raises(KeyNotFound, match="^OAUTH_HSM_RS_DPOP_NONCE_KEY: "):
        make_as(
            pop_world.scenario,
            protect_api=True,
            **POP_SETTINGS,
            **rs_settings(RSP, OAUTH_HSM_RS_DPOP_NONCE="required", OAUTH_HSM_RS_DPOP_NONCE_KEY="nope"),
        )


def test_cli_generates_secret_keys(dev_env):
    from test_cli import FLASK, ROOT, _dev_settings, run

    run(["bash", "softhsm/setup-dev-token.sh"], dev_env)
    env = {**dev_env, **_dev_settings(dev_env), "OAUTH_HSM_REGISTRY": str(ROOT / "softhsm" / "empty-registry.json")}
    rows = {line.split()[0]: line.split() for line in run([*FLASK, "keys", "list"], env).stdout.splitlines()[1:]}
    assert rows["as-dpop-nonce"][3:] == ["HMAC", "-", "secret"] and rows["as-pop-wrap"][3:] == ["AES", "-", "secret"]
    made = run([*FLASK, "keys", "generate-secret", "--kind", "aes", "--label", "cli-aes"], env)
    assert "cli-aes: generated aes secret key" in made.stdout
    again = run([*FLASK, "keys", "generate-secret", "--kind", "aes", "--label", "cli-aes", "--if-missing"], env)
    assert "cli-aes: exists" in again.stdout
