"""Pushed authorization requests (RFC 9126): the records ``/par`` keeps and ``/authorize`` takes.

``/par`` (endpoints/par.py) validates a request completely and keeps its parameters here under a
fresh ``request_uri`` — ``urn:ietf:params:oauth:request_uri:`` and 256 random bits (RFC 9126 §2.2;
the value is the only secret, so it is never logged), stored hashed in Redis
(:meth:`Store.put`), for ``OAUTH_HSM_PAR_LIFETIME`` seconds. The authorization endpoint resolves
``request_uri`` through :data:`.sources.SOURCES`: taken once (``GETDEL``: of concurrent uses exactly
one wins), only by the client that pushed it, never after its lifetime. A ``request_uri`` that is
not one of ours is refused, never fetched (RFC 9101 §5.2 by reference is not supported).

When PAR is required (``OAUTH_HSM_REQUIRE_PAR`` or the client's
``require_pushed_authorization_requests``, RFC 9126 §5, §6), the authorization request carries
``client_id`` and ``request_uri`` and nothing else.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING

from .. import clock
from ..clients import Client
from ..errors import InvalidRequestError, InvalidRequestUriError
from ..web import Form
from . import sources

if TYPE_CHECKING:
    from ..server import ServerContext

URN = "urn:ietf:params:oauth:request_uri:"  # RFC 9126 §2.2
NAMESPACE = "par"
_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 random bytes, base64url
ONLY_WITH_PAR = frozenset({"client_id", "request_uri"})


def required(ctx: ServerContext, client: Client) -> bool:
    return ctx.settings.require_par or client.require_pushed_authorization_requests


def keep(ctx: ServerContext, client: Client, params: Form) -> tuple[str, int]:
    """Store validated parameters; returns the ``request_uri`` and its lifetime in seconds."""
    ident, lifetime = secrets.token_urlsafe(32), ctx.settings.par_lifetime
    record = {"client_id": client.client_id, "single": dict(params), "multi": params.multi, "expires_at": clock.now() + lifetime}
    ctx.store.put(NAMESPACE, ident, json.dumps(record).encode(), lifetime)
    return URN + ident, lifetime


def take(ctx: ServerContext, client: Client, raw: Form) -> Form:
    """The ``request_uri`` source: the pushed parameters, once (RFC 9126 §4)."""
    uri = raw["request_uri"]
    ident = uri[len(URN) :] if uri.startswith(URN) else ""
    if not _ID.fullmatch(ident):
        raise InvalidRequestUriError("only request_uri values from this server's pushed authorization endpoint are accepted")
    value = ctx.store.take(NAMESPACE, ident)
    if value is None:
        raise InvalidRequestUriError("the request_uri is unknown, expired or already used")
    record = json.loads(value)
    if record["client_id"] != client.client_id:  # RFC 9126 §4: bound to the client that pushed it
        raise InvalidRequestUriError("the request_uri was issued to another client")
    if clock.now() >= record["expires_at"]:  # Redis expires it too; our clock decides
        raise InvalidRequestUriError("the request_uri is unknown, expired or already used")
    return Form(record["single"], record["multi"])


def gate(ctx: ServerContext, client: Client, raw: Form) -> None:
    """RFC 9126 §5: with PAR required, only ``client_id`` and a ``request_uri``."""
    if not required(ctx, client):
        return
    if "request_uri" not in raw:
        raise InvalidRequestError("this client must push its authorization requests (PAR) and send the request_uri")
    if set(raw) - ONLY_WITH_PAR or raw.multi:
        raise InvalidRequestError("with pushed authorization requests, send only client_id and request_uri")


sources.SOURCES["request_uri"] = take
sources.GATES.append(gate)
