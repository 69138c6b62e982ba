"""Token introspection (RFC 7662) for resource servers only, with JWT responses (RFC 9701).

Steps: POST only → bounded form → authenticate the caller → it must be a registered resource
server (a client learns nothing: 403) → read our own token (decrypting in the token if nested)
→ decide active (expiry, audience, revocation, replay-state epoch, requester_ip) → the minimal
claim set → JSON, or a signed (and, if registered, encrypted) JWT.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from flask import Response, request

from .. import access_tokens, events
from ..algorithms import DEFAULT_ENC
from ..errors import AccessDeniedError, InvalidRequestError, JoseError, OAuthError
from ..http import NO_STORE, Form, json_response, read_form, require_post
from ..jose import jwt
from ..registry import Client, ResourceServer
from .common import authenticate_caller

JWT_MEDIA_TYPE = "application/token-introspection+jwt"
JWT_TYP = "token-introspection+jwt"
# RFC 7662 §2.2 members we may return; nothing that identifies a person (DESIGN.md §7).
BASE_CLAIMS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti", "cnf")
INACTIVE: dict[str, Any] = {"active": False}


class NotAcceptableError(OAuthError):
    error = "invalid_request"
    status_code = 406


def introspection_endpoint():
    from ..extension import current_state

    state = current_state()
    require_post(request)
    form = read_form(request, state.settings.max_body_bytes)
    caller = authenticate_caller(state, form, "introspection", want="any")
    rs = require_resource_server(caller)
    wants_jwt = accepts_jwt(request.headers.get("Accept"), rs)
    token = form.get("token")
    if token is None:
        raise InvalidRequestError("token is required")
    requester_ip = parse_requester_ip(form)
    answer = introspect(state, token, rs, requester_ip)
    events.emit(events.token_introspected, resource_server=rs.client_id, active=answer["active"],
                jti=answer.get("jti"))
    if wants_jwt:
        return jwt_response(state, rs, answer)
    return json_response(answer)


def require_resource_server(caller) -> ResourceServer:
    if not isinstance(caller, ResourceServer):
        # Valid client credentials, but clients are not entitled to introspection (DESIGN.md §4).
        raise AccessDeniedError("only registered resource servers may introspect tokens")
    return caller


def accepts_jwt(accept: str | None, rs: ResourceServer) -> bool:
    """RFC 9701 §4: the JWT form on request; a resource server registered for encrypted
    responses gets nothing else (DESIGN.md §7)."""
    wants = JWT_MEDIA_TYPE in (accept or "")
    if rs.introspection_encrypted_response_alg and not wants:
        raise NotAcceptableError(f"this resource server must accept {JWT_MEDIA_TYPE}")
    return wants


def parse_requester_ip(form: Form):
    value = form.get("requester_ip")
    if value is None:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise InvalidRequestError("requester_ip is not an IP address") from None


def introspect(state, token: str, rs: ResourceServer, requester_ip) -> dict[str, Any]:
    """The introspection answer for ``rs``; ``{"active": false}`` whenever it may not know more."""
    try:
        claims = access_tokens.read_own_token(state, token)
    except JoseError:
        return INACTIVE
    if not is_active(state, claims, rs, requester_ip):
        return INACTIVE
    answer: dict[str, Any] = {"active": True, "token_type": "Bearer"}
    answer.update({name: claims[name] for name in BASE_CLAIMS if name in claims})
    return answer


def is_active(state, claims: dict, rs: ResourceServer, requester_ip) -> bool:
    now = time.time()
    exp, iat, jti = claims.get("exp"), claims.get("iat"), claims.get("jti")
    if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)) or not isinstance(jti, str):
        return False
    if exp <= now or iat > now + state.settings.clock_skew:
        return False
    aud = claims.get("aud")
    if rs.resource not in (aud if isinstance(aud, list) else [aud]):
        return False  # a resource server learns only about tokens meant for it
    client = state.registry.client(claims.get("client_id", ""))
    if client is None or not ip_allowed(client, requester_ip):
        return False
    revocation = state.store.revocation(jti)
    if revocation.revoked:
        return False
    # Revocations died with a Redis reset: tokens issued before it cannot be vouched for.
    return not (iat < revocation.epoch and now < revocation.epoch + state.settings.access_token_lifetime)


def ip_allowed(client: Client, requester_ip) -> bool:
    if requester_ip is None or not client.ip_ranges:
        return True
    return any(requester_ip in net for net in client.ip_ranges if net.version == requester_ip.version)


def jwt_response(state, rs: ResourceServer, answer: dict) -> Response:
    """RFC 9701 §5: signed with the resource server's registered alg, encrypted if registered."""
    claims = {"iss": state.settings.issuer, "aud": rs.client_id, "iat": int(time.time()), "token_introspection": answer}
    token = jwt.sign_jwt(claims, state.keys.signer_for(rs.introspection_signed_response_alg), JWT_TYP)
    alg = rs.introspection_encrypted_response_alg
    if alg:
        token = jwt.nest(token, rs.encryption_key(alg), alg, rs.introspection_encrypted_response_enc or DEFAULT_ENC)
    response = Response(token, mimetype=JWT_MEDIA_TYPE)
    response.headers.update(NO_STORE)
    return response
