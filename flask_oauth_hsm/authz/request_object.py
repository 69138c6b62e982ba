"""Request objects (RFC 9101, JAR): a client's authorization request as a signed JWT, optionally
encrypted to us (a nested JWT, RFC 9101 §4: sign, then encrypt).

:func:`verify_request_object` is the one verifier for every endpoint that receives one — the
authorization endpoint (``request`` by value), ``/par`` (RFC 9126 §3) and ``/bc-authorize`` (CIBA
Core §7.1.1) — and returns the claims: the request's parameters. Steps, each refusing with
``invalid_request_object`` (RFC 9101 §6.2):

1. form: a JWE (five parts) when, and only when, the client registered
   ``request_object_encryption_alg``/``enc``; the JWE's ``alg``/``enc`` must be those, and it is
   decrypted in the HSM (the operation counts against the per-address limit: the client is only
   identified, not authenticated);
2. signature with the client's registered keys (``kid``, ``alg`` bound to the key), under the
   allow-list ``OAUTH_HSM_ASSERTION_ALGS`` narrowed to the client's ``request_object_signing_alg``;
   ``none`` and HS* never (RFC 9101 §6.1, RFC 8725 §3.1);
3. ``typ``: ``oauth-authz-req+jwt`` (RFC 9101 §10.8) — required when the client or the setting says
   so; a ``typ`` naming another kind of JWT is always refused;
4. claims (through :func:`flask_oauth_hsm.claims.check`): ``iss`` = ``client_id`` claim = the
   client (RFC 9101 §5, §6.3); no ``sub`` equal to the client (RFC 9101 §10.8: it could pass as a
   client assertion); ``aud`` under the client's ``aud`` policy with the receiving endpoint's URL
   (docs/endpoints.md, the aud policy); ``exp`` required and at most 60 minutes ahead, ``exp − nbf``
   at most 60 minutes, ``nbf``/``iat`` not in the future beyond the clock skew (FAPI 2.0 Message
   Signing §5.3.1, FAPI 1.0 Advanced §5.2.2-13); ``jti`` required;
5. ``jti`` used once (:meth:`Store.use_once`, the reset rule), last: only authentic objects reach Redis.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .. import claims as claim_rules, events
from ..algorithms import CONTENT_ENCRYPTION
from ..client_auth.base import AssertionPolicy, audience_accepted
from ..clients import Client
from ..errors import InvalidRequestObjectError, JoseError
from ..jose import jwe, jws, jwt
from ..store import Replayed

if TYPE_CHECKING:
    from ..server import ServerContext

TYP = "oauth-authz-req+jwt"  # RFC 9101 §10.8
ACCEPTED_TYPS = frozenset({TYP, "jwt"})  # compared case-insensitively, "application/" removed (RFC 7515 §4.1.9)
MAX_LIFETIME = 3600  # exp − nbf, and exp − now: 60 minutes (FAPI 2.0 Message Signing §5.3.1)
JTI_NAMESPACE = "request-object"


def verify_request_object(ctx: ServerContext, client: Client, raw: str, *, receiving_endpoint: str) -> dict[str, Any]:
    """The verified claims of ``raw``, a request object sent by ``client`` to ``receiving_endpoint``
    (its absolute URL); raises InvalidRequestObjectError (the reason is ours, never the input)."""
    if client.jwks is None:
        raise InvalidRequestObjectError("this client has no registered keys to sign request objects")
    try:
        token = _decrypted(ctx, client, raw)
        unverified = jws.Unverified(token)
        keys = client.jwks
        verified = unverified.verify(lambda h: keys.select(h["alg"], "sig", h.get("kid")), _algorithms(ctx, client))
        _check_typ(ctx, client, verified.header)
        claims = jwt.decode_claims(verified.payload)
    except JoseError as exc:
        raise InvalidRequestObjectError(f"the request object is not valid ({_what(exc)})") from None
    policy = _policy(ctx, receiving_endpoint)
    check_claims(claims, client, policy)
    _use_jti_once(ctx, claims, client, policy)  # last: only authentic request objects reach Redis
    return claims


def _decrypted(ctx: ServerContext, client: Client, raw: str) -> str:
    """The signed request object: ``raw`` itself, or decrypted in the HSM (RFC 9101 §6.1)."""
    alg, enc = client.request_object_encryption_alg, client.request_object_encryption_enc
    if not jwt.is_encrypted(raw):
        if alg is not None:
            raise InvalidRequestObjectError("this client must encrypt its request objects")
        return raw
    if alg is None or enc is None:
        raise InvalidRequestObjectError("encrypted request objects are not registered for this client")
    header = jwe.protected_header(raw)  # before any key is used: the registered alg and enc only
    if header.get("alg") != alg or header.get("enc") != enc:
        raise InvalidRequestObjectError("the request object is not encrypted with the registered alg and enc")
    ring = ctx.keys.ring
    if alg not in ring.decryption_algs or enc not in CONTENT_ENCRYPTION:
        raise InvalidRequestObjectError("no decryption key for the registered request object encryption")
    ctx.limits.spend_hsm_operation()  # the client is identified, not authenticated: bounded per address
    decrypted = jwe.decrypt(raw, ring.decrypter_for, (alg,), (enc,))
    return jwt.unnest(decrypted).decode("ascii", "replace")


def _algorithms(ctx: ServerContext, client: Client) -> tuple[str, ...]:
    allowed = ctx.settings.assertion_algs
    wanted = client.request_object_signing_alg
    return tuple(a for a in allowed if a == wanted) if wanted else allowed


def _check_typ(ctx: ServerContext, client: Client, header: dict[str, Any]) -> None:
    """RFC 9101 §10.8, RFC 8725 §3.11: the explicit type, or at least not another kind of JWT."""
    typ = header.get("typ")
    named = typ.lower().removeprefix("application/") if isinstance(typ, str) else None
    if client.request_object_typ_required or ctx.settings.request_object_typ_required:
        if named != TYP:
            raise InvalidRequestObjectError(f"the request object's typ must be {TYP}")
    elif typ is not None and named not in ACCEPTED_TYPS:
        raise InvalidRequestObjectError("the request object's typ names another kind of JWT")


def _policy(ctx: ServerContext, receiving_endpoint: str) -> AssertionPolicy:
    """The ``aud`` policy of client assertions, with the URL of the endpoint receiving this object."""
    base = ctx.policies["token"]
    return dataclasses.replace(base, endpoint=receiving_endpoint, max_lifetime=MAX_LIFETIME)


def check_claims(claims: dict[str, Any], client: Client, policy: AssertionPolicy) -> None:
    """Step 4 of the module docstring; raises InvalidRequestObjectError naming the check."""
    cid = client.client_id
    if claims.get("iss") != cid:  # RFC 9101 §5 (signed: iss is the client_id)
        raise InvalidRequestObjectError("iss must be the client_id")
    if claims.get("client_id") != cid:  # RFC 9101 §6.3: the client_id claim and parameter match
        raise InvalidRequestObjectError("the client_id claim must be the client_id")
    if claims.get("sub") == cid:  # RFC 9101 §10.8: never shaped like a client assertion
        raise InvalidRequestObjectError("a request object must not have sub equal to the client_id")
    rule = client.aud_policy or policy.aud_policy
    if not audience_accepted(claims.get("aud"), policy, rule):
        raise InvalidRequestObjectError(f"aud not accepted under the {rule} policy")
    rules = claim_rules.ClaimRules(leeway=policy.clock_skew, required=("exp", "jti"), max_lifetime=MAX_LIFETIME)
    try:
        claim_rules.check(claims, rules)
        exp, nbf = claim_rules.numeric_date(claims, "exp"), claim_rules.numeric_date(claims, "nbf")
    except claim_rules.ClaimError as exc:
        raise InvalidRequestObjectError(f"request object {exc}") from None
    if exp is not None and nbf is not None and exp - nbf > MAX_LIFETIME:
        raise InvalidRequestObjectError("request object exp - nbf is more than 60 minutes")


def _use_jti_once(ctx: ServerContext, claims: dict[str, Any], client: Client, policy: AssertionPolicy) -> None:
    try:
        ctx.store.use_once(
            JTI_NAMESPACE,
            client.client_id + "\0" + claims["jti"],
            expires_at=claims["exp"] + policy.clock_skew,
            issued_at=claim_rules.numeric_date(claims, "iat"),
            window=MAX_LIFETIME + 2 * policy.clock_skew,
        )
    except Replayed as exc:
        events.emit(events.replay_detected, what="request object", client_id=client.client_id, reason=str(exc))
        raise InvalidRequestObjectError("the request object was already used (jti)") from None


def _what(exc: JoseError) -> str:
    """A fixed word per failure kind, for the description (a library message may quote input)."""
    return {
        "InvalidSignature": "signature",
        "RefusedAlgorithm": "algorithm",
        "DecryptionFailed": "decryption",
        "InvalidKey": "key",
        "MalformedJose": "malformed",
    }.get(type(exc).__name__, "JOSE")
