"""Validating an access token at the resource server: locally (RFC 9068 §4) or by asking the AS
(RFC 7662 with RFC 9701 JWT answers), then scope, sender constraint and client address."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from flask import Request

from .. import claims as claim_rules
from .. import clock
from ..algorithms import SIGNING
from ..client_auth import ASSERTION_TYPE
from ..errors import JoseError
from ..hsm import TokenKey
from ..jose import compact, jwe, jws, jwt
from ..tokens.access import AT_TYP, MAX_ACCESS_TOKEN_LEN, cip_hash
from ..web import client_address
from .state import RSState, Unavailable

INTROSPECTION_JWT = "application/token-introspection+jwt"
_INNER_ENCS = ["A128GCM", "A256GCM", "A128CBC-HS256"]


class TokenRejected(Exception):
    """RFC 6750 §3.1 error for the caller: ``error`` code, HTTP status, description."""

    def __init__(self, error: str, status: int, description: str, scope: str | None = None):
        super().__init__(description)
        self.error, self.status, self.description, self.scope = error, status, description, scope


def bearer_token(req: Request) -> str:
    """RFC 6750 §2.1: the Authorization header only (no query or form parameters)."""
    header = req.headers.get("Authorization")
    if header is None:
        raise TokenRejected("", 401, "access token required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise TokenRejected("invalid_request", 400, "use Authorization: Bearer <token>")
    if len(token) > MAX_ACCESS_TOKEN_LEN:
        raise TokenRejected("invalid_token", 401, "token too large")
    return token


def authorize(state: RSState, req: Request, needed: frozenset[str]) -> dict[str, Any]:
    token = bearer_token(req)
    claims = validate_locally(state, token) if state.settings.mode == "local" else introspect_remotely(state, token)
    if "cnf" in claims:
        # A sender-constrained token (RFC 7800) is worth nothing without its proof of possession;
        # this helper cannot check one yet, so it never treats such a token as a bearer token.
        raise TokenRejected("invalid_token", 401, "sender-constrained token: its proof of possession cannot be checked here")
    granted = frozenset(str(claims.get("scope", "")).split())
    if not needed <= granted:
        raise TokenRejected("insufficient_scope", 403, "the token lacks a required scope", " ".join(sorted(needed)))
    if state.settings.check_cip and "cip_hash" in claims:
        ip = client_address(req.remote_addr, req.headers.get("X-Forwarded-For"), state.trusted_networks)
        if ip is None or cip_hash(ip) != claims["cip_hash"]:
            raise TokenRejected("invalid_token", 401, "token used from another client address")
    return claims


def _decrypter(state: RSState) -> TokenKey:
    if state.settings.decryption_key is None or state.hsm is None:
        raise TokenRejected("invalid_token", 401, "encrypted token, but no decryption key is configured")
    return state.hsm.key(state.settings.decryption_key)


def validate_locally(state: RSState, token: str) -> dict[str, Any]:
    """RFC 9068 §4, in order; raises TokenRejected (invalid_token)."""
    s = state.settings
    try:
        if jwt.is_encrypted(token):
            key = _decrypter(state)
            inner = jwe.decrypt(token, lambda h: key, [key.alg], _INNER_ENCS, max_len=MAX_ACCESS_TOKEN_LEN)
            token = jwt.unnest(inner).decode("ascii", "replace")
        elif s.require_encrypted:
            raise TokenRejected("invalid_token", 401, "this resource server accepts encrypted tokens only")  # RFC 9068 §4
        verified = jws.verify(token, state.jwks.key_for, s.algorithms, max_len=MAX_ACCESS_TOKEN_LEN)
        claims = jwt.decode_claims(verified.payload)
    except JoseError:
        raise TokenRejected("invalid_token", 401, "the access token is invalid") from None
    if not compact.typ_is(verified.header, AT_TYP):
        raise TokenRejected("invalid_token", 401, "not an access token (typ)")
    check_access_token_claims(claims, state)
    return claims


def check_access_token_claims(claims: dict[str, Any], state: RSState) -> None:
    s = state.settings
    rules = claim_rules.ClaimRules(leeway=s.leeway, issuer=s.issuer, audience=s.resource, required=("exp",))
    try:
        claim_rules.check(claims, rules)
    except claim_rules.ClaimError as exc:
        raise TokenRejected("invalid_token", 401, f"the access token is invalid ({exc})") from None


# --- introspection mode --------------------------------------------------------------------------------


def introspect_remotely(state: RSState, token: str) -> dict[str, Any]:
    hit = state.cache.get(token)
    if hit is not None:
        if hit[1] is None:
            raise TokenRejected("invalid_token", 401, "the access token is not active")
        return hit[1]
    answer = _ask_the_as(state, token)
    now = clock.now()
    if not answer.get("active"):
        if state.settings.cache_ttl:
            state.cache.put(token, now + state.settings.cache_ttl, None)
        raise TokenRejected("invalid_token", 401, "the access token is not active")
    exp = answer.get("exp")
    until = min(now + state.settings.cache_ttl, exp if isinstance(exp, (int, float)) else now)
    if state.settings.cache_ttl:
        state.cache.put(token, until, answer)
    return answer


def client_assertion(state: RSState, endpoint: str) -> str:
    s = state.settings
    assert state.hsm is not None and s.signing_key is not None  # introspection mode requires both
    now = int(clock.now())
    claims = {"iss": s.client_id, "sub": s.client_id, "aud": s.issuer if s.assertion_aud == "issuer" else endpoint,
              "iat": now, "exp": now + 60, "jti": secrets.token_urlsafe(16)}
    return jwt.sign_jwt(claims, state.hsm.key(s.signing_key), "JWT")


def _ask_the_as(state: RSState, token: str) -> dict[str, Any]:
    endpoint = state.endpoint("introspection_endpoint")
    form = {"token": token, "client_assertion_type": ASSERTION_TYPE, "client_assertion": client_assertion(state, endpoint)}
    req = urllib.request.Request(endpoint, data=urllib.parse.urlencode(form).encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded", "Accept": INTROSPECTION_JWT})
    try:
        with urllib.request.urlopen(req, timeout=state.settings.http_timeout) as resp:
            body, content_type = resp.read(MAX_ACCESS_TOKEN_LEN + 1), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        # 401/403/406 mean our registration or credentials are wrong: still nothing the API's
        # caller can fix, so 503 to them and the status in our log.
        raise Unavailable(f"introspection answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"introspection unreachable: {exc}") from None
    if not content_type.startswith(INTROSPECTION_JWT):
        raise Unavailable("introspection did not answer with a JWT")
    try:
        return read_introspection_jwt(state, body.decode("ascii"))
    except (JoseError, UnicodeDecodeError, ValueError) as exc:
        raise Unavailable(f"introspection response rejected: {exc}") from None


def read_introspection_jwt(state: RSState, body: str) -> dict[str, Any]:
    """RFC 9701 §5: decrypt in our token if encrypted, verify the AS signature, check the claims."""
    s = state.settings
    if jwt.is_encrypted(body):
        key = _decrypter(state)
        body = jwt.unnest(jwe.decrypt(body, lambda h: key, [key.alg], ["A128GCM", "A256GCM"], max_len=MAX_ACCESS_TOKEN_LEN)).decode("ascii")
    verified = jws.verify(body, state.jwks.key_for, tuple(SIGNING), max_len=MAX_ACCESS_TOKEN_LEN)
    if not compact.typ_is(verified.header, "token-introspection+jwt"):
        raise JoseError("not an introspection response (typ)")
    claims = jwt.decode_claims(verified.payload)
    rules = claim_rules.ClaimRules(leeway=s.leeway, issuer=s.issuer, required=("iat",), max_age=60)
    try:
        claim_rules.check(claims, rules)
    except claim_rules.ClaimError as exc:
        raise JoseError(f"introspection response: {exc}") from None
    if claims.get("aud") != s.client_id:
        raise JoseError("introspection response for someone else")
    answer = claims.get("token_introspection")
    if not isinstance(answer, dict):
        raise JoseError("no token_introspection claim")
    if answer.get("active"):
        check_access_token_claims(answer, state)  # the AS already checked; the RS checks what it relies on
    return answer
