"""An authorization request, validated (RFC 6749 §4.1.1, RFC 7636, RFC 8707 §2, OIDC Core §3.1.2.1).

:func:`validate` turns parameters — from the query, or later from a pushed request or a request
object (:mod:`.sources`) — into a frozen :class:`AuthorizationRequest`, or raises the OAuth error
that goes back to the client's redirect URI. The request is what the pending authorization keeps
in Redis while the user signs in and decides, and what the code is bound to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..clients import Client
from ..errors import InvalidRequestError, UnsupportedResponseTypeError
from ..grants.targets import user_resource_servers, user_scope
from ..web import Form
from . import pkce
from .claims import ClaimsRequest, parse_claims_parameter
from .redirect import Target

if TYPE_CHECKING:
    from ..server import ServerContext

# RFC 6749 Appendix A.5: state = 1*VSCHAR (%x20-7E); bounded, it comes back in a URL.
_VSCHAR = re.compile(r"[\x20-\x7E]{1,1024}")
_DIGITS = re.compile(r"[0-9]{1,10}")
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")  # RFC 9449 §10: base64url SHA-256 JWK thumbprint (RFC 7638)
PROMPTS = frozenset({"none", "login", "consent", "select_account"})
MAX_AGE_LIMIT = 10 * 365 * 86400


@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    redirect_uri_given: bool  # then the token request must repeat it (RFC 6749 §4.1.3)
    scope: frozenset[str]
    resources: tuple[str, ...]  # RFC 8707: what the code may later yield tokens for
    code_challenge: str
    state: str | None = None
    nonce: str | None = None
    prompt: frozenset[str] = frozenset()
    max_age: int | None = None
    claims: ClaimsRequest = field(default_factory=ClaimsRequest)
    # Proof of possession requested for the code (RFC 9449 §10: dpop_jkt, or the DPoP key at /par).
    dpop_jkt: str | None = None

    @property
    def target(self) -> Target:
        return Target(self.redirect_uri, self.redirect_uri_given)

    @property
    def openid(self) -> bool:
        return "openid" in self.scope

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "given": self.redirect_uri_given,
            "scope": sorted(self.scope),
            "resources": list(self.resources),
            "code_challenge": self.code_challenge,
            "state": self.state,
            "nonce": self.nonce,
            "prompt": sorted(self.prompt),
            "max_age": self.max_age,
            "claims": self.claims.to_json(),
            "dpop_jkt": self.dpop_jkt,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AuthorizationRequest:
        return cls(
            client_id=doc["client_id"],
            redirect_uri=doc["redirect_uri"],
            redirect_uri_given=doc["given"],
            scope=frozenset(doc["scope"]),
            resources=tuple(doc["resources"]),
            code_challenge=doc["code_challenge"],
            state=doc["state"],
            nonce=doc["nonce"],
            prompt=frozenset(doc["prompt"]),
            max_age=doc["max_age"],
            claims=ClaimsRequest.from_json(doc["claims"]),
            dpop_jkt=doc.get("dpop_jkt"),
        )


def read_state(params: Form) -> str | None:
    """``state`` if it can be echoed safely; a malformed one is dropped (and the request refused)."""
    state = params.get("state")
    return state if state is None or _VSCHAR.fullmatch(state) else None


def validate(ctx: ServerContext, client: Client, to: Target, params: Form) -> AuthorizationRequest:
    """Every rule of the authorization request, in order; raises the OAuthError to redirect."""
    if params.get("state") is not None and read_state(params) is None:
        raise InvalidRequestError("state must be 1-1024 printable ASCII characters")
    _response_type(params)
    challenge = pkce.check_challenge(params.get("code_challenge"), params.get("code_challenge_method"))
    audiences = user_resource_servers(ctx, params.getlist("resource"), client)
    scope = user_scope(params.get("scope"), client, audiences)
    return AuthorizationRequest(
        client_id=client.client_id,
        redirect_uri=to.uri,
        redirect_uri_given=to.given,
        scope=scope,
        resources=tuple(rs.resource for rs in audiences),
        code_challenge=challenge,
        state=params.get("state"),
        nonce=_nonce(params),
        prompt=_prompt(params),
        max_age=_max_age(params),
        claims=parse_claims_parameter(params.get("claims")),
        dpop_jkt=_dpop_jkt(params),
    )


def _response_type(params: Form) -> None:
    response_type = params.get("response_type")
    if response_type is None:
        raise InvalidRequestError("response_type is required")
    if response_type != "code":  # no implicit or hybrid flows (RFC 9700 §2.1.2)
        raise UnsupportedResponseTypeError("only response_type=code is supported")
    mode = params.get("response_mode")
    if mode is not None and mode != "query":
        raise InvalidRequestError("only response_mode=query is supported")


def _dpop_jkt(params: Form) -> str | None:
    """RFC 9449 §10: the thumbprint of the DPoP key the code will be bound to."""
    jkt = params.get("dpop_jkt")
    if jkt is not None and not _JKT.fullmatch(jkt):
        raise InvalidRequestError("dpop_jkt must be a base64url SHA-256 JWK thumbprint")
    return jkt


def _nonce(params: Form) -> str | None:
    nonce = params.get("nonce")
    if nonce is not None and not _VSCHAR.fullmatch(nonce):
        raise InvalidRequestError("nonce must be 1-1024 printable ASCII characters")
    return nonce


def _prompt(params: Form) -> frozenset[str]:
    """OIDC Core §3.1.2.1: space-separated; ``none`` stands alone."""
    raw = params.get("prompt")
    if raw is None:
        return frozenset()
    values = frozenset(raw.split(" "))
    if not values <= PROMPTS:
        raise InvalidRequestError("unsupported prompt value")
    if "none" in values and len(values) > 1:
        raise InvalidRequestError("prompt=none cannot be combined with other values")
    return values


def _max_age(params: Form) -> int | None:
    raw = params.get("max_age")
    if raw is None:
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_AGE_LIMIT:
        raise InvalidRequestError("max_age must be a non-negative number of seconds")
    return int(raw)
