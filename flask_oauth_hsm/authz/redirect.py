"""Who is asking and where the answer goes: the client, its redirect URI compared by exact string
equality with a registered one (RFC 9700 §4.1.3, OAuth 2.1 §2.3.1), and the answers themselves,
each with ``iss`` (RFC 9207 §2) and the request's ``state`` (RFC 6749 §4.1.2).

A bad or unknown ``client_id`` or ``redirect_uri`` is never redirected to: the user sees an error
page (RFC 6749 §4.1.2.1, or we would be an open redirector). Loopback redirect URIs are compared
exactly too, port included (a deliberate deviation from RFC 8252 §7.3: register the port).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Response

from ..clients import Client
from ..errors import BrowserError, OAuthError
from ..web import Form, redirect_response

if TYPE_CHECKING:
    from ..server import ServerContext


@dataclass(frozen=True)
class Target:
    """Where the authorization response goes: a registered redirect URI, and whether the request
    named it (then the token request must name it too, RFC 6749 §4.1.3)."""

    uri: str
    given: bool


def identify_client(ctx: ServerContext, params: Form) -> Client:
    client_id = params.get("client_id")
    if client_id is None:
        raise BrowserError("the request names no client (client_id)")
    client = ctx.registry.client(client_id)
    if client is None or "authorization_code" not in client.grant_types or not client.redirect_uris:
        raise BrowserError("unknown client, or a client that may not use this endpoint")
    return client


def target(client: Client, params: Form) -> Target:
    """The registered redirect URI the request names, or the only one registered (OAuth 2.1 §4.1.1)."""
    uri = params.get("redirect_uri")
    if uri is None:
        if len(client.redirect_uris) != 1:
            raise BrowserError("the request names no redirect URI (redirect_uri) and the client registered several")
        return Target(client.redirect_uris[0], given=False)
    if uri not in client.redirect_uris:  # exact string comparison, nothing normalised
        raise BrowserError("the redirect URI is not registered for this client")
    return Target(uri, given=True)


def trusted_target(client: Client, params: Form) -> Target | None:
    """:func:`target`, or None when the request names no usable redirect URI."""
    try:
        return target(client, params)
    except BrowserError:
        return None


def error_redirect(ctx: ServerContext, to: Target, exc: OAuthError, state: str | None) -> Response:
    """RFC 6749 §4.1.2.1 with RFC 9207 ``iss``; the description is our own sentence."""
    params = {"error": exc.error}
    if exc.description:
        params["error_description"] = exc.body().get("error_description", "")
    return _answer(ctx, to, params, state)


def code_redirect(ctx: ServerContext, to: Target, code: str, state: str | None) -> Response:
    return _answer(ctx, to, {"code": code}, state)


def _answer(ctx: ServerContext, to: Target, params: dict[str, str], state: str | None) -> Response:
    if state is not None:
        params["state"] = state
    params["iss"] = ctx.settings.issuer  # RFC 9207 §2: in every authorization response
    return redirect_response(to.uri, params)
