"""Authorization server metadata (RFC 8414), built from what the registered endpoints contribute.

Metadata advertises only what the server enforces. The document is derived from the key ring
and swapped with it (keys/ring.py), so it is built once per key ring, not per request.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Response

from . import Endpoint, register
from .documents import cached_json, etag

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext
    from ..settings import Settings

WELL_KNOWN = "/.well-known/oauth-authorization-server"


def well_known_path(issuer: str) -> str:
    """RFC 8414 §3.1: the well-known suffix goes between the host and the issuer's path."""
    return WELL_KNOWN + urlsplit(issuer).path.rstrip("/")


def build(ctx: ServerContext, ring: KeyRing) -> tuple[bytes, str]:
    """The metadata document for ``ring`` (the key ring about to be published) and its ETag."""
    meta: dict[str, Any] = {
        "issuer": ctx.settings.issuer,
        # RFC 8414 §2: REQUIRED; without an authorization endpoint there is no response type.
        "response_types_supported": [],
    }
    for endpoint in ctx.endpoints:
        if endpoint.metadata is not None:
            meta.update(endpoint.metadata(ctx, ring))
    body = json.dumps(meta, separators=(",", ":")).encode()
    return body, etag(body)


def metadata_endpoint(ctx: ServerContext) -> Response:
    published = ctx.keys.current
    return cached_json(published.metadata_json, published.metadata_etag, ctx.settings.jwks_max_age)


def _path(settings: Settings) -> str:
    return well_known_path(settings.issuer)


register(Endpoint("metadata", _path, metadata_endpoint, methods=("GET",), rate_limited=False))
