"""Where an authorization request's parameters come from.

The query (or form) of the request itself, or: pushed authorization requests (RFC 9126:
``request_uri`` naming a record in Redis) and request objects (RFC 9101: a signed ``request``
JWT) are further *sources* of the same parameters: each registers a resolver in :data:`SOURCES`
under the parameter that selects it. A resolver receives the client (already identified by the
``client_id`` of the query, RFC 9126 §4, RFC 9101 §5) and the raw parameters, does its own checks
(single use, signature, ``client_id`` match) and returns the parameters to validate. Everything
after that — redirect URI, PKCE, scope, the pending authorization — is the same pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..clients import Client
from ..errors import InvalidRequestError, OAuthError, RequestNotSupportedError, RequestUriNotSupportedError
from ..web import Form

if TYPE_CHECKING:
    from ..server import ServerContext

Resolver = Callable[["ServerContext", Client, Form], Form]
SOURCES: dict[str, Resolver] = {}  # "request_uri" (PAR, pushed.py), "request" (JAR, jar.py)
# Checks of the raw request before any source resolves it (PAR required: pushed.py); raise OAuthError.
Gate = Callable[["ServerContext", Client, Form], None]
GATES: list[Gate] = []
_UNSUPPORTED: dict[str, type[OAuthError]] = {"request": RequestNotSupportedError, "request_uri": RequestUriNotSupportedError}


def resolve(ctx: ServerContext, client: Client, raw: Form) -> Form:
    """The parameters of the request: ``raw`` itself, or what a registered source makes of it."""
    for gate in GATES:
        gate(ctx, client, raw)
    present = [name for name in _UNSUPPORTED if name in raw]
    if not present:
        return raw
    if len(present) > 1:
        raise InvalidRequestError("use request or request_uri, not both")
    resolver = SOURCES.get(present[0])
    if resolver is None:
        raise _UNSUPPORTED[present[0]](f"the {present[0]} parameter is not supported")
    return resolver(ctx, client, raw)
