"""The Flask extension: ``OAuthHSM(app=None)`` + ``init_app(app)`` (Flask-SQLAlchemy style).

Per-app state lives in ``app.extensions["oauth_hsm"]``; settings are read and validated once in
``init_app``; errors are handled on our blueprints only, never for the whole host app.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, request
from werkzeug.exceptions import HTTPException

from . import events
from .client_auth import AssertionPolicy
from .endpoints import discovery
from .errors import (
    AccessDeniedError,
    ConfigError,
    HSMError,
    InvalidRequestError,
    MethodNotAllowedError,
    OAuthError,
    RegistryUnavailable,
    StoreUnavailable,
    TemporarilyUnavailableError,
)
from .hsm import HSM, HSMConfig
from .http import error_response, json_response
from .keyring import KeyRing
from .registry import AUTH_METHODS, LoaderRegistry, Registry, ResourceServer
from .settings import Settings, load_settings
from .store import Store

EXTENSION_KEY = "oauth_hsm"
log = logging.getLogger("flask_oauth_hsm")
# Listing OPTIONS stops Flask answering it by itself; _accept_every_method then opens the rules
# to any method at all, so our views answer wrong ones with a JSON 405 (Werkzeug's routing would
# answer with HTML before any blueprint error handler runs).
_ALL_METHODS = ["GET", "HEAD", "POST", "OPTIONS"]

# Set by the `flask oauth-hsm keys` commands: the app is loaded to read its settings, but the
# keys it names may not exist yet (they are about to be generated).
KEY_CHECKS = {"enabled": True}


@dataclass(frozen=True)
class Urls:
    """Absolute endpoint URLs derived from the issuer, and the routes serving them."""

    issuer: str
    prefix: str

    @property
    def route_prefix(self) -> str:
        return urlsplit(self.issuer).path.rstrip("/") + self.prefix

    def url(self, name: str) -> str:
        return self.issuer.rstrip("/") + self.prefix + "/" + name

    @property
    def token(self) -> str:
        return self.url("token")

    @property
    def introspection(self) -> str:
        return self.url("introspect")

    @property
    def revocation(self) -> str:
        return self.url("revoke")

    @property
    def jwks(self) -> str:
        return self.url("jwks")


@dataclass
class ServerState:
    """Everything one app's authorization server needs, built once by ``init_app``."""

    settings: Settings
    hsm: HSM
    keys: KeyRing | None
    store: Store
    registry: Any  # Registry or LoaderRegistry
    urls: Urls
    client_auth_methods: list[str]
    trusted_networks: tuple = ()
    policies: dict[str, AssertionPolicy] = field(default_factory=dict)
    metadata_json: bytes = b""
    metadata_etag: str = ""

    @property
    def introspection_signing_algs(self) -> list[str]:
        return sorted({k.alg for k in self.keys.signers}) if self.keys else []


def current_state() -> ServerState:
    return current_app.extensions[EXTENSION_KEY]


