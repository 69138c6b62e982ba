"""Resource-server helpers: protect Flask API routes with access tokens (RFC 6750, RFC 9068).

``ResourceProtector(app=None)`` + ``init_app(app)``, then ``@protector.require_token(scope="read")``.
The validated claims are in ``flask.g.oauth_token``.

* ``local`` mode: RFC 9068 §4 validation of the JWT access token (``typ`` at+jwt, ``iss``, ``aud``,
  ``exp`` with a small leeway, algorithm allow-list, signature with the AS's JWKS, fetched and
  cached, one refetch on an unknown ``kid``). Encrypted tokens are decrypted with this resource
  server's own key, in its HSM token.
* ``introspection`` mode: asks the AS (RFC 7662), authenticating with ``private_key_jwt`` signed in
  our token, requesting the JWT response (RFC 9701), decrypting it in our token when encrypted,
  verifying the AS signature; answers are cached briefly (never past the token's ``exp``).

Sender-constrained tokens (``cnf``) need their proof (rs/proofs.py): DPoP (RFC 9449 §7),
RFC 9421 signatures for PoP tokens, the bound client certificate (RFC 8705 §3).

Errors are RFC 6750 §3 responses with a ``WWW-Authenticate`` challenge in the scheme the client
used (``Bearer``, ``DPoP`` with ``algs``, RFC 9449 §7.1, or ``PoP``); without a token, both
``Bearer`` and ``DPoP`` are offered.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, Response, current_app, g, make_response, request

from ..binding.mtls import CertificateSource
from ..binding.nonces import NonceIssuer, NoncePolicy
from ..errors import HSMError, KeyNotFound, StoreUnavailable
from ..hsm import HSM
from ..settings import load_hsm_settings
from ..store import ResetRule, Store, connect
from .settings import RSSettings, load_rs_settings, rs_defaults, rs_variable_names
from .state import JWKSCache, ResultCache, RSState, Unavailable, get_json
from .validation import TokenRejected, authorize

EXTENSION_KEY = "oauth_hsm_rs"
log = logging.getLogger("flask_oauth_hsm.resource")

__all__ = ["ResourceProtector", "TokenRejected", "rs_defaults", "rs_variable_names"]


class ResourceProtector:
    """Protect Flask routes with access tokens from a flask-oauth-hsm authorization server."""

    def __init__(self, app: Flask | None = None):
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        from ..extension import KEY_ADMIN

        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("ResourceProtector is already initialised on this app")
        settings = load_rs_settings(app.config)
        hsm = _rs_hsm(app, settings)
        if hsm is not None and not KEY_ADMIN.get():
            for variable, label in (
                ("OAUTH_HSM_RS_SIGNING_KEY", settings.signing_key),
                ("OAUTH_HSM_RS_DECRYPTION_KEY", settings.decryption_key),
            ):
                if label is not None:
                    try:
                        hsm.key(label)  # start-up check: present, safe
                    except KeyNotFound as exc:
                        raise KeyNotFound(f"{variable}: {exc}") from None
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies)
        certificates = CertificateSource(settings.mtls_cert_header, None, networks) if settings.mtls_cert_header else None
        state = RSState(
            settings,
            hsm,
            _jwks_cache(app, settings),
            ResultCache(),
            networks,
            _nonces(settings, hsm),
            _store(app, settings),
            certificates,
        )
        app.extensions[EXTENSION_KEY] = state

    def require_token(self, scope: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: the request must carry a valid access token with every scope listed."""
        needed = frozenset(scope.split()) if scope else frozenset()

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                state: RSState = current_app.extensions[EXTENSION_KEY]
                try:
                    g.oauth_token, headers = authorize(state, request, needed)
                except TokenRejected as exc:
                    return _challenge(exc, state)
                except (Unavailable, HSMError, StoreUnavailable) as exc:
                    log.error("cannot validate access tokens: %s", exc)
                    body = {"error": "temporarily_unavailable"}
                    headers = {"Retry-After": str(state.settings.retry_after), "Cache-Control": "no-store"}
                    return Response(json.dumps(body), 503, headers, mimetype="application/json")
                if not headers:
                    return view(*args, **kwargs)
                response = make_response(view(*args, **kwargs))
                response.headers.update(headers)  # a fresh DPoP-Nonce (RFC 9449 §9)
                return response

            return wrapper

        return decorator


def _jwks_cache(app: Flask, settings: RSSettings) -> JWKSCache:
    as_ctx = app.extensions.get("oauth_hsm")
    if as_ctx is not None and as_ctx.settings.issuer == settings.issuer and not settings.jwks_uri:
        # The AS lives in this app: read its current key set directly instead of over HTTP.
        return JWKSCache(lambda: json.loads(as_ctx.keys.ring.jwks_json))

    def fetch() -> dict[str, Any]:
        state: RSState = app.extensions[EXTENSION_KEY]
        return get_json(state.endpoint("jwks_uri"), settings.http_timeout)

    return JWKSCache(fetch)


def _rs_hsm(app: Flask, settings: RSSettings) -> HSM | None:
    if settings.signing_key is None and settings.decryption_key is None and settings.dpop_nonce_key is None:
        return None
    if "oauth_hsm" in app.extensions:  # the AS in the same app: one token, one HSM object
        hsm: HSM = app.extensions["oauth_hsm"].hsm
        return hsm
    return HSM(load_hsm_settings(app.config))


def _nonces(settings: RSSettings, hsm: HSM | None) -> NoncePolicy:
    if settings.dpop_nonce_key is None or hsm is None:
        return NoncePolicy("off", None, "")
    try:
        key = hsm.secret_key(settings.dpop_nonce_key)
    except KeyNotFound as exc:
        raise KeyNotFound(f"OAUTH_HSM_RS_DPOP_NONCE_KEY: {exc}") from None
    issuer = NonceIssuer(key, settings.resource, settings.dpop_nonce_lifetime, settings.leeway)
    return NoncePolicy(settings.dpop_nonce, issuer, "dpop-nonce-given-rs")


def _store(app: Flask, settings: RSSettings) -> Store | None:
    """Where proof replay state lives: our own Redis, or the AS's when it is in this app."""
    if settings.redis_url is not None:
        return Store(connect(settings.redis_url, 0.25), settings.redis_prefix, ResetRule(5))
    as_ctx = app.extensions.get("oauth_hsm")
    return as_ctx.store if as_ctx is not None else None


def _challenge(exc: TokenRejected, state: RSState) -> Response:
    """RFC 6750 §3 / RFC 9449 §7.1: WWW-Authenticate with error, error_description (and scope), in
    the scheme the client used; DPoP challenges name the accepted algs. No token: both schemes."""
    scheme = exc.scheme or "Bearer"
    algs = f'algs="{" ".join(state.settings.dpop_algs)}"'
    parts = ['realm="api"'] if scheme != "DPoP" else [algs]
    body: dict[str, Any] = {}
    if exc.error:
        parts.append(f'error="{exc.error}"')
        parts.append(f'error_description="{exc.description}"')
        body = {"error": exc.error, "error_description": exc.description}
    if exc.scope:
        parts.append(f'scope="{exc.scope}"')
    response = Response(
        json.dumps(body or {"error": "invalid_request", "error_description": exc.description}),
        exc.status,
        {"Cache-Control": "no-store", **exc.headers},
        mimetype="application/json",
    )
    response.headers.add("WWW-Authenticate", f"{scheme} " + ", ".join(parts))
    if scheme != "DPoP" and (not exc.error or exc.offer_dpop):  # no credentials, or a DPoP token sent as Bearer
        response.headers.add("WWW-Authenticate", f"DPoP {algs}")
    return response
