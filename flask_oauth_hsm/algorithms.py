"""JOSE algorithm registry (RFC 7518, RFC 8037): which algorithms exist for us and what they need.

Pure data, no cryptography and no PKCS#11: the HSM adapter maps ``kind`` to mechanisms, the JOSE
layer maps it to ``cryptography`` verification. An algorithm missing here is refused before any
cryptography runs (RSA1_5, PBES2, ``dir``, HS*, ``none`` are deliberately absent, RFC 8725 §3.1).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlgSpec:
    name: str
    kind: str  # "ecdsa" | "pss" | "pkcs1" | "eddsa" | "oaep" | "ecdh"
    kty: str  # "EC" | "RSA" | "OKP"
    use: str  # "sig" | "enc"
    hash: str | None = None  # hashlib name of the digest the algorithm uses
    crv: str | None = None  # the one curve an EC/OKP signing alg is bound to
    key_wrap_bits: int = 0  # ECDH-ES+A*KW: AES key-wrap key length

    @property
    def curves(self) -> tuple[str, ...]:
        if self.crv:
            return (self.crv,)
        return ("P-256", "P-384", "P-521") if self.kind == "ecdh" else ()


SIGNING = {
    s.name: s
    for s in (
        AlgSpec("ES256", "ecdsa", "EC", "sig", "sha256", "P-256"),  # RFC 7518 §3.4
        AlgSpec("ES384", "ecdsa", "EC", "sig", "sha384", "P-384"),
        AlgSpec("PS256", "pss", "RSA", "sig", "sha256"),  # RFC 7518 §3.5
        AlgSpec("RS256", "pkcs1", "RSA", "sig", "sha256"),  # RFC 7518 §3.3
        AlgSpec("EdDSA", "eddsa", "OKP", "sig", None, "Ed25519"),  # RFC 8037 §3.1
    )
}

KEY_MANAGEMENT = {
    s.name: s
    for s in (
        AlgSpec("RSA-OAEP-256", "oaep", "RSA", "enc", "sha256"),  # RFC 7518 §4.3
        AlgSpec("RSA-OAEP", "oaep", "RSA", "enc", "sha1"),
        AlgSpec("ECDH-ES", "ecdh", "EC", "enc"),  # RFC 7518 §4.6
        AlgSpec("ECDH-ES+A128KW", "ecdh", "EC", "enc", key_wrap_bits=128),
        AlgSpec("ECDH-ES+A256KW", "ecdh", "EC", "enc", key_wrap_bits=256),
    )
}

ALGORITHMS: dict[str, AlgSpec] = {**SIGNING, **KEY_MANAGEMENT}


@dataclass(frozen=True)
class EncSpec:
    """Content encryption (RFC 7518 §5): ``cek_len`` bytes of CEK, ``iv_len`` bytes of IV."""

    name: str
    mode: str  # "gcm" | "cbc-hs"
    cek_len: int
    iv_len: int


CONTENT_ENCRYPTION = {
    e.name: e
    for e in (
        EncSpec("A128GCM", "gcm", 16, 12),  # RFC 7518 §5.3
        EncSpec("A256GCM", "gcm", 32, 12),
        EncSpec("A128CBC-HS256", "cbc-hs", 32, 16),  # RFC 7518 §5.2.3, accepted on input
    )
}
# What we produce when the peer did not register an enc: GCM, never CBC-HS.
DEFAULT_ENC = "A256GCM"

# Curve sizes in bits, and the defaults that keys made by other tools fall back to.
CURVE_BITS = {"P-256": 256, "P-384": 384, "P-521": 521, "Ed25519": 255}


def default_alg(kty: str, crv: str | None, use: str) -> str | None:
    """Safest alg for a key that carries no recorded alg (keys made by other tools)."""
    if use == "sig":
        return {"RSA": "PS256", "P-256": "ES256", "P-384": "ES384", "Ed25519": "EdDSA"}.get(crv or kty)
    return {"RSA": "RSA-OAEP-256", "P-256": "ECDH-ES", "P-384": "ECDH-ES", "P-521": "ECDH-ES"}.get(crv or kty)


# RFC 9421 §6.2.2 HTTP Message Signatures algorithms we verify (proof of possession at resource
# servers, docs/proof-of-possession.md): hmac-sha256 for the symmetric keys we distribute, the
# others for asymmetric client keys, chosen from the key type (never from the message).
HTTP_SIGNATURE_ALGS = ("hmac-sha256", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "ed25519", "rsa-pss-sha512")
# What a resource server accepts unless its registry entry says otherwise.
DEFAULT_POP_SIGNATURE_ALGS = ("hmac-sha256", "ecdsa-p256-sha256", "ed25519", "rsa-pss-sha512")


def http_signature_alg(kty: str, crv: str | None) -> str | None:
    """The RFC 9421 algorithm for an asymmetric key (RFC 9421 §3.3), or None when there is none."""
    return {"RSA": "rsa-pss-sha512", "P-256": "ecdsa-p256-sha256", "P-384": "ecdsa-p384-sha384", "Ed25519": "ed25519"}.get(
        crv or kty
    )
