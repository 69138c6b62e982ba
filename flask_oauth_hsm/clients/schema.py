"""Validation of registry entries (file or loader) with errors that name the entry and field."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates, validates_schema

from ..algorithms import CONTENT_ENCRYPTION, DEFAULT_POP_SIGNATURE_ALGS, HTTP_SIGNATURE_ALGS, KEY_MANAGEMENT, SIGNING
from ..errors import ConfigError, InvalidKey
from ..jose.jwk import JWKSet
from .model import Client, ResourceServer, parse_scope, valid_redirect_uri, valid_resource_uri

ENCRYPTED_ASSERTIONS = ("none", "allowed", "required")
PRODUCED_ENC = ("A128GCM", "A256GCM")
AUD_POLICIES = ("issuer", "endpoint", "legacy")
CIBA_GRANT = "urn:openid:params:grant-type:ciba"  # CIBA Core §10.1
_IDENTIFIER = re.compile(r"[\x21-\x7E]{1,255}")
POP_KEY_TYPES = ("symmetric", "asymmetric")
# RFC 8705 §2.1.2: exactly one of these names the certificate of a tls_client_auth entity.
TLS_IDENTITY_FIELDS = (
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
)
_SECRET_HASH = re.compile(r"sha256:[A-Za-z0-9_-]{43}|pbkdf2-sha256:\d{4,8}:[A-Za-z0-9_-]{16,64}:[A-Za-z0-9_-]{43}")


def _registered(kind: str) -> list[str]:
    """Names in a registry of units (grants, client authentication methods), read lazily."""
    if kind == "grant":
        from ..grants import GRANTS

        return sorted(GRANTS)
    from ..client_auth import METHODS

    return sorted(METHODS)


class _JWKS(fields.Field[JWKSet]):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> JWKSet:
        try:
            return JWKSet.from_dict(value)
        except InvalidKey as exc:
            raise ValidationError(str(exc)) from None


class _SubjectDN(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        from cryptography import x509

        text: str = super()._deserialize(value, attr, data, **kwargs)
        try:
            x509.Name.from_rfc4514_string(text)  # RFC 8705 §2.1.2: an RFC 4514 string
        except ValueError:
            raise ValidationError("must be a distinguished name in RFC 4514 form (CN=…,O=…)") from None
        return text


class _IPAddress(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text: str = super()._deserialize(value, attr, data, **kwargs)
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ValidationError("must be an IPv4 or IPv6 address") from None
        return text


class _Scope(fields.Field[frozenset[str]]):
    """A space-separated string (RFC 6749 §3.3) loaded as a frozenset: not a String, whose values are str."""

    default_error_messages = fields.String.default_error_messages  # "Not a valid string."

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> frozenset[str]:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return parse_scope(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class _Resource(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text: str = super()._deserialize(value, attr, data, **kwargs)
        if not valid_resource_uri(text):
            raise ValidationError("must be an absolute https URI without fragment")
        return text


class _RedirectUri(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text: str = super()._deserialize(value, attr, data, **kwargs)
        if not valid_redirect_uri(text):
            raise ValidationError(
                "must be an absolute https URI without fragment (http only on localhost, 127.0.0.1, "
                "::1; or a private-use scheme such as com.example.app:/cb)"
            )
        return text


# Claims that describe the token, not the user: never an introspection_claims entry (RFC 7662 §2.2).
TOKEN_MEMBERS = frozenset(
    {
        "active",
        "scope",
        "client_id",
        "token_type",
        "exp",
        "iat",
        "nbf",
        "sub",
        "aud",
        "iss",
        "jti",
        "cnf",
        "auth_time",
        "acr",
        "amr",
        "grant_id",
    }
)
_CLAIM_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class CredentialsSchema(Schema):
    class Meta:
        unknown = RAISE

    client_id = fields.String(required=True, validate=validate.Regexp(_IDENTIFIER, error="must be 1-255 printable characters"))
    token_endpoint_auth_method = fields.String(required=True)
    token_endpoint_auth_signing_alg = fields.String(load_default=None, validate=validate.OneOf(list(SIGNING)))
    jwks = _JWKS(load_default=None)
    client_secret_hash = fields.String(
        load_default=None,
        validate=validate.Regexp(
            _SECRET_HASH, error="must be 'sha256:…' or 'pbkdf2-sha256:…' (use `flask oauth-hsm registry hash-secret`)"
        ),
    )
    client_assertion_encryption = fields.String(load_default="none", validate=validate.OneOf(ENCRYPTED_ASSERTIONS))
    aud_policy = fields.String(load_default=None, validate=validate.OneOf(AUD_POLICIES))
    tls_client_auth_subject_dn = _SubjectDN(load_default=None)
    tls_client_auth_san_dns = fields.String(load_default=None, validate=validate.Length(1, 253))
    tls_client_auth_san_uri = fields.String(load_default=None, validate=validate.Length(1, 2048))
    tls_client_auth_san_ip = _IPAddress(load_default=None)
    tls_client_auth_san_email = fields.String(load_default=None, validate=validate.Length(3, 254))

    @pre_load
    def _no_plain_secret(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and "client_secret" in data:
            raise ValidationError("store client_secret_hash, never the secret itself", "client_secret")
        return data

    @validates("token_endpoint_auth_method")
    def _known_method(self, value: str, **kwargs: Any) -> None:
        if value not in _registered("auth"):
            raise ValidationError(f"must be one of: {', '.join(_registered('auth'))}")

    @validates_schema
    def _credentials_fit_method(self, data: dict[str, Any], **kwargs: Any) -> None:
        method = data.get("token_endpoint_auth_method")
        if method == "private_key_jwt":
            if data.get("jwks") is None or not any(k.use in (None, "sig") for k in data["jwks"]):
                raise ValidationError("private_key_jwt needs jwks with a signing key", "jwks")
            if data.get("client_secret_hash"):
                raise ValidationError("private_key_jwt clients have no secret", "client_secret_hash")
        elif method in ("client_secret_basic", "client_secret_post") and not data.get("client_secret_hash"):
            raise ValidationError(f"{method} needs client_secret_hash", "client_secret_hash")
        if data.get("client_assertion_encryption", "none") != "none" and method != "private_key_jwt":
            raise ValidationError("only private_key_jwt clients can send encrypted assertions", "client_assertion_encryption")
        _tls_identity_fits(data, method)


def _tls_identity_fits(data: dict[str, Any], method: str | None) -> None:
    """RFC 8705 §2.1.2 (one registered certificate identity) and §2.2 (certificates in jwks x5c)."""
    named = [f for f in TLS_IDENTITY_FIELDS if data.get(f) is not None]
    if method == "tls_client_auth" and len(named) != 1:
        raise ValidationError(
            f"tls_client_auth needs exactly one of {', '.join(TLS_IDENTITY_FIELDS)}", "token_endpoint_auth_method"
        )
    if method != "tls_client_auth" and named:
        raise ValidationError("only for token_endpoint_auth_method tls_client_auth", named[0])
    if method == "self_signed_tls_client_auth" and not any(k.x5c for k in (data.get("jwks") or ())):
        raise ValidationError("self_signed_tls_client_auth needs jwks with the client's certificate in x5c", "jwks")


class ClientSchema(CredentialsSchema):
    grant_types = fields.List(fields.String(), load_default=lambda: ["client_credentials"])
    scope = _Scope(load_default=frozenset())
    resources = fields.List(_Resource(), load_default=list)
    ip_ranges = fields.List(fields.String(), load_default=list)
    cip_hash = fields.Boolean(load_default=False)
    redirect_uris = fields.List(_RedirectUri(), load_default=list)
    client_name = fields.String(
        load_default=None,
        validate=validate.Regexp(r"\A[^\x00-\x1f\x7f]{1,200}\Z", error="must be 1-200 characters, no control characters"),
    )
    id_token_signed_response_alg = fields.String(load_default=None, validate=validate.OneOf(list(SIGNING)))
    dpop_bound_access_tokens = fields.Boolean(load_default=False)
    dpop_nonce_required = fields.Boolean(load_default=False)
    pop_keys = fields.List(fields.String(validate=validate.OneOf(POP_KEY_TYPES)), load_default=list)
    tls_client_certificate_bound_access_tokens = fields.Boolean(load_default=False)
    # CIBA and pairwise subjects (docs/ciba.md)
    subject_type = fields.String(load_default="public", validate=validate.OneOf(("public", "pairwise")))
    sector_identifier_uri = fields.String(load_default=None, validate=validate.Length(1, 2000))
    backchannel_token_delivery_mode = fields.String(load_default=None, validate=validate.OneOf(("poll",)))
    backchannel_authentication_request_signing_alg = fields.String(load_default=None, validate=validate.OneOf(list(SIGNING)))

    @validates_schema
    def _ciba_and_pairwise(self, data: dict[str, Any], **kwargs: Any) -> None:
        from ..ciba import check_registration  # the rules live with the feature

        check_registration(data)

    require_pushed_authorization_requests = fields.Boolean(load_default=False)
    request_object_signing_alg = fields.String(load_default=None, validate=validate.OneOf(list(SIGNING)))
    request_object_encryption_alg = fields.String(load_default=None, validate=validate.OneOf(list(KEY_MANAGEMENT)))
    request_object_encryption_enc = fields.String(load_default=None, validate=validate.OneOf(list(CONTENT_ENCRYPTION)))
    request_object_typ_required = fields.Boolean(load_default=False)

    @validates_schema
    def _request_objects(self, data: dict[str, Any], **kwargs: Any) -> None:
        # docs/par-and-jar.md: request objects are verified with the client's own jwks; encryption
        # is registered as an alg and enc pair (OIDC Registration §2 pairs them the same way).
        if (data.get("request_object_encryption_alg") is None) != (data.get("request_object_encryption_enc") is None):
            raise ValidationError(
                "request_object_encryption_alg and request_object_encryption_enc go together", "request_object_encryption_alg"
            )
        signs = (
            data.get("request_object_signing_alg")
            or data.get("request_object_encryption_alg")
            or data.get("request_object_typ_required")
        )
        if signs and not any(k.use in (None, "sig") for k in (data.get("jwks") or ())):
            raise ValidationError("request objects need jwks with a signing key", "jwks")

    @validates("grant_types")
    def _known_grants(self, values: list[str], **kwargs: Any) -> None:
        unknown = [v for v in values if v not in _registered("grant")]
        if unknown:
            raise ValidationError(f"{unknown[0]!r} is not a supported grant type ({', '.join(_registered('grant'))})")

    @validates("ip_ranges")
    def _cidrs(self, values: list[str], **kwargs: Any) -> None:
        for v in values:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise ValidationError(f"{v!r} is not an IP address or CIDR range") from None

    @validates_schema
    def _one_binding(self, data: dict[str, Any], **kwargs: Any) -> None:
        # A token is bound one way (docs/proof-of-possession.md): such a client could get none.
        if data.get("dpop_bound_access_tokens") and data.get("tls_client_certificate_bound_access_tokens"):
            raise ValidationError("a client cannot require both DPoP and certificate-bound tokens", "dpop_bound_access_tokens")

    @validates_schema
    def _public_clients(self, data: dict[str, Any], **kwargs: Any) -> None:
        # RFC 6749 §4.4: the client credentials grant is for confidential clients only.
        if data.get("token_endpoint_auth_method") == "none" and "client_credentials" in data.get("grant_types", []):
            raise ValidationError("a public client (auth method none) cannot use client_credentials", "grant_types")

    @validates_schema
    def _user_grants(self, data: dict[str, Any], **kwargs: Any) -> None:
        grants = data.get("grant_types", [])
        if "refresh_token" in grants and not {"authorization_code", CIBA_GRANT} & set(grants):
            # Refresh tokens continue a user's grant; machines ask again (RFC 6749 §4.4.3).
            raise ValidationError("refresh_token is issued with authorization_code or CIBA only", "grant_types")
        if "authorization_code" in grants and not data.get("redirect_uris"):
            raise ValidationError("the authorization_code grant needs at least one redirect URI", "redirect_uris")
        if data.get("redirect_uris") and "authorization_code" not in grants:
            raise ValidationError("redirect URIs are for clients with the authorization_code grant", "redirect_uris")


class ResourceServerSchema(CredentialsSchema):
    resource = _Resource(required=True)
    scope = _Scope(load_default=frozenset())
    introspection_signed_response_alg = fields.String(load_default=None, validate=validate.OneOf(list(SIGNING)))
    introspection_encrypted_response_alg = fields.String(load_default=None, validate=validate.OneOf(list(KEY_MANAGEMENT)))
    introspection_encrypted_response_enc = fields.String(load_default=None, validate=validate.OneOf(PRODUCED_ENC))
    access_token_encrypted_response_alg = fields.String(load_default=None, validate=validate.OneOf(list(KEY_MANAGEMENT)))
    access_token_encrypted_response_enc = fields.String(load_default=None, validate=validate.OneOf(PRODUCED_ENC))
    introspection_claims = fields.List(fields.String(), load_default=list)

    @validates("introspection_claims")
    def _claim_names(self, values: list[str], **kwargs: Any) -> None:
        for name in values:
            if not _CLAIM_NAME.fullmatch(name):
                raise ValidationError(f"{name[:40]!r} is not a claim name")
            if name in TOKEN_MEMBERS:
                raise ValidationError(f"{name!r} describes the token, not the user: it is returned anyway or never")
        if len(set(values)) != len(values):
            raise ValidationError("a claim is listed twice")

    pop_signature_algs = fields.List(
        fields.String(validate=validate.OneOf(HTTP_SIGNATURE_ALGS)), load_default=lambda: list(DEFAULT_POP_SIGNATURE_ALGS)
    )

    @validates("token_endpoint_auth_method")
    def _known_method(self, value: str, **kwargs: Any) -> None:
        if value == "none" or value not in _registered("auth"):
            raise ValidationError(
                "a resource server authenticates: private_key_jwt, client_secret_basic, client_secret_post, "
                "tls_client_auth or self_signed_tls_client_auth"
            )

    @validates_schema
    def _encryption_keys(self, data: dict[str, Any], **kwargs: Any) -> None:
        for what in ("introspection", "access_token"):
            alg = data.get(f"{what}_encrypted_response_alg")
            enc_name = f"{what}_encrypted_response_enc"
            if alg is None:
                if data.get(enc_name) is not None:
                    raise ValidationError(f"{enc_name} needs {what}_encrypted_response_alg", enc_name)
                continue
            keys = [k for k in (data.get("jwks") or ()) if k.allows(alg, "enc")]
            if len(keys) != 1:
                raise ValidationError(f"jwks needs exactly one encryption key for {alg}", "jwks")


def entry_error(kind: str, index: int | None, entry: Any, messages: Any) -> ConfigError:
    name = entry.get("client_id") if isinstance(entry, dict) else None
    where = kind + (f"[{index}]" if index is not None else "") + (f" ({name})" if isinstance(name, str) else "")
    if not isinstance(messages, dict):
        return ConfigError(f"OAUTH_HSM_REGISTRY: {where}: {messages}")
    field = sorted(messages)[0]
    detail: Any = messages[field]
    while isinstance(detail, (list, dict)):
        detail = detail[0] if isinstance(detail, list) else next(iter(detail.values()))
    return ConfigError(f"OAUTH_HSM_REGISTRY: {where}: {field}: {detail}")


def build_client(entry: Any) -> Client:
    """A validated client; raises marshmallow's ValidationError."""
    data = ClientSchema().load(entry)
    data["ip_ranges"] = tuple(ipaddress.ip_network(v, strict=False) for v in data["ip_ranges"])
    data["grant_types"], data["resources"] = tuple(data["grant_types"]), tuple(data["resources"])
    data["redirect_uris"] = tuple(data["redirect_uris"])
    data["pop_keys"] = frozenset(data["pop_keys"])
    if data["subject_type"] == "pairwise":
        from ..subjects import sector_of

        data["sector_identifier"] = sector_of(data["sector_identifier_uri"], data["redirect_uris"])  # checked by the schema
    return Client(**data)


def build_resource_server(entry: Any) -> ResourceServer:
    data = ResourceServerSchema().load(entry)
    data["introspection_claims"] = tuple(data["introspection_claims"])
    data["pop_signature_algs"] = tuple(data["pop_signature_algs"])
    return ResourceServer(**data)
