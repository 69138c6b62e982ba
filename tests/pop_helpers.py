"""Proof-of-possession test pieces: a registry scenario with DPoP, PoP and mTLS clients, hand-made
DPoP proofs and RFC 9421 signatures (software keys, so tests can also make the hostile ones), and
the secret keys the feature needs in the main test token.

Nothing here uses flask_oauth_hsm.client: the server side is tested against independent proofs
(joserfc / hand-built JWS, the http-message-signatures package directly).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from http_message_signatures import HTTPMessageSigner, algorithms

from as_helpers import RS1, ClientKey, assertion_form, b64, claims_for
from conftest import ISSUER
from scenarios import Scenario, pkjwt_client, resource_server, secret_client

TOKEN_URL = ISSUER + "/oauth2/token"
RSP = "https://rsp.example.test"  # a resource server whose keys are in the test token (symmetric PoP)
RSN = "https://rsn.example.test"  # no encryption key: cannot receive symmetric keys
RSH = "https://rsh.example.test"  # verifies ecdsa-p256-sha256 only
NONCE_KEY, WRAP_KEY = "pop-nonce-hmac", "pop-wrap-aes"
RS_ENC_KEY = "enc-ecdh-es-a256kw"  # rsp's decryption key in the test token
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
    clients.append(pkjwt_client("p-enc", keys["p-enc"], resources=resources, pop_keys=["symmetric"],
                                jwks={"keys": [keys["p-enc"].public_jwk, enc_jwk]}))
    servers = [
        resource_server("rs-1", RS1, [ClientKey.new("ES256").public_jwk]),
        resource_server("rs-p", RSP, [keys["rs-p"].public_jwk, hsm.key(RS_ENC_KEY).public_jwk()]),
        resource_server("rs-n", RSN, [keys["rs-n"].public_jwk]),
        resource_server("rs-h", RSH, [keys["rs-h"].public_jwk, hsm.key(RS_ENC_KEY).public_jwk()],
                        pop_signature_algs=["ecdsa-p256-sha256"]),
    ]
    return PopScenario(Scenario({"clients": clients, "resource_servers": servers}, keys), client_enc)


def _ec_jwk(private: Any, kid: str, *, use: str, alg: str) -> dict[str, str]:
    n = private.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big")),
            "kid": kid, "use": use, "alg": alg}


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
    return {"OAUTH_HSM_RS_ISSUER": ISSUER, "OAUTH_HSM_RS_RESOURCE": resource, "OAUTH_HSM_RS_DECRYPTION_KEY": RS_ENC_KEY,
            **extra}


# --- token requests -------------------------------------------------------------------------------------


def token_form(env: Any, client_id: str, **extra: str) -> dict[str, str]:
    return assertion_form(env.keys[client_id].jws(claims_for(client_id, env.issuer)), **extra)


def post_token(env: Any, form: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    return env.client().post("/oauth2/token", data=form, headers=headers or {})


# --- DPoP proofs, by hand --------------------------------------------------------------------------------

_OMIT = object()


def dpop_jwk(key: ClientKey) -> dict[str, str]:
    return {k: v for k, v in key.public_jwk.items() if k not in ("kid", "use", "alg")}


def dpop_proof(key: ClientKey, htm: str = "POST", htu: str = TOKEN_URL, *, header: dict[str, Any] | None = None,
               **claims: Any) -> str:
    """A DPoP proof signed with ``key``; ``claims``/``header`` override (``None`` removes a member)."""
    body: dict[str, Any] = {"jti": secrets.token_urlsafe(12), "htm": htm, "htu": htu, "iat": int(time.time())}
    for name, value in claims.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    head: dict[str, Any] = {"typ": "dpop+jwt", "alg": key.alg, "jwk": dpop_jwk(key), "kid": None}
    head.update(header or {})
    return key.jws(body, head)


def ath(token: str) -> str:
    return b64(hashlib.sha256(token.encode()).digest())


def jkt(key: ClientKey) -> str:
    from flask_oauth_hsm.jose.jwk import load_jwk

    return load_jwk(dpop_jwk(key)).thumbprint


# --- RFC 9421 signatures, with the package directly ------------------------------------------------------


class Lines:
    def __init__(self, lines: list[tuple[str, str]]):
        self.lines = lines

    def items(self):
        return list(self.lines)

    def __iter__(self):
        return iter([n for n, _ in self.lines])

    def __contains__(self, name):
        return any(n.lower() == name.lower() for n, _ in self.lines)

    def __setitem__(self, name, value):
        self.lines = [(n, v) for n, v in self.lines if n.lower() != name.lower()] + [(name, value)]

    def __delitem__(self, name):
        self.lines = [(n, v) for n, v in self.lines if n.lower() != name.lower()]


@dataclass
class Msg:
    method: str
    url: str
    headers: Lines


class _Keys:
    def __init__(self, key: Any):
        self.key = key

    def resolve_private_key(self, key_id: str) -> Any:
        return self.key


SIG_ALGS = {"ES256": algorithms.ECDSA_P256_SHA256, "ES384": algorithms.ECDSA_P384_SHA384, "EdDSA": algorithms.ED25519,
            "PS256": algorithms.RSA_PSS_SHA512, "hmac": algorithms.HMAC_SHA256}


def signed_headers(method: str, url: str, headers: dict[str, str], body: bytes | None, *, key: Any, alg: str, keyid: str,
                   components: tuple[str, ...] = ("@method", "@target-uri", "authorization"), nonce: str | None = "auto",
                   created: float | None = None, **sign_options: Any) -> dict[str, str]:
    """``headers`` plus Signature-Input/Signature (and Content-Digest for a body), signed by the
    http-message-signatures package with a software key (``alg``: a key of SIG_ALGS)."""
    msg = Msg(method, url, Lines(list(headers.items())))
    signer = HTTPMessageSigner(signature_algorithm=SIG_ALGS[alg], key_resolver=_Keys(key))
    when = datetime.datetime.fromtimestamp(int(created if created is not None else time.time()), datetime.timezone.utc)
    signer.sign(msg, key_id=keyid, created=when, covered_component_ids=components, body=body or None,
                nonce=secrets.token_urlsafe(12) if nonce == "auto" else nonce, label="sig", **sign_options)
    return dict(msg.headers.items())


def symmetric_secret(cnf: dict[str, Any]) -> tuple[bytes, str]:
    jwk = cnf["jwk"]
    return base64.urlsafe_b64decode(jwk["k"] + "=" * (-len(jwk["k"]) % 4)), jwk["kid"]


def req_cnf(key: ClientKey, encode: bool = True) -> str:
    doc = json.dumps({"jwk": {**dpop_jwk(key), "kid": key.kid}})
    return b64(doc.encode()) if encode else doc
