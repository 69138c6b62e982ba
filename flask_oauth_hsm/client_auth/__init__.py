"""Client authentication at our endpoints (RFC 6749 §2.3, RFC 7521, RFC 7523 §2.2 and §3).

Methods are registered units in :data:`METHODS`: adding one (``tls_client_auth``, say) is one
module with a ``verify`` function (and a ``present`` function if its credentials are explicit in
the request) plus one line here. The same step authenticates clients at the token endpoint and
resource servers at introspection; the caller says which kind of entity it is looking for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Request

from .. import events
from ..clients import Credentials
from ..errors import InvalidClientError, InvalidRequestError
from ..web import Form
from . import client_secret, private_key_jwt, public, tls
from .base import AssertionPolicy, AuthFailure, Finder, Presented, audience_accepted
from .private_key_jwt import ASSERTION_TYPE
from .secrets import hash_secret, verify_secret

if TYPE_CHECKING:
    from ..server import ServerContext

__all__ = [
    "ASSERTION_TYPE",
    "METHODS",
    "AssertionPolicy",
    "AuthFailure",
    "AuthMethod",
    "Presented",
    "audience_accepted",
    "authenticate_caller",
    "hash_secret",
    "verify_secret",
]

Verify = Callable[["ServerContext", Presented, Finder, AssertionPolicy], Credentials]
Present = Callable[[Request, Form], "Presented | None"]


@dataclass(frozen=True)
class AuthMethod:
    """A client authentication method: ``present`` finds its credentials in a request (None for
    methods that carry none, such as ``none``), ``verify`` checks them."""

    name: str
    verify: Verify
    present: Present | None = None


METHODS: dict[str, AuthMethod] = {
    m.name: m
    for m in (
        AuthMethod("private_key_jwt", private_key_jwt.verify, private_key_jwt.present),
        AuthMethod("client_secret_basic", client_secret.verify, client_secret.present_basic),
        AuthMethod("client_secret_post", client_secret.verify, client_secret.present_post),
        AuthMethod("none", public.verify),
        AuthMethod("tls_client_auth", tls.verify_pki),  # RFC 8705 §2.1: the certificate, not the form
        AuthMethod("self_signed_tls_client_auth", tls.verify_self_signed),  # RFC 8705 §2.2
    )
}


def present_credentials(request: Request, form: Form) -> Presented:
    """The credentials of the single method the request uses (RFC 6749 §2.3: never more than
    one); a request without explicit credentials names its client with ``client_id``."""
    explicit = [p for m in METHODS.values() if m.present is not None for p in (m.present(request, form),) if p is not None]
    if len(explicit) > 1:
        raise InvalidRequestError("use exactly one client authentication method")
    if explicit:
        return explicit[0]
    client_id = form.get("client_id")
    if client_id is None:
        raise AuthFailure("no client credentials")
    return Presented("implicit", client_id)


def verify_presented(ctx: ServerContext, presented: Presented, find: Finder, policy: AssertionPolicy) -> Credentials:
    if presented.method != "implicit":
        return METHODS[presented.method].verify(ctx, presented, find, policy)
    # No explicit credentials: the registered method decides (none, or a TLS method, RFC 8705 §2).
    entity = find(presented.client_id or "")
    method = METHODS.get(entity.token_endpoint_auth_method if entity else "none")
    if method is None or method.present is not None:
        raise AuthFailure("no credentials for this client's authentication method", client_id=presented.client_id)
    return method.verify(ctx, presented, find, policy)


def authenticate_caller(ctx: ServerContext, request: Request, form: Form, endpoint: str, want: str) -> Credentials:
    """The authenticated client (``want="client"``) or either kind (``want="any"``); any failure is
    an ``invalid_client`` to the peer and a security event with the reason."""
    registry = ctx.registry
    find: Finder = registry.client if want == "client" else (lambda cid: registry.resource_server(cid) or registry.client(cid))
    presented: Presented | None = None
    try:
        presented = present_credentials(request, form)
        return verify_presented(ctx, presented, find, ctx.policies[endpoint])
    except (AuthFailure, InvalidRequestError) as exc:
        replay = isinstance(exc, AuthFailure) and exc.replay
        client_id = (exc.client_id if isinstance(exc, AuthFailure) else None) or (
            presented.client_id if presented else form.get("client_id")
        )
        events.emit(
            events.replay_detected if replay else events.client_auth_failed,
            endpoint=endpoint,
            client_id=events.printable(client_id),
            method=presented.method if presented else None,
            reason=str(exc),
        )
        if isinstance(exc, InvalidRequestError):
            raise
        raise InvalidClientError("client authentication failed", headers={"WWW-Authenticate": 'Basic realm="oauth"'}) from None
