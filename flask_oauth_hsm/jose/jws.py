"""JWS compact serialization (RFC 7515 §7.1): sign with token keys, verify with public keys.

Signing goes through a *signer* (an HSM key: ``alg``, ``kid`` and ``sign(data) -> bytes`` returning
the JWS signature octets). Verification uses ``cryptography`` public keys under an explicit
allow-list: the header ``alg`` must be allowed by the caller *and* by the selected key (key type,
curve, the key's own ``alg``, ``use`` and ``key_ops``) before any signature check runs.
Keys are chosen by the caller's resolver; header ``jwk``, ``jku``, ``x5u`` and ``x5c`` are never
used to find a key (RFC 8725 §3.10).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..algorithms import SIGNING, AlgSpec
from ..errors import InvalidSignature, RefusedAlgorithm
from .compact import MAX_COMPACT_LEN, b64url_decode, b64url_encode, parse_protected_header, split_compact
from .jwk import PublicJWK

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class Signer(Protocol):
    alg: str
    kid: str

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class Verified:
    header: dict[str, Any]
    payload: bytes
    key: PublicJWK


def sign(payload: bytes, signer: Signer, header: dict[str, Any] | None = None) -> str:
    """Compact JWS of ``payload``; ``alg`` and ``kid`` come from the signer, never the caller."""
    protected = {**(header or {}), "alg": signer.alg, "kid": signer.kid}
    signing_input = _encoded_header(json.dumps(protected, separators=(",", ":"))) + "." + b64url_encode(payload)
    signature = signer.sign(signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


@lru_cache(maxsize=256)
def _encoded_header(header_json: str) -> str:
    # The same few headers (typ, alg, kid of our keys) are encoded on every token we issue.
    return b64url_encode(header_json.encode())


class Unverified:
    """A compact JWS split, its header checked, its signature not: read it only to choose the key
    (e.g. a client assertion's ``iss``), then :meth:`verify`. Parsing once serves both steps."""

    __slots__ = ("header", "_head", "_body", "_sig", "_payload")

    def __init__(self, token: str | bytes, max_len: int = MAX_COMPACT_LEN):
        self._head, self._body, self._sig = split_compact(token, 3, max_len)
        self.header = parse_protected_header(self._head)
        self._payload: bytes | None = None

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = b64url_decode(self._body, "JWS payload")
        return self._payload

    def verify(self, key_for: Callable[[dict[str, Any]], PublicJWK], algorithms: Collection[str]) -> Verified:
        """RFC 7515 §5.2 after parsing: alg allowed here and by the key, then the signature."""
        alg = self.header["alg"]
        spec = SIGNING.get(alg)
        if spec is None or alg not in algorithms:
            raise RefusedAlgorithm(f"JWS alg {alg[:20]!r} is not accepted here")
        key = key_for(self.header)
        if not key.allows(alg, "sig"):
            raise RefusedAlgorithm(f"the selected key may not be used with {alg}")
        payload = self.payload
        verify_signature(spec, key, self._head + b"." + self._body, b64url_decode(self._sig, "JWS signature"))
        return Verified(self.header, payload, key)


def verify(
    token: str | bytes,
    key_for: Callable[[dict[str, Any]], PublicJWK],
    algorithms: Collection[str],
    *,
    max_len: int = MAX_COMPACT_LEN,
) -> Verified:
    """Check a compact JWS and return its header and payload; raises a JoseError subclass.

    ``key_for(header)`` returns the key to verify with (for example ``JWKSet.select``) or raises.
    """
    return Unverified(token, max_len).verify(key_for, algorithms)


def _digest(spec: AlgSpec) -> hashes.HashAlgorithm:
    if spec.hash not in _HASHES:  # every signature algorithm of algorithms.py names one of these
        raise RefusedAlgorithm(f"{spec.name} is not a signature algorithm")
    return _HASHES[spec.hash]()


def verify_signature(spec: AlgSpec, key: PublicJWK, signing_input: bytes, signature: bytes) -> None:
    """Verify JWS signature octets for ``spec`` (RFC 7518 §3); raises InvalidSignature."""
    try:
        if spec.kind == "ecdsa":
            # RFC 7518 §3.4: exactly R || S, each the curve's coordinate size.
            size = (key.key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                raise InvalidSignature("ECDSA signature has the wrong length")
            r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            key.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(_digest(spec)))
        elif spec.kind == "pss":
            # RFC 7518 §3.5: MGF1 with the same hash, salt length equal to the hash size.
            digest = _digest(spec)
            key.key.verify(signature, signing_input, padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
        elif spec.kind == "pkcs1":
            key.key.verify(signature, signing_input, padding.PKCS1v15(), _digest(spec))
        elif spec.kind == "eddsa":
            key.key.verify(signature, signing_input)
        else:
            raise RefusedAlgorithm(f"{spec.name} is not a signature algorithm")
    except _CryptoInvalidSignature:
        raise InvalidSignature("signature does not verify") from None
    except (ValueError, TypeError):
        # cryptography refuses e.g. an RSA signature longer than the modulus
        raise InvalidSignature("signature does not verify") from None
