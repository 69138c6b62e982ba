"""The pushed authorization request endpoint (RFC 9126).

Steps: bounded form → a DPoP proof for ``/par``, stateless checks (RFC 9449 §10.1) → authenticate
the client exactly as at the token endpoint (its ``aud`` policy with this endpoint's URL) → its
rate limit → no ``request_uri`` inside (RFC 9126 §2.1) → the parameters: the form, or the request
object in ``request`` (RFC 9126 §3, verified for this endpoint's URL; everything beside it
ignored, RFC 9101 §6.3) → the DPoP key binds the code (``dpop_jkt``, RFC 9449 §10.1) → the whole
authorization request validated now, so errors reach the client directly (RFC 9126 §2.3) → kept
under a one-time ``request_uri`` (authz/pushed.py) → ``201`` with ``request_uri`` and ``expires_in``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Response, request

from .. import binding
from ..authz import jar, pushed
from ..authz.redirect import target
from ..authz.request import validate
from ..authz.request_object import verify_request_object
from ..client_auth import authenticate_caller
from ..clients import Client
from ..errors import InvalidRequestError, UnauthorizedClientError
from ..web import Form, json_response, read_form
from . import Endpoint, register

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext

REPEATABLE = frozenset({"resource"})  # RFC 8707 §2
CLIENT_AUTHENTICATION = frozenset({"client_assertion", "client_assertion_type", "client_secret"})  # not request parameters
PATH = "/par"


def par_endpoint(ctx: ServerContext) -> Response:
    form = read_form(request, ctx.settings.max_body_bytes, repeatable=REPEATABLE)
    proof = binding.read_dpop_proof(ctx, request, ctx.urls.url(PATH))
    client = authenticate_caller(ctx, request, form, "par", want="client")
    assert isinstance(client, Client)
    ctx.limits.count_client("par", client.client_id)
    if "request_uri" in form:  # RFC 9126 §2.1
        raise InvalidRequestError("request_uri is not allowed in a pushed authorization request")
    if "authorization_code" not in client.grant_types:
        raise UnauthorizedClientError("this client may not use the authorization code flow")
    params = _parameters(ctx, client, form)
    headers: dict[str, str] = {}
    if proof is not None:
        headers = binding.accept_dpop_proof(ctx, proof, client)  # nonce rules, jti used once
        if params.get("dpop_jkt", proof.jkt) != proof.jkt:  # RFC 9449 §10.1: both given, they must agree
            raise InvalidRequestError("dpop_jkt differs from the key of the DPoP proof")
        params["dpop_jkt"] = proof.jkt
    validate(ctx, client, target(client, params), params)  # RFC 9126 §2.3: errors now, to the client
    request_uri, lifetime = pushed.keep(ctx, client, params)
    return json_response({"request_uri": request_uri, "expires_in": lifetime}, status=201, headers=headers or None)


def _parameters(ctx: ServerContext, client: Client, form: Form) -> Form:
    """The authorization request's parameters: the request object's, or the form's."""
    raw = form.get("request")
    if raw is not None:
        claims = verify_request_object(ctx, client, raw, receiving_endpoint=ctx.urls.url(PATH))
        return jar.parameters(claims)
    return Form({k: v for k, v in form.items() if k not in CLIENT_AUTHENTICATION}, dict(form.multi))


def _metadata(ctx: ServerContext, ring: KeyRing) -> dict[str, Any]:
    """RFC 9126 §5: where to push, and whether every client must."""
    return {
        "pushed_authorization_request_endpoint": ctx.urls.url(PATH),
        "require_pushed_authorization_requests": ctx.settings.require_par,
    }


register(Endpoint("par", PATH, par_endpoint, authenticates=True, feature="users", metadata=_metadata))
