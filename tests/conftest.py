"""Session fixtures: one throwaway SoftHSM2 store (set before the module is ever loaded) and Redis."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

import support

# SoftHSM reads SOFTHSM2_CONF when the module initialises: set it before any test imports pkcs11
# users, and never inherit a developer's store.
_BASE = Path(tempfile.mkdtemp(prefix="oauth-hsm-tests-"))
os.environ["SOFTHSM2_CONF"] = str(support.write_softhsm_conf(_BASE / "softhsm"))

MAIN_TOKEN = "test-main"
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


@pytest.fixture(scope="session")
def tmp_base() -> Path:
    return _BASE


@pytest.fixture(scope="session")
def softhsm_conf() -> str:
    return os.environ["SOFTHSM2_CONF"]


@pytest.fixture(scope="session")
def hsm_config():
    from flask_oauth_hsm.hsm import HSMConfig

    support.init_token(MAIN_TOKEN)
    return HSMConfig(module=support.SOFTHSM_MODULE, token_label=MAIN_TOKEN, pin=support.USER_PIN)


@pytest.fixture(scope="session")
def hsm(hsm_config):
    """The main test token with one key of every supported algorithm, generated in the token."""
    from flask_oauth_hsm.hsm import HSM

    hsm = HSM(hsm_config)
    for label, (alg, use) in {**SIGNING_KEYS, **ENCRYPTION_KEYS}.items():
        hsm.generate_key(alg, use, label)
    yield hsm
    hsm.close()


@pytest.fixture(scope="session")
def redis_server(tmp_base):
    server = support.RedisServer(tmp_base / "redis")
    server.start()
    yield server
    server.stop()


# --- an authorization server app over the main token and the session Redis ------------------------


class ASEnv:
    """The app, its registry's client keys, and helpers; one per test session."""

    def __init__(self, app, keys: dict, rs_enc_key, settings: dict):
        self.app = app
        self.keys = keys  # client_id -> ClientKey
        self.rs_enc_key = rs_enc_key  # rs-3's private encryption key (software: that RS is not us)
        self.settings = settings
        self.issuer = settings["OAUTH_HSM_ISSUER"]
        self.token_url = self.issuer + "/oauth2/token"
        self.introspection_url = self.issuer + "/oauth2/introspect"
        self.revocation_url = self.issuer + "/oauth2/revoke"

    @property
    def state(self):
        return self.app.extensions["oauth_hsm"]

    def client(self):
        return self.app.test_client()


def as_settings(redis_url: str, registry_path: str, **overrides) -> dict:
    settings = {
        "OAUTH_HSM_ISSUER": "https://as.example.test",
        "OAUTH_HSM_PKCS11_MODULE": support.SOFTHSM_MODULE,
        "OAUTH_HSM_TOKEN_LABEL": MAIN_TOKEN,
        "OAUTH_HSM_PIN": support.USER_PIN,
        "OAUTH_HSM_SIGNING_KEY": "sig-es256",
        "OAUTH_HSM_PUBLISHED_KEYS": "sig-ps256",
        "OAUTH_HSM_ENCRYPTION_KEYS": "enc-rsa-oaep-256,enc-ecdh-es",
        "OAUTH_HSM_REDIS_URL": redis_url,
        "OAUTH_HSM_REGISTRY": registry_path,
    }
    settings.update(overrides)
    return settings


