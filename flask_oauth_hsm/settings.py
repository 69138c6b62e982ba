"""Settings: ``OAUTH_HSM_*`` from ``app.config``, else the environment; validated once at start-up.

Each setting is declared exactly once, as a field of :class:`Settings` carrying its variable name,
its marshmallow field (type, default, validation) and, in a comment, why the default is what it
is. The schema is built from those declarations; docs/configuration.md documents the same list
and a test keeps names *and* defaults in step. A bad value stops start-up with one line naming
the variable (:class:`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from .algorithms import SIGNING
from .errors import ConfigError

PREFIX = "OAUTH_HSM_"
# docs/security.md, "The aud of client assertions": issuer (FAPI 2.0 Final §5.3.2.1,
# draft-ietf-oauth-rfc7523bis), endpoint (CAMARA), legacy (FAPI 2.0 Draft 04; audience injection).
AUD_POLICIES = ("issuer", "endpoint", "legacy")
RATE_LIMIT_KINDS = ("address", "client", "hsm")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


class CSV(fields.Field[tuple[str, ...]]):
    """A comma-separated list in one variable (environment variables are strings)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[str, ...]:
        if isinstance(value, (list, tuple)):
            return tuple(str(v).strip() for v in value if str(v).strip())
        if isinstance(value, str):
            return _csv(value)
        raise ValidationError("must be a comma-separated list")


@dataclass(frozen=True)
class RateLimits:
    """``OAUTH_HSM_RATE_LIMITS``: one limit per kind, in the ``limits`` library's notation."""

    address: str  # per source address and endpoint, before authentication
    client: str  # per authenticated client or resource server and endpoint
    hsm: str  # private-key operations spent before the caller is authenticated, per address


