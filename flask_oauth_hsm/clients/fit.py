"""Start-up checks that a registry entry can be served with our settings and keys.

For the registry file, a misfit stops start-up with one line; for loader entries the same check
makes the entry count as unknown (one broken row must not take the server down).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from .. import binding
from ..errors import ConfigError
from .model import Client, Credentials, ResourceServer
from .registry import Check

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..settings import Settings


def fit_checker(settings: Settings, ring: Callable[[], KeyRing], features: Collection[str] = frozenset()) -> Check:
    """``ring`` gives the key ring to check against: the current one (it may change in key-set mode).
    ``features``: what the host's hooks turn on (extension._features_from_hooks): the user grants'
    needs are checked only when the app serves users."""

    def check(entity: Credentials) -> None:
        alg = entity.token_endpoint_auth_signing_alg
        if alg and alg not in settings.assertion_algs:
            raise ConfigError(
                f"OAUTH_HSM_REGISTRY: {entity.client_id!r} registered token_endpoint_auth_signing_alg "
                f"{alg}, which OAUTH_HSM_ASSERTION_ALGS does not allow: it could never authenticate"
            )
        if isinstance(entity, ResourceServer):
            _check_resource_server(entity, ring(), settings.key_set)
        binding.fits(settings, entity)
        if isinstance(entity, Client) and entity.subject_type == "pairwise" and not settings.pairwise_key:
            raise ConfigError(
                f"OAUTH_HSM_REGISTRY: {entity.client_id!r} has subject_type pairwise, but OAUTH_HSM_PAIRWISE_KEY is not set"
            )
        if isinstance(entity, Client) and "users" in features:
            _check_user_client(entity, ring(), settings.key_set)
            _check_request_objects(entity, settings, ring(), settings.key_set)

    return check


def _check_resource_server(rs: ResourceServer, ring: KeyRing, key_set: str | None) -> None:
    if rs.access_token_encrypted_response_alg and ring.escrow is None:
        raise ConfigError(
            f"{_enc_setting(key_set)}: resource server {rs.client_id!r} wants encrypted access tokens; "
            f"we need {_enc_key(key_set)} to read them back (CEK escrow)"
        )
    _signing_key_for(
        ring,
        key_set,
        rs.introspection_signed_response_alg,
        f"resource server {rs.client_id!r}",
        "introspection_signed_response_alg",
    )


def _check_user_client(client: Client, ring: KeyRing, key_set: str | None) -> None:
    if "refresh_token" in client.grant_types and ring.escrow is None:
        raise ConfigError(
            f"{_enc_setting(key_set)}: client {client.client_id!r} may use refresh_token; refresh tokens "
            f"are encrypted to our own key, so we need {_enc_key(key_set)}"
        )
    _signing_key_for(
        ring, key_set, client.id_token_signed_response_alg, f"client {client.client_id!r}", "id_token_signed_response_alg"
    )


def _check_request_objects(client: Client, settings: Settings, ring: KeyRing, key_set: str | None) -> None:
    """docs/par-and-jar.md: a client whose request objects we could never verify or decrypt is a misfit."""
    for field in ("request_object_signing_alg", "backchannel_authentication_request_signing_alg"):
        alg = getattr(client, field)
        if alg and alg not in settings.assertion_algs:
            raise ConfigError(
                f"OAUTH_HSM_REGISTRY: client {client.client_id!r} registered {field} {alg}, "
                "which OAUTH_HSM_ASSERTION_ALGS does not allow"
            )
    enc_alg = client.request_object_encryption_alg
    if enc_alg and enc_alg not in ring.decryption_algs:
        raise ConfigError(
            f"{_enc_setting(key_set)}: client {client.client_id!r} encrypts request objects with {enc_alg}; "
            f"we need {_enc_key(key_set)} of that alg"
        )


def _enc_setting(key_set: str | None) -> str:
    return "OAUTH_HSM_KEY_SET" if key_set else "OAUTH_HSM_ENCRYPTION_KEYS"


def _enc_key(key_set: str | None) -> str:
    return f"an active encryption key in key set {key_set!r}" if key_set else "a decryption key"


def _signing_key_for(ring: KeyRing, key_set: str | None, alg: str | None, who: str, field: str) -> None:
    """An entry that wants something signed with ``alg`` needs one of our signing keys of that alg."""
    if alg and alg not in ring.signing_algs:
        hint = (
            f"the active signing key of key set {key_set!r} is {ring.signing.alg}"
            if key_set
            else "add one to OAUTH_HSM_PUBLISHED_KEYS"
        )
        raise ConfigError(f"OAUTH_HSM_REGISTRY: {who}: no signing key for {field} {alg} ({hint})")
