"""Client-side helpers for authorization-server tests: software client keys, assertions, registry.

Clients are not us: their keys are ordinary software keys, and assertions are built by hand (or
with joserfc) so tests can also build the hostile ones a library would refuse to make.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RS1 = "https://rs1.example.test"
RS2 = "https://rs2.example.test"
RS3 = "https://rs3.example.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


@dataclass
class ClientKey:
    alg: str
    private: Any = field(repr=False)
    kid: str = ""

    @classmethod
    def new(cls, alg: str = "ES256", kid: str | None = None) -> ClientKey:
        if alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        elif alg in ("PS256", "RS256"):
            private = rsa.generate_private_key(65537, 2048)
        elif alg == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(alg)
        return cls(alg, private, kid or secrets.token_hex(4))

    @property
    def public_jwk(self) -> dict:
        pub = self.private.public_key()
        if isinstance(pub, ec.EllipticCurvePublicKey):
            n = pub.public_numbers()
            jwk = {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}
        elif isinstance(pub, rsa.RSAPublicKey):
            n = pub.public_numbers()
            jwk = {"kty": "RSA", "n": b64(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")), "e": "AQAB"}
        else:
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def sign_raw(self, signing_input: bytes, alg: str | None = None) -> bytes:
        alg = alg or self.alg
        if alg == "ES256":
            r, s = decode_dss_signature(self.private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if alg == "PS256":
            return self.private.sign(signing_input, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        if alg == "RS256":
            return self.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return self.private.sign(signing_input)

    def jws(self, claims: dict, header: dict | None = None) -> str:
        head = {"alg": self.alg, "kid": self.kid, **(header or {})}
        head = {k: v for k, v in head.items() if v is not None}
        signing_input = f"{b64json(head)}.{b64json(claims)}"
        return f"{signing_input}.{b64(self.sign_raw(signing_input.encode(), head.get('alg')))}"


def claims_for(client_id: str, aud: Any, /, **overrides) -> dict:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60, "jti": secrets.token_urlsafe(16)}
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def hs256_with_public_key(key: ClientKey, claims: dict) -> str:
    """The classic key-confusion forgery: HMAC keyed with the client's public key bytes."""
    head = {"alg": "HS256", "kid": key.kid}
    signing_input = f"{b64json(head)}.{b64json(claims)}"
    pem = key.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"


def unsigned(claims: dict) -> str:
    return f"{b64json({'alg': 'none'})}.{b64json(claims)}."


def assertion_form(assertion: str, **extra) -> dict:
    return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion, **extra}


def sha256_secret_hash(secret: str) -> str:
    return "sha256:" + b64(hashlib.sha256(secret.encode()).digest())


def ec_enc_jwk(private, kid: str, alg: str = "ECDH-ES+A256KW") -> dict:
    """Public JWK (use=enc) of a resource server's software EC key."""
    n = private.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(n.x.to_bytes(32, "big")),
        "y": b64(n.y.to_bytes(32, "big")),
        "kid": kid,
        "use": "enc",
        "alg": alg,
    }
