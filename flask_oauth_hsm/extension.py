"""The Flask extension: ``OAuthHSM(app=None)`` + ``init_app(app)`` (Flask-SQLAlchemy style).

``init_app`` only wires: settings (validated once), the token and its key ring, the registry,
Redis, rate limits, hooks, and the registered endpoints mounted on our blueprints, whose error
handlers answer for our routes only, never for the whole host app. The result is one frozen
:class:`~flask_oauth_hsm.server.ServerContext` in ``app.extensions["oauth_hsm"]``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from flask import Blueprint, Flask, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from . import events, subjects
from .binding import Bindings
from .ciba.device import CibaDevice
from .client_auth import AssertionPolicy
from .clients import ClientRegistry, LoaderRegistry, Registry
from .clients.fit import fit_checker
from .endpoints import Endpoint, load as load_endpoints
from .endpoints.metadata import build as build_metadata
from .errors import (
    AccessDeniedError,
    ConfigError,
    HostHookFailed,
    HSMError,
    InvalidRequestError,
    MethodNotAllowedError,
    OAuthError,
    RegistryUnavailable,
    StoreUnavailable,
    TemporarilyUnavailableError,
)
from .hooks import Hook, Hooks
from .hsm import HSM
from .keys import KeyRing, KeyRingHolder, configured_ring, load_ring
from .ratelimit import RateLimiter, RateLimitExceeded, limited_error
from .server import EXTENSION_KEY, ServerContext, Urls, current
from .settings import Settings, hsm_config_from, load_settings
from .store import ResetRule, Store, connect, redacted
from .store.connection import REDIS_ERRORS
from .store.health import UNKNOWN
from .web import error_response, json_response

log = logging.getLogger("flask_oauth_hsm")
ADMIN_KEY = "oauth_hsm_admin"
# Set by `flask oauth-hsm keys ...` before the host app loads: the app is loaded to read its
# settings, but the keys it names may not exist yet (they are about to be generated).
KEY_ADMIN: ContextVar[bool] = ContextVar("oauth_hsm_key_admin", default=False)


class KeyAdmin:
    """What the key commands need when the keys may not exist yet: settings and the token."""

    def __init__(self, settings: Settings, hsm: HSM):
        self.settings, self.hsm = settings, hsm


class OAuthHSM:
    """An OAuth 2.0 authorization server whose private keys never leave the HSM."""

    def __init__(self, app: Flask | None = None, *, redis_client: Any = None):
        self.hooks = Hooks()
        self.ciba = CibaDevice()  # the host's side of CIBA: pending(), approve(), deny() (docs/ciba.md)
        self._redis_client = redis_client
        if app is not None:
            self.init_app(app)

    # -- host hooks (hooks.py has every spec) ---------------------------------------------------

    def client_loader(self, fn: Hook) -> Hook:
        """Register ``fn(client_id) -> dict | None`` returning a registry-shaped client."""
        return self.hooks.register("client_loader", fn)

    def resource_server_loader(self, fn: Hook) -> Hook:
        """Register ``fn(client_id=None, resource=None) -> dict | None`` (one argument given)."""
        return self.hooks.register("resource_server_loader", fn)

    def current_user(self, fn: Hook) -> Hook:
        """Register ``fn() -> flask_oauth_hsm.User | None``: who is signed in at the host (docs/users.md)."""
        return self.hooks.register("current_user", fn)

    def login_url(self, fn: Hook) -> Hook:
        """Register ``fn(next_url) -> str``: the host's login page, which sends the user to ``next_url`` after."""
        return self.hooks.register("login_url", fn)

    def skip_consent(self, fn: Hook) -> Hook:
        """Register ``fn(client_id, user) -> bool``: True for first-party clients that need no consent page."""
        return self.hooks.register("skip_consent", fn)

    def user_claims(self, fn: Hook) -> Hook:
        """Register ``fn(subject) -> dict | None``: a user's claims, for those they agreed to release."""
        return self.hooks.register("user_claims", fn)

    def ciba_user(self, fn: Hook) -> Hook:
        """Register ``fn(kind, value) -> subject | None``: the user a CIBA hint names (docs/ciba.md)."""
        return self.hooks.register("ciba_user", fn)

    def ciba_notify(self, fn: Hook) -> Hook:
        """Register ``fn(CibaRequest) -> None``: ask the user on their authentication device (docs/ciba.md)."""
        return self.hooks.register("ciba_notify", fn)

    # -- wiring ------------------------------------------------------------------------------

    def init_app(self, app: Flask, *, redis_client: Any = None) -> None:
        if EXTENSION_KEY in app.extensions or ADMIN_KEY in app.extensions:
            raise RuntimeError("OAuthHSM is already initialised on this app")
        uses_loaders = self.hooks.get("client_loader") is not None or self.hooks.get("resource_server_loader") is not None
        client = redis_client or self._redis_client
        settings = load_settings(app.config, need_registry=not uses_loaders, need_redis_url=client is None)
        hsm = HSM(hsm_config_from(settings.__dict__))
        if KEY_ADMIN.get():
            app.extensions[ADMIN_KEY] = KeyAdmin(settings, hsm)
            return
        ring = configured_ring(hsm, settings)
        holder = KeyRingHolder()
        subjects.check_key(hsm, settings)
        hooked = _features_from_hooks(self.hooks)
        registry = self._registry(settings, lambda: holder.ring if holder.ready else ring, uses_loaders, hooked)
        features = _features(registry, uses_loaders, hooked)
        store = _store(settings, client)
        endpoints = load_endpoints(features)
        urls = Urls(settings.issuer, settings.url_prefix)
        trusted = tuple(ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies)
        ctx = ServerContext(
            settings=settings,
            hsm=hsm,
            keys=holder,
            store=store,
            registry=registry,
            urls=urls,
            policies=_assertion_policies(settings, endpoints),
            trusted_networks=trusted,
            hooks=self.hooks.freeze(features),
            limits=RateLimiter(app, settings.rate_limits, store.client, settings.redis_prefix, trusted),
            endpoints=endpoints,
            binding=Bindings.setup(settings, hsm, urls, trusted),
            features=features,
        )
        holder.publish(ring, lambda r: build_metadata(ctx, r))
        if settings.key_set is not None:
            _follow_key_set(holder, hsm, settings, registry, features)
        _warn_about_legacy_audiences(settings, registry)
        _start_epoch(store, settings)
        app.extensions[EXTENSION_KEY] = ctx
        _mount(app, ctx)

    def _registry(
        self, settings: Settings, ring: Callable[[], KeyRing], uses_loaders: bool, hooked: frozenset[str]
    ) -> ClientRegistry:
        check = fit_checker(settings, ring, hooked)
        if uses_loaders:
            from .client_auth import METHODS

            # TLS methods only where a proxy passes certificates on (metadata shows what works).
            tls = ("tls_client_auth", "self_signed_tls_client_auth")
            methods = [m for m in METHODS if m != "none" and (settings.mtls_cert_header or m not in tls)]
            return LoaderRegistry(self.hooks.get("client_loader"), self.hooks.get("resource_server_loader"), methods, check)
        assert settings.registry is not None  # load_settings required it
        return Registry.from_file(settings.registry, check)


