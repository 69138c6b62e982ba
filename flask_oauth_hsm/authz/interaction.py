"""The interaction: from a validated request to a code, through the host's login and the consent page.

:func:`start` keeps the request as a pending authorization and calls :func:`proceed`, which the
user's return from the host's login page calls again: nobody signed in (or not recently enough
for ``prompt=login`` / ``max_age``) → the host's login page; consent remembered, or skipped by the
host for a first-party client → a code; otherwise the consent page, whose form :func:`decide`
answers. ``prompt=none`` never shows anything: ``login_required`` / ``consent_required``.
Every outcome for the client — a code or an error — goes to its redirect URI with ``state`` and
``iss``, and consumes the pending record (one answer per request).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from flask import Response

from .. import clock, events, users
from ..clients import Client
from ..errors import BrowserError, ConsentRequiredError, LoginRequiredError, OAuthError, UserDeniedError
from ..tokens import codes
from ..users import User
from ..web import Form, redirect_response
from . import consent, pages, pending as pending_requests
from .consent import Decision
from .pending import Browser, Pending
from .redirect import code_redirect, error_redirect
from .request import AuthorizationRequest

if TYPE_CHECKING:
    from ..server import ServerContext


def start(ctx: ServerContext, req: AuthorizationRequest, browser: Browser) -> Response:
    pending = pending_requests.start(ctx, req, browser)
    return pending_requests.set_cookie(ctx, proceed(ctx, pending, returning=False), browser)


def proceed(ctx: ServerContext, pending: Pending, *, returning: bool) -> Response:
    req = pending.request
    client = _client(ctx, req)
    user = users.current_user(ctx)
    if user is None or _needs_login(ctx, pending, user):
        if "none" in req.prompt:
            return _fail(ctx, pending, LoginRequiredError("the user is not signed in"))
        if returning and user is not None:  # back from the login page, still not signed in afresh: no loop
            return _fail(ctx, pending, LoginRequiredError("the user did not sign in again"))
        return redirect_response(users.login_url(ctx, pending_requests.continue_url(ctx, pending)), {})
    asked = consent.wanted(ctx, req)
    if "consent" not in req.prompt and _consented(ctx, client, user, asked):
        return _issue(ctx, pending, user, asked)
    if "none" in req.prompt:
        return _fail(ctx, pending, ConsentRequiredError("the user has not consented"))
    return pages.consent_page(ctx, pending, client, user, asked, consent.csrf_token(pending, user))


def decide(ctx: ServerContext, pending: Pending, form: Form) -> Response:
    """The consent form: CSRF, then approve (with the user's choices) or deny."""
    req = pending.request
    client = _client(ctx, req)
    user = users.current_user(ctx)
    if user is None:  # signed out in another tab meanwhile
        return redirect_response(users.login_url(ctx, pending_requests.continue_url(ctx, pending)), {})
    consent.check_csrf(pending, user, form.get("csrf_token"))
    decision = form.get("decision")
    if decision == "deny":
        events.emit(events.authorization_denied, client_id=client.client_id, reason="the user denied the request")
        return _fail(ctx, pending, UserDeniedError("the user denied the request"))
    if decision != "approve":
        raise BrowserError("the consent form was not answered")
    chosen = consent.from_form(ctx, req, form)
    consent.remember(ctx, user, client, chosen)
    return _issue(ctx, pending, user, chosen)


def _client(ctx: ServerContext, req: AuthorizationRequest) -> Client:
    client = ctx.registry.client(req.client_id)
    if client is None or req.redirect_uri not in client.redirect_uris:
        raise BrowserError("the application is no longer registered")
    return client


def _needs_login(ctx: ServerContext, pending: Pending, user: User) -> bool:
    """OIDC Core §3.1.2.1: ``prompt=login`` wants an authentication after the request began;
    ``max_age`` one at most that many seconds old."""
    req = pending.request
    if req.prompt & {"login", "select_account"} and user.auth_time < math.floor(pending.created):
        return True
    # auth_time has one-second resolution: max_age=0 still accepts a sign-in this very second.
    return req.max_age is not None and clock.now() - user.auth_time > req.max_age + 1


def _consented(ctx: ServerContext, client: Client, user: User, asked: Decision) -> bool:
    if users.skips_consent(ctx, client, user):
        return True
    remembered = consent.recall(ctx, user, client)
    return remembered is not None and remembered.covers(asked)


def _issue(ctx: ServerContext, pending: Pending, user: User, decision: Decision) -> Response:
    if not pending_requests.finish(ctx, pending):
        raise BrowserError("this authorization request was already completed")
    req = pending.request
    code = codes.issue(ctx, req, user, decision)
    events.emit(events.authorization_granted, client_id=req.client_id, sub=user.subject, scope=" ".join(sorted(decision.scope)))
    return code_redirect(ctx, req.target, code, req.state)


def _fail(ctx: ServerContext, pending: Pending, exc: OAuthError) -> Response:
    if not pending_requests.finish(ctx, pending):
        raise BrowserError("this authorization request was already completed")
    return error_redirect(ctx, pending.request.target, exc, pending.request.state)
