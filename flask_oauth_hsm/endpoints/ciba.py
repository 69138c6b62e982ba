"""Backchannel authentication endpoint (OpenID CIBA Core 1.0 §7), poll mode.

Steps: bounded form → authenticate the client like at the token endpoint (the ``aud`` policy
applies with this endpoint's URL as the receiving endpoint) → its rate limit → the request
(ciba/authentication.py) → ``auth_req_id``, ``expires_in``, ``interval`` as no-store JSON (§7.3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Response, request

from ..ciba.authentication import begin
from ..client_auth import authenticate_caller
from ..clients import Client
from ..web import json_response, read_form
from . import Endpoint, register

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext

PATH = "/bc-authorize"


def backchannel_authentication(ctx: ServerContext) -> Response:
    form = read_form(request, ctx.settings.max_body_bytes, repeatable=frozenset({"resource"}))
    client = authenticate_caller(ctx, request, form, "backchannel_authentication", want="client")
    assert isinstance(client, Client)
    ctx.limits.count_client("backchannel_authentication", client.client_id)
    auth_req_id, expires_in, interval = begin(ctx, client, form)
    return json_response({"auth_req_id": auth_req_id, "expires_in": expires_in, "interval": interval})


def _metadata(ctx: ServerContext, ring: KeyRing) -> dict[str, Any]:
    """CIBA Core §4: exactly what is served — poll mode, no user codes, signed requests with the
    algorithms of client assertions. The grant type is in the token endpoint's grant_types_supported."""
    return {
        "backchannel_authentication_endpoint": ctx.urls.url(PATH),
        "backchannel_token_delivery_modes_supported": ["poll"],
        "backchannel_authentication_request_signing_alg_values_supported": list(ctx.settings.assertion_algs),
        "backchannel_user_code_parameter_supported": False,
    }


register(
    Endpoint(
        "backchannel_authentication", PATH, backchannel_authentication, authenticates=True, feature="ciba", metadata=_metadata
    )
)
