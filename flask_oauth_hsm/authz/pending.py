"""Pending authorizations: a validated request waiting in Redis while the user signs in at the
host and decides on the consent page (DESIGN §4a).

The record is bound to the browser that started it: a random cookie of ours (``HttpOnly``,
``SameSite=Lax``, ``Secure`` for an https issuer, path = our prefix) whose hash the record keeps.
A link to someone else's pending request is useless in another browser, which stops an attacker
from having a victim approve (or sign in to) the attacker's request. The record lives
``OAUTH_HSM_AUTHORIZATION_REQUEST_LIFETIME`` seconds and is consumed once, by the decision
(:meth:`Store.take`: a double submit issues one code).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Request, Response

from .. import clock
from ..errors import BrowserError
from .request import AuthorizationRequest

if TYPE_CHECKING:
    from ..server import ServerContext

COOKIE = "oauth_hsm_browser"
NAMESPACE = "authz-pending"
_ID = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Pending:
    id: str
    request: AuthorizationRequest
    browser: str  # SHA-256 of the browser cookie's value
    created: float
    secret: str  # keys this request's consent-page CSRF token (consent.py)


@dataclass(frozen=True)
class Browser:
    """The browser's binding cookie: its value, and whether this response must set it."""

    value: str
    new: bool

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.value.encode()).hexdigest()


def browser(request: Request) -> Browser:
    value = request.cookies.get(COOKIE)
    if value is not None and _ID.fullmatch(value):
        return Browser(value, new=False)
    return Browser(secrets.token_urlsafe(32), new=True)


def set_cookie(ctx: ServerContext, response: Response, binding: Browser) -> Response:
    if binding.new:
        response.set_cookie(
            COOKIE,
            binding.value,
            httponly=True,
            samesite="Lax",
            path=ctx.urls.route_prefix or "/",
            secure=ctx.settings.issuer.startswith("https:"),
        )
    return response


def start(ctx: ServerContext, req: AuthorizationRequest, binding: Browser) -> Pending:
    pending = Pending(secrets.token_urlsafe(32), req, binding.digest, clock.now(), secrets.token_urlsafe(32))
    record = {"request": req.to_json(), "browser": pending.browser, "created": pending.created, "secret": pending.secret}
    ctx.store.put(NAMESPACE, pending.id, json.dumps(record).encode(), ctx.settings.authorization_request_lifetime)
    return pending


def load(ctx: ServerContext, pending_id: str | None, binding: Browser) -> Pending:
    """The pending request ``pending_id`` of this browser; an error page otherwise."""
    if pending_id is None or not _ID.fullmatch(pending_id):
        raise BrowserError("this authorization request is not valid")
    raw = ctx.store.read(NAMESPACE, pending_id)
    if raw is None:
        raise BrowserError("this authorization request has expired or was completed: start again from the application")
    record = json.loads(raw)
    if binding.new or not hmac.compare_digest(record["browser"], binding.digest):
        raise BrowserError("this authorization request was started in another browser")
    if clock.now() > record["created"] + ctx.settings.authorization_request_lifetime:
        raise BrowserError("this authorization request has expired or was completed: start again from the application")
    return Pending(
        pending_id, AuthorizationRequest.from_json(record["request"]), record["browser"], record["created"], record["secret"]
    )


def finish(ctx: ServerContext, pending: Pending) -> bool:
    """Consume the record; False when another request (a double submit) already did."""
    return ctx.store.take(NAMESPACE, pending.id) is not None


def continue_url(ctx: ServerContext, pending: Pending) -> str:
    """Where the host's login page sends the user back (a path: same host, no open redirect)."""
    return f"{ctx.urls.route_prefix}/consent?id={pending.id}"
