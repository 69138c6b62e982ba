"""What a user agreed to release about themselves, and releasing it.

A :class:`Release` holds claim *names* only, per destination: each resource server (at
introspection, DESIGN §7), the client at UserInfo, and the client in the ID token. It travels
with the code and then lives in the grant's record in Redis for as long as the grant. The values
come from the host (``@oauth.user_claims``) at the moment they are released, so no personal data
is ever stored by us.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .users import user_claims

if TYPE_CHECKING:
    from .clients import ResourceServer
    from .server import ServerContext


@dataclass(frozen=True)
class Release:
    introspection: Mapping[str, frozenset[str]] = field(default_factory=dict)  # resource server client_id -> names
    userinfo: frozenset[str] = frozenset()
    id_token: frozenset[str] = frozenset()
    # The user's own subject, kept in the grant's record when the tokens carry a pairwise sub
    # (subjects.py): claims are read from the host by it. None: the tokens' sub is the user's own.
    subject: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "introspection": {rs: sorted(names) for rs, names in sorted(self.introspection.items()) if names},
            "userinfo": sorted(self.userinfo),
            "id_token": sorted(self.id_token),
        }
        if self.subject is not None:
            doc["subject"] = self.subject
        return doc

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Release:
        return cls(
            {rs: frozenset(names) for rs, names in doc.get("introspection", {}).items()},
            frozenset(doc.get("userinfo", ())),
            frozenset(doc.get("id_token", ())),
            doc.get("subject"),
        )

    @classmethod
    def decode(cls, raw: bytes) -> Release:
        return cls.from_json(json.loads(raw))

    def covers(self, other: Release) -> bool:
        return (
            other.userinfo <= self.userinfo
            and other.id_token <= self.id_token
            and all(names <= self.introspection.get(rs, frozenset()) for rs, names in other.introspection.items())
        )

    def union(self, other: Release) -> Release:
        keys = set(self.introspection) | set(other.introspection)
        merged = {rs: self.introspection.get(rs, frozenset()) | other.introspection.get(rs, frozenset()) for rs in keys}
        return Release(merged, self.userinfo | other.userinfo, self.id_token | other.id_token)


def released(ctx: ServerContext, subject: str, names: frozenset[str]) -> dict[str, Any]:
    """The values of ``names`` the host has for ``subject`` (absent claims are simply left out)."""
    if not names:
        return {}
    values = user_claims(ctx, subject)
    return {name: values[name] for name in sorted(names) if name in values}


def for_resource_server(ctx: ServerContext, rs: ResourceServer, subject: str, release: Release) -> dict[str, Any]:
    """DESIGN §7: a claim reaches a resource server only when its registry entry lists it in
    ``introspection_claims`` *and* the user consented to release it to that resource server."""
    allowed = release.introspection.get(rs.client_id, frozenset()) & frozenset(rs.introspection_claims)
    return released(ctx, subject, allowed)
