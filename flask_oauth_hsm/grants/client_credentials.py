"""The client credentials grant (RFC 6749 §4.4): the client acts on its own behalf."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import Grant, TokenRequest, register
from .targets import resource_servers, scope_for

if TYPE_CHECKING:
    from ..server import ServerContext


@register("client_credentials", confidential_only=True)
def client_credentials(ctx: ServerContext, req: TokenRequest) -> Grant:
    audiences = resource_servers(ctx, req.form.getlist("resource"), req.client)
    scope = scope_for(req.form.get("scope"), req.client, audiences)
    # RFC 9068 §2.2: with no resource owner, sub identifies the client.
    return Grant(subject=req.client.client_id, scope=scope, audiences=audiences)