def _follow_key_set(
    holder: KeyRingHolder, hsm: HSM, settings: Settings, registry: ClientRegistry, features: frozenset[str]
) -> None:
    """Key-set mode: re-read the key states every OAUTH_HSM_KEYS_REFRESH seconds (no restart to
    rotate); a new ring must still serve every entry of a registry file."""
    name = settings.key_set
    assert name is not None

    def vet(ring: KeyRing) -> None:
        if isinstance(registry, Registry):
            check = fit_checker(settings, lambda: ring, features)
            for entity in registry.entities():
                check(entity)

    holder.follow(lambda: load_ring(hsm, name), settings.keys_refresh, vet)


def _features_from_hooks(hooks: Hooks) -> frozenset[str]:
    """Users are on once the host says who is signed in (``@oauth.current_user``): the host owns
    them, so its hooks, not the registry, decide (docs/users.md, host hooks)."""
    features = {"users"} if hooks.get("current_user") is not None else set()
    if hooks.get("ciba_user") is not None or hooks.get("ciba_notify") is not None:
        features.add("ciba")  # CIBA (docs/ciba.md): freeze() then requires both hooks and users
    return frozenset(features)


def _features(registry: ClientRegistry, uses_loaders: bool, hooked: frozenset[str]) -> frozenset[str]:
    """Features the configuration turns on (hooks.py: which hooks each needs). With users, a file
    registry that lists ``introspection_claims`` needs ``@oauth.user_claims``: a missing hook
    stops start-up with a line naming it."""
    features = set(hooked) | ({"loaders"} if uses_loaders else set())
    if isinstance(registry, Registry):
        if "users" in hooked and any(rs.introspection_claims for rs in registry.resource_servers()):
            features.add("introspection_claims")
        _warn_about_user_clients_without_users(registry, hooked)
    return frozenset(features)


