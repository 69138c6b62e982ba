"""Registry of clients and resource servers (DESIGN.md §4).

Clients and resource servers are different entities: only a registered resource server may call
introspection, and its response preferences are resource-server metadata. Field names follow
RFC 7591 (client metadata), RFC 9701 §6 (introspection response) and RFC 8707 (resources).

The default registry is one JSON file validated at start-up (errors name the entry and field).
Host apps may instead register loader callbacks returning the same shape from their database;
those entries go through the same validation, cached per process for a short while.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable
from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates, validates_schema

from .algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT, SIGNING
from .errors import ConfigError, InvalidKey, RegistryUnavailable
from .jose.jwk import JWKSet

AUTH_METHODS = ("private_key_jwt", "client_secret_basic", "client_secret_post", "none")
RS_AUTH_METHODS = ("private_key_jwt", "client_secret_basic", "client_secret_post")
GRANT_TYPES = ("client_credentials",)
ENCRYPTED_ASSERTIONS = ("none", "allowed", "required")
# RFC 6749 §3.3 scope-token: 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
_IDENTIFIER = re.compile(r"[\x21-\x7E]{1,255}")
_SECRET_HASH = re.compile(r"sha256:[A-Za-z0-9_-]{43}|pbkdf2-sha256:\d{4,8}:[A-Za-z0-9_-]{16,64}:[A-Za-z0-9_-]{43}")
PRODUCED_ENC = ("A128GCM", "A256GCM")
log = logging.getLogger("flask_oauth_hsm")


@lru_cache(maxsize=1024)
def parse_scope(value: str) -> frozenset[str]:
    tokens = value.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(t) for t in tokens):
        raise ValueError("scope must be space-separated RFC 6749 §3.3 scope tokens")
    return frozenset(tokens)


def valid_resource_uri(value: str) -> bool:
    """RFC 8707 §2: an absolute URI without a fragment (https, or http on loopback for dev)."""
    parts = urlsplit(value)
    if parts.fragment or "#" in value or not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1"))


@dataclass(frozen=True)
class Credentials:
    """How an entity authenticates at our endpoints (RFC 7591 §2)."""

    client_id: str
    token_endpoint_auth_method: str
    token_endpoint_auth_signing_alg: str | None
    jwks: JWKSet | None
    client_secret_hash: str | None
    client_assertion_encryption: str
    aud_policy: str | None


@dataclass(frozen=True)
class Client(Credentials):
    grant_types: tuple[str, ...]
    scope: frozenset[str]
    resources: tuple[str, ...]
    ip_ranges: tuple[Any, ...]  # ipaddress networks (RFC 7662 requester_ip checks)
    cip_hash: bool

    kind = "client"


@dataclass(frozen=True)
class ResourceServer(Credentials):
    resource: str
    scope: frozenset[str]
    introspection_signed_response_alg: str | None
    introspection_encrypted_response_alg: str | None
    introspection_encrypted_response_enc: str | None
    access_token_encrypted_response_alg: str | None
    access_token_encrypted_response_enc: str | None

    kind = "resource_server"

    def encryption_key(self, alg: str):
        """This resource server's public key for ``alg`` (use=enc); raises InvalidKey."""
        keys = [k for k in (self.jwks or ()) if k.allows(alg, "enc")]
        if len(keys) != 1:
            raise InvalidKey(f"resource server {self.client_id!r} has no unique key for {alg}")
        return keys[0]


# --- schemas ------------------------------------------------------------------------------------


