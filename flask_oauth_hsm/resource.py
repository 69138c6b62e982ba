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

Errors are RFC 6750 §3 responses with a ``WWW-Authenticate: Bearer`` challenge.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from functools import wraps
from typing import Any, Callable

from flask import Flask, Response, current_app, g, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from .access_tokens import AT_TYP, MAX_ACCESS_TOKEN_LEN, cip_hash
from .algorithms import SIGNING
from .client_auth import ASSERTION_TYPE
from .errors import ConfigError, HSMError, JoseError, KeyNotFound
from .hsm import HSM
from .http import client_address
from .jose import compact, jwe, jwk, jws, jwt
from .registry import valid_resource_uri
from .settings import CSV, cidrs, first_error, https_or_loopback, load_hsm_settings, raw_values

EXTENSION_KEY = "oauth_hsm_rs"
log = logging.getLogger("flask_oauth_hsm.resource")
INTROSPECTION_JWT = "application/token-introspection+jwt"


class _RSSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    issuer = fields.String(required=True, data_key="OAUTH_HSM_RS_ISSUER", validate=https_or_loopback)
    resource = fields.String(required=True, data_key="OAUTH_HSM_RS_RESOURCE",
                             validate=lambda v: valid_resource_uri(v) or _fail("must be an absolute https URI without fragment"))
    mode = fields.String(load_default="local", data_key="OAUTH_HSM_RS_MODE", validate=validate.OneOf(["local", "introspection"]))
    jwks_uri = fields.String(load_default=None, data_key="OAUTH_HSM_RS_JWKS_URI", validate=https_or_loopback)
    introspection_endpoint = fields.String(load_default=None, data_key="OAUTH_HSM_RS_INTROSPECTION_ENDPOINT", validate=https_or_loopback)
    client_id = fields.String(load_default=None, data_key="OAUTH_HSM_RS_CLIENT_ID")
    signing_key = fields.String(load_default=None, data_key="OAUTH_HSM_RS_SIGNING_KEY")
    decryption_key = fields.String(load_default=None, data_key="OAUTH_HSM_RS_DECRYPTION_KEY")
    require_encrypted = fields.Boolean(load_default=False, data_key="OAUTH_HSM_RS_REQUIRE_ENCRYPTED_TOKENS")
    algorithms = CSV(load_default=("ES256", "ES384", "PS256", "EdDSA"), data_key="OAUTH_HSM_RS_ALGORITHMS",
                     validate=lambda v: (v and set(v) <= set(SIGNING)) or _fail("must name JWS algorithms we support"))
    leeway = fields.Integer(load_default=30, data_key="OAUTH_HSM_RS_LEEWAY", validate=validate.Range(0, 300))
    cache_ttl = fields.Integer(load_default=30, data_key="OAUTH_HSM_RS_CACHE_TTL", validate=validate.Range(0, 3600))
    http_timeout = fields.Float(load_default=3.0, data_key="OAUTH_HSM_RS_HTTP_TIMEOUT", validate=validate.Range(0.1, 60))
    assertion_aud = fields.String(load_default="issuer", data_key="OAUTH_HSM_RS_ASSERTION_AUD",
                                  validate=validate.OneOf(["issuer", "endpoint"]))
    check_cip = fields.Boolean(load_default=False, data_key="OAUTH_HSM_RS_CHECK_CIP")
    retry_after = fields.Integer(load_default=5, data_key="OAUTH_HSM_RS_RETRY_AFTER", validate=validate.Range(1, 3600))
    # The same variable as the AS's: caller addresses come from X-Forwarded-For only through these.
    trusted_proxies = CSV(load_default=(), data_key="OAUTH_HSM_TRUSTED_PROXIES", validate=cidrs)


def _fail(message: str):
    raise ValidationError(message)


@dataclass(frozen=True)
class RSSettings:
    issuer: str
    resource: str
    mode: str
    jwks_uri: str | None
    introspection_endpoint: str | None
    client_id: str | None
    signing_key: str | None
    decryption_key: str | None
    require_encrypted: bool
    algorithms: tuple[str, ...]
    leeway: int
    cache_ttl: int
    http_timeout: float
    assertion_aud: str
    check_cip: bool
    retry_after: int
    trusted_proxies: tuple[str, ...]


class TokenRejected(Exception):
    """RFC 6750 §3.1 error for the caller: ``error`` code, HTTP status, description."""

    def __init__(self, error: str, status: int, description: str, scope: str | None = None):
        super().__init__(description)
        self.error, self.status, self.description, self.scope = error, status, description, scope


class Unavailable(Exception):
    """The AS or our HSM cannot be reached: answer 503, let nothing through."""


# --- per-app state ----------------------------------------------------------------------------------


