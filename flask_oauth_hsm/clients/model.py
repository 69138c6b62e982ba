"""Clients and resource servers: different entities (docs/registry.md), as frozen dataclasses.

Only a registered resource server may call introspection, and its response preferences are
resource-server metadata. Field names follow RFC 7591 (client metadata), RFC 9701 §6
(introspection response) and RFC 8707 (resources).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar
from urllib.parse import urlsplit

from ..algorithms import DEFAULT_POP_SIGNATURE_ALGS
from ..errors import InvalidKey
from ..jose.jwk import JWKSet, PublicJWK

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# RFC 6749 §3.3 scope-token: 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")


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


def valid_redirect_uri(value: str) -> bool:
    """RFC 6749 §3.1.2, RFC 8252 §7, OAuth 2.1 §2.3.1: an absolute URI without fragment; https,
    http on a loopback host, or a private-use scheme in reverse domain form (``com.example.app:/cb``)."""
    if len(value) > 2000 or "#" in value or any(c <= " " or c == "\x7f" for c in value):
        return False
    parts = urlsplit(value)
    if parts.scheme == "https":
        return bool(parts.hostname)
    if parts.scheme == "http":
        return parts.hostname in ("localhost", "127.0.0.1", "::1")
    return "." in parts.scheme and bool(parts.path)  # RFC 8252 §7.1: a scheme we never confuse with a web one


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
    # RFC 8705 §2.1.2: the one certificate identity a tls_client_auth entity registered.
    tls_client_auth_subject_dn: str | None = field(default=None, kw_only=True)
    tls_client_auth_san_dns: str | None = field(default=None, kw_only=True)
    tls_client_auth_san_uri: str | None = field(default=None, kw_only=True)
    tls_client_auth_san_ip: str | None = field(default=None, kw_only=True)
    tls_client_auth_san_email: str | None = field(default=None, kw_only=True)

    kind: ClassVar[str] = "entity"


@dataclass(frozen=True)
class Client(Credentials):
    grant_types: tuple[str, ...]
    scope: frozenset[str]
    resources: tuple[str, ...]
    ip_ranges: tuple[IPNetwork, ...]  # RFC 7662 requester_ip checks
    cip_hash: bool
    # users (docs/users.md): RFC 7591 §2 redirect_uris and client_name, OIDC Registration §2
    redirect_uris: tuple[str, ...] = ()  # compared by string equality (RFC 9700 §4.1.3)
    client_name: str | None = None  # shown on the consent page
    id_token_signed_response_alg: str | None = None  # None: the access-token signing key's alg
    # Proof of possession (docs/proof-of-possession.md)
    dpop_bound_access_tokens: bool = field(default=False, kw_only=True)  # RFC 9449 §5.2
    dpop_nonce_required: bool = field(default=False, kw_only=True)  # RFC 9449 §8, for this client
    pop_keys: frozenset[str] = field(default=frozenset(), kw_only=True)  # token_type=pop: symmetric, asymmetric
    tls_client_certificate_bound_access_tokens: bool = field(default=False, kw_only=True)  # RFC 8705 §3.4
    # CIBA and pairwise subjects (docs/ciba.md): OIDC Core §8.1, OIDC Registration §2, CIBA Core §4
    subject_type: str = field(default="public", kw_only=True)  # public | pairwise
    sector_identifier_uri: str | None = field(default=None, kw_only=True)  # never fetched: its host is the sector
    sector_identifier: str | None = field(default=None, kw_only=True)  # the sector host of a pairwise client
    backchannel_token_delivery_mode: str | None = field(default=None, kw_only=True)  # poll (the only mode served)
    backchannel_authentication_request_signing_alg: str | None = field(default=None, kw_only=True)
    # PAR and request objects (docs/par-and-jar.md)
    require_pushed_authorization_requests: bool = field(default=False, kw_only=True)  # RFC 9126 §6
    request_object_signing_alg: str | None = field(default=None, kw_only=True)  # RFC 9101 §10.5 (OIDC Registration §2)
    request_object_encryption_alg: str | None = field(default=None, kw_only=True)  # set: request objects must be encrypted
    request_object_encryption_enc: str | None = field(default=None, kw_only=True)
    request_object_typ_required: bool = field(default=False, kw_only=True)  # typ must be oauth-authz-req+jwt (RFC 9101 §10.8)

    kind: ClassVar[str] = "client"

    @property
    def public(self) -> bool:
        """RFC 6749 §2.1: a client that cannot keep credentials (authenticates with ``none``)."""
        return self.token_endpoint_auth_method == "none"


@dataclass(frozen=True)
class ResourceServer(Credentials):
    resource: str
    scope: frozenset[str]
    introspection_signed_response_alg: str | None
    introspection_encrypted_response_alg: str | None
    introspection_encrypted_response_enc: str | None
    access_token_encrypted_response_alg: str | None
    access_token_encrypted_response_enc: str | None
    # user claims this resource server may learn at introspection, with the user's consent (DESIGN §7)
    introspection_claims: tuple[str, ...] = ()
    # RFC 9421 algorithms this resource server verifies on PoP tokens (RFC 9200 §5.8.3 otherwise).
    pop_signature_algs: tuple[str, ...] = field(default=DEFAULT_POP_SIGNATURE_ALGS, kw_only=True)

    kind: ClassVar[str] = "resource_server"

    def encryption_key(self, alg: str) -> PublicJWK:
        """This resource server's public key for ``alg`` (use=enc); raises InvalidKey."""
        keys = [k for k in (self.jwks or ()) if k.allows(alg, "enc")]
        if len(keys) != 1:
            raise InvalidKey(f"resource server {self.client_id!r} has no unique key for {alg}")
        return keys[0]
