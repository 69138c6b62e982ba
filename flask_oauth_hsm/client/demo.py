"""The demo client of ``flask oauth-hsm demo-client``: a token bound as asked, then one API call,
with every key in the dev token and every proof made by :mod:`flask_oauth_hsm.client`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import requests
from requests.auth import AuthBase

from .assertions import HSMPrivateKeyJWT
from .dpop import DPoPAuth, DPoPClientAuth, DPoPKey, asks_for_nonce
from .signatures import HSMPoPKey, HTTPSignatureAuth, PoPClientAuth, SymmetricPoPKey

if TYPE_CHECKING:
    from ..server import ServerContext

TIMEOUT = 10


def obtain_and_call(
    state: ServerContext,
    client_id: str,
    key_label: str,
    binding: str,
    pop_key_label: str,
    token_url: str,
    params: dict[str, str],
    api: str | None,
) -> tuple[int, dict[str, Any], tuple[int, str] | None]:
    """(token status, token response, (API status, API body) or None)."""
    client_auth: Callable[..., Any] = HSMPrivateKeyJWT(
        state.hsm.key(key_label), client_id=client_id, audience=state.settings.issuer
    )
    dpop = DPoPKey(state.hsm.key(pop_key_label)) if binding == "dpop" else None
    if dpop is not None:
        client_auth = DPoPClientAuth(dpop, client_auth)
    elif binding.startswith("pop-"):
        client_auth = PoPClientAuth(client_auth, HSMPoPKey(state.hsm.key(pop_key_label)) if binding == "pop-asymmetric" else None)
    status, body = _token_request(token_url, {"grant_type": "client_credentials", **params}, client_auth, dpop)
    if status != 200 or api is None:
        return status, body, None
    response = requests.get(api, auth=_api_auth(state, binding, body, dpop, pop_key_label), timeout=TIMEOUT)
    return status, body, (response.status_code, response.text.strip())


def _api_auth(state: ServerContext, binding: str, token: dict[str, Any], dpop: DPoPKey | None, pop_key_label: str) -> AuthBase:
    if dpop is not None:
        return DPoPAuth(dpop, token["access_token"])
    if binding == "pop-symmetric":
        return HTTPSignatureAuth(token["access_token"], SymmetricPoPKey.from_token_response(token))
    if binding == "pop-asymmetric":
        return HTTPSignatureAuth(token["access_token"], HSMPoPKey(state.hsm.key(pop_key_label)))
    return _Bearer(token["access_token"])


def _token_request(
    url: str, form: dict[str, str], client_auth: Callable[..., Any], dpop: DPoPKey | None
) -> tuple[int, dict[str, Any]]:
    """POST the token request; once more with the nonce if the AS asks for one (RFC 9449 §8)."""
    for _ in range(2):
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        _, headers, body = client_auth(None, "POST", url, headers, urlencode(form))
        response = requests.post(url, data=body, headers=headers, timeout=TIMEOUT)
        if dpop is None or not asks_for_nonce(response.status_code, response.headers):
            break
        dpop.remember(url, response.headers)
    return response.status_code, response.json()


class _Bearer(AuthBase):
    def __init__(self, token: str):
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r