class _JWKS(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return JWKSet.from_dict(value)
        except InvalidKey as exc:
            raise ValidationError(str(exc)) from None


class _Scope(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parse_scope(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class _CredentialsSchema(Schema):
    class Meta:
        unknown = RAISE

    client_id = fields.String(required=True, validate=validate.Regexp(_IDENTIFIER, error="must be 1-255 printable characters"))
    token_endpoint_auth_method = fields.String(required=True)
    token_endpoint_auth_signing_alg = fields.String(load_default=None, validate=validate.OneOf(list(SIGNING)))
    jwks = _JWKS(load_default=None)
    client_secret_hash = fields.String(load_default=None, validate=validate.Regexp(
        _SECRET_HASH, error="must be 'sha256:…' or 'pbkdf2-sha256:…' (use `flask oauth-hsm registry hash-secret`)"))
    client_assertion_encryption = fields.String(load_default="none", validate=validate.OneOf(ENCRYPTED_ASSERTIONS))
    aud_policy = fields.String(load_default=None, validate=validate.OneOf(("fapi2", "issuer", "endpoint")))

    @pre_load
    def _no_plain_secret(self, data, **kwargs):
        if isinstance(data, dict) and "client_secret" in data:
            raise ValidationError("store client_secret_hash, never the secret itself", "client_secret")
        return data

    @validates_schema
    def _credentials_fit_method(self, data, **kwargs):
        method = data.get("token_endpoint_auth_method")
        if method == "private_key_jwt":
            if data.get("jwks") is None or not any(k.use in (None, "sig") for k in data["jwks"]):
                raise ValidationError("private_key_jwt needs jwks with a signing key", "jwks")
            if data.get("client_secret_hash"):
                raise ValidationError("private_key_jwt clients have no secret", "client_secret_hash")
        elif method in ("client_secret_basic", "client_secret_post"):
            if not data.get("client_secret_hash"):
                raise ValidationError(f"{method} needs client_secret_hash", "client_secret_hash")
        if data.get("client_assertion_encryption", "none") != "none" and method != "private_key_jwt":
            raise ValidationError("only private_key_jwt clients can send encrypted assertions", "client_assertion_encryption")


class _ClientSchema(_CredentialsSchema):
    token_endpoint_auth_method = fields.String(required=True, validate=validate.OneOf(AUTH_METHODS))
    grant_types = fields.List(fields.String(validate=validate.OneOf(GRANT_TYPES)), load_default=lambda: ["client_credentials"])
    scope = _Scope(load_default=frozenset())
    resources = fields.List(fields.String(validate=lambda v: valid_resource_uri(v) or _fail("must be an absolute https URI without fragment")), load_default=list)
    ip_ranges = fields.List(fields.String(), load_default=list)
    cip_hash = fields.Boolean(load_default=False)

    @validates("ip_ranges")
    def _cidrs(self, values, **kwargs):
        for v in values:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise ValidationError(f"{v!r} is not an IP address or CIDR range") from None

    @validates_schema
    def _public_clients(self, data, **kwargs):
        # RFC 6749 §4.4: the client credentials grant is for confidential clients only.
        if data.get("token_endpoint_auth_method") == "none" and "client_credentials" in data.get("grant_types", []):
            raise ValidationError("a public client (auth method none) cannot use client_credentials", "grant_types")


class _ResourceServerSchema(_CredentialsSchema):
    token_endpoint_auth_method = fields.String(required=True, validate=validate.OneOf(RS_AUTH_METHODS))
    resource = fields.String(required=True, validate=lambda v: valid_resource_uri(v) or _fail("must be an absolute https URI without fragment"))
    scope = _Scope(load_default=frozenset())
    introspection_signed_response_alg = fields.String(load_default=None, validate=validate.OneOf(list(SIGNING)))
    introspection_encrypted_response_alg = fields.String(load_default=None, validate=validate.OneOf(list(KEY_MANAGEMENT)))
    introspection_encrypted_response_enc = fields.String(load_default=None, validate=validate.OneOf(PRODUCED_ENC))
    access_token_encrypted_response_alg = fields.String(load_default=None, validate=validate.OneOf(list(KEY_MANAGEMENT)))
    access_token_encrypted_response_enc = fields.String(load_default=None, validate=validate.OneOf(PRODUCED_ENC))

    @validates_schema
    def _encryption_keys(self, data, **kwargs):
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


def _fail(message: str):
    raise ValidationError(message)


def _entry_error(kind: str, index: int, entry: Any, messages: dict) -> ConfigError:
    name = entry.get("client_id") if isinstance(entry, dict) else None
    where = f"{kind}[{index}]" + (f" ({name})" if isinstance(name, str) else "")
    field = sorted(messages)[0]
    detail = messages[field]
    while isinstance(detail, (list, dict)):
        detail = detail[0] if isinstance(detail, list) else next(iter(detail.values()))
    return ConfigError(f"OAUTH_HSM_REGISTRY: {where}: {field}: {detail}")


def _make_client(data: dict) -> Client:
    data["ip_ranges"] = tuple(ipaddress.ip_network(v, strict=False) for v in data["ip_ranges"])
    data["grant_types"], data["resources"] = tuple(data["grant_types"]), tuple(data["resources"])
    return Client(**data)


def load_client(entry: Any) -> Client:
    """Validate one client entry from a loader; raises ConfigError naming the field."""
    try:
        return _make_client(_ClientSchema().load(entry))
    except ValidationError as exc:
        raise _entry_error("client_loader", 0, entry, exc.messages) from None


def load_resource_server(entry: Any) -> ResourceServer:
    try:
        return ResourceServer(**_ResourceServerSchema().load(entry))
    except ValidationError as exc:
        raise _entry_error("resource_server_loader", 0, entry, exc.messages) from None


# --- the registry -----------------------------------------------------------------------------------


class Registry:
    """Lookups by client_id (clients and resource servers) and by resource URI."""

    def __init__(self, clients: dict[str, Client], resource_servers: dict[str, ResourceServer]):
        self._clients = clients
        self._rs_by_id = resource_servers
        self._rs_by_resource = {rs.resource: rs for rs in resource_servers.values()}

    @classmethod
    def from_file(cls, path: str) -> "Registry":
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except OSError as exc:
            raise ConfigError(f"OAUTH_HSM_REGISTRY: cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"OAUTH_HSM_REGISTRY: {path} is not valid JSON ({exc})") from None
        return cls.from_document(doc)

    @classmethod
    def from_document(cls, doc: Any) -> "Registry":
        if not isinstance(doc, dict) or set(doc) - {"clients", "resource_servers"}:
            raise ConfigError("OAUTH_HSM_REGISTRY: must be an object with 'clients' and 'resource_servers' lists")
        clients = cls._entries(doc.get("clients", []), "clients", lambda e: _make_client(_ClientSchema().load(e)))
        servers = cls._entries(doc.get("resource_servers", []), "resource_servers", lambda e: ResourceServer(**_ResourceServerSchema().load(e)))
        clashing = sorted(set(clients) & set(servers))
        if clashing:
            raise ConfigError(f"OAUTH_HSM_REGISTRY: {clashing[0]!r} is both a client and a resource server")
        resources = [rs.resource for rs in servers.values()]
        if len(resources) != len(set(resources)):
            raise ConfigError("OAUTH_HSM_REGISTRY: two resource servers share one resource URI")
        for client in clients.values():
            unknown = [r for r in client.resources if r not in resources]
            if unknown:
                raise ConfigError(f"OAUTH_HSM_REGISTRY: client {client.client_id!r}: resource {unknown[0]!r} is not a registered resource server")
        return cls(clients, servers)

    @staticmethod
    def _entries(items: Any, kind: str, build: Callable[[Any], Any]) -> dict:
        if not isinstance(items, list):
            raise ConfigError(f"OAUTH_HSM_REGISTRY: {kind} must be a list")
        out: dict = {}
        for index, entry in enumerate(items):
            try:
                item = build(entry)
            except ValidationError as exc:
                raise _entry_error(kind, index, entry, exc.messages) from None
            if item.client_id in out:
                raise ConfigError(f"OAUTH_HSM_REGISTRY: {kind}[{index}]: client_id {item.client_id!r} is listed twice")
            out[item.client_id] = item
        return out

    def client(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def resource_server(self, client_id: str) -> ResourceServer | None:
        return self._rs_by_id.get(client_id)

    def resource_server_for(self, resource: str) -> ResourceServer | None:
        return self._rs_by_resource.get(resource)

    def resource_servers(self) -> list[ResourceServer]:
        return list(self._rs_by_id.values())

    def entities(self) -> list[Credentials]:
        return [*self._clients.values(), *self._rs_by_id.values()]

    def auth_methods(self) -> list[str]:
        return sorted({e.token_endpoint_auth_method for e in self.entities()}) or ["private_key_jwt"]


class LoaderRegistry:
    """Entries from host callbacks (their database), validated like file entries, cached briefly.

    ``client_loader(client_id)`` and ``resource_server_loader(client_id=..., resource=...)``
    return a registry-shaped dict or None. A bad entry is logged by the caller and treated as
    unknown: one broken row must not take the server down.
    """

    TTL = 30.0

    def __init__(self, client_loader, resource_server_loader, auth_methods: list[str]):
        self._client_loader = client_loader
        self._rs_loader = resource_server_loader
        self._auth_methods = auth_methods
        self.check: Callable[[Any], None] = lambda entity: None  # set by the extension
        self._cache: dict[tuple, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _cached(self, key: tuple, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = load()
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[key] = (now + self.TTL, value)
        return value

    def _load(self, loader, build, **kwargs):
        if loader is None:
            return None
        try:
            entry = loader(**kwargs)
        except Exception as exc:  # the host's database: an outage, not the caller's fault
            log.error("registry loader failed: %s", type(exc).__name__)
            raise RegistryUnavailable("registry loader failed") from None
        if entry is None:
            return None
        try:
            entity = build(entry)
            self.check(entity)
            return entity
        except ConfigError as exc:
            log.error("ignoring an invalid registry entry from a loader: %s", exc)
            return None

    def _client(self, client_id: str) -> Client | None:
        return self._cached(("c", client_id), lambda: self._load(self._client_loader, load_client, client_id=client_id))

    def _resource_server(self, client_id: str) -> ResourceServer | None:
        return self._cached(("r", client_id), lambda: self._load(self._rs_loader, load_resource_server, client_id=client_id))

    def _unique(self, client_id: str, entity):
        """DESIGN.md §4: ids never collide; an id both loaders know is nobody's."""
        if entity is None:
            return None
        other = self._resource_server(client_id) if isinstance(entity, Client) else self._client(client_id)
        if other is not None:
            log.error("loaders: %r is both a client and a resource server: treated as unknown", client_id)
            return None
        return entity

    def client(self, client_id: str) -> Client | None:
        return self._unique(client_id, self._client(client_id))

    def resource_server(self, client_id: str) -> ResourceServer | None:
        return self._unique(client_id, self._resource_server(client_id))

    def resource_server_for(self, resource: str) -> ResourceServer | None:
        return self._cached(("u", resource), lambda: self._load(self._rs_loader, load_resource_server, resource=resource))

    def auth_methods(self) -> list[str]:
        return self._auth_methods
