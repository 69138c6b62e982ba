"""The UserInfo endpoint (OpenID Connect Core §5.3).

Accepts our own access tokens, sent as ``Authorization: Bearer`` (RFC 6750 §2.1), whose scope
includes ``openid`` and whose ``aud`` names this endpoint (user tokens with ``openid`` do: a token
meant only for a resource server cannot be used here, so a resource server cannot read the
client's user data with a token it received). The token must be active exactly as at
introspection — not expired, not revoked, its grant not revoked. The answer is ``sub`` and the
claims the user agreed to release to this client (OIDC scopes and ``claims.userinfo``), read from
the host by subject; nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Request, Response, request

from .. import claims as claim_rules
from ..errors import InsufficientScopeError, InvalidTokenError, JoseError
from ..release import Release, released
from ..tokens import access
from ..web import json_response
from . import Endpoint, register

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext

MAX_TOKEN = 64 * 1024


def userinfo_endpoint(ctx: ServerContext) -> Response:
    claims = _active_claims(ctx, _bearer(request))
    scope = claims.get("scope")
    if not isinstance(scope, str) or "openid" not in scope.split(" "):
        raise InsufficientScopeError(
            "the access token lacks the openid scope",
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="openid"'},
        )
    state = ctx.store.grant_state(claims["grant_id"])
    if state is None or state.revoked:
        raise _invalid("the access token is not active")
    body: dict[str, Any] = {"sub": claims["sub"]}
    release = Release.decode(state.release)  # its subject: the user's own, when sub is pairwise
    body.update(released(ctx, release.subject or claims["sub"], release.userinfo))
    return json_response(body)


def _bearer(req: Request) -> str:
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > MAX_TOKEN:
        raise _invalid("use Authorization: Bearer <access token>")
    return token


def _active_claims(ctx: ServerContext, token: str) -> dict[str, Any]:
    try:
        claims = access.read_own_token(ctx, token)
    except JoseError:
        raise _invalid("the access token is not valid") from None
    rules = claim_rules.ClaimRules(
        leeway=ctx.settings.clock_skew, expiry_leeway=0, audience=ctx.urls.url("/userinfo"), required=("exp", "iat", "jti", "sub")
    )
    try:
        claim_rules.check(claims, rules)
    except claim_rules.ClaimError:
        raise _invalid("the access token is not valid here") from None
    if not isinstance(claims.get("grant_id"), str) or not isinstance(claims["sub"], str):
        raise _invalid("the access token is not a user's")
    if not ctx.store.vouches_for(claims["jti"], claims["iat"], ctx.settings.access_token_lifetime):
        raise _invalid("the access token is not active")
    return claims


def _invalid(description: str) -> InvalidTokenError:
    # RFC 6750 §3: the challenge names the error; the description is our own fixed sentence.
    challenge = f'Bearer error="invalid_token", error_description="{description}"'
    return InvalidTokenError(description, headers={"WWW-Authenticate": challenge})


def _metadata(ctx: ServerContext, ring: KeyRing) -> dict[str, Any]:
    return {"userinfo_endpoint": ctx.urls.url("/userinfo")}


register(Endpoint("userinfo", "/userinfo", userinfo_endpoint, methods=("GET", "POST"), feature="users", metadata=_metadata))
