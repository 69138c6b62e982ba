"""Issue 15 experiment only (never used by tests or the product): the token endpoint without Flask.

``fastpath_app:app`` is the example app with a WSGI middleware that answers ``POST
/oauth2/token`` itself, calling the same package functions as
``flask_oauth_hsm.endpoints.token.token_endpoint`` in the same order (form rules, client
authentication with every assertion check and the Redis replay check, grant type, RFC 8707
resources, scope, RFC 9068 token signed in the HSM, no-store JSON) but without Flask's
request context, routing and Response objects. Every other request goes to Flask unchanged.

It measures how much of a token request Flask + Werkzeug cost (bench/example_variants.py,
bench/peer_ab.py ``--app fastpath_app:app``): the upper bound of what a product-level fast path
could gain. What such a path would give up is listed in /work/notes/perf.md (host-app
before/after_request hooks, Flask signals and error handlers do not run for this endpoint).
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from flask_oauth_hsm import access_tokens, events
from flask_oauth_hsm.client_auth import AuthFailure, authenticate, presented_credentials
from flask_oauth_hsm.endpoints import token as token_ep
from flask_oauth_hsm.errors import (
    HSMError,
    InvalidClientError,
    InvalidRequestError,
    OAuthError,
    RegistryUnavailable,
    RequestTooLargeError,
    StoreUnavailable,
    TemporarilyUnavailableError,
)
from flask_oauth_hsm.http import MAX_FIELDS, NO_STORE, Form

_HEADERS = [("Content-Type", "application/json"), *NO_STORE.items()]
_REPEATABLE = frozenset({"resource"})


def _form(environ, max_bytes: int) -> Form:
    """flask_oauth_hsm.http.read_form on the WSGI environ (same rules, same errors)."""
    ctype, _, params = environ.get("CONTENT_TYPE", "").partition(";")
    if ctype.strip().lower() != "application/x-www-form-urlencoded":
        raise InvalidRequestError("the request body must be application/x-www-form-urlencoded")
    charset = "utf-8"
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "charset":
            charset = v.strip('"').lower()
    if charset not in ("utf-8", "utf8"):
        raise InvalidRequestError("the request body must be UTF-8")
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > max_bytes:
        raise RequestTooLargeError(f"request body larger than {max_bytes} bytes")
    if length < 0 and not environ.get("wsgi.input_terminated"):
        body = b""  # Werkzeug's rule: no length and no terminated input is an empty body
    else:
        want = max_bytes + 1 if length < 0 else length
        stream, chunks, got = environ["wsgi.input"], [], 0
        while got < want:
            chunk = stream.read(want - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        body = b"".join(chunks)
    if len(body) > max_bytes:
        raise RequestTooLargeError(f"request body larger than {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
        fields = text.split("&") if text else []
        if len(fields) > MAX_FIELDS:
            raise ValueError
        pairs = []
        for f in fields:
            name, sep, value = f.partition("=")
            if not sep:
                raise ValueError
            if "%" in name or "+" in name:
                name = unquote(name.replace("+", " "), errors="strict")
            if "%" in value or "+" in value:
                value = unquote(value.replace("+", " "), errors="strict")
            pairs.append((name, value))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("malformed form body") from None
    single, multi, seen = {}, {}, set()
    for name, value in pairs:
        if name in _REPEATABLE:
            if value:
                multi.setdefault(name, []).append(value)
            continue
        if name in seen:
            raise InvalidRequestError(f"parameter {name[:40]!r} repeated")
        seen.add(name)
        if value:
            single[name] = value
    return Form(single, multi)


def _token(state, environ) -> tuple[int, dict, dict]:
    if environ["REQUEST_METHOD"] != "POST":
        from flask_oauth_hsm.errors import MethodNotAllowedError

        raise MethodNotAllowedError("use POST", headers={"Allow": "POST"})
    form = _form(environ, state.settings.max_body_bytes)
    presented = presented_credentials(environ.get("HTTP_AUTHORIZATION"), form)
    try:
        client = authenticate(presented, state.registry.client, state.policies["token"], state)
    except AuthFailure as exc:
        signal = events.replay_detected if exc.replay else events.client_auth_failed
        events.emit(signal, endpoint="token", client_id=exc.client_id or presented.client_id, method=presented.method,
                    reason=str(exc))
        raise InvalidClientError("client authentication failed", headers={"WWW-Authenticate": 'Basic realm="oauth"'}) from None
    token_ep.check_grant_type(form, client)
    audiences = token_ep.requested_resources(state, form, client)
    scope = token_ep.requested_scope(form, client, audiences)
    if client.cip_hash:
        raise NotImplementedError("experiment: cip_hash clients go through Flask")
    issued = access_tokens.issue(state, client, scope, audiences)
    events.emit(events.token_issued, client_id=client.client_id, jti=issued.claims["jti"], aud=issued.claims["aud"],
                scope=issued.claims["scope"])
    body = {"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in}
    if issued.claims["scope"]:
        body["scope"] = issued.claims["scope"]
    return 200, body, {}


_REASONS = {200: "OK", 400: "BAD REQUEST", 401: "UNAUTHORIZED", 405: "METHOD NOT ALLOWED", 413: "REQUEST ENTITY TOO LARGE",
            500: "INTERNAL SERVER ERROR", 503: "SERVICE UNAVAILABLE"}


def wrap(flask_app):
    state = flask_app.extensions["oauth_hsm"]
    path = state.urls.route_prefix + "/token"
    inner = flask_app.wsgi_app

    def wsgi(environ, start_response):
        if environ.get("PATH_INFO") != path:
            return inner(environ, start_response)
        with flask_app.app_context():  # current_app for events' signals and current_state()
            try:
                status, body, headers = _token(state, environ)
            except OAuthError as exc:
                if exc.error != "invalid_client":
                    events.emit(events.token_refused, error=exc.error, reason=exc.description)
                status, body, headers = exc.status_code, exc.body(), exc.headers
            except (HSMError, StoreUnavailable, RegistryUnavailable) as exc:
                events.emit(events.service_unavailable, reason=str(exc)[:200])
                err = TemporarilyUnavailableError("the service is temporarily unavailable",
                                                  headers={"Retry-After": str(state.settings.retry_after)})
                status, body, headers = err.status_code, err.body(), err.headers
        data = json.dumps(body, separators=(",", ":")).encode()
        start_response(f"{status} {_REASONS.get(status, '')}",
                       [*_HEADERS, *headers.items(), ("Content-Length", str(len(data)))])
        return [data]

    flask_app.wsgi_app = wsgi
    return flask_app


def create_app():
    import example_app

    return wrap(example_app.create_app())


def __getattr__(name: str):
    if name in ("app", "application"):
        global app
        app = create_app()
        return app
    raise AttributeError(name)
