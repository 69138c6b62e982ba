"""Which of a user's claims a request asks for: OpenID scopes (OIDC Core §5.4) and the ``claims``
parameter (OIDC Core §5.5), with its top-level ``introspection`` member (DESIGN §7): claims a
resource server may learn about the user at introspection, when entitled and consented.

Only claim *names* travel through the flow and into Redis: the values stay with the host and are
read by subject (``@oauth.user_claims``) when they are released.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError

# OIDC Core §5.4: the claims each OpenID scope value asks for at UserInfo.
SCOPE_CLAIMS: dict[str, tuple[str, ...]] = {
    "profile": (
        "name",
        "family_name",
        "given_name",
        "middle_name",
        "nickname",
        "preferred_username",
        "profile",
        "picture",
        "website",
        "gender",
        "birthdate",
        "zoneinfo",
        "locale",
        "updated_at",
    ),
    "email": ("email", "email_verified"),
    "address": ("address",),
    "phone": ("phone_number", "phone_number_verified"),
}
MEMBERS = ("userinfo", "id_token", "introspection")
MAX_CLAIMS = 32  # per member: a request asks for a handful, never hundreds
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Names the ID token and UserInfo fill themselves: never taken from the host's user claims.
PROTOCOL_CLAIMS = frozenset(
    {
        "sub",
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "auth_time",
        "nonce",
        "acr",
        "amr",
        "azp",
        "at_hash",
        "c_hash",
        "sid",
        "active",
        "scope",
        "client_id",
        "token_type",
        "cnf",
        "grant_id",
    }
)


@dataclass(frozen=True)
class ClaimsRequest:
    """Claim names asked for per destination (``essential`` is honoured like voluntary: a claim
    the user did not release is simply absent, OIDC Core §5.5.1)."""

    userinfo: frozenset[str] = frozenset()
    id_token: frozenset[str] = frozenset()
    introspection: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, list[str]]:
        return {m: sorted(getattr(self, m)) for m in MEMBERS if getattr(self, m)}

    @classmethod
    def from_json(cls, doc: dict[str, list[str]]) -> ClaimsRequest:
        return cls(**{m: frozenset(doc.get(m, ())) for m in MEMBERS})


def parse_claims_parameter(raw: str | None) -> ClaimsRequest:
    """OIDC Core §5.5: a JSON object whose members map claim names to null or an object."""
    if raw is None:
        return ClaimsRequest()
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequestError("claims is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidRequestError("claims must be a JSON object")
    return ClaimsRequest(**{member: _names(doc.get(member)) for member in MEMBERS})


def _names(member: Any) -> frozenset[str]:
    if member is None:
        return frozenset()
    if not isinstance(member, dict) or len(member) > MAX_CLAIMS:
        raise InvalidRequestError("each member of claims must be an object of at most 32 claims")
    for name, spec in member.items():
        if not _NAME.fullmatch(name):
            raise InvalidRequestError("claims names a claim that is not a claim name")
        if spec is not None and not isinstance(spec, dict):
            raise InvalidRequestError("a requested claim must be null or an object")
    return frozenset(member) - PROTOCOL_CLAIMS


def userinfo_claims(scope: Iterable[str], requested: ClaimsRequest) -> frozenset[str]:
    """Claims the client asks to read at UserInfo: from OpenID scopes and ``claims.userinfo``."""
    from_scope = {claim for s in scope for claim in SCOPE_CLAIMS.get(s, ())}
    return frozenset(from_scope) | requested.userinfo


# Labels for the consent page (the template may show its own).
LABELS = {
    "name": "full name",
    "family_name": "family name",
    "given_name": "given name",
    "middle_name": "middle name",
    "nickname": "nickname",
    "preferred_username": "preferred user name",
    "profile": "profile page",
    "picture": "picture",
    "website": "web site",
    "gender": "gender",
    "birthdate": "date of birth",
    "zoneinfo": "time zone",
    "locale": "locale",
    "updated_at": "when your profile changed",
    "email": "email address",
    "email_verified": "whether your email address is verified",
    "address": "postal address",
    "phone_number": "phone number",
    "phone_number_verified": "whether your phone number is verified",
    "username": "user name",
}