class _JWKSCache:
    """The AS's public keys; refetched after ``ttl``, or once on an unknown kid (rate-limited)."""

    MIN_REFETCH_INTERVAL = 10.0

    def __init__(self, fetch: Callable[[], dict], ttl: float = 300.0):
        self._fetch, self._ttl = fetch, ttl
        self._keys: jwk.JWKSet | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._fetched_at < self.MIN_REFETCH_INTERVAL and self._keys is not None:
                return
            self._keys = jwk.JWKSet.from_dict(self._fetch())
            self._fetched_at = time.monotonic()

    def key_for(self, header: dict) -> jwk.PublicJWK:
        if self._keys is None or time.monotonic() - self._fetched_at > self._ttl:
            self._refresh()
        kid = header.get("kid")
        if kid is not None and not any(k.kid == kid for k in self._keys):
            self._refresh()  # rotation: the AS may have published a new key since
        return self._keys.select(header["alg"], "sig", kid)


class _ResultCache:
    """Introspection answers by token hash, bounded in size and in time."""

    MAX_ENTRIES = 10_000

    def __init__(self):
        self._entries: dict[bytes, tuple[float, dict | None]] = {}
        self._lock = threading.Lock()

    def get(self, token: str):
        hit = self._entries.get(hashlib.sha256(token.encode()).digest())
        if hit is not None and hit[0] > time.time():
            return hit
        return None

    def put(self, token: str, until: float, claims: dict | None) -> None:
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                now = time.time()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
            self._entries[hashlib.sha256(token.encode()).digest()] = (until, claims)


@dataclass
class RSState:
    settings: RSSettings
    hsm: HSM | None
    jwks: _JWKSCache
    cache: _ResultCache
    trusted_networks: tuple
    _endpoints: dict[str, str]

    def endpoint(self, name: str) -> str:
        explicit = {"jwks_uri": self.settings.jwks_uri, "introspection_endpoint": self.settings.introspection_endpoint}[name]
        if explicit:
            return explicit
        if name not in self._endpoints:  # RFC 8414 discovery, once
            meta = _get_json(_metadata_url(self.settings.issuer), self.settings.http_timeout)
            if meta.get("issuer") != self.settings.issuer:
                raise Unavailable("AS metadata names another issuer")  # RFC 8414 §3.3
            self._endpoints.update({k: meta[k] for k in ("jwks_uri", "introspection_endpoint") if isinstance(meta.get(k), str)})
        return self._endpoints[name]


def _metadata_url(issuer: str) -> str:
    parts = urllib.parse.urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path.rstrip('/')}"


def _get_json(url: str, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/json"}), timeout=timeout) as resp:
            doc = json.loads(resp.read(1_000_001))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unavailable(f"cannot fetch {url}: {exc}") from None
    if not isinstance(doc, dict):
        raise Unavailable(f"{url} did not return a JSON object")
    return doc


class ResourceProtector:
    """Protect Flask routes with access tokens from a flask-oauth-hsm authorization server."""

    def __init__(self, app: Flask | None = None):
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("ResourceProtector is already initialised on this app")
        settings = _load_rs_settings(app.config)
        hsm = _rs_hsm(app, settings)
        from .extension import KEY_CHECKS

        for variable, label in (("OAUTH_HSM_RS_SIGNING_KEY", settings.signing_key), ("OAUTH_HSM_RS_DECRYPTION_KEY", settings.decryption_key)):
            if label is not None and KEY_CHECKS["enabled"]:
                try:
                    hsm.key(label)  # start-up check: present, safe
                except KeyNotFound as exc:
                    raise KeyNotFound(f"{variable}: {exc}") from None
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies)
        state = RSState(settings, hsm, None, _ResultCache(), networks, {})  # type: ignore[arg-type]
        as_state = app.extensions.get("oauth_hsm")
        if as_state is not None and as_state.settings.issuer == settings.issuer and not settings.jwks_uri:
            # The AS lives in this app: read its key set directly instead of over HTTP.
            state.jwks = _JWKSCache(lambda: json.loads(as_state.keys.jwks_json))
        else:
            state.jwks = _JWKSCache(lambda: _get_json(state.endpoint("jwks_uri"), settings.http_timeout))
        app.extensions[EXTENSION_KEY] = state

    def require_token(self, scope: str | None = None):
        """Decorator: the request must carry a valid access token with every scope listed."""
        needed = frozenset(scope.split()) if scope else frozenset()

        def decorator(view):
            @wraps(view)
            def wrapper(*args, **kwargs):
                state = current_app.extensions[EXTENSION_KEY]
                try:
                    g.oauth_token = authorize(state, request, needed)
                except TokenRejected as exc:
                    return _challenge(exc)
                except (Unavailable, HSMError) as exc:
                    log.error("cannot validate access tokens: %s", exc)
                    body = {"error": "temporarily_unavailable"}
                    headers = {"Retry-After": str(state.settings.retry_after), "Cache-Control": "no-store"}
                    return Response(json.dumps(body), 503, headers, mimetype="application/json")
                return view(*args, **kwargs)

            return wrapper

        return decorator


