"""Reading an authorization request's parameters: the query of a GET, or the form of a POST
(OIDC Core §3.1.2.1 allows both), each parameter at most once except ``resource`` (RFC 6749 §3.1,
RFC 8707 §2). Anything unreadable is an error page: without trustworthy ``client_id`` and
``redirect_uri`` nothing may be redirected (RFC 6749 §4.1.2.1)."""

from __future__ import annotations

from flask import Request

from ..errors import BrowserError, OAuthError, RequestTooLargeError
from ..web import Form, parse_params, read_form

REPEATABLE = frozenset({"resource"})


def read_params(request: Request, max_bytes: int) -> Form:
    try:
        if request.method == "POST":
            return read_form(request, max_bytes, repeatable=REPEATABLE)
        query = request.query_string
        if len(query) > max_bytes:
            raise RequestTooLargeError("the authorization request is too large")
        return parse_params(query.decode("utf-8"), REPEATABLE)
    except UnicodeDecodeError:
        raise BrowserError("the authorization request is malformed") from None
    except OAuthError as exc:
        err = BrowserError(exc.description or "the authorization request is malformed")
        err.status_code = exc.status_code
        raise err from None
