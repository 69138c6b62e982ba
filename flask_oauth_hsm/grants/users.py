"""What a user's grant (authorization code, refresh token) issues besides the access token, and
the grant's record in Redis.

A user's access token carries ``sub`` (the user), ``auth_time``, ``acr``/``amr`` when the host
supplied them, ``scope``, ``client_id`` and ``grant_id`` — no personal data. With the ``openid``
scope it is also meant for our UserInfo endpoint (``aud`` includes its URL), and an ID token goes
with it. A client registered for ``refresh_token`` gets a refresh token (tokens/refresh.py).

The grant's record (single_use.py) is written after everything is signed and before anything is
returned: created by the code's redemption (already revoked when a concurrent second redemption
got there first) and rotated by each refresh. Introspection and UserInfo read it: a revoked grant's
access tokens are inactive, and it holds what the user agreed to release.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from .. import clock, events, subjects
from ..clients import Client, ResourceServer
from ..errors import InvalidGrantError
from ..release import Release, released
from ..store.single_use import REUSED, REVOKED, ROTATED
from ..tokens import id_token, refresh
from ..tokens.refresh import RefreshClaims
from . import Grant, TokenRequest

if TYPE_CHECKING:
    from ..server import ServerContext
    from ..tokens.access import IssuedToken


@dataclass(frozen=True)
class UserGrant:
    grant_id: str
    client: Client
    subject: str
    scope: frozenset[str]  # of this access token
    audiences: tuple[ResourceServer, ...]  # of this access token
    auth_time: int
    acr: str | None
    amr: tuple[str, ...]
    release: Release
    nonce: str | None = None  # the authorization request's (code flow only, OIDC Core §12.2)
    refresh: RefreshClaims | None = None  # the refresh token to issue with this access token
    presented: RefreshClaims | None = None  # the refresh token this request rotates out


def new_grant_id() -> str:
    return secrets.token_urlsafe(18)


def new_refresh(
    ctx: ServerContext,
    req: TokenRequest,
    grant_id: str,
    *,
    subject: str,
    scope: frozenset[str],
    resources: tuple[str, ...],
    auth_time: int,
    acr: str | None,
    amr: tuple[str, ...],
) -> RefreshClaims | None:
    """The refresh token a new grant gets, if its client may refresh. A public client's is bound to
    the key its access token is bound to (RFC 9449 §5: DPoP; RFC 8705 §4: the certificate)."""
    if "refresh_token" not in req.client.grant_types:
        return None
    now = int(clock.now())
    public = req.client.public
    return refresh.RefreshClaims(
        grant_id=grant_id,
        token_id=refresh.new_id(),
        client_id=req.client.client_id,
        subject=subject,
        scope=scope,
        resources=resources,
        auth_time=auth_time,
        acr=acr,
        amr=amr,
        issued_at=now,
        expires_at=now + ctx.settings.refresh_token_lifetime,
        jkt=req.binding.jkt if public else None,
        x5t=_certificate(req) if public else None,
    )


def _certificate(req: TokenRequest) -> str | None:
    thumbprint = req.binding.cnf.get("x5t#S256") if req.binding.cnf else None
    return thumbprint if isinstance(thumbprint, str) else None


def as_grant(ctx: ServerContext, ug: UserGrant) -> Grant:
    claims: dict[str, Any] = {"auth_time": ug.auth_time, "grant_id": ug.grant_id}
    if ug.acr is not None:
        claims["acr"] = ug.acr
    if ug.amr:
        claims["amr"] = list(ug.amr)
    also_for = (ctx.endpoint_url("userinfo"),) if "openid" in ug.scope else ()
    return Grant(
        subject=subjects.for_client(ctx, ug.client, ug.subject),
        scope=ug.scope,
        audiences=ug.audiences,
        claims=claims,
        also_for=also_for,
        complete=partial(_complete, ug),
    )


def record_ttl(ctx: ServerContext, expires_at: int | None) -> int:
    """How long Redis keeps the grant's record: at least as long as its access tokens live, and
    with a refresh token until it would expire (idle or absolute lifetime, whichever is first)."""
    floor = ctx.settings.access_token_lifetime + ctx.settings.clock_skew
    if expires_at is None:
        return floor
    return int(max(floor, min(expires_at - clock.now(), ctx.settings.refresh_token_idle_lifetime)))


def _complete(ug: UserGrant, ctx: ServerContext, issued: IssuedToken) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if "openid" in ug.scope:
        body["id_token"] = id_token.issue(
            ctx,
            ug.client,
            subject=issued.claims["sub"],
            auth_time=ug.auth_time,
            acr=ug.acr,
            amr=ug.amr,
            nonce=ug.nonce,
            access_token=issued.token,
            extra=released(ctx, ug.subject, ug.release.id_token),
        )
    if ug.refresh is not None:
        body["refresh_token"] = refresh.mint(ctx, ug.refresh)
    _record(ctx, ug)
    return body


def _record(ctx: ServerContext, ug: UserGrant) -> None:
    ttl = record_ttl(ctx, ug.refresh.expires_at if ug.refresh else None)
    release = ug.release
    if ug.client.subject_type == "pairwise":  # the grant's record keeps the user's own subject (subjects.py)
        release = replace(release, subject=ug.subject)
    if ug.presented is None:
        # False: a concurrent second redemption of the code revoked the grant first. This, the one
        # successful redemption, still answers (RFC 6749 §4.1.2), with tokens that are already dead.
        ctx.store.grant_create(ug.grant_id, ug.refresh.token_id if ug.refresh else None, release.encode(), ttl)
        return
    assert ug.refresh is not None
    outcome = ctx.store.grant_rotate(ug.grant_id, ug.presented.token_id, ug.refresh.token_id, ttl)
    if outcome == ROTATED:
        return
    if outcome == REUSED:
        # RFC 9700 §4.14.2: a rotated-out refresh token came back; someone holds a copy. The
        # script has revoked the grant: every access and refresh token descended from it.
        events.emit(
            events.replay_detected,
            endpoint="token",
            client_id=ug.client.client_id,
            reason="refresh token used again: grant revoked",
        )
        raise InvalidGrantError("the refresh token was already used: the grant is revoked")
    if outcome == REVOKED:
        raise InvalidGrantError("the grant was revoked")
    # Unknown: expired, or Redis lost it (a flush, a failover without the last writes). Fail closed.
    raise InvalidGrantError("the refresh token is no longer valid")


def revoke(ctx: ServerContext, grant_id: str, reason: str, client_id: str | None = None) -> None:
    ctx.store.grant_revoke(grant_id, ctx.settings.access_token_lifetime + ctx.settings.clock_skew)
    events.emit(events.grant_revoked, client_id=client_id, reason=reason)
