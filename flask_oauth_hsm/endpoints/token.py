"""Token endpoint (RFC 6749 §3.2).

Steps: bounded form → the proofs the request shows (DPoP, req_cnf: :mod:`flask_oauth_hsm.binding`)
→ authenticate the client → count it against its rate limit → the grant type (registered in
:mod:`flask_oauth_hsm.grants`) → the key the token is bound to → the grant decides → the binding
confirmed for its audiences → RFC 9068 access token signed in the token → no-store JSON (RFC 6749 §5.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Response, request

from .. import binding, events
from ..client_auth import authenticate_caller
from ..clients import Client
from ..errors import InvalidRequestError, UnauthorizedClientError, UnsupportedGrantTypeError
from ..grants import GRANTS, GrantType, TokenRequest, offered
from ..tokens import access
from ..web import Form, client_address, json_response, read_form
from . import Endpoint, register

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext

REPEATABLE = frozenset({"resource"})  # RFC 8707 §2


def token_endpoint(ctx: ServerContext) -> Response:
    form = read_form(request, ctx.settings.max_body_bytes, repeatable=REPEATABLE)
    proofs = binding.read_proofs(ctx, request, form)
    client = authenticate_caller(ctx, request, form, "token", want="client")
    assert isinstance(client, Client)
    ctx.limits.count_client("token", client.client_id)
    grant_type = grant_type_for(ctx, form, client)
    req = TokenRequest(
        form, client, grant_type.name, client_ip=_client_ip(ctx, client), binding=binding.bind(ctx, request, form, proofs, client)
    )
    grant = grant_type.handle(ctx, req)
    confirmation = req.binding.confirm(ctx, client, grant.audiences)
    issued = access.issue(ctx, client, grant, client_ip=req.client_ip, cnf=dict(confirmation.cnf or {}))
    confirmation.keep(ctx, issued)
    more = grant.complete(ctx, issued) if grant.complete is not None else {}  # refresh and ID tokens, grant state
    events.emit(
        events.token_issued,
        client_id=client.client_id,
        grant_type=grant_type.name,
        jti=issued.claims["jti"],
        aud=issued.claims["aud"],
        scope=issued.claims["scope"],
        binding=req.binding.method,
    )
    body: dict[str, Any] = {
        "access_token": issued.token,
        "token_type": confirmation.token_type,
        "expires_in": issued.expires_in,
        **confirmation.response,
    }
    if issued.claims["scope"]:
        body["scope"] = issued.claims["scope"]
    body.update(more)
    return json_response(body, headers=dict(confirmation.headers) or None)


def grant_type_for(ctx: ServerContext, form: Form, client: Client) -> GrantType:
    name = form.get("grant_type")
    if name is None:
        raise InvalidRequestError("grant_type is required")
    grant_type = GRANTS.get(name)
    if grant_type is None or (grant_type.feature is not None and grant_type.feature not in ctx.features):
        raise UnsupportedGrantTypeError("this grant_type is not supported")
    if name not in client.grant_types:
        raise UnauthorizedClientError("this client may not use this grant type")
    if grant_type.confidential_only and client.token_endpoint_auth_method == "none":
        raise UnauthorizedClientError("this grant type is for confidential clients only")
    return grant_type


def _client_ip(ctx: ServerContext, client: Client) -> str | None:
    if not client.cip_hash:  # parsing addresses costs; only cip_hash needs it
        return None
    return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), ctx.trusted_networks)


def _metadata(ctx: ServerContext, ring: KeyRing) -> dict[str, Any]:
    s = ctx.settings
    meta: dict[str, Any] = {
        "token_endpoint": ctx.urls.url("/token"),
        "grant_types_supported": offered(ctx.features),
        "token_endpoint_auth_methods_supported": ctx.registry.auth_methods(),
        "token_endpoint_auth_signing_alg_values_supported": list(s.assertion_algs),
    }
    if ring.decryption:
        meta["token_endpoint_auth_encryption_alg_values_supported"] = ring.decryption_algs
    meta.update(binding.metadata(ctx))
    return meta


register(Endpoint("token", "/token", token_endpoint, authenticates=True, metadata=_metadata))