def _warn_about_user_clients_without_users(registry: Registry, hooked: frozenset[str]) -> None:
    """A registry shared by hosts with and without users is valid; without the hooks, the
    authorization code flow is simply off here (no endpoint, the grant refused): say so once."""
    if "users" in hooked:
        return
    waiting = sorted(c.client_id for c in registry.clients() if "authorization_code" in c.grant_types)
    if waiting:
        log.warning(
            "clients with the authorization_code grant (%s), but no @oauth.current_user hook: the authorization "
            "code flow is off in this app (docs/users.md, host hooks)",
            ", ".join(waiting),
        )


def _store(settings: Settings, client: Any) -> Store:
    if client is None:
        assert settings.redis_url is not None
        client = connect(settings.redis_url, settings.redis_timeout)
    return Store(
        client,
        settings.redis_prefix,
        ResetRule(settings.reset_clock_tolerance),
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout=settings.redis_wait_timeout,
        allow_eviction=settings.redis_allow_eviction,
    )


def _assertion_policies(settings: Settings, endpoints: tuple[Endpoint, ...]) -> dict[str, AssertionPolicy]:
    urls = Urls(settings.issuer, settings.url_prefix)
    return {
        e.name: AssertionPolicy(
            settings.issuer,
            urls.token,
            urls.url(e.path),
            settings.aud_policy,
            settings.aud_issuer_array,
            settings.assertion_algs,
            settings.assertion_max_lifetime,
            settings.clock_skew,
        )
        for e in endpoints
        if e.authenticates and isinstance(e.path, str)
    }


def _warn_about_legacy_audiences(settings: Settings, registry: ClientRegistry) -> None:
    """The legacy aud policy accepts endpoint URLs: exposed to audience injection (docs/security.md)."""
    if settings.aud_policy == "legacy":
        log.warning(
            "OAUTH_HSM_AUD_POLICY=legacy: client assertions may name endpoint URLs, which exposes them to "
            "the audience-injection attack; prefer 'issuer' (FAPI 2.0 Final) or 'endpoint' (CAMARA)"
        )
    if isinstance(registry, Registry):
        legacy = sorted(e.client_id for e in registry.entities() if e.aud_policy == "legacy")
        if legacy:
            log.warning("clients using the legacy aud policy (exposed to audience injection): %s", ", ".join(legacy))


def _start_epoch(store: Store, settings: Settings) -> None:
    """Start the epochs, and refuse a Redis that may evict replay records (docs/operations.md)."""
    url = redacted(settings.redis_url) if settings.redis_url else "the injected client"
    try:
        store.ensure_epoch()
        risk = store.eviction_risk()
        shortfall = store.replica_shortfall()
    except StoreUnavailable:
        log.warning("Redis (%s) is unreachable at start-up: token requests answer 503 until it is back", url)
        return
    if risk not in (None, UNKNOWN) and not settings.redis_allow_eviction:
        raise ConfigError(
            f"OAUTH_HSM_REDIS_URL: Redis may evict replay records ({risk}); set maxmemory-policy "
            "noeviction (or OAUTH_HSM_REDIS_ALLOW_EVICTION=true to run anyway)"
        )
    if shortfall is not None:
        log.error(
            "OAUTH_HSM_REDIS_WAIT_REPLICAS=%d but %s (%s): requests answer 503 until enough replicas "
            "acknowledge; set it to 0 for a Redis without replicas",
            store.wait_replicas,
            shortfall,
            url,
        )


# --- blueprints and their error handling ---------------------------------------------------------


