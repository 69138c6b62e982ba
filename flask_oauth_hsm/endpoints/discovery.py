"""Discovery: RFC 8414 authorization server metadata and the JWKS document (RFC 7517 §5).

Metadata advertises only what the server enforces. Both documents are built once at start-up.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit

from flask import Response, request

from ..errors import MethodNotAllowedError

WELL_KNOWN = "/.well-known/oauth-authorization-server"


def well_known_path(issuer: str) -> str:
    """RFC 8414 §3.1: the well-known suffix goes between the host and the issuer's path."""
    path = urlsplit(issuer).path.rstrip("/")
    return WELL_KNOWN + path


def build_metadata(state) -> bytes:
    s, urls = state.settings, state.urls
    methods = list(state.client_auth_methods)
    meta = {
        "issuer": s.issuer,
        "token_endpoint": urls.token,
        "jwks_uri": urls.jwks,
        "grant_types_supported": ["client_credentials"],
        # RFC 8414 §2: REQUIRED; there is no authorization endpoint, so no response type.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": list(s.assertion_algs),
        "introspection_endpoint": urls.introspection,
        "introspection_endpoint_auth_methods_supported": methods,
        "introspection_endpoint_auth_signing_alg_values_supported": list(s.assertion_algs),
        "revocation_endpoint": urls.revocation,
        "revocation_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_signing_alg_values_supported": list(s.assertion_algs),
        "introspection_signing_alg_values_supported": state.introspection_signing_algs,  # RFC 9701 §7
        "introspection_encryption_alg_values_supported": ["RSA-OAEP-256", "RSA-OAEP", "ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A256KW"],
        "introspection_encryption_enc_values_supported": ["A128GCM", "A256GCM"],
    }
    if state.keys.decryption:
        meta["token_endpoint_auth_encryption_alg_values_supported"] = state.keys.decryption_algs
    return json.dumps(meta, separators=(",", ":")).encode()


def cached_json(body: bytes, etag: str, max_age: int) -> Response:
    """A public, cacheable JSON document with a strong ETag; answers If-None-Match with 304."""
    response = Response(body, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    return response.make_conditional(request)


def etag(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


def jwks_endpoint():
    from ..extension import current_state

    state = current_state()
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowedError("use GET", headers={"Allow": "GET, HEAD"})
    return cached_json(state.keys.jwks_json, state.keys.jwks_etag, state.settings.jwks_max_age)


def metadata_endpoint():
    from ..extension import current_state

    state = current_state()
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowedError("use GET", headers={"Allow": "GET, HEAD"})
    return cached_json(state.metadata_json, state.metadata_etag, state.settings.jwks_max_age)
