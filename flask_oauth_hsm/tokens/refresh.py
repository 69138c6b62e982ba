"""Refresh tokens (RFC 6749 §6, RFC 9700 §4.14): encrypted to ourselves, rotated in Redis.

A refresh token is a compact JWE encrypted to the authorization server's own encryption key (the
first of ``OAUTH_HSM_ENCRYPTION_KEYS``): only the HSM can read it, and nobody stores it. Its
plaintext carries the grant (id, client, user, scope, resources, authentication) and this token's
own random id. What changes — which token id is current, whether the grant was revoked — is a
small record per grant in Redis (:meth:`Store.grant_rotate`, hashed ids only). So the long-lived
part lives in the token, and Redis holds only short state whose loss fails closed: a grant whose
record is gone cannot be refreshed (the user signs in again).

Anyone holding our public key can build a JWE; what they cannot build is one carrying the current
token id of a live grant, which exists only inside tokens we issued (and hashed in Redis).
The header's ``typ`` separates refresh tokens from every other JWE we decrypt.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..algorithms import DEFAULT_ENC
from ..errors import JoseError
from ..jose import jwe, jwt
from ..jose.compact import parse_json_object

if TYPE_CHECKING:
    from ..server import ServerContext

RT_TYP = "oauth-hsm-rt+jwe"
MAX_LEN = 8 * 1024


@dataclass(frozen=True)
class RefreshClaims:
    grant_id: str
    token_id: str
    client_id: str
    subject: str
    scope: frozenset[str]  # the grant's scope: a refresh may narrow an access token, never this
    resources: tuple[str, ...]
    auth_time: int
    acr: str | None
    amr: tuple[str, ...]
    issued_at: int  # this token: the idle lifetime counts from here
    expires_at: int  # the grant: the absolute lifetime
    jkt: str | None = None  # RFC 9449 §5: a public client's refresh token is bound to its DPoP key
    x5t: str | None = None  # RFC 8705 §4: ... or to its TLS client certificate (x5t#S256)

    def to_json(self) -> dict[str, Any]:
        return {
            "gid": self.grant_id,
            "jti": self.token_id,
            "client_id": self.client_id,
            "sub": self.subject,
            "scope": " ".join(sorted(self.scope)),
            "aud": list(self.resources),
            "auth_time": self.auth_time,
            "acr": self.acr,
            "amr": list(self.amr),
            "iat": self.issued_at,
            "exp": self.expires_at,
            "jkt": self.jkt,
            "x5t": self.x5t,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RefreshClaims:
        try:
            return cls(
                grant_id=_str(doc["gid"]),
                token_id=_str(doc["jti"]),
                client_id=_str(doc["client_id"]),
                subject=_str(doc["sub"]),
                scope=frozenset(_str(doc["scope"]).split()),
                resources=tuple(_str(r) for r in doc["aud"]),
                auth_time=int(doc["auth_time"]),
                acr=doc["acr"],
                amr=tuple(_str(a) for a in doc["amr"]),
                issued_at=int(doc["iat"]),
                expires_at=int(doc["exp"]),
                jkt=doc.get("jkt"),
                x5t=doc.get("x5t"),
            )
        except (KeyError, TypeError, ValueError):
            raise JoseError("not a refresh token of ours") from None

    def successor(self, now: int) -> RefreshClaims:
        """The token that replaces this one: same grant, new id, idle lifetime from now."""
        return RefreshClaims(**{**self.__dict__, "token_id": new_id(), "issued_at": now})


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def new_id() -> str:
    return secrets.token_urlsafe(18)


def mint(ctx: ServerContext, claims: RefreshClaims) -> str:
    own = ctx.keys.ring.escrow
    assert own is not None and own.alg is not None  # start-up refuses refresh_token clients otherwise
    return jwe.encrypt(jwt.encode_claims(claims.to_json()), own, own.alg, DEFAULT_ENC, {"typ": RT_TYP})


def looks_like(token: str) -> bool:
    """Whether ``token`` claims to be one of our refresh tokens (no key is used to tell)."""
    if not jwt.is_encrypted(token) or len(token) > MAX_LEN:
        return False
    try:
        return jwe.protected_header(token, MAX_LEN).get("typ") == RT_TYP
    except JoseError:
        return False


def read(ctx: ServerContext, token: str) -> RefreshClaims:
    """Decrypt in the HSM; raises JoseError for anything that is not a refresh token of ours."""
    if not looks_like(token):
        raise JoseError("not a refresh token of ours")
    ring = ctx.keys.ring
    decrypted = jwe.decrypt(token, ring.decrypter_for, ring.decryption_algs, [DEFAULT_ENC], max_len=MAX_LEN)
    return RefreshClaims.from_json(parse_json_object(decrypted.plaintext, "refresh token"))
