"""``client_secret_basic`` and ``client_secret_post`` (RFC 6749 §2.3.1)."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from flask import Request

from ..clients import Credentials
from ..web import Form
from .base import AssertionPolicy, AuthFailure, Finder, Presented
from .secrets import verify_secret

if TYPE_CHECKING:
    from ..server import ServerContext


def present_basic(request: Request, form: Form) -> Presented | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    client_id, secret = _basic_credentials(header)
    if form.get("client_id") is not None and form["client_id"] != client_id:
        raise AuthFailure("client_id differs from the Authorization header", client_id=client_id)
    return Presented("client_secret_basic", client_id, secret=secret)


def present_post(request: Request, form: Form) -> Presented | None:
    if "client_secret" not in form:
        return None
    return Presented("client_secret_post", form.get("client_id"), secret=form["client_secret"])


def _basic_credentials(header: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1 / RFC 7617: base64 of form-urlencoded id ':' form-urlencoded secret."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise AuthFailure("unsupported Authorization scheme")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise AuthFailure("malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise AuthFailure("malformed Basic credentials")
    return unquote_plus(client_id), unquote_plus(secret)


def verify(ctx: ServerContext, presented: Presented, find: Finder, policy: AssertionPolicy) -> Credentials:
    entity = find(presented.client_id) if presented.client_id else None
    try:
        verify_secret(presented.secret or "", entity.client_secret_hash if entity else None)
    except AuthFailure:
        raise AuthFailure(f"{presented.method}: wrong secret or unknown client", client_id=presented.client_id) from None
    if entity is None or entity.token_endpoint_auth_method != presented.method:
        raise AuthFailure(f"{presented.method}: not this client's method", client_id=presented.client_id)
    return entity