class RateLimitsField(fields.Field[RateLimits | None]):
    """``off``, or ``address=…,client=…,hsm=…`` (each optional; omitted kinds keep the default)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> RateLimits | None:
        if isinstance(value, RateLimits) or value is None:
            return value
        if not isinstance(value, str):
            raise ValidationError("must be 'off' or kind=limit pairs")
        if value.strip().lower() == "off":
            return None
        return parse_rate_limits(value)


def parse_rate_limits(value: str) -> RateLimits:
    from limits import parse  # Flask-Limiter's own parser: the notation users know from it

    chosen = dict(DEFAULT_RATE_LIMITS)
    for item in _csv(value):
        kind, sep, limit = item.partition("=")
        if not sep or kind.strip() not in RATE_LIMIT_KINDS:
            raise ValidationError(f"{item!r}: expected kind=limit with kind among {', '.join(RATE_LIMIT_KINDS)}")
        try:
            parse(limit.strip())
        except ValueError:
            raise ValidationError(f"{item!r}: {limit.strip()!r} is not a rate limit such as 100/second") from None
        chosen[kind.strip()] = limit.strip()
    return RateLimits(**chosen)


def https_or_loopback(url: str) -> None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValidationError(f"{url[:80]!r} is not an absolute URL (did you forget https://?)")
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValidationError("must be an https URL (http is allowed only for localhost, 127.0.0.1 and ::1)")
    if parts.query or parts.fragment or not parts.hostname:
        # RFC 8414 §2: the issuer has no query or fragment components.
        raise ValidationError("must be a URL with a host and no query or fragment")


def _redis_url(url: str) -> None:
    from .store.urls import parse_redis_url  # the forms are the store's (Sentinel, Cluster)

    try:
        parse_redis_url(url)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _redis_prefix(prefix: str) -> None:
    from .store.layout import prefix_problem

    problem = prefix_problem(prefix)
    if problem:
        raise ValidationError(problem)


def cidrs(values: tuple[str, ...]) -> None:
    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValidationError(f"{v!r} is not an IP address or CIDR range") from None


def _assertion_algs(values: tuple[str, ...]) -> None:
    bad = [v for v in values if v not in SIGNING]
    if bad or not values:
        raise ValidationError(f"must name algorithms among {', '.join(SIGNING)}")


def _url_prefix(value: str) -> None:
    if not value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValidationError("must start with '/' and not end with '/'")


def _aud_policy(value: str) -> None:
    if value == "fapi2":
        raise ValidationError(
            "'fapi2' was renamed 'legacy' and is no longer the default: FAPI 2.0 Final accepts only "
            "the issuer (CHANGELOG.md, migration)"
        )
    if value not in AUD_POLICIES:
        raise ValidationError(f"must be one of: {', '.join(AUD_POLICIES)}")


def _key_set_name(value: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        raise ValidationError("must be 1 to 64 letters, digits, '.', '_' or '-'")


# docs/proof-of-possession.md, "Server nonces": off (only clients registered with
# dpop_nonce_required), optional (offered; once a client got one it must keep using them), required.
DPOP_NONCE_MODES = ("off", "optional", "required")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")


def header_name(value: str) -> None:
    if not _HEADER_NAME.fullmatch(value):
        raise ValidationError("must be an HTTP header name (letters, digits and '-')")


def setting(env: str, kind: type[fields.Field[Any]], **options: Any) -> Any:
    """Declare a setting: its variable and its marshmallow field options (default, validation)."""
    return dataclasses.field(metadata={"env": env, "kind": kind, "options": options})


DEFAULT_RATE_LIMITS = {"address": "200/second", "client": "100/second", "hsm": "20/second"}


@dataclass(frozen=True)
class Settings:
    # -- the token ---------------------------------------------------------------------------
    pkcs11_module: str = setting("OAUTH_HSM_PKCS11_MODULE", fields.String, required=True)
    # Label preferred over slot: SoftHSM renumbers slots when tokens are added.
    token_label: str | None = setting("OAUTH_HSM_TOKEN_LABEL", fields.String, load_default=None)
    slot: int | None = setting("OAUTH_HSM_SLOT", fields.Integer, load_default=None, validate=validate.Range(min=0))
    pin: str | None = setting("OAUTH_HSM_PIN", fields.String, load_default=None)
    pin_file: str | None = setting("OAUTH_HSM_PIN_FILE", fields.String, load_default=None)
    # Required unless OAUTH_HSM_KEY_SET is set (load_settings): then the key states decide.
    signing_key: str | None = setting("OAUTH_HSM_SIGNING_KEY", fields.String, load_default=None)
    # Public keys published in the JWKS besides the signing key: the next key before it signs,
    # the retired key until its tokens expired (docs/hsm-and-keys.md, rotation).
    published_keys: tuple[str, ...] = setting("OAUTH_HSM_PUBLISHED_KEYS", CSV, load_default=())
    # The AS's own decryption keys (nested client assertions, CEK escrow); published with use=enc.
    encryption_keys: tuple[str, ...] = setting("OAUTH_HSM_ENCRYPTION_KEYS", CSV, load_default=())
    # 16 sessions: more than the threads of one worker need; each costs a little token memory.
    hsm_pool_size: int = setting("OAUTH_HSM_POOL_SIZE", fields.Integer, load_default=16, validate=validate.Range(1, 256))
    # 5 s: longer than any healthy operation, short enough that a stuck token becomes a 503.
    hsm_pool_timeout: float = setting("OAUTH_HSM_POOL_TIMEOUT", fields.Float, load_default=5.0, validate=validate.Range(0.01, 60))
    # -- identity and endpoints ----------------------------------------------------------------
    issuer: str = setting("OAUTH_HSM_ISSUER", fields.String, required=True, validate=https_or_loopback)
    url_prefix: str = setting("OAUTH_HSM_URL_PREFIX", fields.String, load_default="/oauth2", validate=_url_prefix)
    registry: str | None = setting("OAUTH_HSM_REGISTRY", fields.String, load_default=None)
    # -- Redis -----------------------------------------------------------------------------------
    redis_url: str | None = setting("OAUTH_HSM_REDIS_URL", fields.String, load_default=None, validate=_redis_url)
    redis_prefix: str = setting(
        "OAUTH_HSM_REDIS_PREFIX", fields.String, load_default="oauth-hsm:", validate=[validate.Length(1, 64), _redis_prefix]
    )
    # Short: a slow Redis must turn into a quick 503, not a hung worker.
    redis_timeout: float = setting("OAUTH_HSM_REDIS_TIMEOUT", fields.Float, load_default=0.25, validate=validate.Range(0.01, 10))
    # 5 s: after a Redis reset, clients whose clocks run up to this far behind are served at once;
    # the price is stated in docs/security.md (an id used just before the reset, once more).
    reset_clock_tolerance: int = setting(
        "OAUTH_HSM_RESET_CLOCK_TOLERANCE", fields.Integer, load_default=5, validate=validate.Range(0, 60)
    )
    # -- high availability: replicated Redis, network HSM (docs/operations.md) --------------------
    # None = by topology: 1 on Sentinel and Cluster (a write acknowledged by one replica survives
    # the loss of its master), 0 on one Redis (no replica to wait for).
    redis_wait_replicas: int | None = setting(
        "OAUTH_HSM_REDIS_WAIT_REPLICAS", fields.Integer, load_default=None, validate=validate.Range(0, 16)
    )
    # 100 ms: a healthy replica acknowledges in well under 1 ms on a LAN; at most half the Redis
    # timeout, or the socket would time out before WAIT answers.
    redis_wait_timeout: float = setting(
        "OAUTH_HSM_REDIS_WAIT_TIMEOUT", fields.Float, load_default=0.1, validate=validate.Range(0.001, 5)
    )
    # Off: a Redis that may evict live replay records reopens replay windows; start-up refuses it
    # and /ready is red. On: run anyway (logged as an error), for operators who accept that.
    redis_allow_eviction: bool = setting("OAUTH_HSM_REDIS_ALLOW_EVICTION", fields.Boolean, load_default=False)
    # 2 s: far above a healthy network-HSM operation (~0.4 ms ES256), short enough that a hung
    # HSM becomes a 503 instead of a pile-up of blocked threads; 0 runs calls inline (no deadline).
    hsm_operation_timeout: float = setting(
        "OAUTH_HSM_OPERATION_TIMEOUT", fields.Float, load_default=2.0, validate=validate.Range(0, 60)
    )
    # -- token and assertion policy ------------------------------------------------------------
    # 5 minutes: short enough that revocation matters little, long enough for one API session.
    access_token_lifetime: int = setting(
        "OAUTH_HSM_ACCESS_TOKEN_LIFETIME", fields.Integer, load_default=300, validate=validate.Range(30, 86400)
    )
    assertion_max_lifetime: int = setting(
        "OAUTH_HSM_ASSERTION_MAX_LIFETIME", fields.Integer, load_default=300, validate=validate.Range(10, 3600)
    )
    clock_skew: int = setting("OAUTH_HSM_CLOCK_SKEW", fields.Integer, load_default=30, validate=validate.Range(0, 300))
    # issuer: FAPI 2.0 Final §5.3.2.1 and draft-ietf-oauth-rfc7523bis; immune to audience injection.
    aud_policy: str = setting("OAUTH_HSM_AUD_POLICY", fields.String, load_default="issuer", validate=_aud_policy)
    # Off: rfc7523bis wants the issuer as the sole audience, as a string; some libraries always
    # send an array, and an operator may accept a one-member array for them.
    aud_issuer_array: bool = setting("OAUTH_HSM_AUD_ISSUER_ARRAY", fields.Boolean, load_default=False)
    # RS256 is left out by default: FAPI 2.0 SP §5.4 allows PS256, ES256 and EdDSA only.
    assertion_algs: tuple[str, ...] = setting(
        "OAUTH_HSM_ASSERTION_ALGS", CSV, load_default=("ES256", "PS256", "EdDSA"), validate=_assertion_algs
    )
    # -- HTTP ------------------------------------------------------------------------------------
    max_body_bytes: int = setting(
        "OAUTH_HSM_MAX_BODY_BYTES", fields.Integer, load_default=16384, validate=validate.Range(1024, 1048576)
    )
    trusted_proxies: tuple[str, ...] = setting("OAUTH_HSM_TRUSTED_PROXIES", CSV, load_default=(), validate=cidrs)
    jwks_max_age: int = setting("OAUTH_HSM_JWKS_MAX_AGE", fields.Integer, load_default=300, validate=validate.Range(0, 86400))
    retry_after: int = setting("OAUTH_HSM_RETRY_AFTER", fields.Integer, load_default=5, validate=validate.Range(1, 3600))
    # On by default (docs/configuration.md, "Rate limits"); "off" for benchmarks and for
    # deployments that limit at a gateway.
    rate_limits: RateLimits | None = setting(
        "OAUTH_HSM_RATE_LIMITS", RateLimitsField, load_default=lambda: RateLimits(**DEFAULT_RATE_LIMITS)
    )
    # -- key rotation: key states in the token (docs/hsm-and-keys.md, "Key rotation") ------------
    # Unset: the three label settings fix the keys until a restart, as before. Set: the key states
    # recorded in the token for this key set decide what signs, is published and decrypts.
    key_set: str | None = setting("OAUTH_HSM_KEY_SET", fields.String, load_default=None, validate=_key_set_name)
    # 30 s: a state change reaches every process within this (one re-read of a few small objects
    # per process per period); it is part of every rotation wait, so keep it well below max-age.
    keys_refresh: int = setting("OAUTH_HSM_KEYS_REFRESH", fields.Integer, load_default=30, validate=validate.Range(1, 3600))
    # 300 s: how long a peer may keep our JWKS after fetching it, whatever max-age says; the
    # bundled ResourceProtector keeps it 300 s. A next key waits for it before it signs.
    jwks_peer_cache: int = setting(
        "OAUTH_HSM_JWKS_PEER_CACHE", fields.Integer, load_default=300, validate=validate.Range(0, 86400)
    )
    # -- users: authorization code flow, refresh tokens, OpenID Connect (docs/users.md) ------------
    # 60 s: a code travels one redirect and one back-channel request; RFC 6749 §4.1.2 allows up to
    # 10 minutes, and every second more is a second a stolen code is worth something.
    code_lifetime: int = setting("OAUTH_HSM_CODE_LIFETIME", fields.Integer, load_default=60, validate=validate.Range(10, 600))
    # 10 minutes for the user to sign in at the host and decide on the consent page.
    authorization_request_lifetime: int = setting(
        "OAUTH_HSM_AUTHORIZATION_REQUEST_LIFETIME", fields.Integer, load_default=600, validate=validate.Range(60, 3600)
    )
    # 14 days absolute: the user signs in again at least every two weeks (RFC 9700 §4.14.2).
    refresh_token_lifetime: int = setting(
        "OAUTH_HSM_REFRESH_TOKEN_LIFETIME", fields.Integer, load_default=1209600, validate=validate.Range(300, 31536000)
    )
    # 1 day idle: a refresh token unused for a day is dead, which bounds what a forgotten device holds.
    refresh_token_idle_lifetime: int = setting(
        "OAUTH_HSM_REFRESH_TOKEN_IDLE_LIFETIME", fields.Integer, load_default=86400, validate=validate.Range(300, 31536000)
    )
    # 5 minutes: an ID token is consumed by the client right away (OIDC Core §3.1.3.7).
    id_token_lifetime: int = setting(
        "OAUTH_HSM_ID_TOKEN_LIFETIME", fields.Integer, load_default=300, validate=validate.Range(30, 86400)
    )
    # 30 days: a user is not asked again for what they approved recently; 0 asks every time.
    consent_lifetime: int = setting(
        "OAUTH_HSM_CONSENT_LIFETIME", fields.Integer, load_default=2592000, validate=validate.Range(0, 31536000)
    )

    # -- proof of possession (docs/proof-of-possession.md: DPoP, PoP key distribution, mTLS) -----
    # RFC 9449 §5.1 dpop_signing_alg_values_supported: asymmetric only (HS*, none are not in SIGNING);
    # RS256 is left out as for client assertions (FAPI 2.0 SP §5.4).
    dpop_algs: tuple[str, ...] = setting(
        "OAUTH_HSM_DPOP_ALGS", CSV, load_default=("ES256", "ES384", "PS256", "EdDSA"), validate=_assertion_algs
    )
    # 60 s: a proof is made for one request; a short iat window bounds pre-computed proofs and the
    # time their jti must be remembered (RFC 9449 §11.1).
    dpop_proof_max_age: int = setting(
        "OAUTH_HSM_DPOP_PROOF_MAX_AGE", fields.Integer, load_default=60, validate=validate.Range(5, 600)
    )
    # off: nonces only for clients registered with dpop_nonce_required (RFC 9449 §8 makes them optional).
    dpop_nonce: str = setting(
        "OAUTH_HSM_DPOP_NONCE", fields.String, load_default="off", validate=validate.OneOf(DPOP_NONCE_MODES)
    )
    # Label of an HMAC key in the token: stateless nonces that every worker and host can check.
    dpop_nonce_key: str | None = setting("OAUTH_HSM_DPOP_NONCE_KEY", fields.String, load_default=None)
    # 120 s: a new nonce every 60 s, each accepted for 60 to 120 s: one retry per minute at most.
    dpop_nonce_lifetime: int = setting(
        "OAUTH_HSM_DPOP_NONCE_LIFETIME", fields.Integer, load_default=120, validate=validate.Range(10, 3600)
    )
    # Label of an AES key in the token that seals symmetric PoP keys kept in Redis; unset: no symmetric PoP.
    pop_key_wrap_key: str | None = setting("OAUTH_HSM_POP_KEY_WRAP_KEY", fields.String, load_default=None)
    # 60 s: the `created` window of RFC 9421 signatures on token requests (asymmetric req_cnf).
    http_signature_max_age: int = setting(
        "OAUTH_HSM_HTTP_SIGNATURE_MAX_AGE", fields.Integer, load_default=60, validate=validate.Range(5, 600)
    )
    # Unset: no mTLS. The header a TLS-terminating proxy in OAUTH_HSM_TRUSTED_PROXIES sets to the
    # URL-encoded PEM client certificate (nginx $ssl_client_escaped_cert), RFC 8705 §2.
    mtls_cert_header: str | None = setting("OAUTH_HSM_MTLS_CERT_HEADER", fields.String, load_default=None, validate=header_name)
    # The header carrying the proxy's chain verification result (nginx $ssl_client_verify); needed
    # by tls_client_auth (RFC 8705 §2.1: the chain is validated), not by the self-signed method.
    mtls_verify_header: str | None = setting(
        "OAUTH_HSM_MTLS_VERIFY_HEADER", fields.String, load_default=None, validate=header_name
    )

    # -- CIBA and pairwise subjects (issue 12; docs/ciba.md) -------------------------------------
    # ciba: any one of the three hints (CIBA Core §7.1); camara: login_hint only, in the formats of
    # the CAMARA Security and Interoperability profile (tel:+E.164, ipport:, operatortoken:).
    ciba_profile: str = setting(
        "OAUTH_HSM_CIBA_PROFILE", fields.String, load_default="ciba", validate=validate.OneOf(("ciba", "camara"))
    )
    # 120 s: long enough to find the phone and approve, short enough that a forgotten request dies;
    # also the most a client's requested_expiry can ask for (CIBA Core §7.1, §7.3).
    ciba_request_lifetime: int = setting(
        "OAUTH_HSM_CIBA_REQUEST_LIFETIME", fields.Integer, load_default=120, validate=validate.Range(30, 3600)
    )
    # 5 s: CIBA Core §7.3's default interval between polls; slow_down adds 5 s each time (§11).
    ciba_interval: int = setting("OAUTH_HSM_CIBA_INTERVAL", fields.Integer, load_default=5, validate=validate.Range(1, 60))
    # Label of an HMAC key in the token for pairwise sub values (OIDC Core §8.1); unset: no pairwise clients.
    pairwise_key: str | None = setting("OAUTH_HSM_PAIRWISE_KEY", fields.String, load_default=None)
    # -- PAR and request objects (issue 12; docs/par-and-jar.md) ------------------------------------
    # 60 s: a request_uri travels one redirect (RFC 9126 §2.2 suggests 5 to 600 s); shorter is safer.
    par_lifetime: int = setting("OAUTH_HSM_PAR_LIFETIME", fields.Integer, load_default=60, validate=validate.Range(5, 600))
    # Off: PAR for clients registered with require_pushed_authorization_requests (RFC 9126 §5, §6);
    # on (FAPI 2.0 SP §5.3.1.2): /authorize takes only client_id and request_uri, from every client.
    require_par: bool = setting("OAUTH_HSM_REQUIRE_PAR", fields.Boolean, load_default=False)
    # Off: a request object may carry typ oauth-authz-req+jwt, JWT or none (RFC 9101 §10.8 only
    # recommends the explicit type); on: exactly oauth-authz-req+jwt, as per-client request_object_typ_required.
    request_object_typ_required: bool = setting("OAUTH_HSM_REQUEST_OBJECT_TYP_REQUIRED", fields.Boolean, load_default=False)

    def __repr__(self) -> str:  # never print the PIN
        return f"Settings(issuer={self.issuer!r}, token={self.token_label or self.slot!r})"


class _Strict(Schema):
    class Meta:
        unknown = EXCLUDE


def _schema_class(names: frozenset[str] | None = None) -> type[Schema]:
    declared: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if names is None or f.name in names:
            declared[f.name] = f.metadata["kind"](data_key=f.metadata["env"], **f.metadata["options"])
    return _Strict.from_dict(declared, name="SettingsSchema")  # a subclass of _Strict: its Meta too


def variable_names() -> list[str]:
    """Every OAUTH_HSM_* variable we read (for the docs test and error messages)."""
    return sorted(f.metadata["env"] for f in dataclasses.fields(Settings))


def defaults() -> dict[str, Any]:
    """Variable name -> default value (None when required), for the docs test."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        default = f.metadata["options"].get("load_default")
        out[f.metadata["env"]] = default() if callable(default) else default
    return out


