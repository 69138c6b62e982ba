"""Proof-of-possession test pieces: a registry scenario with DPoP and PoP clients, the fixtures that
serve it, and the secret keys the feature needs in the main test token; the hand-made proofs come
from pop_proofs.py (software keys, so tests can also make the hostile ones).

Nothing here uses flask_oauth_hsm.client: the server side is tested against independent proofs
(pop_proofs.py: hand-built JWS, the http-message-signatures package directly).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from as_helpers import RS1, ClientKey, assertion_form, b64, claims_for
from conftest import ISSUER
from pop_proofs import TOKEN_URL, ath, dpop_jwk, dpop_proof, jkt, req_cnf, signed_headers, symmetric_secret
from scenarios import Scenario, pkjwt_client, resource_server, secret_client

RSP = "https://rsp.example.test"  # a resource server whose keys are in the test token (symmetric PoP)
RSN = "https://rsn.example.test"  # no encryption key: cannot receive symmetric keys
RSH = "https://rsh.example.test"  # verifies ecdsa-p256-sha256 only
NONCE_KEY, WRAP_KEY = "pop-nonce-hmac", "pop-wrap-aes"
RS_ENC_KEY = "enc-ecdh-es-a256kw"  # rsp's decryption key in the test token
__all__ = [  # the proofs are re-exported for the test modules
    "NONCE_KEY",
    "POP_SETTINGS",
    "RS_ENC_KEY",
    "RSH",
    "RSN",
    "RSP",
    "SECRET",
    "TOKEN_URL",
    "WRAP_KEY",
    "ath",
    "dpop_jwk",
    "dpop_proof",
    "ensure_secret_keys",
    "jkt",
    "pop_as",
    "pop_scenario",
    "pop_world",
    "post_token",
    "req_cnf",
    "rs_settings",
    "signed_headers",
    "symmetric_secret",
    "token_form",
    "with_old_epoch",
]
SECRET = "d-secret-0123456789abcdef"
POP_SETTINGS = {"OAUTH_HSM_DPOP_NONCE_KEY": NONCE_KEY, "OAUTH_HSM_POP_KEY_WRAP_KEY": WRAP_KEY}


def ensure_secret_keys(hsm: Any) -> None:
    """The HMAC and AES keys of the feature, in the main test token (idempotent)."""
    from flask_oauth_hsm.errors import KeyNotFound

    for kind, label in (("hmac", NONCE_KEY), ("aes", WRAP_KEY)):
        try:
            hsm.secret_key(label)
        except KeyNotFound:
            hsm.generate_secret_key(kind, label)


# --- the scenario -------------------------------------------------------------------------------------

POP_CLIENTS: dict[str, dict[str, Any]] = {
    "d-plain": {},
    "d-bound": {"dpop_bound_access_tokens": True},
    "d-nonce": {"dpop_nonce_required": True},
    "p-both": {"pop_keys": ["symmetric", "asymmetric"]},
    "p-sym": {"pop_keys": ["symmetric"]},
    "p-asym": {"pop_keys": ["asymmetric"]},
}


@dataclass
class PopScenario:
    scenario: Scenario
    client_enc_key: Any  # p-enc's private encryption key (software: that client is not us)


def pop_scenario(hsm: Any) -> PopScenario:
    keys = {cid: ClientKey.new("ES256") for cid in [*POP_CLIENTS, "p-enc", "rs-p", "rs-n", "rs-h"]}
    client_enc = ec.generate_private_key(ec.SECP256R1())
    resources = [RS1, RSP, RSN, RSH]
    clients = [pkjwt_client(cid, keys[cid], resources=resources, **extra) for cid, extra in POP_CLIENTS.items()]
    enc_jwk = _ec_jwk(client_enc, "p-enc-enc", use="enc", alg="ECDH-ES")
    clients.append(secret_client("d-secret", "client_secret_post", SECRET))
    clients.append(
        pkjwt_client(
            "p-enc",
            keys["p-enc"],
            resources=resources,
            pop_keys=["symmetric"],
            jwks={"keys": [keys["p-enc"].public_jwk, enc_jwk]},
        )
    )
    servers = [
        resource_server("rs-1", RS1, [ClientKey.new("ES256").public_jwk]),
        resource_server("rs-p", RSP, [keys["rs-p"].public_jwk, hsm.key(RS_ENC_KEY).public_jwk()]),
        resource_server("rs-n", RSN, [keys["rs-n"].public_jwk]),
        resource_server(
            "rs-h", RSH, [keys["rs-h"].public_jwk, hsm.key(RS_ENC_KEY).public_jwk()], pop_signature_algs=["ecdsa-p256-sha256"]
        ),
    ]
    return PopScenario(Scenario({"clients": clients, "resource_servers": servers}, keys), client_enc)


def _ec_jwk(private: Any, kid: str, *, use: str, alg: str) -> dict[str, str]:
    n = private.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(n.x.to_bytes(32, "big")),
        "y": b64(n.y.to_bytes(32, "big")),
        "kid": kid,
        "use": use,
        "alg": alg,
    }


@pytest.fixture(scope="session")
def pop_world(hsm):
    ensure_secret_keys(hsm)
    return pop_scenario(hsm)


@pytest.fixture(scope="session")
def pop_as(make_as, pop_world):
    """An AS (and, on /api/items, resource server rsp) serving the PoP scenario."""
    return make_as(pop_world.scenario, protect_api=True, **POP_SETTINGS, **rs_settings(RSP))


def with_old_epoch(env: Any) -> Any:
    """An env whose replay state began long ago, so that the reset rule (which refuses ids dated
    before a recent reset) plays no part in a test about time windows (docs/security.md)."""
    store = env.state.store
    store.client.set(store.prefix + "epoch", int((time.time() - 3600) * 1000))
    return env


def rs_settings(resource: str, **extra: str) -> dict[str, str]:
    return {"OAUTH_HSM_RS_ISSUER": ISSUER, "OAUTH_HSM_RS_RESOURCE": resource, "OAUTH_HSM_RS_DECRYPTION_KEY": RS_ENC_KEY, **extra}


# --- token requests -------------------------------------------------------------------------------------


def token_form(env: Any, client_id: str, **extra: str) -> dict[str, str]:
    return assertion_form(env.keys[client_id].jws(claims_for(client_id, env.issuer)), **extra)


def post_token(env: Any, form: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    return env.client().post("/oauth2/token", data=form, headers=headers or {})
