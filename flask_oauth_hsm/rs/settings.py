"""Resource-server settings (``OAUTH_HSM_RS_*``), read and validated once by ``init_app``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from ..algorithms import DEFAULT_POP_SIGNATURE_ALGS, HTTP_SIGNATURE_ALGS, SIGNING
from ..clients import valid_resource_uri
from ..errors import ConfigError
from ..settings import CSV, DPOP_NONCE_MODES, _redis_url, cidrs, first_error, header_name, https_or_loopback, raw_values


def _resource(value: str) -> None:
    if not valid_resource_uri(value):
        raise ValidationError("must be an absolute https URI without fragment")


def _algorithms(value: tuple[str, ...]) -> None:
    if not value or not set(value) <= set(SIGNING):
        raise ValidationError("must name JWS algorithms we support")


def _signature_algs(value: tuple[str, ...]) -> None:
    if not value or not set(value) <= set(HTTP_SIGNATURE_ALGS):
        raise ValidationError(f"must name RFC 9421 algorithms among {', '.join(HTTP_SIGNATURE_ALGS)}")


def _origin(value: str) -> None:
    https_or_loopback(value)
    if urlsplit(value).path not in ("", "/"):
        raise ValidationError("must be an origin (scheme://host[:port]) without a path")


class _RSSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    issuer = fields.String(required=True, data_key="OAUTH_HSM_RS_ISSUER", validate=https_or_loopback)
    resource = fields.String(required=True, data_key="OAUTH_HSM_RS_RESOURCE", validate=_resource)
    mode = fields.String(load_default="local", data_key="OAUTH_HSM_RS_MODE", validate=validate.OneOf(["local", "introspection"]))
    jwks_uri = fields.String(load_default=None, data_key="OAUTH_HSM_RS_JWKS_URI", validate=https_or_loopback)
    introspection_endpoint = fields.String(
        load_default=None, data_key="OAUTH_HSM_RS_INTROSPECTION_ENDPOINT", validate=https_or_loopback
    )
    client_id = fields.String(load_default=None, data_key="OAUTH_HSM_RS_CLIENT_ID")
    signing_key = fields.String(load_default=None, data_key="OAUTH_HSM_RS_SIGNING_KEY")
    decryption_key = fields.String(load_default=None, data_key="OAUTH_HSM_RS_DECRYPTION_KEY")
    require_encrypted = fields.Boolean(load_default=False, data_key="OAUTH_HSM_RS_REQUIRE_ENCRYPTED_TOKENS")
    algorithms = CSV(load_default=("ES256", "ES384", "PS256", "EdDSA"), data_key="OAUTH_HSM_RS_ALGORITHMS", validate=_algorithms)
    leeway = fields.Integer(load_default=30, data_key="OAUTH_HSM_RS_LEEWAY", validate=validate.Range(0, 300))
    cache_ttl = fields.Integer(load_default=30, data_key="OAUTH_HSM_RS_CACHE_TTL", validate=validate.Range(0, 3600))
    http_timeout = fields.Float(load_default=3.0, data_key="OAUTH_HSM_RS_HTTP_TIMEOUT", validate=validate.Range(0.1, 60))
    assertion_aud = fields.String(
        load_default="issuer", data_key="OAUTH_HSM_RS_ASSERTION_AUD", validate=validate.OneOf(["issuer", "endpoint"])
    )
    check_cip = fields.Boolean(load_default=False, data_key="OAUTH_HSM_RS_CHECK_CIP")
    retry_after = fields.Integer(load_default=5, data_key="OAUTH_HSM_RS_RETRY_AFTER", validate=validate.Range(1, 3600))
    # The same variable as the AS's: caller addresses come from X-Forwarded-For only through these.
    trusted_proxies = CSV(load_default=(), data_key="OAUTH_HSM_TRUSTED_PROXIES", validate=cidrs)
    # -- sender-constrained tokens (docs/proof-of-possession.md) --------------------------------
    # The origin clients reach this API at (htu, @target-uri); default: that of OAUTH_HSM_RS_RESOURCE.
    # Never the Host header: a proof made for another server must not pass here.
    public_url = fields.String(load_default=None, data_key="OAUTH_HSM_RS_PUBLIC_URL", validate=_origin)
    dpop_algs = CSV(load_default=("ES256", "ES384", "PS256", "EdDSA"), data_key="OAUTH_HSM_RS_DPOP_ALGS", validate=_algorithms)
    # 60 s: DPoP iat and RFC 9421 created windows, as at the AS.
    proof_max_age = fields.Integer(load_default=60, data_key="OAUTH_HSM_RS_PROOF_MAX_AGE", validate=validate.Range(5, 600))
    dpop_nonce = fields.String(load_default="off", data_key="OAUTH_HSM_RS_DPOP_NONCE", validate=validate.OneOf(DPOP_NONCE_MODES))
    dpop_nonce_key = fields.String(load_default=None, data_key="OAUTH_HSM_RS_DPOP_NONCE_KEY")
    dpop_nonce_lifetime = fields.Integer(
        load_default=120, data_key="OAUTH_HSM_RS_DPOP_NONCE_LIFETIME", validate=validate.Range(10, 3600)
    )
    signature_algs = CSV(
        load_default=DEFAULT_POP_SIGNATURE_ALGS, data_key="OAUTH_HSM_RS_SIGNATURE_ALGS", validate=_signature_algs
    )
    # Replay state (DPoP jti, signature nonces); unset: the AS's Redis when the AS is in this app.
    redis_url = fields.String(load_default=None, data_key="OAUTH_HSM_RS_REDIS_URL", validate=_redis_url)
    redis_prefix = fields.String(
        load_default="oauth-hsm-rs:", data_key="OAUTH_HSM_RS_REDIS_PREFIX", validate=validate.Length(1, 64)
    )
    mtls_cert_header = fields.String(load_default=None, data_key="OAUTH_HSM_RS_MTLS_CERT_HEADER", validate=header_name)


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
    public_url: str | None
    dpop_algs: tuple[str, ...]
    proof_max_age: int
    dpop_nonce: str
    dpop_nonce_key: str | None
    dpop_nonce_lifetime: int
    signature_algs: tuple[str, ...]
    redis_url: str | None
    redis_prefix: str
    mtls_cert_header: str | None

    @property
    def origin(self) -> str:
        """scheme://host[:port] of this API as clients write it."""
        parts = urlsplit(self.public_url or self.resource)
        return f"{parts.scheme}://{parts.netloc}"


