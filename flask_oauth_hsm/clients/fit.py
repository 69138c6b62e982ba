"""Start-up checks that a registry entry can be served with our settings and keys.

For the registry file, a misfit stops start-up with one line; for loader entries the same check
makes the entry count as unknown (one broken row must not take the server down).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .. import binding
from ..errors import ConfigError
from .model import Credentials, ResourceServer
from .registry import Check

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..settings import Settings


def fit_checker(settings: "Settings", ring: "Callable[[], KeyRing]") -> Check:
    """``ring`` gives the key ring to check against: the current one (it may change in key-set mode)."""

    def check(entity: Credentials) -> None:
        alg = entity.token_endpoint_auth_signing_alg
        if alg and alg not in settings.assertion_algs:
            raise ConfigError(f"OAUTH_HSM_REGISTRY: {entity.client_id!r} registered token_endpoint_auth_signing_alg "
                              f"{alg}, which OAUTH_HSM_ASSERTION_ALGS does not allow: it could never authenticate")
        if isinstance(entity, ResourceServer):
            _check_resource_server(entity, ring(), settings.key_set)
        binding.fits(settings, entity)

    return check


def _check_resource_server(rs: ResourceServer, ring: "KeyRing", key_set: str | None) -> None:
    if rs.access_token_encrypted_response_alg and ring.escrow is None:
        where = f"an active encryption key in key set {key_set!r}" if key_set else "a decryption key"
        raise ConfigError(f"{'OAUTH_HSM_KEY_SET' if key_set else 'OAUTH_HSM_ENCRYPTION_KEYS'}: resource server "
                          f"{rs.client_id!r} wants encrypted access tokens; we need {where} to read them back (CEK escrow)")
    alg = rs.introspection_signed_response_alg
    if alg and alg not in ring.signing_algs:
        hint = f"the active signing key of key set {key_set!r} is {ring.signing.alg}" if key_set \
            else "add one to OAUTH_HSM_PUBLISHED_KEYS"
        raise ConfigError(f"OAUTH_HSM_REGISTRY: resource server {rs.client_id!r}: no signing key for "
                          f"introspection_signed_response_alg {alg} ({hint})")
