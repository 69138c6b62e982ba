"""Proof of possession presented with a token request, computed once per request.

The token endpoint calls :func:`for_request` after client authentication and hands the result
to every grant (``TokenRequest.binding``) and to the access token (``cnf``, RFC 7800). Grants
check what earlier steps bound: a code requested with ``dpop_jkt`` (RFC 9449 §10), a public
client's refresh token (RFC 9449 §5). Today no proof is read — DPoP and mTLS (issue 13) fill in
:func:`for_request`; nothing else has to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Request

from ..clients import Client
from ..web import Form

if TYPE_CHECKING:
    from ..server import ServerContext


@dataclass(frozen=True)
class Binding:
    jkt: str | None = None  # RFC 9449 §6.1: SHA-256 thumbprint of the DPoP proof's key
    x5t_s256: str | None = None  # RFC 8705 §3.1: thumbprint of the client certificate

    def cnf(self) -> dict[str, Any] | None:
        """The access token's ``cnf`` claim (RFC 7800 §3.1), or None for a bearer token."""
        members = {name: value for name, value in (("jkt", self.jkt), ("x5t#S256", self.x5t_s256)) if value}
        return members or None


NO_BINDING = Binding()


def for_request(ctx: "ServerContext", request: Request, form: Form, client: Client) -> Binding:
    """The proof of possession this token request presents (none yet: bearer tokens only)."""
    return NO_BINDING
