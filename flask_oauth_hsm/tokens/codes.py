"""Authorization codes (RFC 6749 §4.1.2): random, in Redis under their hash, single use.

A code is 256 random bits; its record (never the code itself) says what it may be exchanged for:
the client, the redirect URI, the PKCE challenge, the resources and scope, the user and their
authentication, and what the user agreed to release. It lives ``OAUTH_HSM_CODE_LIFETIME`` seconds.

Redemption reads the record, checks it, then consumes it in one atomic step that leaves a
tombstone naming the grant it created (:meth:`Store.consume`). A second redemption finds the
tombstone: it fails and revokes that grant (RFC 6749 §4.1.2). Checking before consuming means a
request with a wrong verifier or from another client does not burn the legitimate client's code.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import clock
from ..release import Release

if TYPE_CHECKING:
    from ..authz.consent import Decision
    from ..authz.request import AuthorizationRequest
    from ..server import ServerContext
    from ..users import User

NAMESPACE = "code"
_CODE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class CodeRecord:
    client_id: str
    redirect_uri: str
    redirect_uri_given: bool
    code_challenge: str | None
    scope: frozenset[str]
    resources: tuple[str, ...]
    subject: str
    auth_time: int
    acr: str | None
    amr: tuple[str, ...]
    nonce: str | None
    release: Release
    expires_at: float
    dpop_jkt: str | None = None

    def encode(self) -> bytes:
        doc: dict[str, Any] = {
            **self.__dict__,
            "scope": sorted(self.scope),
            "resources": list(self.resources),
            "amr": list(self.amr),
            "release": self.release.to_json(),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> CodeRecord:
        doc = json.loads(raw)
        doc.update(
            scope=frozenset(doc["scope"]),
            resources=tuple(doc["resources"]),
            amr=tuple(doc["amr"]),
            release=Release.from_json(doc["release"]),
        )
        return cls(**doc)


@dataclass(frozen=True)
class Found:
    """What a code names: its record, or (``used_by``) the grant its first redemption created."""

    record: CodeRecord | None = None
    used_by: str | None = None


def issue(ctx: ServerContext, req: AuthorizationRequest, user: User, decision: Decision) -> str:
    code = secrets.token_urlsafe(32)
    record = CodeRecord(
        client_id=req.client_id,
        redirect_uri=req.redirect_uri,
        redirect_uri_given=req.redirect_uri_given,
        code_challenge=req.code_challenge,
        scope=decision.scope,
        resources=req.resources,
        subject=user.subject,
        auth_time=int(user.auth_time),
        acr=user.acr,
        amr=user.amr,
        nonce=req.nonce,
        release=decision.release,
        expires_at=clock.now() + ctx.settings.code_lifetime,
        dpop_jkt=req.dpop_jkt,
    )
    ctx.store.put(NAMESPACE, code, record.encode(), ctx.settings.code_lifetime)
    return code


def find(ctx: ServerContext, code: str) -> Found:
    if not _CODE.fullmatch(code):
        return Found()  # not a code of ours: no Redis round trip for garbage
    found = ctx.store.tombstone_or_record(ctx.store.read(NAMESPACE, code))
    if found.used_by is not None:
        return Found(used_by=found.used_by.decode())
    return Found(record=CodeRecord.decode(found.record)) if found.record is not None else Found()


def consume(ctx: ServerContext, code: str, grant_id: str) -> Found:
    """Consume the code for the grant ``grant_id``; of concurrent redemptions exactly one gets the
    record, the others (and every later one, for a while) learn which grant the winner made."""
    ttl = ctx.settings.code_lifetime + ctx.settings.access_token_lifetime
    consumed = ctx.store.consume(NAMESPACE, code, grant_id.encode(), ttl)
    if consumed.used_by is not None:
        return Found(used_by=consumed.used_by.decode())
    return Found(record=CodeRecord.decode(consumed.record)) if consumed.record is not None else Found()
