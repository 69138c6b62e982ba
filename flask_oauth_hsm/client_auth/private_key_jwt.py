"""``private_key_jwt`` (RFC 7523 §2.2 and §3, OpenID Connect Core §9), optionally encrypted.

Steps: the assertion's unverified ``iss`` names whose keys to use → the client must exist and be a
``private_key_jwt`` client (an unknown one still costs a verification of the same algorithm) →
signature under the allow-list and the client's registered alg → a ``typ`` naming another kind
of JWT is refused (RFC 8725 §3.11) → claims (docs/endpoints.md, client authentication) → the ``jti`` is used once, last, so only
authentic assertions reach Redis.

An encrypted (nested) assertion costs a private-key operation in the token. Before spending it,
the sender must be named in the clear — the ``client_id`` parameter (RFC 7521 §4.2) or an ``iss``
header replicated from the claims (RFC 7519 §5.3) — and registered as one that sends encrypted
assertions; the operation is also rate-limited per source address.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flask import Request

from .. import claims as claim_rules
from ..algorithms import CONTENT_ENCRYPTION
from ..clients import Credentials
from ..errors import JoseError
from ..jose import jwe, jwk, jws, jwt
from ..store import Replayed
from ..web import Form
from .base import AssertionPolicy, AuthFailure, Finder, Presented, audience_accepted

if TYPE_CHECKING:
    from ..server import ServerContext

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 §2.2
# JWTs minted for another purpose must never pass as client assertions (RFC 8725 §3.11).
FOREIGN_TYPS = frozenset(
    {"at+jwt", "dpop+jwt", "oauth-authz-req+jwt", "token-introspection+jwt", "logout+jwt", "secevent+jwt", "jwt-bearer+jwt"}
)


def present(request: Request, form: Form) -> Presented | None:
    if "client_assertion" not in form and "client_assertion_type" not in form:
        return None
    if form.get("client_assertion_type") != ASSERTION_TYPE or "client_assertion" not in form:
        # A failed client authentication (RFC 7521 §4.2.1 step 1), not a malformed request.
        raise AuthFailure(
            f"client_assertion_type must be {ASSERTION_TYPE} with a client_assertion", client_id=form.get("client_id")
        )
    return Presented("private_key_jwt", form.get("client_id"), assertion=form["client_assertion"])


def verify(ctx: ServerContext, presented: Presented, find: Finder, policy: AssertionPolicy) -> Credentials:
    token = presented.assertion or ""
    nested = jwt.is_encrypted(token)
    client_id: str | None = None
    try:
        if nested:
            client_id = _encrypted_sender(token, presented, find)
            token = _decrypt(ctx, token)
        unverified = jws.Unverified(token)
        claims = jwt.decode_claims(unverified.payload)  # unverified: only to find whose keys to use
        iss = claims.get("iss")
        if (
            not isinstance(iss, str)
            or (presented.client_id is not None and presented.client_id != iss)
            or client_id not in (None, iss)
        ):
            raise AuthFailure("iss missing or differs from client_id")
        client_id = iss
        entity = find(iss)
        if entity is None or entity.token_endpoint_auth_method != "private_key_jwt":
            _spend_a_verification(unverified)  # an unknown id must not answer faster than a bad signature
            raise AuthFailure("unknown client or not a private_key_jwt client")
        if entity.client_assertion_encryption == "required" and not nested:
            raise AuthFailure("this client must encrypt its assertions")
        algorithms = policy.algorithms
        if entity.token_endpoint_auth_signing_alg:
            algorithms = tuple(a for a in algorithms if a == entity.token_endpoint_auth_signing_alg)
        keys = entity.jwks
        assert keys is not None  # the schema requires jwks for private_key_jwt
        verified = unverified.verify(lambda h: keys.select(h["alg"], "sig", h.get("kid")), algorithms)
        if _foreign_typ(verified.header):
            raise AuthFailure("assertion typ names another kind of JWT")
        check_assertion_claims(claims, entity, policy)
        _use_jti_once(ctx, claims, entity.client_id, policy)  # last: only authentic assertions reach Redis
    except JoseError as exc:
        raise AuthFailure(f"assertion: {type(exc).__name__}", client_id=client_id) from None
    except AuthFailure as exc:
        exc.client_id = exc.client_id or client_id
        raise
    return entity


def _encrypted_sender(token: str, presented: Presented, find: Finder) -> str:
    """Who sent an encrypted assertion, from what is visible before decryption; refuses a sender
    that may not make us decrypt (no HSM operation is spent on it)."""
    header = jwe.protected_header(token)
    named = {v for v in (presented.client_id, header.get("iss")) if v is not None}
    if len(named) != 1 or not isinstance(next(iter(named)), str):
        raise AuthFailure("an encrypted assertion must name its client (client_id parameter or iss header)")
    sender: str = next(iter(named))
    entity = find(sender)
    if entity is None or entity.token_endpoint_auth_method != "private_key_jwt" or entity.client_assertion_encryption == "none":
        raise AuthFailure("encrypted assertions are not registered for this client", client_id=sender)
    return sender


def _decrypt(ctx: ServerContext, token: str) -> str:
    ring = ctx.keys.ring
    if not ring.decryption:
        raise AuthFailure("encrypted assertion but no decryption key is configured")
    ctx.limits.spend_hsm_operation()  # before authentication: bounded per source address
    decrypted = jwe.decrypt(token, ring.decrypter_for, ring.decryption_algs, list(CONTENT_ENCRYPTION))
    return jwt.unnest(decrypted).decode("ascii", "replace")


def _foreign_typ(header: dict[str, Any]) -> bool:
    typ = header.get("typ")
    return isinstance(typ, str) and typ.lower().removeprefix("application/") in FOREIGN_TYPS


def check_assertion_claims(claims: dict[str, Any], entity: Credentials, policy: AssertionPolicy) -> None:
    """RFC 7523 §3 and docs/endpoints.md; raises AuthFailure naming the failed check."""
    if claims.get("iss") != entity.client_id or claims.get("sub") != entity.client_id:
        raise AuthFailure("iss and sub must both be the client_id")
    rule = entity.aud_policy or policy.aud_policy
    if not audience_accepted(claims.get("aud"), policy, rule):
        raise AuthFailure(f"aud not accepted under the {rule} policy")
    rules = claim_rules.ClaimRules(leeway=policy.clock_skew, required=("exp", "jti"), max_lifetime=policy.max_lifetime)
    try:
        claim_rules.check(claims, rules)
    except claim_rules.ClaimError as exc:
        raise AuthFailure(f"assertion {exc}") from None


def _use_jti_once(ctx: ServerContext, claims: dict[str, Any], client_id: str, policy: AssertionPolicy) -> None:
    try:
        ctx.store.use_once(
            "jti",
            client_id + "\0" + claims["jti"],
            expires_at=claims["exp"] + policy.clock_skew,
            issued_at=claim_rules.numeric_date(claims, "iat"),
            window=policy.max_lifetime + 2 * policy.clock_skew,
        )
    except Replayed as exc:
        raise AuthFailure(f"jti replayed ({exc})", replay=True) from None


# --- the same work for an unknown client -----------------------------------------------------------

_DUMMY_KEYS: dict[str, jwk.PublicJWK] = {}


def _dummy_key(alg: str) -> jwk.PublicJWK:
    """A throwaway public key of the kind ``alg`` needs (RSA 2048 like most client keys)."""
    key = _DUMMY_KEYS.get(alg)
    if key is None:
        if alg in ("PS256", "RS256"):
            public: Any = rsa.generate_private_key(65537, 2048).public_key()
        elif alg == "EdDSA":
            public = ed25519.Ed25519PrivateKey.generate().public_key()
        else:
            public = ec.generate_private_key(ec.SECP384R1() if alg == "ES384" else ec.SECP256R1()).public_key()
        key = _DUMMY_KEYS[alg] = jwk.load_jwk(jwk.public_jwk_dict(public))
    return key


def _spend_a_verification(unverified: jws.Unverified) -> None:
    """Verify against a throwaway key of the header's alg: the work a known client costs."""
    alg = unverified.header.get("alg")
    if not isinstance(alg, str) or alg not in ("ES256", "ES384", "PS256", "RS256", "EdDSA"):
        return  # a known client's assertion would be refused before verification too
    with contextlib.suppress(JoseError):
        unverified.verify(lambda h: _dummy_key(alg), (alg,))