class OAuthHSM:
    """An OAuth 2.0 authorization server whose private keys never leave the HSM."""

    def __init__(self, app: Flask | None = None, *, redis_client=None):
        self._client_loader: Callable[..., Any] | None = None
        self._resource_server_loader: Callable[..., Any] | None = None
        self._redis_client = redis_client
        if app is not None:
            self.init_app(app)

    def client_loader(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``fn(client_id=...) -> dict | None`` returning a registry-shaped client."""
        self._client_loader = fn
        return fn

    def resource_server_loader(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``fn(client_id=None, resource=None) -> dict | None`` (one argument given)."""
        self._resource_server_loader = fn
        return fn

    def init_app(self, app: Flask, *, redis_client=None) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("OAuthHSM is already initialised on this app")
        uses_loaders = self._client_loader is not None or self._resource_server_loader is not None
        client = redis_client or self._redis_client
        settings = load_settings(app.config, need_registry=not uses_loaders, need_redis_url=client is None)
        hsm = HSM(HSMConfig(
            module=settings.pkcs11_module, token_label=settings.token_label, slot=settings.slot,
            pin=settings.pin, pool_size=settings.hsm_pool_size, pool_timeout=settings.hsm_pool_timeout,
        ))
        keys = None
        if KEY_CHECKS["enabled"]:
            keys = KeyRing.load(hsm, settings.signing_key, settings.published_keys, settings.encryption_keys)
        registry = self._registry(settings, uses_loaders)
        store = Store(client, settings.redis_prefix) if client is not None else Store.from_url(
            settings.redis_url, settings.redis_prefix, settings.redis_timeout)
        state = ServerState(settings, hsm, keys, store, registry, Urls(settings.issuer, settings.url_prefix),
                            registry.auth_methods(),
                            tuple(ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies))
        if keys is not None:
            _check_registry_fits_keys(state)
            state.policies = _assertion_policies(state)
            state.metadata_json = discovery.build_metadata(state)
            state.metadata_etag = discovery.etag(state.metadata_json)
        if keys is not None:
            _start_epoch(store)
        app.extensions[EXTENSION_KEY] = state
        _register_blueprints(app, state)

    def _registry(self, settings: Settings, uses_loaders: bool):
        if uses_loaders:
            methods = [m for m in AUTH_METHODS if m != "none"]
            return LoaderRegistry(self._client_loader, self._resource_server_loader, methods)
        return Registry.from_file(settings.registry)


def _check_registry_fits_keys(state: ServerState) -> None:
    """Registry entries we could never serve stop start-up (file) or count as unknown (loaders)."""
    check = partial(check_entity_fits, state)
    if isinstance(state.registry, Registry):
        for entity in state.registry.entities():
            check(entity)
    else:
        state.registry.check = check


def check_entity_fits(state: ServerState, entity) -> None:
    alg = entity.token_endpoint_auth_signing_alg
    if alg and alg not in state.settings.assertion_algs:
        raise ConfigError(f"OAUTH_HSM_REGISTRY: {entity.client_id!r} registered token_endpoint_auth_signing_alg "
                          f"{alg}, which OAUTH_HSM_ASSERTION_ALGS does not allow: it could never authenticate")
    if not isinstance(entity, ResourceServer):
        return
    if entity.access_token_encrypted_response_alg and not state.keys.decryption:
        raise ConfigError(f"OAUTH_HSM_ENCRYPTION_KEYS: resource server {entity.client_id!r} wants encrypted access "
                          "tokens; we need a decryption key to read them back (CEK escrow)")
    alg = entity.introspection_signed_response_alg
    if alg and alg not in state.introspection_signing_algs:
        raise ConfigError(f"OAUTH_HSM_REGISTRY: resource server {entity.client_id!r}: no signing key for "
                          f"introspection_signed_response_alg {alg} (add one to OAUTH_HSM_PUBLISHED_KEYS)")


def _assertion_policies(state: ServerState) -> dict[str, AssertionPolicy]:
    s, urls = state.settings, state.urls
    return {
        name: AssertionPolicy(s.issuer, urls.token, url, s.aud_policy, s.assertion_algs, s.assertion_max_lifetime, s.clock_skew)
        for name, url in (("token", urls.token), ("introspection", urls.introspection), ("revocation", urls.revocation))
    }


def _start_epoch(store: Store) -> None:
    try:
        store.ensure_epoch()
    except StoreUnavailable:
        log.warning("Redis is unreachable at start-up: token requests answer 503 until it is back")


# --- blueprints and their error handling ---------------------------------------------------------


def _register_blueprints(app: Flask, state: ServerState) -> None:
    from .endpoints import health, introspection, revocation, token

    bp = Blueprint("oauth_hsm", __name__, url_prefix=state.urls.route_prefix)
    bp.add_url_rule("/token", "token", token.token_endpoint, methods=_ALL_METHODS)
    bp.add_url_rule("/introspect", "introspect", introspection.introspection_endpoint, methods=_ALL_METHODS)
    bp.add_url_rule("/revoke", "revoke", revocation.revocation_endpoint, methods=_ALL_METHODS)
    bp.add_url_rule("/health", "health", health.health_endpoint, methods=_ALL_METHODS)
    bp.add_url_rule("/ready", "ready", health.readiness_endpoint, methods=_ALL_METHODS)
    bp.add_url_rule("/<path:unknown>", "unknown", _not_found, methods=_ALL_METHODS)
    bp.add_url_rule("/jwks", "jwks", discovery.jwks_endpoint, methods=_ALL_METHODS)
    _error_handlers(bp)
    app.register_blueprint(bp)
    wk = Blueprint("oauth_hsm_well_known", __name__)
    wk.add_url_rule(discovery.well_known_path(state.settings.issuer), "metadata", discovery.metadata_endpoint, methods=_ALL_METHODS)
    _error_handlers(wk)
    app.register_blueprint(wk)
    _accept_every_method(app, (bp.name, wk.name))


def _accept_every_method(app: Flask, blueprints: tuple[str, ...]) -> None:
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".", 1)[0] in blueprints:
            rule.methods = None  # Werkzeug: a rule without methods matches every method


def _error_handlers(bp: Blueprint) -> None:
    bp.register_error_handler(OAuthError, _oauth_error)
    bp.register_error_handler(HSMError, _unavailable)
    bp.register_error_handler(StoreUnavailable, _unavailable)
    bp.register_error_handler(RegistryUnavailable, _unavailable)
    bp.register_error_handler(HTTPException, _http_error)
    bp.register_error_handler(Exception, _unexpected)


def _oauth_error(exc: OAuthError):
    if request.endpoint == "oauth_hsm.token" and exc.error != "invalid_client":  # that one is already an event
        events.emit(events.token_refused, error=exc.error, reason=exc.description)
    elif isinstance(exc, AccessDeniedError):
        events.emit(events.client_auth_failed, endpoint=request.endpoint, reason=exc.description)
    return error_response(exc)


def _unavailable(exc: Exception):
    # Fail closed (DESIGN.md §9): nothing was issued; tell the client when to retry.
    events.emit(events.service_unavailable, reason=str(exc)[:200])
    retry_after = str(current_state().settings.retry_after)
    return error_response(TemporarilyUnavailableError("the service is temporarily unavailable", headers={"Retry-After": retry_after}))


def _http_error(exc: HTTPException):
    status = exc.code or 400
    if status == 405:
        return error_response(MethodNotAllowedError("method not allowed"))
    if 400 <= status < 500:
        err = InvalidRequestError(exc.name.lower())
        err.status_code = status
        return error_response(err)
    return _unexpected(exc)


def _not_found(unknown: str):
    err = InvalidRequestError("no such endpoint")
    err.status_code = 404
    return error_response(err)


def _unexpected(exc: Exception):
    log.exception("unexpected error in an OAuth endpoint")
    return json_response({"error": "server_error"}, 500)