def rs_variable_names() -> list[str]:
    return sorted(f.data_key for f in _RSSchema().fields.values())


def _load_rs_settings(config) -> RSSettings:
    try:
        data = _RSSchema().load(raw_values(config, os.environ, rs_variable_names()))
    except ValidationError as exc:
        raise ConfigError(first_error(exc.messages)) from None
    settings = RSSettings(**data)
    if settings.check_cip and settings.mode != "local":
        raise ConfigError("OAUTH_HSM_RS_CHECK_CIP: only in local mode (introspection answers carry no cip_hash)")
    if settings.mode == "introspection" and not (settings.client_id and settings.signing_key):
        raise ConfigError("OAUTH_HSM_RS_CLIENT_ID: introspection mode needs OAUTH_HSM_RS_CLIENT_ID and OAUTH_HSM_RS_SIGNING_KEY")
    if settings.require_encrypted and not settings.decryption_key:
        raise ConfigError("OAUTH_HSM_RS_DECRYPTION_KEY: required when OAUTH_HSM_RS_REQUIRE_ENCRYPTED_TOKENS is set")
    return settings


def _rs_hsm(app: Flask, settings: RSSettings) -> HSM | None:
    if settings.signing_key is None and settings.decryption_key is None:
        return None
    if "oauth_hsm" in app.extensions:  # the AS in the same app: one token, one HSM object
        return app.extensions["oauth_hsm"].hsm
    return HSM(load_hsm_settings(app.config))


# --- validating a request ------------------------------------------------------------------------------


def bearer_token(req) -> str:
    """RFC 6750 §2.1: the Authorization header only (no query or form parameters)."""
    header = req.headers.get("Authorization")
    if header is None:
        raise TokenRejected("", 401, "access token required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise TokenRejected("invalid_request", 400, "use Authorization: Bearer <token>")
    if len(token) > MAX_ACCESS_TOKEN_LEN:
        raise TokenRejected("invalid_token", 401, "token too large")
    return token


def authorize(state: RSState, req, needed: frozenset[str]) -> dict:
    token = bearer_token(req)
    if state.settings.mode == "local":
        claims = validate_locally(state, token)
    else:
        claims = introspect_remotely(state, token)
    granted = frozenset(str(claims.get("scope", "")).split())
    if not needed <= granted:
        raise TokenRejected("insufficient_scope", 403, "the token lacks a required scope", " ".join(sorted(needed)))
    if state.settings.check_cip and "cip_hash" in claims:
        ip = client_address(req.remote_addr, req.headers.get("X-Forwarded-For"), state.trusted_networks)
        if ip is None or cip_hash(ip) != claims["cip_hash"]:
            raise TokenRejected("invalid_token", 401, "token used from another client address")
    return claims


def _decrypter(state: RSState):
    if state.settings.decryption_key is None:
        raise TokenRejected("invalid_token", 401, "encrypted token, but no decryption key is configured")
    return state.hsm.key(state.settings.decryption_key)


def validate_locally(state: RSState, token: str) -> dict:
    """RFC 9068 §4, in order; raises TokenRejected (invalid_token)."""
    s = state.settings
    try:
        if jwt.is_encrypted(token):
            key = _decrypter(state)
            inner = jwe.decrypt(token, lambda h: key, [key.alg], ["A128GCM", "A256GCM", "A128CBC-HS256"], max_len=MAX_ACCESS_TOKEN_LEN)
            token = jwt.unnest(inner).decode("ascii", "replace")
        elif s.require_encrypted:
            raise TokenRejected("invalid_token", 401, "this resource server accepts encrypted tokens only")  # RFC 9068 §4
        verified = jws.verify(token, state.jwks.key_for, s.algorithms, max_len=MAX_ACCESS_TOKEN_LEN)
        claims = jwt.decode_claims(verified.payload)
    except JoseError:
        raise TokenRejected("invalid_token", 401, "the access token is invalid") from None
    if not compact.typ_is(verified.header, AT_TYP):
        raise TokenRejected("invalid_token", 401, "not an access token (typ)")
    _check_claims(claims, s)
    return claims


def _check_claims(claims: dict, s: RSSettings) -> None:
    now = time.time()
    if claims.get("iss") != s.issuer:
        raise TokenRejected("invalid_token", 401, "wrong issuer")
    aud = claims.get("aud")
    if s.resource not in (aud if isinstance(aud, list) else [aud]):
        raise TokenRejected("invalid_token", 401, "the token is not meant for this resource")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool) or exp <= now - s.leeway:
        raise TokenRejected("invalid_token", 401, "the token has expired")
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, (int, float)) or value > now + s.leeway):
            raise TokenRejected("invalid_token", 401, f"{name} is in the future")


