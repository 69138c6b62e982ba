"""Signed authentication requests (CIBA Core §7.1.1): the ``request`` parameter at ``/bc-authorize``.

The request's parameters are the claims of a JWT signed with the client's registered key; outside
it only the client authentication parameters may appear (§7.1.1: "authentication request
parameters MUST NOT be present outside of the JWT"). It is verified like a JAR request object
(authz/request_object.py: the same decryption for clients registered for encrypted request
objects, the same allow-list, the same single-use ``jti`` namespace, so one JWT can never serve at
both), with the differences CIBA makes, handled here explicitly:

* the alg is the client's ``backchannel_authentication_request_signing_alg`` (not
  ``request_object_signing_alg``), within ``OAUTH_HSM_ASSERTION_ALGS``;
* no ``typ`` is required (CIBA defines none; the JAR ``typ`` settings do not apply), but a ``typ``
  naming another kind of JWT is refused (RFC 8725 §3.11);
* ``iss`` is the client, a ``client_id`` claim is optional (it must then be the client too), ``sub``
  is never the client (such a JWT is shaped like a client assertion);
* ``aud`` under the client's ``aud`` policy with ``/bc-authorize`` as the receiving endpoint;
  ``exp``, ``iat``, ``nbf`` and ``jti`` are all required (§7.1.1), ``exp`` and ``exp − nbf`` at most
  60 minutes, ``nbf`` and ``iat`` not in the future beyond the clock skew.

Failures answer ``invalid_request`` (CIBA Core §13 has no ``invalid_request_object``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .. import claims as claim_rules
from ..authz import request_object
from ..authz.jar import parameters as jar_parameters
from ..client_auth.base import AssertionPolicy, audience_accepted
from ..clients import Client
from ..errors import InvalidRequestError, InvalidRequestObjectError, JoseError
from ..jose import jws, jwt
from ..web import Form

if TYPE_CHECKING:
    from ..server import ServerContext

ENDPOINT = "backchannel_authentication"
REQUIRED = ("exp", "iat", "nbf", "jti")  # CIBA Core §7.1.1 (with aud and iss, checked apart)
# Besides ``request``: what client authentication needs (CIBA Core §7.1.1, RFC 7521 §4.2).
OUTSIDE = frozenset({"request", "client_id", "client_assertion", "client_assertion_type", "client_secret"})


def parameters(ctx: ServerContext, client: Client, form: Form) -> Form:
    """The authentication request's parameters, from its verified signed request."""
    if set(form) - OUTSIDE:
        raise InvalidRequestError("with a signed request, every authentication request parameter goes inside it")
    claims = verify(ctx, client, form["request"])
    if isinstance(claims.get("requested_expiry"), int) and not isinstance(claims["requested_expiry"], bool):
        claims["requested_expiry"] = str(claims["requested_expiry"])  # a JSON number is fine in a JWT
    claims.pop("client_id", None)  # checked: the client itself
    try:
        return jar_parameters(claims)
    except InvalidRequestObjectError as exc:
        raise InvalidRequestError(exc.description) from None


def verify(ctx: ServerContext, client: Client, raw: str) -> dict[str, Any]:
    """The verified claims of a signed authentication request; raises InvalidRequestError."""
    if client.jwks is None:
        raise InvalidRequestError("this client has no registered keys to sign requests")
    try:
        token = request_object._decrypted(ctx, client, raw)  # a JWE only from clients registered for it
        keys = client.jwks
        verified = jws.Unverified(token).verify(lambda h: keys.select(h["alg"], "sig", h.get("kid")), _algorithms(ctx, client))
        claims = jwt.decode_claims(verified.payload)
    except JoseError as exc:
        raise InvalidRequestError(f"the signed request is not valid ({request_object._what(exc)})") from None
    except InvalidRequestObjectError as exc:
        raise InvalidRequestError(exc.description) from None
    typ = verified.header.get("typ")
    if typ is not None and (
        not isinstance(typ, str) or typ.lower().removeprefix("application/") not in request_object.ACCEPTED_TYPS
    ):
        raise InvalidRequestError("the signed request's typ names another kind of JWT")
    policy = dataclasses.replace(ctx.policies[ENDPOINT], max_lifetime=request_object.MAX_LIFETIME)
    check_claims(claims, client, policy)
    try:
        request_object._use_jti_once(ctx, claims, client, policy)  # last: only authentic requests reach Redis
    except InvalidRequestObjectError as exc:
        raise InvalidRequestError(exc.description) from None
    return claims


def _algorithms(ctx: ServerContext, client: Client) -> tuple[str, ...]:
    wanted = client.backchannel_authentication_request_signing_alg
    return tuple(a for a in ctx.settings.assertion_algs if a == wanted) if wanted else ctx.settings.assertion_algs


def check_claims(claims: dict[str, Any], client: Client, policy: AssertionPolicy) -> None:
    """CIBA Core §7.1.1 (module docstring); raises InvalidRequestError naming the check."""
    cid = client.client_id
    if claims.get("iss") != cid:
        raise InvalidRequestError("the signed request's iss must be the client_id")
    if claims.get("client_id", cid) != cid:
        raise InvalidRequestError("the signed request's client_id claim must be the client_id")
    if claims.get("sub") == cid:  # RFC 9101 §10.8: never shaped like a client assertion
        raise InvalidRequestError("a signed request must not have sub equal to the client_id")
    rule = client.aud_policy or policy.aud_policy
    if not audience_accepted(claims.get("aud"), policy, rule):
        raise InvalidRequestError(f"the signed request's aud is not accepted under the {rule} policy")
    rules = claim_rules.ClaimRules(leeway=policy.clock_skew, required=REQUIRED, max_lifetime=request_object.MAX_LIFETIME)
    try:
        claim_rules.check(claims, rules)
        exp, nbf = claim_rules.numeric_date(claims, "exp"), claim_rules.numeric_date(claims, "nbf")
    except claim_rules.ClaimError as exc:
        raise InvalidRequestError(f"signed request {exc}") from None
    if exp is not None and nbf is not None and exp - nbf > request_object.MAX_LIFETIME:
        raise InvalidRequestError("the signed request's exp - nbf is more than 60 minutes")
