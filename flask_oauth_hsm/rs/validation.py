"""Validating an access token at the resource server: locally (RFC 9068 §4) or by asking the AS
(RFC 7662 with RFC 9701 JWT answers), then scope, sender constraint and client address."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from flask import Request

from .. import claims as claim_rules, clock
from ..algorithms import SIGNING
from ..client.assertions import HSMPrivateKeyJWT
from ..errors import JoseError
from ..jose import compact, jwe, jws, jwt
from ..tokens.access import AT_TYP, MAX_ACCESS_TOKEN_LEN, cip_hash
from ..web import client_address
from .proofs import SCHEMES, TokenRejected, check_sender, decrypter, presented_token
from .state import RSState, Unavailable

__all__ = ["TokenRejected", "authorize", "decrypter", "introspect_remotely", "validate_locally"]

INTROSPECTION_JWT = "application/token-introspection+jwt"
_INNER_ENCS = ["A128GCM", "A256GCM", "A128CBC-HS256"]


def authorize(state: RSState, req: Request, needed: frozenset[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The token's claims and the headers the answer carries (DPoP-Nonce); raises TokenRejected
    whose challenge uses the scheme the client used."""
    presented = presented_token(req)
    try:
        claims = (
            validate_locally(state, presented.token)
            if state.settings.mode == "local"
            else introspect_remotely(state, presented.token)
        )
        headers = check_sender(state, req, presented, claims)  # a token with cnf is never a bearer token
        granted = frozenset(str(claims.get("scope", "")).split())
        if not needed <= granted:
            raise TokenRejected("insufficient_scope", 403, "the token lacks a required scope", " ".join(sorted(needed)))
        if state.settings.check_cip and "cip_hash" in claims:
            ip = client_address(req.remote_addr, req.headers.get("X-Forwarded-For"), state.trusted_networks)
            if ip is None or cip_hash(ip) != claims["cip_hash"]:
                raise TokenRejected("invalid_token", 401, "token used from another client address")
    except TokenRejected as exc:
        exc.scheme = exc.scheme or SCHEMES[presented.scheme]
        raise
    return claims, headers


def validate_locally(state: RSState, token: str) -> dict[str, Any]:
    """RFC 9068 §4, in order; raises TokenRejected (invalid_token)."""
    s = state.settings
    try:
        if jwt.is_encrypted(token):
            key = decrypter(state)
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


def client_auth(state: RSState) -> HSMPrivateKeyJWT:
    """Our private_key_jwt at introspection, signed in our token (the client-side helper)."""
    s = state.settings
    assert state.hsm is not None and s.signing_key is not None and s.client_id  # introspection mode requires them
    return HSMPrivateKeyJWT(
        state.hsm.key(s.signing_key), client_id=s.client_id, audience=s.issuer if s.assertion_aud == "issuer" else None
    )


def _ask_the_as(state: RSState, token: str) -> dict[str, Any]:
    endpoint = state.endpoint("introspection_endpoint")
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": INTROSPECTION_JWT}
    _, headers, body = client_auth(state)(None, "POST", endpoint, headers, urllib.parse.urlencode({"token": token}))
    req = urllib.request.Request(endpoint, data=body.encode(), headers=headers)
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
        key = decrypter(state)
        body = jwt.unnest(
            jwe.decrypt(body, lambda h: key, [key.alg], ["A128GCM", "A256GCM"], max_len=MAX_ACCESS_TOKEN_LEN)
        ).decode("ascii")
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
