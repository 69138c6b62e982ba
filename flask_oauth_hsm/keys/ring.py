"""The authorization server's key set: what signs, what decrypts, what the JWKS shows.

A :class:`KeyRing` is a frozen snapshot, loaded from the token (labels from the settings), checked
for safety and fit, and turned into the JWKS document (RFC 7517 §5) with its ETag. The
:class:`KeyRingHolder` hands out the current snapshot and swaps it for a new one in a single
reference assignment, together with every document derived from it (metadata), so a request
sees one consistent key set and rotation needs no restart (docs/hsm-and-keys.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError, InvalidKey, KeyNotFound
from ..hsm import HSM, KeyInfo, TokenKey
from ..jose.jwe import key_accepts
from ..jose.jwk import PublicJWK, load_jwk


@dataclass(frozen=True)
class KeyRing:
    signing: TokenKey  # signs access tokens
    signers: tuple[TokenKey, ...]  # every signing key we hold: the signing key first, then published ones
    published: tuple[KeyInfo, ...]  # every public key in the JWKS, signing key first
    decryption: tuple[TokenKey, ...]
    jwks_json: bytes
    jwks_etag: str
    verifiers: dict[str, PublicJWK]  # kid -> our own signing keys (current, next, retired)
    escrow: PublicJWK | None  # public half of our first decryption key (access_tokens: CEK escrow)

    @classmethod
    def load(cls, hsm: HSM, signing_label: str, published: tuple[str, ...], encryption: tuple[str, ...]) -> "KeyRing":
        signing = _configured_key(hsm, signing_label, "OAUTH_HSM_SIGNING_KEY")
        if signing.info.use != "sig":
            raise ConfigError(f"OAUTH_HSM_SIGNING_KEY: key {signing_label!r} is an encryption key")
        extra_keys = [_configured_key(hsm, label, "OAUTH_HSM_PUBLISHED_KEYS") for label in published if label != signing_label]
        extra = [k.info for k in extra_keys]
        signers = (signing, *(k for k in extra_keys if k.info.use == "sig"))
        decryption = tuple(_configured_key(hsm, label, "OAUTH_HSM_ENCRYPTION_KEYS") for label in encryption)
        for key in decryption:
            if key.info.use != "enc":
                raise ConfigError(f"OAUTH_HSM_ENCRYPTION_KEYS: key {key.label!r} is a signing key")
        infos = (signing.info, *extra, *(k.info for k in decryption))
        kids = [i.kid for i in infos]
        if len(kids) != len(set(kids)):
            raise ConfigError("OAUTH_HSM_PUBLISHED_KEYS: the same key is listed twice under different labels")
        jwks = json.dumps({"keys": [i.public_jwk() for i in infos]}, separators=(",", ":")).encode()
        etag = hashlib.sha256(jwks).hexdigest()[:32]
        verifiers = {i.kid: load_jwk(i.public_jwk()) for i in infos if i.use == "sig"}
        escrow = load_jwk(decryption[0].public_jwk()) if decryption else None
        return cls(signing, signers, infos, decryption, jwks, etag, verifiers, escrow)

    def signer_for(self, alg: str | None) -> TokenKey:
        """The key that signs for ``alg`` (RFC 9701 responses): the signing key when it fits."""
        if alg is None:
            return self.signing
        for key in self.signers:
            if key.alg == alg:
                return key
        raise ConfigError(f"no signing key for {alg}: add one to OAUTH_HSM_PUBLISHED_KEYS")

    def verifier_for(self, header: dict) -> PublicJWK:
        """One of our own signing keys, by kid (tokens we issued, before or after rotation)."""
        key = self.verifiers.get(header.get("kid"))
        if key is None:
            raise InvalidKey("not signed by one of our keys")
        return key

    @property
    def signing_algs(self) -> list[str]:
        """Every alg we can sign with (RFC 9701 introspection responses)."""
        return sorted({k.alg for k in self.signers})

    @property
    def own_algs(self) -> tuple[str, ...]:
        return tuple(sorted({k.alg for k in self.verifiers.values()}))

    def decrypter_for(self, header: dict) -> TokenKey:
        """Our decryption key for a JWE header: by ``kid``, else the one key serving its alg."""
        kid = header.get("kid")
        if kid is not None:
            matches = [k for k in self.decryption if k.kid == kid]
        else:
            matches = [k for k in self.decryption if key_accepts(k, header.get("alg", ""))]
        if len(matches) != 1:
            raise InvalidKey("no decryption key for this JWE")
        return matches[0]

    @property
    def decryption_algs(self) -> list[str]:
        return sorted({k.alg for k in self.decryption})


def _configured_key(hsm: HSM, label: str, variable: str) -> TokenKey:
    try:
        return hsm.key(label)
    except KeyNotFound as exc:
        raise KeyNotFound(f"{variable}: {exc} (`flask oauth-hsm keys list` shows what the token holds; "
                          f"`flask oauth-hsm keys generate --label {label} ...` creates it)") from None


@dataclass(frozen=True)
class Published:
    """A key ring and the documents derived from it, swapped as one."""

    ring: KeyRing
    metadata_json: bytes
    metadata_etag: str


class KeyRingHolder:
    """The current :class:`Published` snapshot; ``swap`` replaces it atomically (one assignment)."""

    def __init__(self) -> None:
        self._derive: Callable[[KeyRing], tuple[bytes, str]] | None = None
        self._lock = threading.Lock()
        self._published: Published | None = None

    def publish(self, ring: KeyRing, derive: Callable[[KeyRing], tuple[bytes, str]]) -> None:
        """The first key ring, and how to derive its documents (once the server context exists)."""
        self._derive = derive
        self.swap(ring)

    @property
    def current(self) -> Published:
        published = self._published
        if published is None:
            raise RuntimeError("no key ring published yet")
        return published

    @property
    def ring(self) -> KeyRing:
        return self.current.ring

    def swap(self, ring: KeyRing) -> None:
        if self._derive is None:
            raise RuntimeError("publish() a key ring first")
        with self._lock:  # writers serialise; readers never wait
            self._published = Published(ring, *self._derive(ring))
