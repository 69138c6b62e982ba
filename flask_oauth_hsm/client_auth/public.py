"""``none``: public clients (RFC 6749 §2.1) identify themselves with ``client_id`` only.

They never get a token without another proof: PKCE at the token endpoint (RFC 7636), and they
cannot use the client credentials grant (RFC 6749 §4.4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..clients import Credentials
from .base import AssertionPolicy, AuthFailure, Finder, Presented

if TYPE_CHECKING:
    from ..server import ServerContext


def verify(ctx: ServerContext, presented: Presented, find: Finder, policy: AssertionPolicy) -> Credentials:
    entity = find(presented.client_id) if presented.client_id else None
    if entity is None or entity.token_endpoint_auth_method != "none":
        raise AuthFailure("no credentials and not a public client", client_id=presented.client_id)
    return entity
