"""JWT access tokens (RFC 9068): issued and signed in the token, optionally nested in a JWE.

Claims (RFC 9068 §2.2): ``iss``, ``exp``, ``aud``, ``sub``, ``client_id``, ``iat``, ``jti``,
``scope``, and ``cnf`` when sender-constrained (RFC 7800). ``typ`` is ``at+jwt`` (§2.1). When the
audience registered ``access_token_encrypted_response_alg/enc`` the signed token is encrypted to
it (RFC 9068 §4: that resource server then rejects unencrypted tokens).

CEK escrow: a token encrypted to a resource server is opaque to us, yet it comes back for
introspection and revocation. So the content-encryption key is also encrypted to our own
decryption key and carried in the protected header (``oauth-hsm-cek``, covered by the
authentication tag). We recover the CEK in the token, decrypt, and still verify our signature on
the inner JWS, so a forged escrow gains nothing. Resource servers ignore the member (RFC 7516
§4: unknown header parameters are ignored unless listed in ``crit``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import clock
from ..algorithms import DEFAULT_ENC
from ..clients import Client
from ..errors import InvalidTargetError, JoseError
from ..jose import compact, jwe, jws, jwt

if TYPE_CHECKING:
    from ..grants import Grant
    from ..server import ServerContext

AT_TYP = "at+jwt"
MAX_ACCESS_TOKEN_LEN = 64 * 1024
ESCROW_HEADER = "oauth-hsm-cek"
_ESCROW_ENC = "A256GCM"
_INNER_ENCS = ("A128GCM", "A256GCM", "A128CBC-HS256")


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: dict[str, Any]
    expires_in: int


def cip_hash(ip: str) -> str:
    """Hash of the client IP for local checks at the resource server (docs/introspection.md)."""
    return compact.b64url_encode(hashlib.sha256(ip.encode()).digest()[:16])


def issue(
    ctx: ServerContext, client: Client, grant: Grant, *, client_ip: str | None = None, cnf: dict[str, Any] | None = None
) -> IssuedToken:
    audiences = grant.audiences
    encrypting = [rs for rs in audiences if rs.access_token_encrypted_response_alg]
    if encrypting and len(audiences) != 1:  # checked before the token spends a signature
        raise InvalidTargetError("a resource server requiring encrypted tokens must be the only audience")
    now = int(clock.now())
    lifetime = ctx.settings.access_token_lifetime
    aud = [rs.resource for rs in audiences] + list(grant.also_for)
    claims: dict[str, Any] = {
        "iss": ctx.settings.issuer,
        "exp": now + lifetime,
        "aud": aud[0] if len(aud) == 1 else aud,
        "sub": grant.subject,
        "client_id": client.client_id,
        "iat": now,
        "jti": secrets.token_urlsafe(18),
        "scope": " ".join(sorted(grant.scope)),
        **grant.claims,
    }
    if cnf:
        claims["cnf"] = cnf
    if client.cip_hash and client_ip:
        claims["cip_hash"] = cip_hash(client_ip)
    ring = ctx.keys.ring
    token = jwt.sign_jwt(claims, ring.signing, AT_TYP)
    if encrypting:
        rs = encrypting[0]
        alg = rs.access_token_encrypted_response_alg
        assert alg is not None  # encrypting holds only resource servers with an alg (above)
        token = jwe.encrypt(
            token.encode("ascii"),
            rs.encryption_key(alg),
            alg,
            rs.access_token_encrypted_response_enc or DEFAULT_ENC,
            {"cty": "JWT"},
            escrow=lambda cek: {ESCROW_HEADER: _escrow(ctx, cek)},
        )
    return IssuedToken(token, claims, lifetime)


def _escrow(ctx: ServerContext, cek: bytes) -> str:
    own = ctx.keys.ring.escrow
    assert own is not None and own.alg is not None  # start-up refuses encrypting resource servers otherwise
    return jwe.encrypt(cek, own, own.alg, _ESCROW_ENC)


def _recover_cek(ctx: ServerContext, header: dict[str, Any]) -> bytes:
    escrowed = header.get(ESCROW_HEADER)
    if not isinstance(escrowed, str):
        raise JoseError("no escrowed key")
    ring = ctx.keys.ring
    return jwe.decrypt(escrowed, ring.decrypter_for, ring.decryption_algs, [_ESCROW_ENC]).plaintext


def read_own_token(ctx: ServerContext, token: str) -> dict[str, Any]:
    """Claims of an access token we issued: decrypt if nested, verify our signature, typ at+jwt.

    Raises JoseError for anything that is not such a token (expiry is the caller's business).
    """
    ring = ctx.keys.ring
    if jwt.is_encrypted(token):
        if not ring.decryption:
            raise JoseError("encrypted token but no decryption key")
        decrypted = jwe.decrypt_with_cek(token, lambda h: _recover_cek(ctx, h), _INNER_ENCS, max_len=MAX_ACCESS_TOKEN_LEN)
        token = jwt.unnest(decrypted).decode("ascii", "replace")
    verified = jws.verify(token, ring.verifier_for, ring.own_algs, max_len=MAX_ACCESS_TOKEN_LEN)
    if not compact.typ_is(verified.header, AT_TYP):
        raise JoseError("not an access token (typ)")
    claims = jwt.decode_claims(verified.payload)
    if claims.get("iss") != ctx.settings.issuer:
        raise JoseError("issued by someone else")
    return claims
