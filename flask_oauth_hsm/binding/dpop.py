"""DPoP proofs (RFC 9449): the checks of §4.3, shared by the token endpoint and the resource server.

:func:`read_header` takes the one ``DPoP`` header (§4.3 step 1); :func:`verify_proof` runs steps 2-9
and 11 (and 12, ``ath``, when given the access token) on it, without state. What needs state —
the nonce (step 10, :mod:`.nonces`) and the single use of ``jti`` (§11.1, ``Store.use_once``) —
is the caller's, because the token endpoint and the resource server keep it in different places.

The key is the one in the proof's own ``jwk`` header (§4.2): unlike every other JWT we accept,
a DPoP proof names the key that verifies it. It must be public (no private members, RSA ≥ 2048
bits, a curve we support: :func:`~flask_oauth_hsm.jose.jwk.load_jwk`) and fit the header ``alg``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from .. import claims as claim_rules
from ..errors import InvalidKey, JoseError
from ..jose import compact, jwk, jws, jwt
from .uri import same_resource

DPOP_TYP = "dpop+jwt"  # RFC 9449 §4.2
MAX_PROOF_LEN = 8 * 1024  # an RSA-8192 jwk and the claims fit; anything larger is not a proof
MAX_JTI_LEN = 512


class ProofError(Exception):
    """An invalid DPoP proof; the message says which check failed (for logs, never the peer)."""


@dataclass(frozen=True)
class Proof:
    """A DPoP proof that passed the stateless checks."""

    jkt: str  # RFC 7638 thumbprint of the proof key: the token's cnf.jkt (RFC 9449 §6.1)
    jti: str
    iat: float
    nonce: str | None
    key: jwk.PublicJWK


def read_header(values: Sequence[str]) -> str | None:
    """RFC 9449 §4.3 step 1: at most one DPoP header. Servers join repeated headers with commas,
    which a compact JWS never contains."""
    if not values:
        return None
    if len(values) != 1 or "," in values[0]:
        raise ProofError("more than one DPoP header")
    return values[0].strip()


def access_token_hash(token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url of the SHA-256 of the ASCII access token."""
    return compact.b64url_encode(hashlib.sha256(token.encode("ascii", "replace")).digest())


def verify_proof(
    value: str, *, method: str, url: str, algorithms: Collection[str], max_age: int, leeway: int, access_token: str | None = None
) -> Proof:
    """RFC 9449 §4.3 steps 2-9, 11 and (with ``access_token``) 12; raises ProofError."""
    try:
        unverified = jws.Unverified(value, MAX_PROOF_LEN)  # step 2: a well-formed JWT
        header = unverified.header
        if not compact.typ_is(header, DPOP_TYP):  # step 4
            raise ProofError("typ is not dpop+jwt")
        if header["alg"] not in algorithms:  # step 5: asymmetric, supported, allowed
            raise ProofError("alg not accepted")
        # Step 7: a public key (private members refused). Only this key verifies the proof: kid,
        # jku, x5u or x5c in the header are never used to find another one (RFC 8725 §3.10).
        key = jwk.load_jwk(header.get("jwk"))
        verified = unverified.verify(lambda h: key, algorithms)  # step 6: the signature, with that key
        payload = jwt.decode_claims(verified.payload)
    except (JoseError, InvalidKey) as exc:
        raise ProofError(f"proof JWS: {type(exc).__name__}") from None
    _check_claims(payload, method, url, max_age, leeway)
    if access_token is not None and not _same(payload.get("ath"), access_token_hash(access_token)):
        raise ProofError("ath does not match the access token")  # step 12 (resource servers)
    nonce = payload.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or not nonce):
        raise ProofError("nonce is not a string")
    return Proof(key.thumbprint, payload["jti"], float(payload["iat"]), nonce, key)


def _check_claims(payload: dict[str, Any], method: str, url: str, max_age: int, leeway: int) -> None:
    """Steps 3, 8, 9 and 11, with the time rules of claims.check."""
    rules = claim_rules.ClaimRules(leeway=leeway, required=("jti", "htm", "htu", "iat"), max_age=max_age)
    try:
        claim_rules.check(payload, rules)
    except claim_rules.ClaimError as exc:
        raise ProofError(f"proof claims: {exc}") from None
    if len(payload["jti"]) > MAX_JTI_LEN:
        raise ProofError("jti too long")
    if payload["htm"] != method:  # step 8: case-sensitive
        raise ProofError("htm does not match the request method")
    htu = payload["htu"]
    if not isinstance(htu, str) or not same_resource(htu, url):  # step 9
        raise ProofError("htu does not match the request URI")


def _same(presented: Any, expected: str) -> bool:
    return isinstance(presented, str) and hmac.compare_digest(presented.encode("ascii", "replace"), expected.encode())
