"""``private_key_jwt`` client assertions (RFC 7523 §2.2) signed in the client's PKCS#11 token.

:class:`HSMPrivateKeyJWT` is an Authlib client authentication method (the callable form Authlib's
``OAuth2Session(token_endpoint_auth_method=...)`` accepts, for its requests and httpx sessions
alike); the resource-server helper uses it for its own introspection requests.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode

from .. import clock
from ..client_auth import ASSERTION_TYPE
from ..jose import jws, jwt

Prepared = tuple[str, Any, str]  # Authlib's (uri, headers, body)


class HSMPrivateKeyJWT:
    """Sign a fresh assertion for each request with ``key`` (a key in a token: ``hsm.key(label)``).

    ``audience``: what the AS accepts as ``aud`` — its issuer identifier under our default
    policy (FAPI 2.0, rfc7523bis); without it, the URL the request goes to (the ``endpoint``
    policy). ``lifetime``: seconds until ``exp`` (keep it under the AS's maximum).
    """

    name = "private_key_jwt"

    def __init__(self, key: jws.Signer, *, client_id: str | None = None, audience: str | None = None, lifetime: int = 60):
        self.key, self.client_id, self.audience, self.lifetime = key, client_id, audience, lifetime

    def assertion(self, client_id: str, audience: str) -> str:
        now = int(clock.now())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": now,
            "exp": now + self.lifetime,
            "jti": secrets.token_urlsafe(18),
        }
        return jwt.sign_jwt(claims, self.key, "JWT")

    def __call__(self, auth: Any, method: str, uri: str, headers: Any, body: str | None) -> Prepared:
        client_id = self.client_id or getattr(auth, "client_id", None)
        if not client_id:
            raise ValueError("HSMPrivateKeyJWT needs a client_id (its own or the session's)")
        if isinstance(body, bytes):
            body = body.decode()
        params = urlencode(
            {"client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion(client_id, self.audience or uri)}
        )
        body = f"{body}&{params}" if body else params
        if "Content-Length" in headers:
            headers["Content-Length"] = str(len(body))
        return uri, headers, body
