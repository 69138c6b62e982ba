"""Client-Initiated Backchannel Authentication, poll mode (OpenID CIBA Core 1.0; CAMARA profile).

A client asks at ``/bc-authorize`` (endpoints/ciba.py) for a user named by a hint (hints.py); the
host's ``@oauth.ciba_notify`` hook asks that user on their authentication device; the host calls
``oauth.ciba.approve(...)`` or ``deny(...)`` (device.py); meanwhile the client polls the token
endpoint with the CIBA grant (grants/ciba.py), at the interval we set (polling.py). The request
lives in Redis, hashed, for ``expires_in`` seconds (records.py); the tokens are given once.
docs/ciba.md has the whole story.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from .records import CibaRequest

GRANT_TYPE = "urn:openid:params:grant-type:ciba"  # CIBA Core §10.1

__all__ = ["GRANT_TYPE", "CibaRequest", "check_registration"]


def check_registration(data: dict[str, Any]) -> None:
    """Registry rules of CIBA clients (CIBA Core §4) and pairwise subjects (OIDC Core §8.1)."""
    ciba = GRANT_TYPE in data.get("grant_types", [])
    if ciba and data.get("backchannel_token_delivery_mode") != "poll":
        raise ValidationError(
            "a CIBA client needs backchannel_token_delivery_mode poll (the only mode served)", "backchannel_token_delivery_mode"
        )
    if not ciba and data.get("backchannel_token_delivery_mode") is not None:
        raise ValidationError(f"only for clients with the {GRANT_TYPE} grant", "backchannel_token_delivery_mode")
    if ciba and data.get("token_endpoint_auth_method") == "none":
        raise ValidationError("a CIBA client authenticates (CIBA Core §7.1): not a public client", "grant_types")
    if data.get("subject_type") == "pairwise":
        from ..subjects import sector_of

        try:
            sector_of(data.get("sector_identifier_uri"), data.get("redirect_uris") or [])
        except ValueError as exc:
            raise ValidationError(str(exc), "sector_identifier_uri") from None
    elif data.get("sector_identifier_uri") is not None:
        raise ValidationError("only for subject_type pairwise", "sector_identifier_uri")
