"""Endpoints as registered units: one declaration each (route, methods, metadata it contributes).

Adding an endpoint is one module that calls :func:`register` and one line in
:data:`ENDPOINT_MODULES`. The extension mounts every registered endpoint, wraps its view (the
server context as first argument, methods checked, the per-address rate limit), builds the RFC
8414 metadata from what the endpoints contribute, and gives every endpoint that receives client
assertions its ``aud`` policy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask.typing import ResponseReturnValue

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext
    from ..settings import Settings

ENDPOINT_MODULES = (
    "token",
    "introspection",
    "revocation",
    "jwks",
    "metadata",
    "health",
    "authorize",
    "userinfo",
    "openid",
    "ciba",
    "par",
)

View = Callable[["ServerContext"], ResponseReturnValue]
Contribution = Callable[["ServerContext", "KeyRing"], dict[str, Any]]  # the ring being published


@dataclass(frozen=True)
class Endpoint:
    name: str  # unique; also the Flask endpoint name within our blueprints
    path: str | Callable[[Settings], str]  # under the prefix, or (callable) at the host root
    view: View
    methods: tuple[str, ...] = ("POST",)  # GET implies HEAD; anything else gets a JSON 405
    authenticates: bool = False  # receives client assertions (gets an aud policy)
    rate_limited: bool = True  # the per-address limit applies
    metadata: Contribution | None = None  # RFC 8414 members this endpoint contributes
    browser: bool = False  # a person's browser calls it: errors are HTML pages, not JSON
    feature: str | None = None  # mounted only when the app has this feature (extension._features)

    @property
    def at_root(self) -> bool:
        return not isinstance(self.path, str)


ENDPOINTS: dict[str, Endpoint] = {}


def register(endpoint: Endpoint) -> Endpoint:
    if endpoint.name in ENDPOINTS:
        raise RuntimeError(f"endpoint {endpoint.name!r} registered twice")
    ENDPOINTS[endpoint.name] = endpoint
    return endpoint


def load(features: frozenset[str] = frozenset()) -> tuple[Endpoint, ...]:
    """The endpoints this app serves: every registered one whose feature (if any) it has."""
    for module in ENDPOINT_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return tuple(e for e in ENDPOINTS.values() if e.feature is None or e.feature in features)
