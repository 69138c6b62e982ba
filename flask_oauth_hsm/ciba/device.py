"""The host's side of CIBA: the requests waiting for a user, and the user's decision.

``oauth.ciba`` (an instance of :class:`CibaDevice` on every ``OAuthHSM``) is called by the host
inside a request or app context of the app the extension serves — typically from the page or the
push-notification callback of the user's authentication device::

    for req in oauth.ciba.pending(user.subject): ...      # CibaRequest: client, scope, binding_message
    oauth.ciba.approve(req.handle, user=user)              # the user approved (auth_time, acr, amr)
    oauth.ciba.deny(req.handle, user=user)

A decision on a request that is gone, expired or already decided raises :class:`RequestGone`; a
user deciding another user's request raises :class:`NotYourRequest`. Both are programming or race
conditions of the host, never the client's business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import clock, events
from ..server import current
from . import records
from .records import APPROVED, DENIED, PENDING, CibaRequest

if TYPE_CHECKING:
    from ..server import ServerContext
    from ..users import User


class RequestGone(Exception):
    """The request expired, was decided already, or its tokens were taken."""


class NotYourRequest(Exception):
    """The user deciding is not the user the request names."""


class CibaDevice:
    def pending(self, subject: str) -> list[CibaRequest]:
        """The user's requests still waiting for a decision, oldest first."""
        ctx = current()
        shown = []
        for handle in records.handles_of(ctx.store, subject):
            found = records.load(ctx.store, handle)
            if found is not None and found[0].state == PENDING and not found[0].expired() and found[0].subject == subject:
                shown.append(found[0].shown(handle, _client_name(ctx, found[0].client_id)))
        return shown

    def request(self, handle: str) -> CibaRequest | None:
        """One request by its handle (any state), or None when it is gone."""
        ctx = current()
        found = records.load(ctx.store, handle)
        return found[0].shown(handle, _client_name(ctx, found[0].client_id)) if found is not None else None

    def approve(self, handle: str, *, user: User) -> None:
        """The user approved: the client's next poll gets tokens for ``user`` (auth_time, acr, amr)."""
        self._decide(handle, user, state=APPROVED, auth_time=int(user.auth_time), acr=user.acr, amr=tuple(user.amr))

    def deny(self, handle: str, *, user: User) -> None:
        """The user refused: the client's next poll gets access_denied."""
        self._decide(handle, user, state=DENIED)

    def _decide(self, handle: str, user: User, **decision: object) -> None:
        ctx = current()
        found = records.load(ctx.store, handle)
        if found is None or found[0].state != PENDING or found[0].expired():
            raise RequestGone("this request is no longer waiting for a decision")
        record, raw = found
        if record.subject != user.subject:
            raise NotYourRequest("this request is for another user")
        if user.auth_time > clock.now() + ctx.settings.clock_skew:
            raise ValueError("User.auth_time is in the future")
        if not records.decide(ctx.store, handle, record, raw, **decision):
            raise RequestGone("this request was decided or taken meanwhile")
        signal = events.authorization_granted if decision["state"] == APPROVED else events.authorization_denied
        events.emit(signal, client_id=record.client_id, reason="ciba")


def _client_name(ctx: ServerContext, client_id: str) -> str | None:
    client = ctx.registry.client(client_id)
    return client.client_name if client is not None else None


__all__ = ["DENIED", "CibaDevice", "NotYourRequest", "RequestGone"]
