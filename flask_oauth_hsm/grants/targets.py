"""Resources (RFC 8707) and scope (RFC 6749 §3.3): what a token may be for, shared by grants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..clients import Client, ResourceServer, parse_scope, valid_resource_uri
from ..errors import InvalidScopeError, InvalidTargetError
from ..web import Form

if TYPE_CHECKING:
    from ..server import ServerContext

MAX_RESOURCES = 8


def resource_servers(ctx: ServerContext, requested: Sequence[str], client: Client) -> tuple[ResourceServer, ...]:
    """RFC 8707 §2: each ``resource`` an absolute URI, one of the client's; default: its first."""
    resources = list(requested) or list(client.resources[:1])
    if not resources:
        raise InvalidTargetError("no resource requested and the client has no default resource")
    if len(resources) > MAX_RESOURCES or len(set(resources)) != len(resources):
        raise InvalidTargetError("too many or repeated resource values")
    servers = []
    for resource in resources:
        # The client's resources were validated at registration: only strangers need parsing.
        server = ctx.registry.resource_server_for(resource) if resource in client.resources else None
        if server is None:
            if not valid_resource_uri(resource):
                raise InvalidTargetError("resource must be an absolute URI without a fragment")
            raise InvalidTargetError("this client may not request that resource")
        servers.append(server)
    return tuple(servers)


def scope_for(raw: str | None, client: Client, audiences: Sequence[ResourceServer]) -> frozenset[str]:
    """RFC 6749 §3.3: a subset of the client's scope (default: all of it) the audiences accept."""
    try:
        scope = parse_scope(raw) if raw is not None else client.scope
    except ValueError:
        raise InvalidScopeError("malformed scope") from None
    if not scope <= client.scope:
        raise InvalidScopeError("scope exceeds what the client is registered for")
    accepted = frozenset().union(*(rs.scope for rs in audiences))
    if raw is None:
        return scope & accepted
    if not scope <= accepted:
        raise InvalidScopeError("scope not accepted by the requested resource")
    return scope


# --- a user's grant (authorization code, refresh token) ----------------------------------------------

# OpenID Connect scopes are the authorization server's own (OIDC Core §5.4, §3.1.2.1): they ask
# for the ID token and UserInfo, never for a resource server.
OIDC_SCOPES = frozenset({"openid", "profile", "email", "address", "phone"})


def user_resource_servers(ctx: ServerContext, requested: Sequence[str], client: Client) -> tuple[ResourceServer, ...]:
    """Like :func:`resource_servers`, but a client without resources may ask for OpenID only."""
    if requested or client.resources:
        return resource_servers(ctx, requested, client)
    return ()


def user_scope(raw: str | None, client: Client, audiences: Sequence[ResourceServer]) -> frozenset[str]:
    """RFC 6749 §3.3 for a user's grant: within the client's scope; OpenID scopes need no
    resource server, every other value must be accepted by one of the audiences. Without a
    ``scope``, the default is what :func:`scope_for` gives (OpenID only when asked for)."""
    if raw is None:
        return scope_for(None, client, audiences)
    try:
        scope = parse_scope(raw)
    except ValueError:
        raise InvalidScopeError("malformed scope") from None
    if not scope <= client.scope:
        raise InvalidScopeError("scope exceeds what the client is registered for")
    accepted = frozenset().union(*(rs.scope for rs in audiences))
    if not (scope - OIDC_SCOPES) <= accepted:
        raise InvalidScopeError("scope not accepted by the requested resource")
    if not audiences and "openid" not in scope:
        raise InvalidTargetError("no resource requested and the client has no default resource")
    return scope


def narrow(
    ctx: ServerContext, form: Form, client: Client, resources: Sequence[str], scope: frozenset[str]
) -> tuple[tuple[ResourceServer, ...], frozenset[str]]:
    """A token request under a user's grant (code or refresh): ``resource`` may name a subset of
    the grant's resources (RFC 8707 §2.2), ``scope`` a subset of its scope (RFC 6749 §6); the
    default is all of the resources and the part of the scope they accept."""
    requested = form.getlist("resource")
    if not set(requested) <= set(resources):
        raise InvalidTargetError("resource was not part of the grant")
    audiences = user_resource_servers(ctx, requested or list(resources), client) if resources else ()
    narrowed_scope = user_scope(form["scope"], client, audiences) if "scope" in form else narrowed(scope, audiences)
    if not narrowed_scope <= scope:
        raise InvalidScopeError("scope exceeds what the user authorized")
    return audiences, narrowed_scope


def narrowed(scope: frozenset[str], audiences: Sequence[ResourceServer]) -> frozenset[str]:
    """The part of a grant's ``scope`` that ``audiences`` (a subset of its resources) accept,
    with its OpenID scopes: the default scope when a token request narrows the resources."""
    accepted = frozenset().union(*(rs.scope for rs in audiences))
    return frozenset(s for s in scope if s in OIDC_SCOPES or s in accepted)
