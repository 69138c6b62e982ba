"""Client authentication at our endpoints (RFC 6749 §2.3, RFC 7521, RFC 7523 §2.2 and §3).

Methods: ``private_key_jwt`` (primary; optionally a nested JWT encrypted to our key),
``client_secret_basic`` / ``client_secret_post`` (hashed secrets, constant-time comparison), and
``none`` (public clients). The same code authenticates clients at the token endpoint and
resource servers at introspection; the caller says which kind of entity it is looking for.

Every failure is one ``invalid_client`` to the peer (no oracle for which check failed, or whether
the client exists); the precise reason goes to the log and the ``client_auth_failed`` signal.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote_plus

from .algorithms import CONTENT_ENCRYPTION
from .errors import InvalidClientError, InvalidRequestError, JoseError
from .jose import compact, jwe, jwk, jws, jwt
from .registry import Credentials
from .store import Replayed

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 §2.2
# JWTs minted for another purpose must never pass as client assertions (RFC 8725 §3.11).
FOREIGN_TYPS = frozenset(
    {"at+jwt", "dpop+jwt", "oauth-authz-req+jwt", "token-introspection+jwt", "logout+jwt", "secevent+jwt", "jwt-bearer+jwt"}
)
_PBKDF2_DEFAULT_ITERATIONS = 600_000


class AuthFailure(Exception):
    """Why authentication failed (for logs); the peer only ever sees invalid_client."""

    def __init__(self, reason: str, *, client_id: str | None = None, replay: bool = False):
        super().__init__(reason)
        self.client_id, self.replay = client_id, replay


@dataclass(frozen=True)
class Presented:
    method: str
    client_id: str | None
    secret: str | None = None
    assertion: str | None = None


# --- secrets ------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hash_secret(secret: str, scheme: str = "sha256") -> str:
    """Registry form of a client secret. ``sha256`` suits generated secrets (≥ 256 bits of
    entropy: nothing to brute-force); ``pbkdf2-sha256`` suits human-chosen ones."""
    if scheme == "sha256":
        return "sha256:" + _b64(hashlib.sha256(secret.encode()).digest())
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, _PBKDF2_DEFAULT_ITERATIONS)
    return f"pbkdf2-sha256:{_PBKDF2_DEFAULT_ITERATIONS}:{_b64(salt)}:{_b64(digest)}"


def verify_secret(secret: str, stored: str | None) -> bool:
    """Constant-time comparison against the stored hash (a dummy one when there is none)."""
    stored = stored or "sha256:" + "A" * 43
    if stored.startswith("sha256:"):
        actual = hashlib.sha256(secret.encode()).digest()
        expected = compact.b64url_decode(stored[7:])
    else:
        _, iterations, salt, digest = stored.split(":")
        expected = compact.b64url_decode(digest)
        actual = hashlib.pbkdf2_hmac("sha256", secret.encode(), compact.b64url_decode(salt), int(iterations))
    return hmac.compare_digest(actual, expected)


# --- what the request presents --------------------------------------------------------------------


def presented_credentials(authorization: str | None, form: dict[str, str]) -> Presented:
    """Which single method the request uses (RFC 6749 §2.3: never more than one)."""
    methods = []
    if authorization is not None:
        methods.append("client_secret_basic")
    if "client_assertion" in form or "client_assertion_type" in form:
        methods.append("private_key_jwt")
    if "client_secret" in form:
        methods.append("client_secret_post")
    if len(methods) > 1:
        raise InvalidRequestError("use exactly one client authentication method")
    method = methods[0] if methods else "none"
    form_id = form.get("client_id")
    if method == "client_secret_basic":
        client_id, secret = _basic_credentials(authorization)
        if form_id is not None and form_id != client_id:
            raise InvalidRequestError("client_id differs from the Authorization header")
        return Presented(method, client_id, secret=secret)
    if method == "private_key_jwt":
        if form.get("client_assertion_type") != ASSERTION_TYPE or "client_assertion" not in form:
            raise InvalidRequestError(f"client_assertion_type must be {ASSERTION_TYPE} with a client_assertion")
        return Presented(method, form_id, assertion=form["client_assertion"])
    if method == "client_secret_post":
        return Presented(method, form_id, secret=form["client_secret"])
    if form_id is None:
        raise InvalidClientError("client authentication required", headers=_challenge())
    return Presented(method, form_id)


def _basic_credentials(header: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1 / RFC 7617: base64 of form-urlencoded id ':' form-urlencoded secret."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise InvalidClientError("unsupported Authorization scheme", headers=_challenge())
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidClientError("malformed Basic credentials", headers=_challenge()) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise InvalidClientError("malformed Basic credentials", headers=_challenge())
    return unquote_plus(client_id), unquote_plus(secret)


def _challenge(realm: str = "oauth") -> dict[str, str]:
    return {"WWW-Authenticate": f'Basic realm="{realm}"'}


# --- checking them ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssertionPolicy:
    issuer: str
    token_endpoint: str
    endpoint: str  # the URL of the endpoint receiving this request
    aud_policy: str
    algorithms: tuple[str, ...]
    max_lifetime: int
    clock_skew: int


def authenticate(
    presented: Presented,
    find: Callable[[str], Credentials | None],
    policy: AssertionPolicy,
    state,
) -> Credentials:
    """The authenticated entity; raises AuthFailure (→ invalid_client) or an outage error."""
    if presented.method == "private_key_jwt":
        return _check_assertion(presented, find, policy, state)
    entity = find(presented.client_id) if presented.client_id else None
    if presented.method in ("client_secret_basic", "client_secret_post"):
        ok = verify_secret(presented.secret or "", entity.client_secret_hash if entity else None)
        if entity is None or entity.token_endpoint_auth_method != presented.method or not ok:
            raise AuthFailure(f"{presented.method}: unknown client, other method or wrong secret", client_id=presented.client_id)
        return entity
    if entity is None or entity.token_endpoint_auth_method != "none":
        raise AuthFailure("no credentials and not a public client", client_id=presented.client_id)
    return entity


def _check_assertion(presented: Presented, find, policy: AssertionPolicy, state) -> Credentials:
    token = presented.assertion or ""
    nested = jwt.is_encrypted(token)
    client_id = None
    try:
        if nested:
            token = _decrypt_assertion(token, state)
        unverified = jws.Unverified(token)
        claims = jwt.decode_claims(unverified.payload)  # unverified: only to find whose keys to use
        client_id = claims.get("iss")
        if not isinstance(client_id, str) or (presented.client_id is not None and presented.client_id != client_id):
            raise AuthFailure("iss missing or differs from client_id")
        entity = find(client_id)
        if entity is None or entity.token_endpoint_auth_method != "private_key_jwt":
            _spend_a_verification(unverified)  # an unknown id must not answer faster than a bad signature
            raise AuthFailure("unknown client or not a private_key_jwt client", client_id=client_id)
        if (entity.client_assertion_encryption == "required" and not nested) or (
            entity.client_assertion_encryption == "none" and nested
        ):
            raise AuthFailure("assertion encryption does not match the registration", client_id=client_id)
        algorithms = policy.algorithms
        if entity.token_endpoint_auth_signing_alg:
            algorithms = tuple(a for a in algorithms if a == entity.token_endpoint_auth_signing_alg)
        verified = unverified.verify(lambda h: entity.jwks.select(h["alg"], "sig", h.get("kid")), algorithms)
    except JoseError as exc:
        raise AuthFailure(f"assertion: {type(exc).__name__}", client_id=client_id if isinstance(client_id, str) else None) from None
    try:
        if _foreign_typ(verified.header):
            raise AuthFailure("assertion typ names another kind of JWT")
        check_assertion_claims(claims, entity.client_id, policy, entity.aud_policy)
        _use_jti_once(claims, entity.client_id, policy, state)  # last: only authentic assertions reach Redis
    except AuthFailure as exc:
        exc.client_id = entity.client_id
        raise
    return entity


_DUMMY_KEY = None


def _spend_a_verification(unverified: jws.Unverified) -> None:
    """Verify against a throwaway key: the work a known client's assertion would cost."""
    global _DUMMY_KEY
    if _DUMMY_KEY is None:
        from cryptography.hazmat.primitives.asymmetric import ec

        _DUMMY_KEY = jwk.load_jwk(jwk.public_jwk_dict(ec.generate_private_key(ec.SECP256R1()).public_key()))
    try:
        unverified.verify(lambda h: _DUMMY_KEY, ("ES256",))
    except JoseError:
        pass


