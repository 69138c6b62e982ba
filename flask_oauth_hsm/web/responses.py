"""Answering: OAuth JSON (RFC 6749 §5.1/§5.2), and the shapes the browser-facing endpoints need.

JSON answers are ``no-store`` (RFC 6749 §5.1). An error description never echoes the request:
RFC 6749 §5.2 limits ``error_description`` to %x20-21 / %x23-5B / %x5D-7E, and
:meth:`OAuthError.body` enforces it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import Response

from ..errors import OAuthError

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    all_headers = {**NO_STORE, **headers} if headers else NO_STORE
    return Response(json.dumps(body, separators=(",", ":")), status=status, headers=all_headers, mimetype="application/json")


def error_response(exc: OAuthError) -> Response:
    return json_response(exc.body(), exc.status_code, exc.headers)


def redirect_response(uri: str, params: dict[str, str]) -> Response:
    """303 to ``uri`` with ``params`` added to its query (RFC 6749 §4.1.2; 303 per RFC 9700 §4.12)."""
    parts = urlsplit(uri)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    response = Response(status=303, headers={"Location": urlunsplit((*parts[:3], query, parts.fragment)), **NO_STORE})
    return response


def page_response(
    html: str, status: int = 200, form_targets: tuple[str, ...] = (), headers: dict[str, str] | None = None
) -> Response:
    """An HTML page for the browser: not cached, not framed (RFC 9700 §4.16, clickjacking).

    ``form_targets``: sources a form on the page may end up at besides our own origin (a consent
    form answers with a redirect to the client, and browsers apply ``form-action`` to redirects).
    """
    form_action = " ".join(("'self'", *form_targets))
    all_headers = {
        **NO_STORE,
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": f"default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
        f"form-action {form_action}; frame-ancestors 'none'",
        "Referrer-Policy": "no-referrer",
        **(headers or {}),
    }
    return Response(html, status=status, headers=all_headers, mimetype="text/html")
