"""Token introspection (RFC 7662) for resource servers only, with JWT responses (RFC 9701).

Steps: bounded form → authenticate the caller → it must be a registered resource server (a client
learns nothing: 403) → count it against its rate limit → read our own token (decrypting in the
token if nested) → decide active (time claims, audience, revocation and the reset rule,
requester_ip) → the minimal claim set → JSON, or a signed (and, if registered, encrypted) JWT.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from flask import Response, request

from .. import binding, claims as claim_rules, clock, events
from ..algorithms import DEFAULT_ENC, KEY_MANAGEMENT
from ..client_auth import authenticate_caller
from ..clients import Client, Credentials, ResourceServer
from ..errors import AccessDeniedError, InvalidRequestError, JoseError, OAuthError
from ..jose import jwt
from ..release import Release, for_resource_server
from ..store import GrantState
from ..tokens import access
from ..web import NO_STORE, Form, json_response, read_form
from . import Endpoint, register

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..server import ServerContext

JWT_MEDIA_TYPE = "application/token-introspection+jwt"
JWT_TYP = "token-introspection+jwt"
# RFC 7662 §2.2 members we may return; nothing that identifies a person (docs/introspection.md).
# A user's token adds how the user authenticated (OIDC Core §2), which is not personal data.
BASE_CLAIMS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti", "cnf", "auth_time", "acr", "amr")
INACTIVE: dict[str, Any] = {"active": False}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NotAcceptableError(OAuthError):
    error = "invalid_request"
    status_code = 406


def introspection_endpoint(ctx: ServerContext) -> Response:
    form = read_form(request, ctx.settings.max_body_bytes)
    rs = require_resource_server(authenticate_caller(ctx, request, form, "introspection", want="any"))
    ctx.limits.count_client("introspection", rs.client_id)
    wants_jwt = accepts_jwt(request.headers.get("Accept"), rs)
    token = form.get("token")
    if token is None:
        raise InvalidRequestError("token is required")
    answer = introspect(ctx, token, rs, parse_requester_ip(form))
    events.emit(events.token_introspected, resource_server=rs.client_id, active=answer["active"], jti=answer.get("jti"))
    if wants_jwt:
        return jwt_response(ctx, rs, answer)
    return json_response(answer)


def require_resource_server(caller: Credentials) -> ResourceServer:
    if not isinstance(caller, ResourceServer):
        # Valid client credentials, but clients are not entitled to introspection (docs/registry.md).
        raise AccessDeniedError("only registered resource servers may introspect tokens")
    return caller


def accepts_jwt(accept: str | None, rs: ResourceServer) -> bool:
    """RFC 9701 §4: the JWT form on request; a resource server registered for encrypted
    responses gets nothing else (docs/introspection.md)."""
    wants = JWT_MEDIA_TYPE in (accept or "")
    if rs.introspection_encrypted_response_alg and not wants:
        raise NotAcceptableError(f"this resource server must accept {JWT_MEDIA_TYPE}")
    return wants


def parse_requester_ip(form: Form) -> IPAddress | None:
    value = form.get("requester_ip")
    if value is None:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise InvalidRequestError("requester_ip is not an IP address") from None


def introspect(ctx: ServerContext, token: str, rs: ResourceServer, requester_ip: IPAddress | None) -> dict[str, Any]:
    """The introspection answer for ``rs``; ``{"active": false}`` whenever it may not know more."""
    try:
        claims = access.read_own_token(ctx, token)
    except JoseError:
        return INACTIVE
    if not is_active(ctx, claims, rs, requester_ip):
        return INACTIVE
    grant = user_grant(ctx, claims)
    if grant is not None and grant.revoked:
        return INACTIVE
    bound = binding.describe(ctx, claims, rs)  # RFC 9449 §6.2, RFC 8705 §3.2; a lost PoP key: inactive
    if bound is None:
        return INACTIVE
    answer: dict[str, Any] = {"active": True, "token_type": bound[0]}
    answer.update({name: claims[name] for name in BASE_CLAIMS if name in claims})
    if bound[1] is not None:
        answer["cnf"] = dict(bound[1])
    if grant is not None and rs.introspection_claims:
        # architecture.md §7: entitled (registry) and consented (the grant's release), else the minimal set.
        release = Release.decode(grant.release)  # its subject: the user's own, when sub is pairwise
        user = for_resource_server(ctx, rs, release.subject or claims["sub"], release)
        answer.update({name: value for name, value in user.items() if name not in answer})
    return answer


def user_grant(ctx: ServerContext, claims: dict[str, Any]) -> GrantState | None:
    """The grant a user's token descends from; a token naming a grant Redis does not know is
    treated as revoked (its grant may have been revoked before the state was lost)."""
    if "grant_id" not in claims:
        return None
    grant_id = claims["grant_id"]
    state = ctx.store.grant_state(grant_id) if isinstance(grant_id, str) else None
    return state if state is not None else GrantState(revoked=True, release=b"{}")


def is_active(ctx: ServerContext, claims: dict[str, Any], rs: ResourceServer, requester_ip: IPAddress | None) -> bool:
    # A resource server learns only about tokens meant for it.
    rules = claim_rules.ClaimRules(
        leeway=ctx.settings.clock_skew, expiry_leeway=0, audience=rs.resource, required=("exp", "iat", "jti")
    )
    try:
        claim_rules.check(claims, rules)
    except claim_rules.ClaimError:
        return False
    client = ctx.registry.client(str(claims.get("client_id", "")))
    if client is None or not ip_allowed(client, requester_ip):
        return False
    return ctx.store.vouches_for(claims["jti"], claims["iat"], ctx.settings.access_token_lifetime)


def ip_allowed(client: Client, requester_ip: IPAddress | None) -> bool:
    if requester_ip is None or not client.ip_ranges:
        return True
    return any(requester_ip in net for net in client.ip_ranges if net.version == requester_ip.version)


def jwt_response(ctx: ServerContext, rs: ResourceServer, answer: dict[str, Any]) -> Response:
    """RFC 9701 §5: signed with the resource server's registered alg, encrypted if registered."""
    claims = {"iss": ctx.settings.issuer, "aud": rs.client_id, "iat": int(clock.now()), "token_introspection": answer}
    token = jwt.sign_jwt(claims, ctx.keys.ring.signer_for(rs.introspection_signed_response_alg), JWT_TYP)
    alg = rs.introspection_encrypted_response_alg
    if alg:
        token = jwt.nest(token, rs.encryption_key(alg), alg, rs.introspection_encrypted_response_enc or DEFAULT_ENC)
    response = Response(token, mimetype=JWT_MEDIA_TYPE)
    response.headers.update(NO_STORE)
    return response


def _metadata(ctx: ServerContext, ring: KeyRing) -> dict[str, Any]:
    algs = list(ctx.settings.assertion_algs)
    return {
        "introspection_endpoint": ctx.urls.url("/introspect"),
        "introspection_endpoint_auth_methods_supported": ctx.registry.auth_methods(),
        "introspection_endpoint_auth_signing_alg_values_supported": algs,
        "introspection_signing_alg_values_supported": ring.signing_algs,  # RFC 9701 §7
        "introspection_encryption_alg_values_supported": list(KEY_MANAGEMENT),
        "introspection_encryption_enc_values_supported": ["A128GCM", "A256GCM"],
    }


register(Endpoint("introspection", "/introspect", introspection_endpoint, authenticates=True, metadata=_metadata))
