"""Settings: ``OAUTH_HSM_*`` from ``app.config``, else the environment; validated once at start-up.

Every setting is declared once below with its default and why the default is what it is; the
configuration reference (docs/configuration.md) documents the same list, and a test keeps the two
in step. A bad value stops start-up with one line naming the variable (:class:`ConfigError`).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from .algorithms import SIGNING
from .errors import ConfigError

PREFIX = "OAUTH_HSM_"
AUD_POLICIES = ("fapi2", "issuer", "endpoint")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


class CSV(fields.Field):
    """A comma-separated list in one variable (environment variables are strings)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, (list, tuple)):
            items = tuple(str(v).strip() for v in value if str(v).strip())
        elif isinstance(value, str):
            items = _csv(value)
        else:
            raise ValidationError("must be a comma-separated list")
        return items


def https_or_loopback(url: str) -> None:
    parts = urlsplit(url)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValidationError("must be an https URL (http only for localhost)")
    if parts.query or parts.fragment or not parts.hostname:
        # RFC 8414 §2: the issuer has no query or fragment components.
        raise ValidationError("must be a URL with a host and no query or fragment")


def _redis_url(url: str) -> None:
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValidationError("must be a redis://, rediss:// or unix:// URL")


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


class _SettingsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    # -- the token ---------------------------------------------------------------------------
    pkcs11_module = fields.String(required=True, data_key="OAUTH_HSM_PKCS11_MODULE")
    token_label = fields.String(load_default=None, data_key="OAUTH_HSM_TOKEN_LABEL")
    slot = fields.Integer(load_default=None, data_key="OAUTH_HSM_SLOT", validate=validate.Range(min=0))
    pin = fields.String(load_default=None, data_key="OAUTH_HSM_PIN")
    pin_file = fields.String(load_default=None, data_key="OAUTH_HSM_PIN_FILE")
    signing_key = fields.String(required=True, data_key="OAUTH_HSM_SIGNING_KEY")
    # Public keys published in the JWKS besides the signing key: the next key before it signs,
    # the retired key until its tokens expired (docs/hsm-and-keys.md, rotation).
    published_keys = CSV(load_default=(), data_key="OAUTH_HSM_PUBLISHED_KEYS")
    # The AS's own decryption keys (nested client assertions); published with use=enc.
    encryption_keys = CSV(load_default=(), data_key="OAUTH_HSM_ENCRYPTION_KEYS")
    hsm_pool_size = fields.Integer(load_default=16, data_key="OAUTH_HSM_POOL_SIZE", validate=validate.Range(1, 256))
    hsm_pool_timeout = fields.Float(load_default=5.0, data_key="OAUTH_HSM_POOL_TIMEOUT", validate=validate.Range(0.01, 60))
    # -- identity and endpoints ----------------------------------------------------------------
    issuer = fields.String(required=True, data_key="OAUTH_HSM_ISSUER", validate=https_or_loopback)
    url_prefix = fields.String(load_default="/oauth2", data_key="OAUTH_HSM_URL_PREFIX", validate=_url_prefix)
    registry = fields.String(load_default=None, data_key="OAUTH_HSM_REGISTRY")
    # -- Redis -----------------------------------------------------------------------------------
    redis_url = fields.String(load_default=None, data_key="OAUTH_HSM_REDIS_URL", validate=_redis_url)
    redis_prefix = fields.String(load_default="oauth-hsm:", data_key="OAUTH_HSM_REDIS_PREFIX", validate=validate.Length(1, 64))
    # Short: a slow Redis must turn into a quick 503, not a hung worker.
    redis_timeout = fields.Float(load_default=0.25, data_key="OAUTH_HSM_REDIS_TIMEOUT", validate=validate.Range(0.01, 10))
    # -- token and assertion policy ------------------------------------------------------------
    access_token_lifetime = fields.Integer(load_default=300, data_key="OAUTH_HSM_ACCESS_TOKEN_LIFETIME", validate=validate.Range(30, 86400))
    assertion_max_lifetime = fields.Integer(load_default=300, data_key="OAUTH_HSM_ASSERTION_MAX_LIFETIME", validate=validate.Range(10, 3600))
    clock_skew = fields.Integer(load_default=30, data_key="OAUTH_HSM_CLOCK_SKEW", validate=validate.Range(0, 300))
    aud_policy = fields.String(load_default="fapi2", data_key="OAUTH_HSM_AUD_POLICY", validate=validate.OneOf(AUD_POLICIES))
    # RS256 is left out by default: FAPI 2.0 SP §5.4 allows PS256, ES256 and EdDSA only.
    assertion_algs = CSV(load_default=("ES256", "PS256", "EdDSA"), data_key="OAUTH_HSM_ASSERTION_ALGS", validate=_assertion_algs)
    # -- HTTP ------------------------------------------------------------------------------------
    max_body_bytes = fields.Integer(load_default=16384, data_key="OAUTH_HSM_MAX_BODY_BYTES", validate=validate.Range(1024, 1048576))
    trusted_proxies = CSV(load_default=(), data_key="OAUTH_HSM_TRUSTED_PROXIES", validate=cidrs)
    jwks_max_age = fields.Integer(load_default=300, data_key="OAUTH_HSM_JWKS_MAX_AGE", validate=validate.Range(0, 86400))
    retry_after = fields.Integer(load_default=5, data_key="OAUTH_HSM_RETRY_AFTER", validate=validate.Range(1, 3600))