def _mount(app: Flask, ctx: ServerContext) -> None:
    # templates/oauth_hsm/*.html: the host's own templates folder wins (Flask searches it first).
    prefixed = Blueprint("oauth_hsm", __name__, url_prefix=ctx.urls.route_prefix, template_folder="templates")
    root = Blueprint("oauth_hsm_well_known", __name__)
    for endpoint in ctx.endpoints:
        bp = root if endpoint.at_root else prefixed
        path = endpoint.path(ctx.settings) if callable(endpoint.path) else endpoint.path
        bp.add_url_rule(path, endpoint.name, _view(endpoint, ctx.limits), provide_automatic_options=False)
    prefixed.add_url_rule("/<path:unknown>", "unknown", _not_found, provide_automatic_options=False)
    for bp in (prefixed, root):
        _error_handlers(bp)
        app.register_blueprint(bp)
    _accept_every_method(app, (prefixed.name, root.name))


def _view(endpoint: Endpoint, limits: RateLimiter) -> Callable[[], ResponseReturnValue]:
    allowed = set(endpoint.methods) | ({"HEAD"} if "GET" in endpoint.methods else set())
    allow_header = ", ".join(sorted(allowed))

    def view() -> ResponseReturnValue:
        if request.method not in allowed:
            raise MethodNotAllowedError(f"use {' or '.join(endpoint.methods)}", headers={"Allow": allow_header})
        return endpoint.view(current())

    # Flask-Limiter keys route limits by qualified name: each endpoint's wrapper gets its own.
    view.__name__ = view.__qualname__ = f"oauth_hsm_{endpoint.name}"
    return limits.per_address(endpoint.name)(view) if endpoint.rate_limited else view


def _accept_every_method(app: Flask, blueprints: tuple[str, ...]) -> None:
    # Werkzeug's routing would answer an unlisted method with an HTML 405 before any blueprint
    # error handler runs; a rule without methods matches every method, and our views answer.
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".", 1)[0] in blueprints:
            rule.methods = None


def _error_handlers(bp: Blueprint) -> None:
    bp.register_error_handler(OAuthError, _oauth_error)
    bp.register_error_handler(RateLimitExceeded, lambda exc: _answer(limited_error(exc)))
    unavailable: tuple[type[Exception], ...] = (HSMError, StoreUnavailable, RegistryUnavailable, HostHookFailed, *REDIS_ERRORS)
    for error in unavailable:
        bp.register_error_handler(error, _unavailable)
    bp.register_error_handler(HTTPException, _http_error)
    bp.register_error_handler(Exception, _unexpected)


def _endpoint_name() -> str | None:
    return (request.endpoint or "").rpartition(".")[2] or None


def _answer(exc: OAuthError) -> ResponseReturnValue:
    """JSON for clients; an HTML page for a person's browser (the authorization endpoint)."""
    name = _endpoint_name()
    if any(e.browser and e.name == name for e in current().endpoints):
        from .authz.pages import error_page

        return error_page(exc)
    return error_response(exc)


def _oauth_error(exc: OAuthError) -> ResponseReturnValue:
    if _endpoint_name() == "token" and exc.error != "invalid_client":  # invalid_client is already an event
        events.emit(events.token_refused, endpoint="token", error=exc.error, reason=exc.description)
    elif isinstance(exc, AccessDeniedError):
        events.emit(events.client_auth_failed, endpoint=_endpoint_name(), reason=exc.description)
    return _answer(exc)


def _unavailable(exc: BaseException) -> ResponseReturnValue:
    # Fail closed (docs/operations.md): nothing was issued; tell the client when to retry.
    events.emit(events.service_unavailable, endpoint=_endpoint_name(), reason=f"{type(exc).__name__}: {str(exc)[:200]}")
    retry_after = str(current().settings.retry_after)
    return _answer(TemporarilyUnavailableError("the service is temporarily unavailable", headers={"Retry-After": retry_after}))


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 400
    if status == 405:
        return _answer(MethodNotAllowedError("method not allowed"))
    if 400 <= status < 500:
        err = InvalidRequestError(exc.name.lower())
        err.status_code = status
        return _answer(err)
    return _unexpected(exc)


def _not_found(unknown: str) -> ResponseReturnValue:
    err = InvalidRequestError("no such endpoint")
    err.status_code = 404
    return error_response(err)


def _unexpected(exc: Exception) -> ResponseReturnValue:
    log.exception("unexpected error in an OAuth endpoint")
    return json_response({"error": "server_error"}, 500)


__all__ = ["ConfigError", "KEY_ADMIN", "KeyAdmin", "OAuthHSM"]
