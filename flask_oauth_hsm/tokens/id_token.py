"""ID tokens (OpenID Connect Core §2, §3.1.3.6), signed in the HSM.

Issued when the scope includes ``openid``: ``iss``, ``sub``, ``aud`` (the client), ``exp``,
``iat``, ``auth_time``, ``nonce`` (code flow only, OIDC Core §12.2), ``acr``/``amr`` when the
host supplied them, ``azp``, and ``at_hash`` (§3.1.3.6: the left half of the hash of the access
token, with the hash of the signing algorithm), plus the claims the user agreed to put in it.
Signed with the client's ``id_token_signed_response_alg`` or the access-token signing key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import clock
from ..jose import jwt
from ..jose.compact import b64url_encode

if TYPE_CHECKING:
    from ..clients import Client
    from ..server import ServerContext

# OIDC Core §3.1.3.6 and the EdDSA errata: the hash that goes with each signing algorithm.
_HASHES = {
    "ES256": hashlib.sha256,
    "PS256": hashlib.sha256,
    "RS256": hashlib.sha256,
    "ES384": hashlib.sha384,
    "EdDSA": hashlib.sha512,
}


def at_hash(access_token: str, alg: str) -> str:
    digest = _HASHES[alg](access_token.encode("ascii")).digest()
    return b64url_encode(digest[: len(digest) // 2])


def issue(
    ctx: ServerContext,
    client: Client,
    *,
    subject: str,
    auth_time: int,
    acr: str | None,
    amr: tuple[str, ...],
    nonce: str | None,
    access_token: str,
    extra: Mapping[str, Any],
) -> str:
    signer = ctx.keys.ring.signer_for(client.id_token_signed_response_alg)
    now = int(clock.now())
    claims: dict[str, Any] = {**extra}  # released user claims first: protocol claims always win
    claims.update(
        {
            "iss": ctx.settings.issuer,
            "sub": subject,
            "aud": client.client_id,
            "exp": now + ctx.settings.id_token_lifetime,
            "iat": now,
            "auth_time": auth_time,
            "azp": client.client_id,
            "at_hash": at_hash(access_token, signer.alg),
        }
    )
    if nonce is not None:
        claims["nonce"] = nonce
    if acr is not None:
        claims["acr"] = acr
    if amr:
        claims["amr"] = list(amr)
    return jwt.sign_jwt(claims, signer, "JWT")