def _decrypt_assertion(token: str, state) -> str:
    if not state.keys.decryption:
        raise AuthFailure("encrypted assertion but no decryption key is configured")
    decrypted = jwe.decrypt(token, state.keys.decrypter_for, state.keys.decryption_algs, list(CONTENT_ENCRYPTION))
    return jwt.unnest(decrypted).decode("ascii", "replace")


def _foreign_typ(header: dict) -> bool:
    typ = header.get("typ")
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    return typ.removeprefix("application/") in FOREIGN_TYPS


def _number(claims: dict, name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise AuthFailure(f"{name} missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuthFailure(f"{name} is not a NumericDate")
    return value


def check_assertion_claims(claims: dict, client_id: str, policy: AssertionPolicy, aud_override: str | None) -> None:
    """RFC 7523 §3 and DESIGN.md §5; raises AuthFailure naming the failed check."""
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AuthFailure("iss and sub must both be the client_id")
    check_audience(claims.get("aud"), policy, aud_override or policy.aud_policy)
    now, skew = time.time(), policy.clock_skew
    exp = _number(claims, "exp", True)
    if exp <= now - skew:
        raise AuthFailure("assertion expired")
    if exp > now + policy.max_lifetime + skew:
        raise AuthFailure("exp too far in the future")
    for name in ("nbf", "iat"):
        value = _number(claims, name, False)
        if value is not None and value > now + skew:
            raise AuthFailure(f"{name} is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise AuthFailure("jti missing")


def check_audience(aud, policy: AssertionPolicy, rule: str) -> None:
    """The ``aud`` policy table of DESIGN.md §5 (fapi2, issuer, endpoint)."""
    values = aud if isinstance(aud, list) else [aud]
    if not values or not all(isinstance(v, str) for v in values):
        raise AuthFailure("aud missing or not strings")
    if rule == "issuer":  # FAPI 2.0 client rule: the issuer identifier, as a string
        ok = isinstance(aud, str) and aud == policy.issuer
    elif rule == "endpoint":  # CAMARA: the URL the request is sent to, as a string
        ok = isinstance(aud, str) and aud == policy.endpoint
    else:  # fapi2: FAPI 2.0 SP §5.3.2.1
        accepted = {policy.issuer, policy.token_endpoint, policy.endpoint}
        ok = all(v in accepted for v in values)
    if not ok:
        raise AuthFailure(f"aud not accepted under the {rule} policy")


def _use_jti_once(claims: dict, client_id: str, policy: AssertionPolicy, state) -> None:
    iat = claims.get("iat")
    try:
        state.store.use_once(
            "jti", client_id + "\0" + claims["jti"], expires_at=claims["exp"] + policy.clock_skew,
            issued_at=iat if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None,
            window=policy.max_lifetime + 2 * policy.clock_skew,
        )
    except Replayed as exc:
        raise AuthFailure(f"jti replayed ({exc})", replay=True) from None
