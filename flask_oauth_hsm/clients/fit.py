"""Start-up checks that a registry entry can be served with our settings and keys.

For the registry file, a misfit stops start-up with one line; for loader entries the same check
makes the entry count as unknown (one broken row must not take the server down).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Collection

from ..errors import ConfigError
from .model import Client, Credentials, ResourceServer
from .registry import Check

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..settings import Settings


def fit_checker(settings: "Settings", ring: "KeyRing", features: Collection[str] = frozenset()) -> Check:
    """``features``: what the host's hooks turn on (extension._features_from_hooks): the user grants'
    needs are checked only when the app serves users."""

    def check(entity: Credentials) -> None:
        alg = entity.token_endpoint_auth_signing_alg
        if alg and alg not in settings.assertion_algs:
            raise ConfigError(f"OAUTH_HSM_REGISTRY: {entity.client_id!r} registered token_endpoint_auth_signing_alg "
                              f"{alg}, which OAUTH_HSM_ASSERTION_ALGS does not allow: it could never authenticate")
        if isinstance(entity, ResourceServer):
            _check_resource_server(entity, ring)
        if isinstance(entity, Client) and "users" in features:
            _check_user_client(entity, ring)

    return check


def _check_user_client(client: Client, ring: "KeyRing") -> None:
    if "refresh_token" in client.grant_types and not ring.decryption:
        raise ConfigError(f"OAUTH_HSM_ENCRYPTION_KEYS: client {client.client_id!r} may use refresh_token; refresh tokens "
                          "are encrypted to our own key, so one is needed")
    _signing_key_for(ring, client.id_token_signed_response_alg, f"client {client.client_id!r}", "id_token_signed_response_alg")


def _check_resource_server(rs: ResourceServer, ring: "KeyRing") -> None:
    if rs.access_token_encrypted_response_alg and not ring.decryption:
        raise ConfigError(f"OAUTH_HSM_ENCRYPTION_KEYS: resource server {rs.client_id!r} wants encrypted access "
                          "tokens; we need a decryption key to read them back (CEK escrow)")
    _signing_key_for(ring, rs.introspection_signed_response_alg, f"resource server {rs.client_id!r}",
                     "introspection_signed_response_alg")


def _signing_key_for(ring: "KeyRing", alg: str | None, who: str, field: str) -> None:
    """An entry that wants something signed with ``alg`` needs one of our signing keys of that alg."""
    if alg and alg not in ring.signing_algs:
        raise ConfigError(f"OAUTH_HSM_REGISTRY: {who}: no signing key for {field} {alg} (add one to OAUTH_HSM_PUBLISHED_KEYS)")
