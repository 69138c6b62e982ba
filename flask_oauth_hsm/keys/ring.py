"""The authorization server's key set: what signs, what decrypts, what the JWKS shows.

A :class:`KeyRing` is a frozen snapshot, loaded from the token — by the labels in the settings, or
from the key states of a key set (``OAUTH_HSM_KEY_SET``, keys/key_set.py) — checked for safety and
fit, and turned into the JWKS document (RFC 7517 §5) with its ETag. The :class:`KeyRingHolder`
hands out the current snapshot and swaps it for a new one in a single reference assignment,
together with every document derived from it (metadata), so a request sees one consistent key
set; in key-set mode it re-reads the key states now and then, so rotation needs no restart
(docs/hsm-and-keys.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import clock
from ..errors import ConfigError, InvalidKey, KeyNotFound, OAuthHSMError
from ..hsm import HSM, KeyInfo, TokenKey
from ..jose.jwe import key_accepts
from ..jose.jwk import PublicJWK, load_jwk

log = logging.getLogger("flask_oauth_hsm.keys")


@dataclass(frozen=True)
class KeyRing:
    signing: TokenKey  # signs access tokens
    signers: tuple[TokenKey, ...]  # every key that may sign: the signing key first
    published: tuple[KeyInfo, ...]  # every public key in the JWKS, signing key first
    decryption: tuple[TokenKey, ...]  # preferred first: a JWE without kid goes to the first that fits
    jwks_json: bytes
    jwks_etag: str
    verifiers: dict[str, PublicJWK]  # kid -> our own signing keys (current, next, retired)
    escrow: PublicJWK | None  # public half of our preferred decryption key (access_tokens: CEK escrow)

    @classmethod
    def load(cls, hsm: HSM, signing_label: str, published: tuple[str, ...], encryption: tuple[str, ...]) -> KeyRing:
        """Label mode: OAUTH_HSM_SIGNING_KEY, OAUTH_HSM_PUBLISHED_KEYS, OAUTH_HSM_ENCRYPTION_KEYS."""
        signing = _configured_key(hsm, signing_label, "OAUTH_HSM_SIGNING_KEY")
        if signing.info.use != "sig":
            raise ConfigError(f"OAUTH_HSM_SIGNING_KEY: key {signing_label!r} is an encryption key")
        extra_keys = [_configured_key(hsm, label, "OAUTH_HSM_PUBLISHED_KEYS") for label in published if label != signing_label]
        signers = (signing, *(k for k in extra_keys if k.info.use == "sig"))
        decryption = tuple(_configured_key(hsm, label, "OAUTH_HSM_ENCRYPTION_KEYS") for label in encryption)
        for key in decryption:
            if key.info.use != "enc":
                raise ConfigError(f"OAUTH_HSM_ENCRYPTION_KEYS: key {key.label!r} is a signing key")
        infos = (signing.info, *(k.info for k in extra_keys), *(k.info for k in decryption))
        escrow = decryption[0] if decryption else None
        twice = "OAUTH_HSM_PUBLISHED_KEYS: the same key is listed twice under different labels"
        return cls.build(signers, infos, decryption, escrow, twice)

    @classmethod
    def build(
        cls,
        signers: tuple[TokenKey, ...],
        published: tuple[KeyInfo, ...],
        decryption: tuple[TokenKey, ...],
        escrow: TokenKey | None,
        duplicate: str,
    ) -> KeyRing:
        """A ring from its parts: ``signers[0]`` signs; the JWKS lists ``published`` in order."""
        kids = [i.kid for i in published]
        if len(kids) != len(set(kids)):
            raise ConfigError(duplicate)
        jwks = json.dumps({"keys": [i.public_jwk() for i in published]}, separators=(",", ":")).encode()
        etag = hashlib.sha256(jwks).hexdigest()[:32]
        verifiers = {i.kid: load_jwk(i.public_jwk()) for i in published if i.use == "sig"}
        own = load_jwk(escrow.public_jwk()) if escrow is not None else None
        return cls(signers[0], signers, published, decryption, jwks, etag, verifiers, own)

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        """Equal for two rings that behave the same (a re-read that changed nothing swaps nothing)."""
        return (
            self.jwks_etag,
            tuple(k.kid for k in self.signers),
            tuple(k.kid for k in self.decryption),
            self.escrow.kid if self.escrow else None,
        )

    def signer_for(self, alg: str | None) -> TokenKey:
        """The key that signs for ``alg`` (RFC 9701 responses): the signing key when it fits."""
        if alg is None:
            return self.signing
        for key in self.signers:
            if key.alg == alg:
                return key
        raise ConfigError(f"no signing key for {alg}: add one to OAUTH_HSM_PUBLISHED_KEYS")

    def verifier_for(self, header: dict[str, Any]) -> PublicJWK:
        """One of our own signing keys, by kid (tokens we issued, before or after rotation)."""
        kid = header.get("kid")
        key = self.verifiers.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidKey("not signed by one of our keys")
        return key

    @property
    def signing_algs(self) -> list[str]:
        """Every alg we can sign with (RFC 9701 introspection responses)."""
        return sorted({k.alg for k in self.signers})

    @property
    def own_algs(self) -> tuple[str, ...]:
        return tuple(sorted({k.alg for k in self.verifiers.values() if k.alg is not None}))

    def decrypter_for(self, header: dict[str, Any]) -> TokenKey:
        """Our decryption key for a JWE header: by ``kid``, else the preferred key serving its alg."""
        kid = header.get("kid")
        if kid is not None:
            matches = [k for k in self.decryption if k.kid == kid]
        else:
            matches = [k for k in self.decryption if key_accepts(k, header.get("alg", ""))][:1]
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
        raise KeyNotFound(
            f"{variable}: {exc} (`flask oauth-hsm keys list` shows what the token holds; "
            f"`flask oauth-hsm keys generate --label {label} ...` creates it)"
        ) from None


@dataclass(frozen=True)
class Published:
    """A key ring and the documents derived from it, swapped as one."""

    ring: KeyRing
    metadata_json: bytes
    metadata_etag: str


class KeyRingHolder:
    """The current :class:`Published` snapshot; ``swap`` replaces it atomically (one assignment).

    ``follow`` makes the holder re-read the key ring every ``every`` seconds of ``clock.now()``.
    The re-read happens in the request that finds the ring due, before it uses it; other requests
    that find it due meanwhile wait for that re-read (a few small token objects), so no request
    is served with a ring older than ``every``. A failed re-read (the token unreachable, a key
    set that does not load) keeps the current ring, logs why, and is tried again 5 s later.
    """

    RETRY_AFTER_FAILURE = 5.0

    def __init__(self) -> None:
        self._derive: Callable[[KeyRing], tuple[bytes, str]] | None = None
        self._lock = threading.Lock()
        self._published: Published | None = None
        self._load: Callable[[], KeyRing] | None = None
        self._vet: Callable[[KeyRing], None] = lambda ring: None
        self._every = 0.0
        self._read_at = 0.0  # when the current ring was read (or a failed re-read was tried)
        self._refreshing = threading.Lock()

    def publish(self, ring: KeyRing, derive: Callable[[KeyRing], tuple[bytes, str]]) -> None:
        """The first key ring, and how to derive its documents (once the server context exists)."""
        self._derive = derive
        self.swap(ring)

    def follow(self, load: Callable[[], KeyRing], every: float, vet: Callable[[KeyRing], None] | None = None) -> None:
        """Re-read the key ring with ``load`` whenever it is ``every`` seconds old; a ring that
        changed is swapped in only if ``vet`` accepts it (raises nothing)."""
        self._load, self._every, self._read_at = load, every, clock.now()
        if vet is not None:
            self._vet = vet

    @property
    def ready(self) -> bool:
        return self._published is not None

    @property
    def current(self) -> Published:
        if self._load is not None:
            self._refresh_if_due()
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

    def _due(self, now: float) -> bool:
        return not self._read_at <= now < self._read_at + self._every  # a clock set back counts as due

    def _refresh_if_due(self) -> None:
        now = clock.now()
        if not self._due(now):
            return
        with self._refreshing:  # one thread re-reads; the others wait for it, then use its ring
            now = clock.now()
            if self._due(now):
                self.refresh(now)

    def refresh(self, now: float | None = None) -> None:
        """Re-read the key ring now; swap it in if it changed."""
        assert self._load is not None
        now = clock.now() if now is None else now
        current = self._published
        try:
            ring = self._load()
            changed = current is None or current.ring.fingerprint != ring.fingerprint
            if changed:
                self._vet(ring)
        except Exception as exc:  # noqa: BLE001 - whatever it is, serving on with the current keys is safer
            self._read_at = now - self._every + min(self._every, self.RETRY_AFTER_FAILURE)
            log.error(
                "cannot re-read the key set; keeping the current key ring: %s", exc, exc_info=not isinstance(exc, OAuthHSMError)
            )
            return
        if changed:
            self.swap(ring)
            log.info(
                "key ring changed: signing kid %s, %d published key(s), %d decryption key(s)",
                ring.signing.kid,
                len(ring.published),
                len(ring.decryption),
            )
        # Only now: a request that finds the ring not due reads _published without the lock, so
        # marking it read before the swap would serve it the old ring.
        self._read_at = now
