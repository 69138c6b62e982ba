"""Independent proofs for tests and benchmarks: DPoP proofs built by hand and RFC 9421 signatures
made with the http-message-signatures package directly (software keys), nothing of
flask_oauth_hsm.client. No conftest import: bench/ uses this module too."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from http_message_signatures import HTTPMessageSigner, algorithms

from as_helpers import ClientKey, b64

ISSUER = "https://as.example.test"  # tests/conftest.py ISSUER
TOKEN_URL = ISSUER + "/oauth2/token"


# --- DPoP proofs, by hand --------------------------------------------------------------------------------


def dpop_jwk(key: ClientKey) -> dict[str, str]:
    return {k: v for k, v in key.public_jwk.items() if k not in ("kid", "use", "alg")}


def dpop_proof(
    key: ClientKey, htm: str = "POST", htu: str = TOKEN_URL, *, header: dict[str, Any] | None = None, **claims: Any
) -> str:
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


SIG_ALGS = {
    "ES256": algorithms.ECDSA_P256_SHA256,
    "ES384": algorithms.ECDSA_P384_SHA384,
    "EdDSA": algorithms.ED25519,
    "PS256": algorithms.RSA_PSS_SHA512,
    "hmac": algorithms.HMAC_SHA256,
}


def signed_headers(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    *,
    key: Any,
    alg: str,
    keyid: str,
    components: tuple[str, ...] = ("@method", "@target-uri", "authorization"),
    nonce: str | None = "auto",
    created: float | None = None,
    **sign_options: Any,
) -> dict[str, str]:
    """``headers`` plus Signature-Input/Signature (and Content-Digest for a body), signed by the
    http-message-signatures package with a software key (``alg``: a key of SIG_ALGS)."""
    msg = Msg(method, url, Lines(list(headers.items())))
    signer = HTTPMessageSigner(signature_algorithm=SIG_ALGS[alg], key_resolver=_Keys(key))
    when = datetime.datetime.fromtimestamp(int(created if created is not None else time.time()), datetime.UTC)
    signer.sign(
        msg,
        key_id=keyid,
        created=when,
        covered_component_ids=components,
        body=body or None,
        nonce=secrets.token_urlsafe(12) if nonce == "auto" else nonce,
        label="sig",
        **sign_options,
    )
    return dict(msg.headers.items())


def symmetric_secret(cnf: dict[str, Any]) -> tuple[bytes, str]:
    jwk = cnf["jwk"]
    return base64.urlsafe_b64decode(jwk["k"] + "=" * (-len(jwk["k"]) % 4)), jwk["kid"]


def req_cnf(key: ClientKey, encode: bool = True) -> str:
    doc = json.dumps({"jwk": {**dpop_jwk(key), "kid": key.kid}})
    return b64(doc.encode()) if encode else doc