def raw_values(config: Mapping[str, Any], environ: Mapping[str, str], names: list[str] | None = None) -> dict[str, Any]:
    """Each variable from app.config, else (also when set to None or "") from the environment."""
    raw: dict[str, Any] = {}
    for name in names or variable_names():
        value = config.get(name)
        if value is None or value == "":
            value = environ.get(name)
        if value is not None and value != "":
            raw[name] = value
    return raw


def first_error(messages: dict[str, Any]) -> str:
    name = sorted(messages)[0]
    detail: Any = messages[name]
    while isinstance(detail, (list, dict)):
        detail = detail[0] if isinstance(detail, list) else next(iter(detail.values()))
    return f"{name}: {detail}".replace("Missing data for required field.", "is required but not set")


def load_settings(
    config: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    need_registry: bool = True,
    need_redis_url: bool = True,
) -> Settings:
    """Read and validate every setting; raises ConfigError with one line naming the variable."""
    environ = os.environ if environ is None else environ
    try:
        data = _schema_class()().load(raw_values(config, environ))
    except ValidationError as exc:
        raise ConfigError(first_error(exc.messages_dict)) from None
    resolve_token_and_pin(data)
    if need_redis_url and data["redis_url"] is None:
        raise ConfigError("OAUTH_HSM_REDIS_URL: is required but not set (or pass redis_client= to init_app)")
    _check_key_mode(data)
    if need_registry and data["registry"] is None:
        raise ConfigError("OAUTH_HSM_REGISTRY: is required but not set (or register loader callbacks)")
    if data["redis_wait_timeout"] > data["redis_timeout"] / 2:
        raise ConfigError(
            "OAUTH_HSM_REDIS_WAIT_TIMEOUT: must be at most half of OAUTH_HSM_REDIS_TIMEOUT "
            "(or the socket times out before WAIT answers)"
        )
    if data["registry"] is not None and not os.path.isfile(data["registry"]):
        raise ConfigError(f"OAUTH_HSM_REGISTRY: no such file: {data['registry']}")
    check_binding_settings(data)
    _check_user_lifetimes(data)
    return Settings(**data)


