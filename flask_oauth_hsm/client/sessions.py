"""Authlib ``OAuth2Session`` (requests) with DPoP: tokens fetched with a proof, resource requests
sent with ``Authorization: DPoP`` and a proof, ``use_dpop_nonce`` answered once with the nonce.

For httpx, use Authlib's ``httpx_client.OAuth2Client`` with ``token_endpoint_auth_method=
DPoPClientAuth(...)``, ``event_hooks={"response": [dpop.remember_response]}`` and
``auth=DPoPAuth(dpop, token)`` for resource requests (docs/proof-of-possession.md).
"""

from __future__ import annotations

from typing import Any

from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Auth, OAuth2Session

from .dpop import ClientAuthMethod, DPoPAuth, DPoPClientAuth, DPoPKey


class _DPoPTokenAuth(OAuth2Auth):
    """Authlib's token auth for DPoP tokens (it knows Bearer only)."""

    def __call__(self, req: Any) -> Any:
        session = self.client  # the DPoPOAuth2Session whose token_auth_class this is
        if str(self.token.get("token_type", "")).lower() != "dpop" or not isinstance(session, DPoPOAuth2Session):
            return super().__call__(req)
        self.ensure_active_token()
        return DPoPAuth(session.dpop, self.token["access_token"])(req)


class DPoPOAuth2Session(OAuth2Session):
    """``OAuth2Session`` whose tokens are bound to ``dpop`` (RFC 9449)."""

    token_auth_class = _DPoPTokenAuth

    def __init__(self, client_id: str, *, dpop: DPoPKey, token_endpoint_auth_method: ClientAuthMethod | str, **kwargs: Any):
        self.dpop = dpop
        super().__init__(client_id, token_endpoint_auth_method=DPoPClientAuth(dpop, token_endpoint_auth_method), **kwargs)
        self.hooks["response"].append(dpop.remember_response)

    def fetch_token(self, url: str | None = None, *args: Any, **kwargs: Any) -> Any:
        """RFC 9449 §8: when the AS asks for a nonce, ask once more with it (and a new assertion)."""
        try:
            return super().fetch_token(url, *args, **kwargs)
        except OAuthError as exc:
            if exc.error != "use_dpop_nonce":
                raise
            return super().fetch_token(url, *args, **kwargs)
