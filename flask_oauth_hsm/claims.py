"""The one validator of JWT time and identity claims (RFC 7519 §4.1), for every JWT we accept.

Client assertions (RFC 7523 §3), our own access tokens at introspection, access tokens and
introspection responses at the resource server, and later DPoP proofs, request objects and
logout tokens all pass through :func:`check`, with rules that say what that kind of JWT needs.
Audience *policy* (which values an assertion may carry) lives with client authentication; here
``audience`` is only "this value must be among ``aud``".

NumericDate (RFC 7519 §2): a JSON number of seconds since the epoch. We refuse booleans,
non-finite values, negative values and values past the year 3000 as malformed: a JSON ``-1e309``
is minus infinity to Python, and would otherwise satisfy every "not in the future" test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import clock

MAX_NUMERIC_DATE = 32_503_680_000  # 3000-01-01T00:00:00Z


class ClaimError(Exception):
    """A claim is missing, malformed or unacceptable; the message names the claim (for logs)."""


@dataclass(frozen=True)
class ClaimRules:
    """What one kind of JWT must satisfy. ``leeway`` absorbs clock differences between parties."""

    leeway: int = 30
    expiry_leeway: int | None = None  # for exp only, when it differs (our own tokens: 0)
    issuer: str | None = None  # iss must equal this (None: checked by the caller, or not at all)
    audience: str | None = None  # this value must be aud or be in aud
    required: tuple[str, ...] = ("exp",)
    max_lifetime: int | None = None  # exp may be at most this far ahead of now (plus leeway)
    max_age: int | None = None  # iat may be at most this far in the past (plus leeway)


def numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """The NumericDate claim ``name``, or None when absent; raises ClaimError when malformed."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ClaimError(f"{name} is not a NumericDate")
    if not math.isfinite(value) or value < 0 or value > MAX_NUMERIC_DATE:
        raise ClaimError(f"{name} is out of range")
    return float(value)


def audiences(claims: dict[str, Any]) -> list[str]:
    """``aud`` as a list of strings (RFC 7519 §4.1.3: a string or an array of strings)."""
    aud = claims.get("aud")
    values = aud if isinstance(aud, list) else [aud]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise ClaimError("aud missing or not strings")
    return values


def check(claims: dict[str, Any], rules: ClaimRules) -> None:
    """Raise ClaimError unless ``claims`` satisfies ``rules`` at the current time."""
    for name in rules.required:
        if claims.get(name) is None:  # a JSON null is no value: "exp": null must not pass as present
            raise ClaimError(f"{name} missing")
    now, leeway = clock.now(), rules.leeway
    exp, nbf, iat = (numeric_date(claims, n) for n in ("exp", "nbf", "iat"))
    expiry_leeway = leeway if rules.expiry_leeway is None else rules.expiry_leeway
    if exp is not None and exp <= now - expiry_leeway:
        raise ClaimError("expired")
    if exp is not None and rules.max_lifetime is not None and exp > now + rules.max_lifetime + leeway:
        raise ClaimError("exp too far in the future")
    if nbf is not None and nbf > now + leeway:
        raise ClaimError("nbf is in the future")
    if iat is not None and iat > now + leeway:
        raise ClaimError("iat is in the future")
    if iat is not None and rules.max_age is not None and iat < now - rules.max_age - leeway:
        raise ClaimError("iat too far in the past")
    if rules.issuer is not None and claims.get("iss") != rules.issuer:
        raise ClaimError("wrong issuer")
    if rules.audience is not None and rules.audience not in audiences(claims):
        raise ClaimError("not meant for this audience")
    jti = claims.get("jti")
    if "jti" in rules.required and (not isinstance(jti, str) or not jti):
        raise ClaimError("jti missing")
