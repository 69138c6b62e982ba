"""The JWKS document (RFC 7517 §5): every public key of the current key ring."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Response

from . import Endpoint, register
from .documents import cached_json

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext


def jwks_endpoint(ctx: ServerContext) -> Response:
    ring = ctx.keys.ring
    return cached_json(ring.jwks_json, ring.jwks_etag, ctx.settings.jwks_max_age)


def _metadata(ctx: ServerContext, ring: KeyRing) -> dict[str, Any]:
    return {"jwks_uri": ctx.urls.url("/jwks")}


register(Endpoint("jwks", "/jwks", jwks_endpoint, methods=("GET",), rate_limited=False, metadata=_metadata))
