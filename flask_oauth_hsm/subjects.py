"""The ``sub`` a client sees: the user's own subject, or a pairwise one (OpenID Connect Core §8.1).

A client registered with ``subject_type: pairwise`` gets, for every user, a ``sub`` that no other
sector can correlate with (CAMARA Security and Interoperability profile; OIDC Core §8.1)::

    sub = base64url( HMAC-SHA-256(K, "pairwise" ‖ 0x00 ‖ sector ‖ 0x00 ‖ local subject) )

``K`` is the HMAC key labelled ``OAUTH_HSM_PAIRWISE_KEY`` in the token (its value never leaves it);
``sector`` is the host of the client's ``sector_identifier_uri`` (never fetched), or of its redirect
URIs when they all name one host (:func:`sector_of`). The value is stable (same key, sector and
user: same ``sub``) and differs between sectors. It applies to the ID token, the access token's
``sub`` (so also introspection and UserInfo) and CIBA. The user's own subject stays with us: the
grant's record keeps it (``Release.subject``) so that claims are read from the host by it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .jose.compact import b64url_encode

if TYPE_CHECKING:
    from .clients import Client
    from .hsm import HSM
    from .server import ServerContext
    from .settings import Settings

SUBJECT_TYPES = ("public", "pairwise")


def sector_of(sector_identifier_uri: str | None, redirect_uris: list[str] | tuple[str, ...]) -> str:
    """OIDC Core §8.1: the sector identifier's host, else the single host of the redirect URIs.
    Raises ValueError (a registry error) when neither names exactly one host."""
    if sector_identifier_uri is not None:
        host = urlsplit(sector_identifier_uri).hostname
        if not host or urlsplit(sector_identifier_uri).scheme != "https":
            raise ValueError("sector_identifier_uri must be an https URL with a host")
        return host
    hosts = {urlsplit(u).hostname for u in redirect_uris}
    if len(hosts) != 1 or None in hosts:
        raise ValueError("a pairwise client needs sector_identifier_uri unless its redirect URIs name exactly one host")
    return str(next(iter(hosts)))


def for_client(ctx: ServerContext, client: Client, subject: str) -> str:
    """The ``sub`` ``client`` sees for the user ``subject``."""
    if client.subject_type != "pairwise":
        return subject
    label = ctx.settings.pairwise_key
    assert label is not None and client.sector_identifier is not None  # start-up checks (clients/fit.py)
    mac = ctx.hsm.secret_key(label).hmac_sha256(b"pairwise\0" + client.sector_identifier.encode() + b"\0" + subject.encode())
    return b64url_encode(mac)


def supported(settings: Settings) -> list[str]:
    """OIDC Discovery ``subject_types_supported``: pairwise only when a key can compute it."""
    return list(SUBJECT_TYPES) if settings.pairwise_key else ["public"]


def check_key(hsm: HSM, settings: Settings) -> None:
    """Start-up: a configured pairwise key must exist in the token and be an HMAC key."""
    from .binding.config import _secret_key  # the same check and message as the other secret keys

    _secret_key(hsm, settings.pairwise_key, "OAUTH_HSM_PAIRWISE_KEY", "hmac")
