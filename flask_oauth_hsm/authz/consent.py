"""Consent: what the user is asked, what they decided, and what is remembered.

A :class:`Decision` is the grant a user approves: the scope, the resources, and which of their
claims may be released to whom (:class:`~flask_oauth_hsm.release.Release`). A resource server's
claims are offered only when its registry entry lists them in ``introspection_claims``; they are
pre-selected when the request asked for them (the ``claims`` parameter's ``introspection``
member), and the user may change that on the page.

Remembered consent (``OAUTH_HSM_CONSENT_LIFETIME``, per user and client): a later request within
what was approved skips the page. It lives in Redis; losing it only means asking again.
The consent form carries a CSRF token: an HMAC, keyed with the pending request's own secret, of
the subject the page was shown to, so neither another site nor another signed-in user can submit it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..clients import Client, ResourceServer
from ..errors import BrowserError
from ..release import Release
from ..users import User
from ..web import Form
from .claims import userinfo_claims
from .pending import Pending
from .request import AuthorizationRequest

if TYPE_CHECKING:
    from ..server import ServerContext

NAMESPACE = "consent"


@dataclass(frozen=True)
class Decision:
    scope: frozenset[str]
    resources: frozenset[str]
    release: Release

    def covers(self, other: Decision) -> bool:
        return other.scope <= self.scope and other.resources <= self.resources and self.release.covers(other.release)

    def to_json(self) -> dict[str, Any]:
        return {"scope": sorted(self.scope), "resources": sorted(self.resources), "release": self.release.to_json()}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Decision:
        return cls(frozenset(doc["scope"]), frozenset(doc["resources"]), Release.from_json(doc["release"]))


def audiences(ctx: ServerContext, req: AuthorizationRequest) -> list[ResourceServer]:
    """The request's resource servers (each was checked when the request was validated)."""
    return [rs for rs in (ctx.registry.resource_server_for(r) for r in req.resources) if rs is not None]


def wanted(ctx: ServerContext, req: AuthorizationRequest) -> Decision:
    """What the request asks for, within what each party is entitled to."""
    introspection = {rs.client_id: req.claims.introspection & frozenset(rs.introspection_claims) for rs in audiences(ctx, req)}
    userinfo = userinfo_claims(req.scope, req.claims) if req.openid else frozenset()
    id_token = req.claims.id_token if req.openid else frozenset()
    return Decision(req.scope, frozenset(req.resources), Release(introspection, userinfo, id_token))


def from_form(ctx: ServerContext, req: AuthorizationRequest, form: Form) -> Decision:
    """The approved decision: the request, with the resource servers' claims the user left ticked
    (never more than each is entitled to, whatever the form says)."""
    asked = wanted(ctx, req)
    introspection = {
        rs.client_id: frozenset(form.getlist(f"claims:{rs.client_id}")) & frozenset(rs.introspection_claims)
        for rs in audiences(ctx, req)
    }
    return Decision(asked.scope, asked.resources, Release(introspection, asked.release.userinfo, asked.release.id_token))


# --- remembered consent ------------------------------------------------------------------------


def _ident(user: User, client: Client) -> str:
    return user.subject + "\0" + client.client_id


def recall(ctx: ServerContext, user: User, client: Client) -> Decision | None:
    if ctx.settings.consent_lifetime == 0:
        return None
    raw = ctx.store.read(NAMESPACE, _ident(user, client))
    return Decision.from_json(json.loads(raw)) if raw is not None else None


def remember(ctx: ServerContext, user: User, client: Client, decision: Decision) -> None:
    """Keep the union of what this user approved for this client, for the consent lifetime."""
    if ctx.settings.consent_lifetime == 0:
        return
    earlier = recall(ctx, user, client)
    if earlier is not None:
        decision = Decision(
            decision.scope | earlier.scope, decision.resources | earlier.resources, decision.release.union(earlier.release)
        )
    ctx.store.save(NAMESPACE, _ident(user, client), json.dumps(decision.to_json()).encode(), ctx.settings.consent_lifetime)


# --- CSRF ----------------------------------------------------------------------------------------


def csrf_token(pending: Pending, user: User) -> str:
    return hmac.new(pending.secret.encode(), b"consent\0" + user.subject.encode(), hashlib.sha256).hexdigest()


def check_csrf(pending: Pending, user: User, presented: str | None) -> None:
    if presented is None or not hmac.compare_digest(presented, csrf_token(pending, user)):
        raise BrowserError("the consent form is not valid for this request: start again from the application")
