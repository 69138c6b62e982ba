"""What every client authentication method shares: the failure type, what a request presents,
and the audience policy for client assertions (used by every endpoint that authenticates).

Every failure is one ``invalid_client`` to the peer (no oracle for which check failed, or whether
the client exists); the precise reason goes to the log and the ``client_auth_failed`` signal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..clients import Credentials

Finder = Callable[[str], Credentials | None]


class AuthFailure(Exception):
    """Why authentication failed (for logs); the peer only ever sees invalid_client."""

    def __init__(self, reason: str, *, client_id: str | None = None, replay: bool = False):
        super().__init__(reason)
        self.client_id, self.replay = client_id, replay


@dataclass(frozen=True)
class Presented:
    """The credentials a request carries, before any of them is checked."""

    method: str
    client_id: str | None
    secret: str | None = None
    assertion: str | None = None
    certificate: Any = None  # tls_client_auth: the client certificate from the trusted proxy


@dataclass(frozen=True)
class AssertionPolicy:
    """What a client assertion received at one endpoint must satisfy (docs/endpoints.md, client authentication)."""

    issuer: str
    token_endpoint: str
    endpoint: str  # the URL of the endpoint receiving this request
    aud_policy: str  # issuer | endpoint | legacy
    issuer_array: bool  # accept the issuer as a one-member array (operator opt-in)
    algorithms: tuple[str, ...]
    max_lifetime: int
    clock_skew: int


def audience_accepted(aud: Any, policy: AssertionPolicy, rule: str) -> bool:
    """The ``aud`` policy table (docs/security.md, "The aud of client assertions").

    * ``issuer``: FAPI 2.0 Security Profile Final §5.3.2.1 and draft-ietf-oauth-rfc7523bis: the
      issuer identifier as a string (a one-member array only when the operator opts in);
    * ``endpoint``: CAMARA (IdentityAndConsentManagement #127): the URL of the endpoint receiving
      the request, as a string;
    * ``legacy``: FAPI 2.0 Draft 04 / CIBA Core: issuer, token endpoint or receiving endpoint URL,
      string or array. Exposed to the 2025 audience-injection attack.
    """
    if rule == "issuer":
        if isinstance(aud, str):
            return aud == policy.issuer
        return policy.issuer_array and aud == [policy.issuer]
    if rule == "endpoint":
        return isinstance(aud, str) and aud == policy.endpoint
    values = aud if isinstance(aud, list) else [aud]
    accepted = {policy.issuer, policy.token_endpoint, policy.endpoint}
    return bool(values) and all(isinstance(v, str) and v in accepted for v in values)
