"""The ``aud`` policy table for client assertions, as data: the tests check every cell at every
endpoint that receives assertions, and the docs test checks docs/security.md shows the same table.

Sources: ``issuer`` — FAPI 2.0 Security Profile Final §5.3.2.1 and draft-ietf-oauth-rfc7523bis;
``endpoint`` — CAMARA Security and Interoperability profile (IdentityAndConsentManagement #127);
``legacy`` — FAPI 2.0 Draft 04 / CIBA Core 1.0 §7.1 (exposed to the 2025 audience injection).
"""

from __future__ import annotations

from typing import Any

ISSUER = "https://as.example.test"
OTHER = "https://other.example.test"
PATHS = {"token": "/oauth2/token", "introspection": "/oauth2/introspect", "revocation": "/oauth2/revoke"}
PATHS["backchannel_authentication"] = "/oauth2/bc-authorize"  # CIBA (issue 12): the same table
# PAR and request objects (issue 12): client assertions at /par; request objects at /authorize and /par.
PATHS.update({"par": "/oauth2/par", "authorize": "/oauth2/authorize"})
ASSERTION_ENDPOINTS = ("token", "introspection", "revocation", "par")
REQUEST_OBJECT_ENDPOINTS = ("authorize", "par")

SHAPES = (
    "issuer string",
    "issuer in array",
    "token endpoint URL",
    "receiving endpoint URL",
    "another endpoint's URL",
    "other value",
    "array with two members",
)
POLICIES = ("issuer", "issuer+array", "endpoint", "legacy")  # issuer+array: OAUTH_HSM_AUD_ISSUER_ARRAY=true

# shape -> accepted under (issuer, issuer+array, endpoint, legacy); the token endpoint's own URL is
# the receiving URL there, so "token endpoint URL" follows that row at /token (see expected()).
TABLE: dict[str, tuple[bool, bool, bool, bool]] = {
    "issuer string": (True, True, False, True),
    "issuer in array": (False, True, False, True),
    "token endpoint URL": (False, False, False, True),
    "receiving endpoint URL": (False, False, True, True),
    "another endpoint's URL": (False, False, False, False),
    "other value": (False, False, False, False),
    "array with two members": (False, False, False, False),
}


def url(endpoint: str) -> str:
    return ISSUER + PATHS[endpoint]


def aud_value(shape: str, endpoint: str) -> Any:
    other_endpoint = "revocation" if endpoint != "revocation" else "introspection"
    return {
        "issuer string": ISSUER,
        "issuer in array": [ISSUER],
        "token endpoint URL": url("token"),
        "receiving endpoint URL": url(endpoint),
        "another endpoint's URL": url(other_endpoint) if endpoint != "token" else url("introspection"),
        "other value": OTHER,
        "array with two members": [ISSUER, OTHER],
    }[shape]


def expected(policy: str, shape: str, endpoint: str) -> bool:
    if endpoint == "token" and shape == "token endpoint URL":
        shape = "receiving endpoint URL"
    return TABLE[shape][POLICIES.index(policy)]
