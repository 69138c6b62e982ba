"""Token revocation (RFC 7009).

Steps: POST only → bounded form → authenticate the client → read our own token → it must be the
client's own (RFC 7009 §2.1) → remember its ``jti`` as revoked in Redis until the token's ``exp``
→ 200. Unknown, malformed and expired tokens also get 200 (RFC 7009 §2.2): nothing to revoke.
"""

from __future__ import annotations

import time

from flask import Response, request

from .. import access_tokens, events
from ..errors import InvalidRequestError, JoseError, UnauthorizedClientError
from ..http import NO_STORE, read_form, require_post
from .common import authenticate_caller


def revocation_endpoint():
    from ..extension import current_state

    state = current_state()
    require_post(request)
    form = read_form(request, state.settings.max_body_bytes)
    client = authenticate_caller(state, form, "revocation", want="client")
    token = form.get("token")
    if token is None:
        raise InvalidRequestError("token is required")
    # token_type_hint is only a hint (RFC 7009 §2.1): we have access tokens only.
    revoke_own_token(state, token, client.client_id)
    response = Response(status=200)
    response.headers.update(NO_STORE)
    return response


def revoke_own_token(state, token: str, client_id: str) -> None:
    try:
        claims = access_tokens.read_own_token(state, token)
    except JoseError:
        return
    exp, jti = claims.get("exp"), claims.get("jti")
    if not isinstance(exp, (int, float)) or not isinstance(jti, str) or exp <= time.time():
        return
    if claims.get("client_id") != client_id:
        # RFC 7009 §2.1: a client may revoke only the tokens issued to it.
        raise UnauthorizedClientError("the token was not issued to this client")
    state.store.revoke(jti, exp)
    events.emit(events.token_revoked, client_id=client_id, jti=jti)