def rs_variable_names() -> list[str]:
    return sorted(f.data_key for f in _RSSchema().fields.values() if f.data_key)


def rs_defaults() -> dict[str, Any]:
    """Variable name -> default value (None when required), for the docs test."""
    return {f.data_key: None if f.required else f.load_default for f in _RSSchema().fields.values() if f.data_key}


def load_rs_settings(config: Mapping[str, Any]) -> RSSettings:
    try:
        data = _RSSchema().load(raw_values(config, os.environ, rs_variable_names()))
    except ValidationError as exc:
        raise ConfigError(first_error(exc.messages_dict)) from None
    settings = RSSettings(**data)
    if settings.check_cip and settings.mode != "local":
        raise ConfigError("OAUTH_HSM_RS_CHECK_CIP: only in local mode (introspection answers carry no cip_hash)")
    if settings.mode == "introspection" and not (settings.client_id and settings.signing_key):
        raise ConfigError("OAUTH_HSM_RS_CLIENT_ID: introspection mode needs OAUTH_HSM_RS_CLIENT_ID and OAUTH_HSM_RS_SIGNING_KEY")
    if settings.require_encrypted and not settings.decryption_key:
        raise ConfigError("OAUTH_HSM_RS_DECRYPTION_KEY: required when OAUTH_HSM_RS_REQUIRE_ENCRYPTED_TOKENS is set")
    if settings.dpop_nonce != "off" and not settings.dpop_nonce_key:
        raise ConfigError(f"OAUTH_HSM_RS_DPOP_NONCE_KEY: required when OAUTH_HSM_RS_DPOP_NONCE is {settings.dpop_nonce}")
    if settings.mtls_cert_header and not settings.trusted_proxies:
        raise ConfigError(
            "OAUTH_HSM_RS_MTLS_CERT_HEADER: needs OAUTH_HSM_TRUSTED_PROXIES (the header is believed only from them)"
        )
    return settings
