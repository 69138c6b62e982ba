"""Token revocation (RFC 7009).

Steps: bounded form → authenticate the client → count it against its rate limit → read our own
token → it must be the client's own (RFC 7009 §2.1) → remember its ``jti`` as revoked in Redis
until the token's ``exp`` → 200. Unknown, malformed and expired tokens also get 200 (RFC 7009
§2.2): nothing to revoke.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Response, request

from .. import binding, claims as claim_rules, events
from ..client_auth import authenticate_caller
from ..errors import InvalidRequestError, JoseError, UnauthorizedClientError
from ..grants.users import revoke as revoke_grant
from ..tokens import access, refresh
from ..web import NO_STORE, read_form
from . import Endpoint, register

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext


def revocation_endpoint(ctx: ServerContext) -> Response:
    form = read_form(request, ctx.settings.max_body_bytes)
    client = authenticate_caller(ctx, request, form, "revocation", want="client")
    ctx.limits.count_client("revocation", client.client_id)
    token = form.get("token")
    if token is None:
        raise InvalidRequestError("token is required")
    # token_type_hint is only a hint (RFC 7009 §2.1): what the token is decides.
    if refresh.looks_like(token):
        revoke_refresh_token(ctx, token, client.client_id)
    else:
        revoke_own_token(ctx, token, client.client_id)
    response = Response(status=200)
    response.headers.update(NO_STORE)
    return response


def revoke_own_token(ctx: ServerContext, token: str, client_id: str) -> None:
    try:
        claims = access.read_own_token(ctx, token)
        claim_rules.check(claims, claim_rules.ClaimRules(leeway=0, required=("exp", "jti")))
    except (JoseError, claim_rules.ClaimError):
        return
    if claims.get("client_id") != client_id:
        # RFC 7009 §2.1: a client may revoke only the tokens issued to it.
        raise UnauthorizedClientError("the token was not issued to this client")
    ctx.store.revoke(claims["jti"], claims["exp"])
    binding.forget(ctx, claims)  # a symmetric PoP key outlives its token nowhere
    events.emit(events.token_revoked, client_id=client_id, jti=claims["jti"])


def revoke_refresh_token(ctx: ServerContext, token: str, client_id: str) -> None:
    """RFC 7009 §2.1: revoking a refresh token revokes its grant, with every access token of it."""
    try:
        claims = refresh.read(ctx, token)
    except JoseError:
        return
    if claims.client_id != client_id:
        raise UnauthorizedClientError("the token was not issued to this client")
    revoke_grant(ctx, claims.grant_id, "refresh token revoked by its client", client_id)


def _metadata(ctx: ServerContext, ring: KeyRing) -> dict[str, Any]:
    return {
        "revocation_endpoint": ctx.urls.url("/revoke"),
        "revocation_endpoint_auth_methods_supported": ctx.registry.auth_methods(),
        "revocation_endpoint_auth_signing_alg_values_supported": list(ctx.settings.assertion_algs),
    }


register(Endpoint("revocation", "/revoke", revocation_endpoint, authenticates=True, metadata=_metadata))
