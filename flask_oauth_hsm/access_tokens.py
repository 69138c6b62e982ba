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
import time
from dataclasses import dataclass
from typing import Any

from .algorithms import DEFAULT_ENC
from .errors import InvalidTargetError, JoseError
from .jose import compact, jwe, jws, jwt
from .registry import Client, ResourceServer

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


def issue(state, client: Client, scope: frozenset[str], audiences: list[ResourceServer], *, client_ip: str | None = None,
          cnf: dict | None = None) -> IssuedToken:
    encrypting = [rs for rs in audiences if rs.access_token_encrypted_response_alg]
    if encrypting and len(audiences) != 1:  # checked before the token spends a signature
        raise InvalidTargetError("a resource server requiring encrypted tokens must be the only audience")
    now = int(time.time())
    lifetime = state.settings.access_token_lifetime
    aud = [rs.resource for rs in audiences]
    claims: dict[str, Any] = {
        "iss": state.settings.issuer,
        "exp": now + lifetime,
        "aud": aud[0] if len(aud) == 1 else aud,
        # RFC 9068 §2.2: with no resource owner, sub identifies the client.
        "sub": client.client_id,
        "client_id": client.client_id,
        "iat": now,
        "jti": secrets.token_urlsafe(18),
        "scope": " ".join(sorted(scope)),
    }
    if cnf:
        claims["cnf"] = cnf
    if client.cip_hash and client_ip:
        claims["cip_hash"] = cip_hash(client_ip)
    token = jwt.sign_jwt(claims, state.keys.signing, AT_TYP)
    if encrypting:
        rs = encrypting[0]
        alg = rs.access_token_encrypted_response_alg
        token = jwe.encrypt(
            token.encode("ascii"), rs.encryption_key(alg), alg, rs.access_token_encrypted_response_enc or DEFAULT_ENC,
            {"cty": "JWT"}, escrow=lambda cek: {ESCROW_HEADER: _escrow(state, cek)},
        )
    return IssuedToken(token, claims, lifetime)


def _escrow(state, cek: bytes) -> str:
    own = state.keys.escrow  # present: start-up refuses encrypting resource servers otherwise
    return jwe.encrypt(cek, own, own.alg, _ESCROW_ENC)


def _recover_cek(state, header: dict) -> bytes:
    escrowed = header.get(ESCROW_HEADER)
    if not isinstance(escrowed, str):
        raise JoseError("no escrowed key")
    return jwe.decrypt(escrowed, state.keys.decrypter_for, state.keys.decryption_algs, [_ESCROW_ENC]).plaintext


def read_own_token(state, token: str) -> dict[str, Any]:
    """Claims of an access token we issued: decrypt if nested, verify our signature, typ at+jwt.

    Raises JoseError for anything that is not such a token (expiry is the caller's business).
    """
    if jwt.is_encrypted(token):
        if not state.keys.decryption:
            raise JoseError("encrypted token but no decryption key")
        decrypted = jwe.decrypt_with_cek(token, lambda h: _recover_cek(state, h), _INNER_ENCS, max_len=MAX_ACCESS_TOKEN_LEN)
        token = jwt.unnest(decrypted).decode("ascii", "replace")
    verified = jws.verify(token, state.keys.verifier_for, state.keys.own_algs, max_len=MAX_ACCESS_TOKEN_LEN)
    if not compact.typ_is(verified.header, AT_TYP):
        raise JoseError("not an access token (typ)")
    claims = jwt.decode_claims(verified.payload)
    if claims.get("iss") != state.settings.issuer:
        raise JoseError("issued by someone else")
    return claims