def check_binding_settings(data: Mapping[str, Any]) -> None:
    """Combinations of the proof-of-possession settings that could never work."""
    if data["dpop_nonce"] != "off" and data["dpop_nonce_key"] is None:
        raise ConfigError(f"OAUTH_HSM_DPOP_NONCE_KEY: required when OAUTH_HSM_DPOP_NONCE is {data['dpop_nonce']}")
    if data["mtls_cert_header"] is not None and not data["trusted_proxies"]:
        raise ConfigError("OAUTH_HSM_MTLS_CERT_HEADER: needs OAUTH_HSM_TRUSTED_PROXIES (the header is believed only from them)")
    if data["mtls_verify_header"] is not None and data["mtls_cert_header"] is None:
        raise ConfigError("OAUTH_HSM_MTLS_VERIFY_HEADER: needs OAUTH_HSM_MTLS_CERT_HEADER")


HSM_FIELDS = frozenset(
    {"pkcs11_module", "token_label", "slot", "pin", "pin_file", "hsm_pool_size", "hsm_pool_timeout", "hsm_operation_timeout"}
)


def _check_user_lifetimes(data: dict[str, Any]) -> None:
    """Lifetimes that only make sense together (docs/users.md, refresh tokens)."""
    if data["refresh_token_idle_lifetime"] > data["refresh_token_lifetime"]:
        raise ConfigError("OAUTH_HSM_REFRESH_TOKEN_IDLE_LIFETIME: must not exceed OAUTH_HSM_REFRESH_TOKEN_LIFETIME")
    if data["refresh_token_idle_lifetime"] < data["access_token_lifetime"]:
        # A grant's record must outlive the access tokens it vouches for at introspection.
        raise ConfigError("OAUTH_HSM_REFRESH_TOKEN_IDLE_LIFETIME: must be at least OAUTH_HSM_ACCESS_TOKEN_LIFETIME")


