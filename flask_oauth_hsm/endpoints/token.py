"""Token endpoint (RFC 6749 §3.2) with the client credentials grant (RFC 6749 §4.4).

Steps: POST only → bounded form → authenticate the client → grant type → scope (RFC 6749 §3.3)
→ resources (RFC 8707) → RFC 9068 access token signed in the token → no-store JSON.
"""

from __future__ import annotations

from flask import request

from .. import access_tokens, events
from ..errors import (
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from ..http import Form, client_address, json_response, read_form, require_post
from ..registry import Client, ResourceServer, parse_scope, valid_resource_uri
from .common import authenticate_caller

CLIENT_CREDENTIALS = "client_credentials"
MAX_RESOURCES = 8


def token_endpoint():
    from ..extension import current_state

    state = current_state()
    require_post(request)
    form = read_form(request, state.settings.max_body_bytes, repeatable=frozenset({"resource"}))
    client = authenticate_caller(state, form, "token", want="client")
    check_grant_type(form, client)
    audiences = requested_resources(state, form, client)
    scope = requested_scope(form, client, audiences)
    ip = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), state.trusted_networks) if client.cip_hash else None
    issued = access_tokens.issue(state, client, scope, audiences, client_ip=ip)
    events.emit(events.token_issued, client_id=client.client_id, jti=issued.claims["jti"],
                aud=issued.claims["aud"], scope=issued.claims["scope"])
    body = {"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in}
    if issued.claims["scope"]:
        body["scope"] = issued.claims["scope"]
    return json_response(body)


def check_grant_type(form: Form, client: Client) -> None:
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise InvalidRequestError("grant_type is required")
    if grant_type != CLIENT_CREDENTIALS:
        raise UnsupportedGrantTypeError(f"grant_type {grant_type[:40]!r} is not supported")
    if grant_type not in client.grant_types:
        raise UnauthorizedClientError("this client may not use the client_credentials grant")


def requested_resources(state, form: Form, client: Client) -> list[ResourceServer]:
    """RFC 8707 §2: each ``resource`` an absolute URI, one of the client's; default: its first."""
    resources = form.getlist("resource") or list(client.resources[:1])
    if not resources:
        raise InvalidTargetError("no resource requested and the client has no default resource")
    if len(resources) > MAX_RESOURCES or len(set(resources)) != len(resources):
        raise InvalidTargetError("too many or repeated resource values")
    servers = []
    for resource in resources:
        # The client's resources were validated at registration: only strangers need parsing.
        server = state.registry.resource_server_for(resource) if resource in client.resources else None
        if server is None:
            if not valid_resource_uri(resource):
                raise InvalidTargetError("resource must be an absolute URI without a fragment")
            raise InvalidTargetError("this client may not request that resource")
        servers.append(server)
    return servers


def requested_scope(form: Form, client: Client, audiences: list[ResourceServer]) -> frozenset[str]:
    """RFC 6749 §3.3: a subset of the client's scope (default: all of it) the audiences accept."""
    raw = form.get("scope")
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
