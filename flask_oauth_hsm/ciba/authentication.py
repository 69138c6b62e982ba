"""The backchannel authentication request (CIBA Core §7.1, §7.2) turned into a stored request.

Checks, in order, after client authentication: the client is registered for the CIBA grant;
a signed request (``request``) is verified and its claims become the parameters (signed.py;
``request_uri`` is not served: ``request_uri_not_supported``); ``scope`` with ``openid``
within the client's scope (and ``resource`` values, RFC 8707, within its resources); exactly one
hint (hints.py); ``binding_message`` and ``requested_expiry`` well formed; the host resolves the
hint to a user. Then the request is stored (records.py), its poll timing started (polling.py),
and the host's device hook asked to notify the user.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .. import clock
from ..clients import Client
from ..errors import (
    InvalidBindingMessageError,
    InvalidRequestError,
    InvalidScopeError,
    RequestUriNotSupportedError,
    UnauthorizedClientError,
)
from ..grants.targets import user_resource_servers, user_scope
from ..users import call_hook
from ..web import Form
from . import GRANT_TYPE, hints, polling, records, signed
from .records import CibaRecord

if TYPE_CHECKING:
    from ..server import ServerContext

MAX_BINDING_MESSAGE = 64  # CIBA Core §7.1: "relatively short"; it must fit on a phone's lock screen
MAX_ACR_VALUES = 8
_ACR = re.compile(r"[\x21-\x7E]{1,128}")


def begin(ctx: ServerContext, client: Client, form: Form) -> tuple[str, int, int]:
    """Check and store the request, notify the user; returns (auth_req_id, expires_in, interval)."""
    if GRANT_TYPE not in client.grant_types:
        raise UnauthorizedClientError("this client is not registered for CIBA")
    if "request_uri" in form:
        raise RequestUriNotSupportedError("request_uri is not served at the backchannel authentication endpoint")
    if "request" in form:
        form = signed.parameters(ctx, client, form)  # CIBA Core §7.1.1
    scope = _scope(ctx, client, form)
    kind, value = hints.one_hint(ctx, form)
    binding_message = _binding_message(form.get("binding_message"))
    acr_values = _acr_values(form.get("acr_values"))
    expires_in = _expires_in(ctx, form.get("requested_expiry"))
    subject = hints.resolve(ctx, client, kind, value)
    auth_req_id = records.new_auth_req_id()
    handle = records.handle_of(auth_req_id)
    now = int(clock.now())
    record = CibaRecord(
        client.client_id,
        subject,
        tuple(sorted(scope)),
        tuple(form.getlist("resource")),
        binding_message,
        acr_values,
        now,
        now + expires_in,
    )
    records.create(ctx.store, handle, record, ctx.settings.ciba_request_lifetime)
    polling.start(ctx.store, handle, ctx.settings.ciba_interval, record.ttl())
    try:
        call_hook(ctx, "ciba_notify", record.shown(handle, client.client_name))
    except Exception:
        records.forget(ctx.store, handle)  # nobody was asked: the request must not linger
        raise
    return auth_req_id, expires_in, ctx.settings.ciba_interval


def _scope(ctx: ServerContext, client: Client, form: Form) -> frozenset[str]:
    raw = form.get("scope")
    if raw is None:
        raise InvalidRequestError("scope is required")
    audiences = user_resource_servers(ctx, form.getlist("resource"), client)
    scope = user_scope(raw, client, audiences)
    if "openid" not in scope:
        raise InvalidScopeError("scope must include openid (CIBA Core §7.1)")
    return scope


def _binding_message(value: str | None) -> str | None:
    if value is None:
        return None
    if not 0 < len(value) <= MAX_BINDING_MESSAGE or not value.isprintable():
        raise InvalidBindingMessageError(f"binding_message must be 1 to {MAX_BINDING_MESSAGE} printable characters")
    return value


def _acr_values(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    values = value.split(" ")
    if len(values) > MAX_ACR_VALUES or not all(_ACR.fullmatch(v) for v in values):
        raise InvalidRequestError("acr_values must be a few space-separated values")
    return tuple(values)


def _expires_in(ctx: ServerContext, requested: str | None) -> int:
    """CIBA Core §7.1 requested_expiry: a positive integer; we grant at most our lifetime."""
    lifetime = ctx.settings.ciba_request_lifetime
    if requested is None:
        return lifetime
    if not re.fullmatch(r"[0-9]{1,9}", requested) or int(requested) == 0:
        raise InvalidRequestError("requested_expiry must be a positive integer")
    return min(int(requested), lifetime)
