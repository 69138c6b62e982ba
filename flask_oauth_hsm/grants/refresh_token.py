"""The refresh token grant (RFC 6749 §6, RFC 9700 §4.14, RFC 8707 §2.2).

The token is decrypted in the HSM (tokens/refresh.py) and must belong to this client, be within
its absolute and idle lifetimes, and match a proof-of-possession binding (RFC 9449 §5). The
requested scope and resources may only narrow the grant's. The new access token and refresh token
are signed and encrypted first; then the grant's record rotates in one atomic step: a token that
is not the grant's current one revokes the whole grant (reuse detection), a grant Redis no longer
knows fails closed. Errors never say more than ``invalid_grant``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import clock
from ..errors import InvalidGrantError, InvalidRequestError, JoseError
from ..release import Release
from ..tokens import refresh
from . import Grant, TokenRequest, register
from .targets import narrow
from .users import UserGrant, as_grant

if TYPE_CHECKING:
    from ..server import ServerContext


@register("refresh_token", confidential_only=False, feature="users")
def refresh_token(ctx: ServerContext, req: TokenRequest) -> Grant:
    token = req.form.get("refresh_token")
    if token is None:
        raise InvalidRequestError("refresh_token is required")
    try:
        presented = refresh.read(ctx, token)
    except JoseError:
        raise InvalidGrantError("the refresh token is not valid") from None
    _check(ctx, req, presented)
    audiences, scope = narrow(ctx, req.form, req.client, presented.resources, presented.scope)  # never wider
    release = _release(ctx, presented.grant_id) if "openid" in scope else Release()
    ug = UserGrant(
        grant_id=presented.grant_id,
        client=req.client,
        subject=presented.subject,
        scope=scope,
        audiences=audiences,
        auth_time=presented.auth_time,
        acr=presented.acr,
        amr=presented.amr,
        release=release,
        refresh=presented.successor(int(clock.now())),
        presented=presented,
    )
    return as_grant(ctx, ug)


def _release(ctx: ServerContext, grant_id: str) -> Release:
    """What the user agreed to put in ID tokens (only read when one is issued)."""
    state = ctx.store.grant_state(grant_id)
    return Release.decode(state.release) if state is not None else Release()


def _check(ctx: ServerContext, req: TokenRequest, presented: refresh.RefreshClaims) -> None:
    if presented.client_id != req.client.client_id:  # RFC 6749 §6: bound to the client
        raise InvalidGrantError("the refresh token was issued to another client")
    now = clock.now()
    if now >= presented.expires_at:
        raise InvalidGrantError("the refresh token has expired")
    if now >= presented.issued_at + ctx.settings.refresh_token_idle_lifetime:
        raise InvalidGrantError("the refresh token has expired (unused for too long)")
    if presented.jkt is not None and req.binding.jkt != presented.jkt:
        raise InvalidGrantError("the refresh token is bound to another proof-of-possession key")
    if presented.x5t is not None and (req.binding.cnf or {}).get("x5t#S256") != presented.x5t:  # RFC 8705 §4
        raise InvalidGrantError("the refresh token is bound to another client certificate")