# --- introspection mode ----------------------------------------------------------------------------------


def introspect_remotely(state: RSState, token: str) -> dict:
    hit = state.cache.get(token)
    if hit is not None:
        if hit[1] is None:
            raise TokenRejected("invalid_token", 401, "the access token is not active")
        return hit[1]
    answer = _ask_the_as(state, token)
    now = time.time()
    if not answer.get("active"):
        if state.settings.cache_ttl:
            state.cache.put(token, now + state.settings.cache_ttl, None)
        raise TokenRejected("invalid_token", 401, "the access token is not active")
    exp = answer.get("exp")
    until = min(now + state.settings.cache_ttl, exp if isinstance(exp, (int, float)) else now)
    if state.settings.cache_ttl:
        state.cache.put(token, until, answer)
    return answer


def client_assertion(state: RSState, endpoint: str) -> str:
    s = state.settings
    now = int(time.time())
    claims = {"iss": s.client_id, "sub": s.client_id, "aud": s.issuer if s.assertion_aud == "issuer" else endpoint,
              "iat": now, "exp": now + 60, "jti": secrets.token_urlsafe(16)}
    return jwt.sign_jwt(claims, state.hsm.key(s.signing_key), "JWT")


def _ask_the_as(state: RSState, token: str) -> dict:
    endpoint = state.endpoint("introspection_endpoint")
    form = {"token": token, "client_assertion_type": ASSERTION_TYPE, "client_assertion": client_assertion(state, endpoint)}
    req = urllib.request.Request(endpoint, data=urllib.parse.urlencode(form).encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded", "Accept": INTROSPECTION_JWT})
    try:
        with urllib.request.urlopen(req, timeout=state.settings.http_timeout) as resp:
            body, content_type = resp.read(MAX_ACCESS_TOKEN_LEN + 1), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        # 401/403/406 mean our registration or credentials are wrong: still nothing the API's
        # caller can fix, so 503 to them and the status in our log.
        raise Unavailable(f"introspection answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"introspection unreachable: {exc}") from None
    if not content_type.startswith(INTROSPECTION_JWT):
        raise Unavailable("introspection did not answer with a JWT")
    try:
        return read_introspection_jwt(state, body.decode("ascii"))
    except (JoseError, UnicodeDecodeError, ValueError) as exc:
        raise Unavailable(f"introspection response rejected: {exc}") from None


def read_introspection_jwt(state: RSState, body: str) -> dict:
    """RFC 9701 §5: decrypt in our token if encrypted, verify the AS signature, check the claims."""
    s = state.settings
    if jwt.is_encrypted(body):
        key = _decrypter(state)
        body = jwt.unnest(jwe.decrypt(body, lambda h: key, [key.alg], ["A128GCM", "A256GCM"], max_len=MAX_ACCESS_TOKEN_LEN)).decode("ascii")
    verified = jws.verify(body, state.jwks.key_for, tuple(SIGNING), max_len=MAX_ACCESS_TOKEN_LEN)
    if not compact.typ_is(verified.header, "token-introspection+jwt"):
        raise JoseError("not an introspection response (typ)")
    claims = jwt.decode_claims(verified.payload)
    iat = claims.get("iat")
    if claims.get("iss") != s.issuer or claims.get("aud") != s.client_id or not isinstance(iat, (int, float)) or abs(time.time() - iat) > 60 + s.leeway:
        raise JoseError("introspection response for someone else, or stale")
    answer = claims.get("token_introspection")
    if not isinstance(answer, dict):
        raise JoseError("no token_introspection claim")
    if answer.get("active"):
        _check_claims(answer, s)  # the AS already checked; the RS checks what it relies on
    return answer


def _challenge(exc: TokenRejected) -> Response:
    """RFC 6750 §3: WWW-Authenticate: Bearer with error, error_description (and scope)."""
    parts = ['Bearer realm="api"']
    body: dict[str, Any] = {}
    if exc.error:
        parts.append(f'error="{exc.error}"')
        parts.append(f'error_description="{exc.description}"')
        body = {"error": exc.error, "error_description": exc.description}
    if exc.scope:
        parts.append(f'scope="{exc.scope}"')
    headers = {"WWW-Authenticate": ", ".join(parts), "Cache-Control": "no-store"}
    return Response(json.dumps(body or {"error": "invalid_request", "error_description": exc.description}),
                    exc.status, headers, mimetype="application/json")
