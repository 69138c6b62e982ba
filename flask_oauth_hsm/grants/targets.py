"""Resources (RFC 8707) and scope (RFC 6749 §3.3): what a token may be for, shared by grants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..clients import Client, ResourceServer, parse_scope, valid_resource_uri
from ..errors import InvalidScopeError, InvalidTargetError

if TYPE_CHECKING:
    from ..server import ServerContext

MAX_RESOURCES = 8


def resource_servers(ctx: "ServerContext", requested: Sequence[str], client: Client) -> tuple[ResourceServer, ...]:
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
