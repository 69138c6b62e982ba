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
