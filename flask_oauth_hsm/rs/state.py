"""Per-app resource-server state: settings, the token (if any), the AS's keys, answer cache."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .. import clock
from ..binding.mtls import CertificateSource
from ..binding.nonces import NoncePolicy
from ..clients import IPNetwork
from ..hsm import HSM
from ..jose import jwk
from ..store import Store
from .settings import RSSettings

log = logging.getLogger("flask_oauth_hsm.resource")
V = TypeVar("V")


class Unavailable(Exception):
    """The AS or our HSM cannot be reached: answer 503, let nothing through."""


class JWKSCache:
    """The AS's public keys; refetched after ``ttl``, or once on an unknown kid (rate-limited).

    Keys we cannot use (an algorithm or curve we do not support, added during a rotation) are
    left out rather than failing every token (RFC 7517 §5). Time is ``clock.now()``; a clock set
    back counts as expired, so it can never hold the cache (or the refetch limit) for long.
    An unknown kid is logged: after a rotation that followed the runbook it never happens.
    """

    MIN_REFETCH_INTERVAL = 10.0

    def __init__(self, fetch: Callable[[], dict[str, Any]], ttl: float = 300.0):
        self._fetch, self._ttl = fetch, ttl
        self._keys: jwk.JWKSet | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _age(self) -> float:
        age = clock.now() - self._fetched_at
        return age if age >= 0 else float("inf")

    def _refresh(self) -> jwk.JWKSet:
        with self._lock:
            if self._keys is not None and self._age() < self.MIN_REFETCH_INTERVAL:
                return self._keys
            doc = self._fetch()
            self._keys = jwk.JWKSet.from_dict(doc, skip_unusable=True)
            skipped = len(doc.get("keys", [])) - len(self._keys.keys)
            if skipped:
                log.warning("the AS JWKS has %d key(s) this resource server cannot use; ignoring them", skipped)
            self._fetched_at = clock.now()
            return self._keys

    def key_for(self, header: dict[str, Any]) -> jwk.PublicJWK:
        keys = self._keys
        if keys is None or self._age() > self._ttl:
            keys = self._refresh()
        kid = header.get("kid")
        if kid is not None and not any(k.kid == kid for k in keys):
            log.info("kid %.64r is not in the cached AS JWKS: refetching it", kid)  # rotation without the wait?
            keys = self._refresh()
        return keys.select(header["alg"], "sig", kid)


class ResultCache(Generic[V]):
    """Values by the hash of a token (introspection answers, opened PoP keys), bounded in size
    (oldest out) and in time."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> tuple[float, V] | None:
        hit = self._entries.get(hashlib.sha256(token.encode()).digest())
        if hit is not None and hit[0] > time.time():
            return hit
        return None

    def put(self, token: str, until: float, value: V) -> None:
        with self._lock:
            self._entries[hashlib.sha256(token.encode()).digest()] = (until, value)
            while len(self._entries) > self.MAX_ENTRIES:
                self._entries.popitem(last=False)


@dataclass
class RSState:
    settings: RSSettings
    hsm: HSM | None
    jwks: JWKSCache
    cache: ResultCache[dict[str, Any] | None]
    trusted_networks: tuple[IPNetwork, ...]
    nonces: NoncePolicy = NoncePolicy("off", None, "")  # DPoP nonces (RFC 9449 §9)
    store: Store | None = None  # replay state of proofs; None: no single-use checks (docs)
    certificates: CertificateSource | None = None  # mTLS-bound tokens (RFC 8705 §3)
    # Symmetric PoP keys opened from cnf.jwe, until their token expires: an ECDH derivation in the
    # token per request costs more than all the rest of the proof (docs/benchmarks.md).
    pop_keys: ResultCache[Any] = field(default_factory=ResultCache)
    _endpoints: dict[str, str] = field(default_factory=dict)

    def endpoint(self, name: str) -> str:
        explicit = {"jwks_uri": self.settings.jwks_uri, "introspection_endpoint": self.settings.introspection_endpoint}[name]
        if explicit:
            return explicit
        if name not in self._endpoints:  # RFC 8414 discovery, once
            meta = get_json(metadata_url(self.settings.issuer), self.settings.http_timeout)
            if meta.get("issuer") != self.settings.issuer:
                raise Unavailable("AS metadata names another issuer")  # RFC 8414 §3.3
            self._endpoints.update({k: meta[k] for k in ("jwks_uri", "introspection_endpoint") if isinstance(meta.get(k), str)})
        return self._endpoints[name]


def metadata_url(issuer: str) -> str:
    parts = urllib.parse.urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path.rstrip('/')}"


def get_json(url: str, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/json"}), timeout=timeout) as resp:
            doc = json.loads(resp.read(1_000_001))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unavailable(f"cannot fetch {url}: {exc}") from None
    if not isinstance(doc, dict):
        raise Unavailable(f"{url} did not return a JSON object")
    return doc
