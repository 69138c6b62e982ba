"""The pages the extension shows the user: the consent page and the error page.

Both are Jinja templates under ``templates/oauth_hsm/``; a host overrides one by putting a file of
the same name in its own ``templates/oauth_hsm/`` (Flask looks in the app's folder first). The
view models below are everything a template receives (docs/users.md, "Customising the consent
page"); the page's headers (no caching, no framing, CSP) are ours whatever the template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Response, render_template

from ..clients import Client
from ..errors import OAuthError
from ..users import User
from ..web import page_response
from .claims import LABELS
from .consent import Decision, audiences

if TYPE_CHECKING:
    from ..server import ServerContext
    from .pending import Pending

SCOPE_DESCRIPTIONS = {
    "openid": "sign you in to the application (it learns your user identifier)",
    "profile": "read your basic profile (name, picture, locale)",
    "email": "read your email address",
    "address": "read your postal address",
    "phone": "read your phone number",
}


@dataclass(frozen=True)
class ClaimChoice:
    name: str
    label: str
    value: Any  # the user's own value when the host supplied it to the page, else None
    field: str  # the form field of the checkbox
    checked: bool


@dataclass(frozen=True)
class ResourceView:
    resource: str
    name: str  # the resource server's client_id
    scopes: list[str]
    claims: list[ClaimChoice] = field(default_factory=list)


@dataclass(frozen=True)
class ConsentView:
    client_id: str
    client_name: str
    user: User
    scopes: list[tuple[str, str]]  # (value, description)
    resources: list[ResourceView]
    client_claims: list[tuple[str, str, Any]]  # (name, label, value): what the client learns (UserInfo, ID token)
    action: str
    csrf_token: str


def consent_page(ctx: ServerContext, pending: Pending, client: Client, user: User, asked: Decision, csrf: str) -> Response:
    req = pending.request
    resources = []
    for rs in audiences(ctx, req):
        offered = sorted(rs.introspection_claims)
        checked = asked.release.introspection.get(rs.client_id, frozenset())
        resources.append(
            ResourceView(
                rs.resource,
                rs.client_id,
                sorted(req.scope & rs.scope),
                [ClaimChoice(n, LABELS.get(n, n), user.claims.get(n), f"claims:{rs.client_id}", n in checked) for n in offered],
            )
        )
    shown = sorted(asked.release.userinfo | asked.release.id_token)
    view = ConsentView(
        client_id=client.client_id,
        client_name=client.client_name or client.client_id,
        user=user,
        scopes=[(s, SCOPE_DESCRIPTIONS.get(s, f"use “{s}” at the services below")) for s in _in_order(req.scope)],
        resources=resources,
        client_claims=[(n, LABELS.get(n, n), user.claims.get(n)) for n in shown],
        action=f"{ctx.urls.route_prefix}/consent?id={pending.id}",
        csrf_token=csrf,
    )
    html = render_template("oauth_hsm/consent.html", consent=view)
    return page_response(html, form_targets=(form_source(req.redirect_uri),))


def _in_order(scope: frozenset[str]) -> list[str]:
    """OpenID scopes first, in the order people read them (sign-in, then profile data), then the rest."""
    return [s for s in SCOPE_DESCRIPTIONS if s in scope] + sorted(scope - SCOPE_DESCRIPTIONS.keys())


def error_page(exc: OAuthError, status: int | None = None, headers: dict[str, str] | None = None) -> Response:
    html = render_template("oauth_hsm/error.html", error=exc.error, description=exc.body().get("error_description"))
    return page_response(html, status or exc.status_code, headers=headers or exc.headers)


def form_source(uri: str) -> str:
    """The CSP source expression for a redirect URI: its origin, or its private-use scheme."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc}"
    return parts.scheme + ":"