@dataclass(frozen=True)
class Settings:
    pkcs11_module: str
    token_label: str | None
    slot: int | None
    pin: str
    signing_key: str
    published_keys: tuple[str, ...]
    encryption_keys: tuple[str, ...]
    hsm_pool_size: int
    hsm_pool_timeout: float
    issuer: str
    url_prefix: str
    registry: str | None
    redis_url: str | None  # None only when the host app passes its own redis client
    redis_prefix: str
    redis_timeout: float
    access_token_lifetime: int
    assertion_max_lifetime: int
    clock_skew: int
    aud_policy: str
    assertion_algs: tuple[str, ...]
    max_body_bytes: int
    trusted_proxies: tuple[str, ...]
    jwks_max_age: int
    retry_after: int

    def __repr__(self) -> str:  # never print the PIN
        return f"Settings(issuer={self.issuer!r}, token={self.token_label or self.slot!r})"


def variable_names() -> list[str]:
    """Every OAUTH_HSM_* variable we read (for the docs test and error messages)."""
    return sorted(f.data_key for f in _SettingsSchema().fields.values())


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


def first_error(messages: dict) -> str:
    name = sorted(messages)[0]
    detail = messages[name]
    while isinstance(detail, (list, dict)):
        detail = detail[0] if isinstance(detail, list) else next(iter(detail.values()))
    return f"{name}: {detail}".replace("Missing data for required field.", "is required but not set")


def load_settings(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None, *, need_registry: bool = True, need_redis_url: bool = True
) -> Settings:
    """Read and validate every setting; raises ConfigError with one line naming the variable."""
    environ = os.environ if environ is None else environ
    try:
        data = _SettingsSchema().load(raw_values(config, environ))
    except ValidationError as exc:
        raise ConfigError(first_error(exc.messages)) from None
    _resolve_token_and_pin(data)
    if need_redis_url and data["redis_url"] is None:
        raise ConfigError("OAUTH_HSM_REDIS_URL: is required but not set (or pass redis_client= to init_app)")
    if need_registry and data["registry"] is None:
        raise ConfigError("OAUTH_HSM_REGISTRY: is required but not set (or register loader callbacks)")
    if data["registry"] is not None and not os.path.isfile(data["registry"]):
        raise ConfigError(f"OAUTH_HSM_REGISTRY: no such file: {data['registry']}")
    return Settings(**data)



_HSM_FIELDS = ("pkcs11_module", "token_label", "slot", "pin", "pin_file")


def _resolve_token_and_pin(data: dict) -> None:
    """Exactly one of label/slot and of PIN/PIN file; the PIN file is read here."""
    if (data["token_label"] is None) == (data["slot"] is None):
        raise ConfigError("OAUTH_HSM_TOKEN_LABEL: set exactly one of OAUTH_HSM_TOKEN_LABEL and OAUTH_HSM_SLOT")
    if (data["pin"] is None) == (data["pin_file"] is None):
        raise ConfigError("OAUTH_HSM_PIN: set exactly one of OAUTH_HSM_PIN and OAUTH_HSM_PIN_FILE")
    pin_file = data.pop("pin_file")
    if pin_file is not None:
        from .hsm import HSMConfig  # reading a file, not touching the token

        data["pin"] = HSMConfig.read_pin_file(pin_file)


def load_hsm_settings(config: Mapping[str, Any], environ: Mapping[str, str] | None = None):
    """Only the token settings (a resource server without the AS): returns an HSMConfig."""
    from .hsm import HSMConfig

    schema = _SettingsSchema(only=_HSM_FIELDS)
    names = {f.data_key for f in schema.fields.values()}
    raw = raw_values(config, os.environ if environ is None else environ)
    try:
        data = schema.load({k: v for k, v in raw.items() if k in names})
    except ValidationError as exc:
        raise ConfigError(first_error(exc.messages)) from None
    _resolve_token_and_pin(data)
    return HSMConfig(module=data["pkcs11_module"], token_label=data["token_label"], slot=data["slot"], pin=data["pin"])
