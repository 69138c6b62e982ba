"""The authorization code grant (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 8707 §2.2).

Checks, in order: the code names a record (a tombstone instead: a second redemption, which
revokes the grant the first created, RFC 6749 §4.1.2); it was issued to this client; it has not
expired; the redirect URI is the one of the authorization request; the PKCE verifier matches; a
proof-of-possession binding matches (RFC 9449 §10). Only then is it consumed — atomically, so of
concurrent redemptions exactly one wins and the others revoke what it got. ``resource`` may narrow
the audiences to a subset of those authorized, ``scope`` the scope.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import clock, events
from ..authz import pkce
from ..errors import InvalidGrantError, InvalidRequestError
from ..tokens import codes
from ..tokens.codes import CodeRecord
from . import Grant, TokenRequest, register
from .targets import narrow
from .users import UserGrant, as_grant, new_grant_id, new_refresh, revoke

if TYPE_CHECKING:
    from ..server import ServerContext


@register("authorization_code", confidential_only=False, feature="users")
def authorization_code(ctx: ServerContext, req: TokenRequest) -> Grant:
    code = req.form.get("code")
    if code is None:
        raise InvalidRequestError("code is required")
    found = codes.find(ctx, code)
    if found.used_by is not None:
        _used_again(ctx, req, found.used_by)
    if found.record is None:
        raise InvalidGrantError("unknown or expired authorization code")
    record = found.record
    _check(req, record)
    ug = _user_grant(ctx, req, record, new_grant_id())
    consumed = codes.consume(ctx, code, ug.grant_id)
    if consumed.used_by is not None:  # another redemption won the race
        _used_again(ctx, req, consumed.used_by)
    if consumed.record is None:
        raise InvalidGrantError("unknown or expired authorization code")
    return as_grant(ctx, ug)


def _used_again(ctx: ServerContext, req: TokenRequest, grant_id: str) -> None:
    revoke(ctx, grant_id, "authorization code used again", req.client.client_id)
    events.emit(
        events.replay_detected,
        endpoint="token",
        client_id=req.client.client_id,
        reason="authorization code used again: grant revoked",
    )
    raise InvalidGrantError("the authorization code was already used")


def _check(req: TokenRequest, record: CodeRecord) -> None:
    if record.client_id != req.client.client_id:  # RFC 6749 §4.1.3
        raise InvalidGrantError("the authorization code was issued to another client")
    if clock.now() >= record.expires_at:
        raise InvalidGrantError("unknown or expired authorization code")
    redirect_uri = req.form.get("redirect_uri")
    if (record.redirect_uri_given or redirect_uri is not None) and redirect_uri != record.redirect_uri:
        raise InvalidGrantError("redirect_uri differs from the authorization request")
    pkce.verify(req.form.get("code_verifier"), record.code_challenge)
    if record.dpop_jkt is not None and req.binding.jkt != record.dpop_jkt:
        raise InvalidGrantError("the code is bound to another proof-of-possession key")


def _user_grant(ctx: ServerContext, req: TokenRequest, record: CodeRecord, grant_id: str) -> UserGrant:
    audiences, scope = narrow(ctx, req.form, req.client, record.resources, record.scope)
    rt = new_refresh(
        ctx,
        req,
        grant_id,
        subject=record.subject,
        scope=record.scope,
        resources=record.resources,
        auth_time=record.auth_time,
        acr=record.acr,
        amr=record.amr,
    )
    return UserGrant(
        grant_id=grant_id,
        client=req.client,
        subject=record.subject,
        scope=scope,
        audiences=audiences,
        auth_time=record.auth_time,
        acr=record.acr,
        amr=record.amr,
        release=record.release,
        nonce=record.nonce,
        refresh=rt,
    )