def build_registry(keys: dict, rs_keys: dict) -> dict:
    """Clients with software keys; rs-1 software, rs-2 with keys in the test token (so our own
    ResourceProtector can use it), rs-3 with software keys and every encryption option."""
    from as_helpers import RS1, RS2, RS3, sha256_secret_hash

    def pkjwt(client_id, **extra):
        entry = {"client_id": client_id, "token_endpoint_auth_method": "private_key_jwt",
                 "jwks": {"keys": [keys[client_id].public_jwk]}, "scope": "read write", "resources": [RS1, RS2, RS3]}
        entry.update(extra)
        return entry

    return {
        "clients": [
            pkjwt("c-es256"),
            pkjwt("c-ps256", token_endpoint_auth_signing_alg="PS256"),
            pkjwt("c-eddsa"),
            pkjwt("c-rs256"),
            pkjwt("c-issuer", aud_policy="issuer"),
            pkjwt("c-endpoint", aud_policy="endpoint"),
            pkjwt("c-enc", client_assertion_encryption="required"),
            pkjwt("c-enc-allowed", client_assertion_encryption="allowed"),
            pkjwt("c-nogrant", grant_types=[]),
            pkjwt("c-other"),
            pkjwt("c-cip", cip_hash=True, ip_ranges=["10.0.0.0/8", "192.0.2.0/24"]),
            {"client_id": "c-basic", "token_endpoint_auth_method": "client_secret_basic",
             "client_secret_hash": sha256_secret_hash("basic-secret-0123456789"), "scope": "read", "resources": [RS1]},
            {"client_id": "c-post", "token_endpoint_auth_method": "client_secret_post",
             "client_secret_hash": sha256_secret_hash("post-secret-0123456789"), "scope": "read", "resources": [RS1]},
            {"client_id": "c-public", "token_endpoint_auth_method": "none", "grant_types": [], "resources": [RS1]},
        ],
        "resource_servers": [
            {"resource": RS1, "client_id": "rs-1", "token_endpoint_auth_method": "private_key_jwt",
             "jwks": {"keys": [rs_keys["rs-1"].public_jwk]}, "scope": "read write"},
            {"resource": RS2, "client_id": "rs-2", "token_endpoint_auth_method": "private_key_jwt",
             "jwks": {"keys": [rs_keys["rs-2"], rs_keys["rs-2-enc"]]}, "scope": "read",
             "introspection_encrypted_response_alg": "ECDH-ES+A256KW",
             "access_token_encrypted_response_alg": "ECDH-ES+A256KW", "access_token_encrypted_response_enc": "A256GCM"},
            {"resource": RS3, "client_id": "rs-3", "token_endpoint_auth_method": "private_key_jwt", "aud_policy": "endpoint",
             "jwks": {"keys": [rs_keys["rs-3"].public_jwk, rs_keys["rs-3-enc"]]}, "scope": "read write",
             "introspection_signed_response_alg": "PS256",
             "introspection_encrypted_response_alg": "ECDH-ES+A256KW", "introspection_encrypted_response_enc": "A256GCM",
             "access_token_encrypted_response_alg": "ECDH-ES+A256KW", "access_token_encrypted_response_enc": "A128GCM"},
        ],
    }


@pytest.fixture(scope="session")
def as_env(hsm, redis_server, tmp_base):
    import json

    from cryptography.hazmat.primitives.asymmetric import ec

    from as_helpers import ClientKey, ec_enc_jwk
    from example_app import create_app

    algs = {"c-ps256": "PS256", "c-eddsa": "EdDSA", "c-rs256": "RS256"}
    client_ids = ["c-es256", "c-ps256", "c-eddsa", "c-rs256", "c-issuer", "c-endpoint", "c-enc", "c-enc-allowed",
                  "c-nogrant", "c-other", "c-cip"]
    keys = {cid: ClientKey.new(algs.get(cid, "ES256")) for cid in client_ids}
    rs_enc = ec.generate_private_key(ec.SECP256R1())
    rs_keys = {
        "rs-1": ClientKey.new("ES256"),
        "rs-2": hsm.key("rs2-sig").public_jwk(),
        "rs-2-enc": hsm.key("enc-ecdh-es-a256kw").public_jwk(),
        "rs-3": ClientKey.new("ES256"),
        "rs-3-enc": ec_enc_jwk(rs_enc, "rs-3-enc"),
    }
    keys.update({"rs-1": rs_keys["rs-1"], "rs-3": rs_keys["rs-3"]})
    path = tmp_base / "registry.json"
    path.write_text(json.dumps(build_registry(keys, rs_keys)))
    settings = as_settings(redis_server.url, str(path))
    app = create_app(settings)
    app.config["TESTING"] = True
    wait_for_next_second()  # the epoch's own second accepts no assertion (store.py)
    return ASEnv(app, keys, rs_enc, settings)


def wait_for_next_second() -> None:
    import time

    time.sleep(1.001 - time.time() % 1)
