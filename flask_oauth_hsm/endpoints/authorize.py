"""The authorization endpoint (RFC 6749 §3.1, §4.1.1) and the consent page's endpoint.

``/authorize`` (GET or POST, OIDC Core §3.1.2.1) runs the pipeline of :mod:`flask_oauth_hsm.authz`:
client and redirect URI (error page), the parameters' source, validation (errors redirected with
``state`` and ``iss``), then the interaction. ``/consent`` is where the host's login page sends
the user back (GET ``?id=…``) and where the consent form posts its decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Response, request

from ..algorithms import CONTENT_ENCRYPTION
from ..authz import interaction, jar, pending, pushed, sources  # noqa: F401  (jar, pushed: register their sources)
from ..authz.consent import audiences
from ..authz.params import read_params
from ..authz.pkce import S256
from ..authz.redirect import error_redirect, identify_client, target, trusted_target
from ..authz.request import read_state, validate
from ..errors import BrowserError, OAuthError
from ..web import read_form
from . import Endpoint, register

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext

CONSENT_FORM_FIELDS = 256  # one checkbox per released claim and resource server, and a few more


def authorize_endpoint(ctx: ServerContext) -> Response:
    raw = read_params(request, ctx.settings.max_body_bytes)
    client = identify_client(ctx, raw)
    try:
        params = sources.resolve(ctx, client, raw)
    except BrowserError:
        raise
    except OAuthError as exc:
        fallback = trusted_target(client, raw)
        if fallback is None:
            raise BrowserError(exc.description) from None
        return error_redirect(ctx, fallback, exc, read_state(raw))
    to = target(client, params)
    try:
        req = validate(ctx, client, to, params)
    except BrowserError:
        raise
    except OAuthError as exc:
        return error_redirect(ctx, to, exc, read_state(params))
    return interaction.start(ctx, req, pending.browser(request))


def consent_endpoint(ctx: ServerContext) -> Response:
    browser = pending.browser(request)
    waiting = pending.load(ctx, request.args.get("id"), browser)
    if request.method != "POST":
        return interaction.proceed(ctx, waiting, returning=True)
    repeatable = frozenset(f"claims:{rs.client_id}" for rs in audiences(ctx, waiting.request))
    form = read_form(request, ctx.settings.max_body_bytes, repeatable, CONSENT_FORM_FIELDS)
    return interaction.decide(ctx, waiting, form)


def _metadata(ctx: ServerContext, ring: KeyRing) -> dict[str, Any]:
    """RFC 8414 §2, RFC 9207 §3, RFC 7636 §6.2: exactly what the endpoint enforces."""
    return {
        "authorization_endpoint": ctx.urls.url("/authorize"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": [S256],
        "authorization_response_iss_parameter_supported": True,
        "claims_parameter_supported": True,
        # RFC 9101 §10.1: request objects by value; request_uri only for our own PAR URIs, never
        # fetched, so "request_uri_parameter_supported" (fetching by reference) is false.
        "request_parameter_supported": "request" in sources.SOURCES,
        "request_uri_parameter_supported": False,
        "request_object_signing_alg_values_supported": list(ctx.settings.assertion_algs),
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        **_request_object_encryption(ring),
    }


def _request_object_encryption(ring: KeyRing) -> dict[str, Any]:
    """OIDC Discovery §3 / RFC 9101 §10.1: what an encrypted request object may use (our keys' algs)."""
    if not ring.decryption:
        return {}
    return {
        "request_object_encryption_alg_values_supported": ring.decryption_algs,
        "request_object_encryption_enc_values_supported": list(CONTENT_ENCRYPTION),
    }


register(
    Endpoint(
        "authorize", "/authorize", authorize_endpoint, methods=("GET", "POST"), browser=True, feature="users", metadata=_metadata
    )
)
register(Endpoint("consent", "/consent", consent_endpoint, methods=("GET", "POST"), browser=True, feature="users"))
