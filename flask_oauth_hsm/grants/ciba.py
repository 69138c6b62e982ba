"""The CIBA grant: polling the token endpoint with ``auth_req_id`` (CIBA Core §10.1, §11).

Checks, in order: the ``auth_req_id`` names a request (else ``invalid_grant``); it was made by this
client (``invalid_grant``); it has not expired (``expired_token``); the client waited the interval
(``slow_down``, and the interval grows by 5 s); the user decided (``authorization_pending``). A
denial or an approval is then *taken* — GETDEL, so of concurrent polls exactly one gets the
tokens (or the denial) and every later poll gets ``invalid_grant``. The tokens are a user's
grant like the code flow's: access token (bound like at every grant), ID token, refresh token when
the client is registered for it; ``sub`` pairwise for pairwise clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..authz.claims import ClaimsRequest, userinfo_claims
from ..ciba import GRANT_TYPE, polling, records
from ..ciba.records import APPROVED, DENIED, CibaRecord
from ..errors import (
    AuthorizationPendingError,
    ExpiredTokenError,
    InvalidGrantError,
    InvalidRequestError,
    UserDeniedError,
)
from ..release import Release
from . import Grant, TokenRequest, register
from .targets import user_resource_servers
from .users import UserGrant, as_grant, new_grant_id, new_refresh

if TYPE_CHECKING:
    from ..server import ServerContext

MAX_AUTH_REQ_ID = 128  # ours are 43 characters


@register(GRANT_TYPE, feature="ciba")
def ciba(ctx: ServerContext, req: TokenRequest) -> Grant:
    auth_req_id = req.form.get("auth_req_id")
    if auth_req_id is None:
        raise InvalidRequestError("auth_req_id is required")
    if len(auth_req_id) > MAX_AUTH_REQ_ID:
        raise InvalidGrantError("unknown auth_req_id")
    handle = records.handle_of(auth_req_id)
    found = records.load(ctx.store, handle)
    if found is None:
        raise InvalidGrantError("unknown auth_req_id, or its tokens were issued already")
    record = found[0]
    if record.client_id != req.client.client_id:  # CIBA Core §11: issued to another client
        raise InvalidGrantError("unknown auth_req_id, or its tokens were issued already")
    if record.expired():
        raise ExpiredTokenError("the authentication request expired: start a new one")
    polling.poll(ctx.store, handle, record.ttl())
    if record.state not in (APPROVED, DENIED):
        raise AuthorizationPendingError("the user has not decided yet")
    taken = records.take(ctx.store, handle)  # of concurrent polls, exactly one gets it
    if taken is None:
        raise InvalidGrantError("unknown auth_req_id, or its tokens were issued already")
    if taken.state == DENIED:
        raise UserDeniedError("the user denied the request")
    return as_grant(ctx, _user_grant(ctx, req, taken))


def _user_grant(ctx: ServerContext, req: TokenRequest, record: CibaRecord) -> UserGrant:
    scope = frozenset(record.scope)
    audiences = user_resource_servers(ctx, list(record.resources), req.client)
    grant_id = new_grant_id()
    assert record.auth_time is not None  # set by the approval
    rt = new_refresh(
        ctx,
        req,
        grant_id,
        subject=record.subject,
        scope=scope,
        resources=record.resources,
        auth_time=record.auth_time,
        acr=record.acr,
        amr=record.amr,
    )
    # What the user approved on the device is the scope; its OpenID scopes release their claims at UserInfo.
    release = Release(userinfo=userinfo_claims(scope, ClaimsRequest()))
    return UserGrant(
        grant_id=grant_id,
        client=req.client,
        subject=record.subject,
        scope=scope,
        audiences=audiences,
        auth_time=record.auth_time,
        acr=record.acr,
        amr=record.amr,
        release=release,
        refresh=rt,
    )
