"""Cacheable public documents (JWKS, metadata): strong ETag, max-age, 304 on If-None-Match."""

from __future__ import annotations

import hashlib

from flask import Response, request


def cached_json(body: bytes, etag: str, max_age: int) -> Response:
    response = Response(body, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    response.make_conditional(request)  # in place (it returns the same object, typed as werkzeug's Response)
    return response


def etag(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]
