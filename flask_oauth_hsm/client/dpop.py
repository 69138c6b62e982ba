"""DPoP for clients (RFC 9449) with the proof key in a PKCS#11 token.

* :class:`DPoPKey` makes proofs (signed in the token) and remembers the nonces servers send
  (``DPoP-Nonce``, RFC 9449 §8 and §9), per origin and role: an authorization server and a
  resource server on one origin (as in the example app) each have their own nonces.
* :class:`DPoPClientAuth` wraps an Authlib client authentication method: the token request gets a
  proof too, so ``fetch_token`` returns a DPoP-bound token.
* :class:`DPoPAuth` is the auth of resource requests, for ``requests`` (``auth=``) and ``httpx``
  (an ``httpx.Auth``): ``Authorization: DPoP <token>`` and a proof with ``ath``; a
  ``use_dpop_nonce`` answer is retried once with the new nonce.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Generator, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.auth import AuthBase

from .. import clock
from ..binding.dpop import DPOP_TYP, access_token_hash
from ..jose import compact, jws

try:  # httpx is optional: with it, the same auth classes serve httpx clients
    import httpx

    _HTTPXAuth: type = httpx.Auth
except ImportError:  # pragma: no cover
    _HTTPXAuth = object

ClientAuthMethod = Callable[[Any, str, str, Any, "str | None"], tuple[str, Any, str]]
_PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "n", "e")


class ClientKey(jws.Signer, Protocol):
    """A signing key that also tells its public JWK: a key in the token (``hsm.key(label)``)."""

    def public_jwk(self) -> dict[str, Any]: ...


class DPoPKey:
    """A DPoP key pair whose private half stays in the token, and the nonces servers gave us."""

    def __init__(self, key: ClientKey):
        self.key = key
        public = key.public_jwk()
        self.jwk = {k: public[k] for k in _PUBLIC_MEMBERS if k in public}  # RFC 9449 §4.2: the public key only
        self._nonces: dict[tuple[str, bool], str] = {}
        self._lock = threading.Lock()

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        """RFC 9449 §4.2: a fresh proof for one request (``ath`` when it carries a token)."""
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(18),
            "htm": method.upper(),
            "htu": _htu(url),
            "iat": int(clock.now()),
        }
        nonce = self._nonces.get(_slot(url, access_token is not None))
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        # Not jws.sign: a proof names its key by the jwk header only, no kid (RFC 9449 §4.2).
        header = {"typ": DPOP_TYP, "alg": self.key.alg, "jwk": self.jwk}
        signing_input = (
            compact.b64url_encode(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + compact.b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
        )
        return signing_input + "." + compact.b64url_encode(self.key.sign(signing_input.encode("ascii")))

    def remember(self, url: str, headers: Mapping[str, str], resource: bool = False) -> None:
        """Keep the ``DPoP-Nonce`` of a response from ``url`` (``resource``: a resource request)."""
        nonce = headers.get("DPoP-Nonce")
        if nonce:
            with self._lock:
                self._nonces[_slot(url, resource)] = nonce

    def remember_response(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        """A ``requests`` response hook / ``httpx`` event hook: remember the nonce it carries."""
        authorization = str(response.request.headers.get("Authorization", ""))
        self.remember(str(response.request.url), response.headers, authorization.lower().startswith("dpop "))
        return response


def _slot(url: str, resource: bool) -> tuple[str, bool]:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}", resource


def _htu(url: str) -> str:
    """RFC 9449 §4.2: the target URI without query and fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


def asks_for_nonce(status: int, headers: Mapping[str, str]) -> bool:
    """RFC 9449 §8/§9: a 400 (token endpoint) or 401 (resource) whose error is use_dpop_nonce."""
    if status == 401:
        return 'error="use_dpop_nonce"' in headers.get("WWW-Authenticate", "")
    return status == 400 and "DPoP-Nonce" in headers


class DPoPClientAuth:
    """An Authlib client authentication method that adds a DPoP proof to the token request.

    ``inner``: the method that authenticates the client (e.g. :class:`HSMPrivateKeyJWT`, or one of
    Authlib's names such as ``"client_secret_basic"``).
    """

    def __init__(self, dpop: DPoPKey, inner: ClientAuthMethod | str | None = None):
        self.dpop = dpop
        if isinstance(inner, str):
            from authlib.oauth2.auth import ClientAuth

            self.inner: ClientAuthMethod | None = ClientAuth.DEFAULT_AUTH_METHODS[inner]
        else:
            self.inner = inner

    def __call__(self, auth: Any, method: str, uri: str, headers: Any, body: str | None) -> tuple[str, Any, str]:
        if self.inner is not None:
            uri, headers, body = self.inner(auth, method, uri, headers, body)
        headers["DPoP"] = self.dpop.proof(method, uri)
        return uri, headers, body or ""


class DPoPAuth(AuthBase, _HTTPXAuth):  # type: ignore[misc]  # _HTTPXAuth: httpx.Auth, or object without httpx
    """Resource requests with a DPoP-bound access token, for ``requests`` and ``httpx``."""

    def __init__(self, dpop: DPoPKey, access_token: str):
        self.dpop, self.access_token = dpop, access_token

    def _sign(self, method: str, url: str, headers: Any) -> None:
        headers["Authorization"] = f"DPoP {self.access_token}"  # RFC 9449 §7.1
        headers["DPoP"] = self.dpop.proof(method, url, self.access_token)

    # requests ---------------------------------------------------------------------------------
    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        self._sign(str(r.method), str(r.url), r.headers)
        r.register_hook("response", self._retry_with_nonce)
        return r

    def _retry_with_nonce(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        self.dpop.remember(str(r.request.url), r.headers, resource=True)
        if not asks_for_nonce(r.status_code, r.headers) or getattr(r.request, "dpop_retried", False):
            return r
        r.content  # noqa: B018 - release the connection before reusing it
        r.close()
        retry = r.request.copy()
        retry.dpop_retried = True  # type: ignore[attr-defined]  # our mark on requests' PreparedRequest: one retry
        self._sign(str(retry.method), str(retry.url), retry.headers)
        again: requests.Response = r.connection.send(retry, **kwargs)
        again.history.append(r)
        again.request = retry
        return again

    # httpx ------------------------------------------------------------------------------------
    def auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        self._sign(request.method, str(request.url), request.headers)
        response = yield request
        self.dpop.remember(str(request.url), response.headers, resource=True)
        if asks_for_nonce(response.status_code, response.headers):  # once: RFC 9449 §9
            self._sign(request.method, str(request.url), request.headers)
            yield request
