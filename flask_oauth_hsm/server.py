"""The per-app server context: everything one app's authorization server needs, built once by
``init_app``, frozen, and handed to every endpoint as its first argument."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flask import current_app

from .client_auth import AssertionPolicy
from .clients import ClientRegistry, IPNetwork
from .hooks import Hook
from .hsm import HSM
from .keys import KeyRingHolder
from .ratelimit import RateLimiter
from .settings import Settings
from .store import Store

if TYPE_CHECKING:
    from .binding import Bindings
    from .endpoints import Endpoint

EXTENSION_KEY = "oauth_hsm"


@dataclass(frozen=True)
class Urls:
    """Absolute endpoint URLs derived from the issuer, and the routes serving them."""

    issuer: str
    prefix: str

    @property
    def route_prefix(self) -> str:
        return urlsplit(self.issuer).path.rstrip("/") + self.prefix

    def url(self, path: str) -> str:
        """The absolute URL of an endpoint path under the prefix (``/token`` → issuer/oauth2/token)."""
        return self.issuer.rstrip("/") + self.prefix + path

    @property
    def token(self) -> str:
        return self.url("/token")


@dataclass(frozen=True)
class ServerContext:
    settings: Settings
    hsm: HSM
    keys: KeyRingHolder
    store: Store
    registry: ClientRegistry
    urls: Urls
    policies: Mapping[str, AssertionPolicy]  # endpoint name -> what its client assertions must satisfy
    trusted_networks: tuple[IPNetwork, ...]
    hooks: Mapping[str, Hook]
    limits: RateLimiter
    endpoints: tuple[Endpoint, ...]
    binding: Bindings  # sender-constrained tokens: DPoP, PoP keys, mTLS (binding/)
    features: frozenset[str] = frozenset()  # what the registry and the host's hooks turn on (extension._features)

    def endpoint_url(self, name: str) -> str:
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return self.urls.url(endpoint.path) if isinstance(endpoint.path, str) else self.settings.issuer
        raise KeyError(name)


def current() -> ServerContext:
    ctx: ServerContext = current_app.extensions[EXTENSION_KEY]
    return ctx
