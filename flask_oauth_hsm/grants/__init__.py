"""Grant types at the token endpoint (RFC 6749 §4), as registered units.

A grant is a plain function ``handle(ctx, request) -> Grant`` registered with :func:`register`
(one line in :data:`GRANT_MODULES`): it checks its own parameters and says what to issue; the
token endpoint does everything around it (client authentication, issuing, the response).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..binding import BEARER, Binding
from ..clients import Client, ResourceServer
from ..web import Form

if TYPE_CHECKING:
    from ..server import ServerContext
    from ..tokens.access import IssuedToken

# Each module registers its grant(s) when imported. Adding a grant: one module, one line here.
GRANT_MODULES = ("client_credentials", "authorization_code", "refresh_token", "ciba")


@dataclass(frozen=True)
class TokenRequest:
    """A token request after client authentication, passed from step to step."""

    form: Form
    client: Client
    grant_type: str
    client_ip: str | None = None  # known only when something needs it (cip_hash)
    binding: Binding = BEARER  # the key the token will be bound to (binding/: cnf, jkt), for every grant


@dataclass(frozen=True)
class Grant:
    """What a grant decided: who the token is about, for what, for whom."""

    subject: str  # RFC 9068 §2.2 sub: the resource owner, or the client itself
    scope: frozenset[str]
    audiences: tuple[ResourceServer, ...]
    claims: Mapping[str, Any] = field(default_factory=dict)  # more access-token claims (auth_time, acr, amr)
    also_for: tuple[str, ...] = ()  # audiences served by this server itself (UserInfo), besides resource servers
    # A user's grant issues more than the access token (refresh token, ID token) and records its
    # state once the access token is signed: ``complete`` does that and returns response members.
    complete: Callable[[ServerContext, IssuedToken], dict[str, Any]] | None = None


Handler = Callable[["ServerContext", TokenRequest], Grant]


@dataclass(frozen=True)
class GrantType:
    name: str
    handle: Handler
    confidential_only: bool = True  # RFC 6749 §4.4: e.g. client credentials
    feature: str | None = None  # offered only when the app has this feature (extension._features)


GRANTS: dict[str, GrantType] = {}


def register(name: str, *, confidential_only: bool = True, feature: str | None = None) -> Callable[[Handler], Handler]:
    def decorator(handle: Handler) -> Handler:
        GRANTS[name] = GrantType(name, handle, confidential_only, feature)
        return handle

    return decorator


def offered(features: frozenset[str]) -> list[str]:
    """The grant types this app serves (metadata ``grant_types_supported``)."""
    return sorted(g.name for g in GRANTS.values() if g.feature is None or g.feature in features)


for _module in GRANT_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
