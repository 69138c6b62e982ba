"""OpenID Connect Discovery 1.0: ``<issuer>/.well-known/openid-configuration``.

The same document as the RFC 8414 metadata (built once per key ring, swapped with it), served
where OpenID Connect clients look for it: the issuer with the well-known path *appended*
(OIDC Discovery §4; RFC 8414 §5 explains the two conventions). The OpenID members come from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Response

from .. import subjects
from ..authz.claims import SCOPE_CLAIMS
from ..grants.targets import OIDC_SCOPES
from . import Endpoint, register
from .documents import cached_json

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext
    from ..settings import Settings

WELL_KNOWN = "/.well-known/openid-configuration"


def openid_configuration(ctx: ServerContext) -> Response:
    published = ctx.keys.current
    return cached_json(published.metadata_json, published.metadata_etag, ctx.settings.jwks_max_age)


def _path(settings: Settings) -> str:
    return urlsplit(settings.issuer).path.rstrip("/") + WELL_KNOWN


def _metadata(ctx: ServerContext, ring: KeyRing) -> dict[str, Any]:
    """OIDC Discovery §3. RS256 is listed only when we hold an RS256 key: FAPI 2.0 leaves it out,
    which deviates from the Discovery text that every OP list it."""
    claims = sorted({"sub", "iss", "auth_time", "acr", "amr"} | {c for cs in SCOPE_CLAIMS.values() for c in cs})
    return {
        "subject_types_supported": subjects.supported(ctx.settings),
        "id_token_signing_alg_values_supported": ring.signing_algs,
        "scopes_supported": sorted(OIDC_SCOPES),
        "claims_supported": claims,
    }


register(
    Endpoint(
        "openid_configuration",
        _path,
        openid_configuration,
        methods=("GET",),
        rate_limited=False,
        feature="users",
        metadata=_metadata,
    )
)