LABEL_SETTINGS = {
    "signing_key": "OAUTH_HSM_SIGNING_KEY",
    "published_keys": "OAUTH_HSM_PUBLISHED_KEYS",
    "encryption_keys": "OAUTH_HSM_ENCRYPTION_KEYS",
}


def _check_key_mode(data: dict[str, Any]) -> None:
    """Label mode (OAUTH_HSM_SIGNING_KEY, …) or key-set mode (OAUTH_HSM_KEY_SET), never both."""
    if data["key_set"] is None:
        if data["signing_key"] is None:
            raise ConfigError("OAUTH_HSM_SIGNING_KEY: is required but not set (or set OAUTH_HSM_KEY_SET for key states)")
        return
    mixed = [variable for name, variable in LABEL_SETTINGS.items() if data[name]]
    if mixed:
        raise ConfigError(
            f"OAUTH_HSM_KEY_SET: the key states decide the keys; unset {', '.join(mixed)} "
            "(docs/hsm-and-keys.md, migrating to key states)"
        )


def resolve_token_and_pin(data: dict[str, Any]) -> None:
    """Exactly one of label/slot and of PIN/PIN file; the PIN file is read here."""
    if (data["token_label"] is None) == (data["slot"] is None):
        raise ConfigError("OAUTH_HSM_TOKEN_LABEL: set exactly one of OAUTH_HSM_TOKEN_LABEL and OAUTH_HSM_SLOT")
    if (data["pin"] is None) == (data["pin_file"] is None):
        raise ConfigError("OAUTH_HSM_PIN: set exactly one of OAUTH_HSM_PIN and OAUTH_HSM_PIN_FILE")
    if data["pin_file"] is not None:
        from .hsm import HSMConfig  # reading a file, not touching the token

        data["pin"] = HSMConfig.read_pin_file(data["pin_file"])


def hsm_config_from(data: Mapping[str, Any]) -> Any:
    from .hsm import HSMConfig

    return HSMConfig(
        module=data["pkcs11_module"],
        token_label=data["token_label"],
        slot=data["slot"],
        pin=data["pin"],
        pool_size=data["hsm_pool_size"],
        pool_timeout=data["hsm_pool_timeout"],
        operation_timeout=data["hsm_operation_timeout"],
    )


def load_hsm_settings(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Any:
    """Only the token settings (a resource server without the AS): returns an HSMConfig."""
    schema = _schema_class(HSM_FIELDS)()
    raw = raw_values(config, os.environ if environ is None else environ)
    try:
        data = schema.load(raw)
    except ValidationError as exc:
        raise ConfigError(first_error(exc.messages_dict)) from None
    resolve_token_and_pin(data)
    return hsm_config_from(data)
