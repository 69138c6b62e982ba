"""JWT claims sets (RFC 7519) and nested JWTs (RFC 7519 §5.2, §11.2: sign, then encrypt).

Only the encoding lives here; which claims a token must carry is each endpoint's business.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import MalformedJose
from . import jwe, jws
from .compact import parse_json_object
from .jwk import PublicJWK


def encode_claims(claims: dict[str, Any]) -> bytes:
    return json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_claims(payload: bytes) -> dict[str, Any]:
    """A JWT claims set: a JSON object with unique member names (RFC 7519 §7.2 step 10)."""
    return parse_json_object(payload, "JWT claims")


def sign_jwt(claims: dict[str, Any], signer: jws.Signer, typ: str) -> str:
    return jws.sign(encode_claims(claims), signer, {"typ": typ})


def nest(signed_jwt: str, recipient: PublicJWK, alg: str, enc: str) -> str:
    """Encrypt a signed JWT to ``recipient``; ``cty: JWT`` marks the nesting (RFC 7519 §5.2)."""
    return jwe.encrypt(signed_jwt.encode("ascii"), recipient, alg, enc, {"cty": "JWT"})


def is_encrypted(token: str | bytes) -> bool:
    """Five compact parts mean a JWE, three a JWS (RFC 7516 §9)."""
    dots = token.count(b".") if isinstance(token, bytes) else token.count(".")
    return dots == 4


def unnest(decrypted: jwe.Decrypted) -> bytes:
    """The inner JWS of a nested JWT; refuses a JWE whose content is not a JWT."""
    cty = decrypted.header.get("cty")
    if not isinstance(cty, str) or cty.lower() not in ("jwt", "application/jwt"):
        raise MalformedJose("JWE content is not a nested JWT (cty is not JWT)")
    return decrypted.plaintext
