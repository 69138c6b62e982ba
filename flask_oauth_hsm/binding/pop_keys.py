"""PoP key distribution (draft-ietf-oauth-pop-key-distribution-07; parameters in RFC 9200/9201).

* **Asymmetric**: the client sends its public key in ``req_cnf`` (:func:`parse_req_cnf`); the
  token carries it as ``cnf.jwk`` (RFC 7800 §3.2).
* **Symmetric** (RFC 9200 §5.8.1, the default when no ``req_cnf`` is sent): we generate a key with
  the token's random generator (:func:`new_symmetric_key`), give it to the client (``cnf.jwk``, or
  ``cnf.jwe`` to its registered encryption key), put it in the access token only as ``cnf.jwe``
  to the one audience resource server (RFC 7800 §3.3), and keep it in Redis for the token's
  lifetime only, sealed with AES-GCM under a key that never leaves the HSM (:class:`KeyVault`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..algorithms import DEFAULT_ENC, KEY_MANAGEMENT, default_alg
from ..errors import DecryptionFailed, InvalidKey, InvalidRequestError, MalformedJose
from ..jose import compact, jwe, jwk

if TYPE_CHECKING:
    from ..clients import Credentials
    from ..hsm import HSM, TokenSecretKey
    from ..store import Store

MAX_REQ_CNF = 8 * 1024
SYMMETRIC_JWK_ALG = "HS256"  # the JOSE name of HMAC-SHA-256; RFC 9421 calls it hmac-sha256
SYMMETRIC_KEY_BYTES = 32
JWK_CTY = "jwk+json"  # RFC 7800 §3.3: the content type of an encrypted JWK
VAULT_NAMESPACE = "pop-key"


def parse_req_cnf(value: str) -> jwk.PublicJWK:
    """RFC 9201 §3.1 ``req_cnf``: ``{"jwk": {...}}``, as JSON or base64url-encoded JSON (the
    draft's example). The key must pass the rules for client keys; a symmetric key value is
    refused (RFC 9201 §3.1 recommends it: a key the client chose is not one we can vouch for)."""
    if len(value) > MAX_REQ_CNF:
        raise InvalidRequestError("req_cnf is too large")
    try:
        raw = value.encode() if value.lstrip().startswith("{") else compact.b64url_decode(value.strip(), "req_cnf")
        cnf = compact.parse_json_object(raw, "req_cnf")
    except MalformedJose:
        raise InvalidRequestError("req_cnf must be a JSON object, plain or base64url-encoded") from None
    if set(cnf) != {"jwk"} or not isinstance(cnf["jwk"], dict):
        raise InvalidRequestError('req_cnf must have exactly one member, "jwk" (a key by "kid" is not supported)')
    key = cnf["jwk"]
    if key.get("kty") == "oct" or "k" in key:
        raise InvalidRequestError("req_cnf must not carry a symmetric key (RFC 9201 section 3.1): omit it to get one from us")
    try:
        public = jwk.load_jwk(key)
    except InvalidKey:
        raise InvalidRequestError(
            "req_cnf.jwk is not an acceptable public key (RSA >= 2048 bits, P-256, P-384, P-521 or Ed25519, no private members)"
        ) from None
    if public.crv == "X25519":
        raise InvalidRequestError("req_cnf.jwk must be a signing key")
    return public


def cnf_jwk(key: jwk.PublicJWK) -> dict[str, str]:
    """The public key as it goes into ``cnf.jwk``: the required members, and the kid if any."""
    return jwk.public_jwk_dict(key.key, kid=key.kid)


# --- symmetric keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymmetricKey:
    kid: str
    secret: bytes = field(repr=False)

    def jwk(self) -> dict[str, str]:
        """RFC 7800 §3.2 form: ``{"kty": "oct", "k": …, "kid": …, "alg": …}``."""
        return {"kty": "oct", "k": compact.b64url_encode(self.secret), "kid": self.kid, "alg": SYMMETRIC_JWK_ALG}

    def jwk_bytes(self) -> bytes:
        return json.dumps(self.jwk(), separators=(",", ":")).encode()

    @classmethod
    def from_jwk_bytes(cls, data: bytes) -> SymmetricKey:
        """The key of an ``oct`` JWK we made; raises MalformedJose for anything else."""
        obj = compact.parse_json_object(data, "PoP key")
        kid, k = obj.get("kid"), obj.get("k")
        if obj.get("kty") != "oct" or not isinstance(kid, str) or not kid or not isinstance(k, str):
            raise MalformedJose("not a symmetric PoP key")
        secret = compact.b64url_decode(k, "PoP key")
        if len(secret) < SYMMETRIC_KEY_BYTES:
            raise MalformedJose("PoP key too short")
        return cls(kid, secret)


def new_symmetric_key(hsm: HSM) -> SymmetricKey:
    """A fresh 256-bit key and a 96-bit kid from the token's generator (C_GenerateRandom)."""
    random = hsm.random(SYMMETRIC_KEY_BYTES + 12)
    return SymmetricKey(compact.b64url_encode(random[SYMMETRIC_KEY_BYTES:]), random[:SYMMETRIC_KEY_BYTES])


def encryption_target(entity: Credentials, preferred_alg: str | None = None) -> tuple[jwk.PublicJWK, str] | None:
    """The entity's one registered encryption key and the alg to use with it, or None."""
    keys = [k for k in (entity.jwks or ()) if k.use == "enc" or (k.alg in KEY_MANAGEMENT)]
    if preferred_alg is not None:
        keys = [k for k in keys if k.allows(preferred_alg, "enc")]
    if len(keys) != 1:
        return None
    key = keys[0]
    alg = preferred_alg or key.alg or default_alg(key.kty, key.crv, "enc")
    return (key, alg) if alg is not None and key.allows(alg, "enc") else None


def encrypt_key(key: SymmetricKey, recipient: tuple[jwk.PublicJWK, str]) -> str:
    """RFC 7800 §3.3: the JWK as a JWE to ``recipient`` (``cty: jwk+json``)."""
    public, alg = recipient
    return jwe.encrypt(key.jwk_bytes(), public, alg, DEFAULT_ENC, {"cty": JWK_CTY})


def decrypt_key(token: str, decrypter: Any) -> SymmetricKey:
    """Inverse of :func:`encrypt_key` with a key in our token; raises JoseError."""
    decrypted = jwe.decrypt(token, lambda h: decrypter, [decrypter.alg], ["A128GCM", "A256GCM"])
    if decrypted.header.get("cty") != JWK_CTY:
        raise DecryptionFailed("not an encrypted JWK")
    return SymmetricKey.from_jwk_bytes(decrypted.plaintext)


class KeyVault:
    """Symmetric PoP keys in Redis, for the lifetime of their token only, sealed in the HSM.

    Record: ``AES-256-GCM(jwk)`` under the wrap key, the token's ``jti`` as associated data, so a
    record moved to another token's slot does not open. No record means the token is invalid.
    """

    def __init__(self, sealer: TokenSecretKey):
        self._sealer = sealer

    def keep(self, store: Store, jti: str, key: SymmetricKey, ttl: int) -> None:
        store.put(VAULT_NAMESPACE, jti, self._sealer.seal(key.jwk_bytes(), jti.encode()), ttl)

    def fetch(self, store: Store, jti: str) -> SymmetricKey | None:
        sealed = store.read(VAULT_NAMESPACE, jti)
        if sealed is None:
            return None
        try:
            return SymmetricKey.from_jwk_bytes(self._sealer.open(sealed, jti.encode()))
        except (DecryptionFailed, MalformedJose):
            return None  # tampered with or not ours: as good as gone

    @staticmethod
    def drop(store: Store, jti: str) -> None:
        store.forget(VAULT_NAMESPACE, jti)
