"""Signing requests with PoP keys (RFC 9421 HTTP Message Signatures), for clients.

Keys: :class:`HSMPoPKey` — an asymmetric key in the client's PKCS#11 token (ES256 keys sign
``ecdsa-p256-sha256``, EdDSA keys ``ed25519``: the same primitive in the token); and
:class:`SymmetricPoPKey` — a key the AS distributed (``cnf.jwk``, or ``cnf.jwe`` opened with a
decryption key in the client's token), ``hmac-sha256``.

* :class:`HTTPSignatureAuth` signs resource requests (``Authorization: PoP <token>``; covered:
  ``@method``, ``@target-uri``, ``authorization``, ``content-digest`` with a body; ``created``,
  ``keyid``, a fresh ``nonce``), for ``requests`` and ``httpx``;
* :class:`PoPClientAuth` wraps an Authlib client authentication method to ask for a pop token:
  ``token_type=pop`` and, for an asymmetric key, ``req_cnf`` plus a signature of the token
  request with that key (RFC 9201 §3.1: the AS must see the client hold it).

The signature base is built by the ``http-message-signatures`` package (prepare/apply): only the
signature itself is computed here, so that it can happen in the token.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Generator, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

import requests
from http_message_signatures import HTTPMessageSigner
from requests.auth import AuthBase

from .. import clock
from ..binding import httpsig
from ..binding.pop_keys import SymmetricKey, decrypt_key
from ..jose import compact
from .dpop import ClientKey, _HTTPXAuth

ClientAuthMethod = Callable[[Any, str, str, Any, "str | None"], tuple[str, Any, str]]
RESOURCE_COMPONENTS = ("@method", "@target-uri", "authorization")
TOKEN_REQUEST_COMPONENTS = ("@method", "@target-uri")
_HSM_ALGS = {"ES256": "ecdsa-p256-sha256", "EdDSA": "ed25519"}


class PoPSigner(Protocol):
    alg: str  # RFC 9421 algorithm
    keyid: str

    def sign(self, data: bytes) -> bytes: ...


class HSMPoPKey:
    """An asymmetric PoP key in the client's token (``hsm.key(label)``): ES256 or EdDSA keys."""

    def __init__(self, key: ClientKey):
        alg = _HSM_ALGS.get(key.alg)
        if alg is None:
            raise ValueError(f"a {key.alg} key cannot sign RFC 9421 requests in the token (use ES256 or EdDSA)")
        self.key, self.alg, self.keyid = key, alg, key.kid  # our kids are RFC 7638 thumbprints

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)  # ES256: SHA-256 + ECDSA, raw r||s, as RFC 9421 §3.3.4 wants

    def req_cnf(self) -> str:
        """RFC 9201 §3.1 ``req_cnf``, base64url-encoded JSON as in the draft's example."""
        public = self.key.public_jwk()
        jwk = {k: public[k] for k in ("kty", "crv", "x", "y", "n", "e") if k in public}
        return compact.b64url_encode(json.dumps({"jwk": {**jwk, "kid": self.keyid}}, separators=(",", ":")).encode())


class SymmetricPoPKey:
    """A symmetric key the AS distributed; HMAC runs here (the secret is in the client's memory)."""

    alg = "hmac-sha256"

    def __init__(self, key: SymmetricKey):
        self.keyid, self._secret = key.kid, key.secret

    @classmethod
    def from_token_response(cls, token: Mapping[str, Any], decrypter: Any = None) -> SymmetricPoPKey:
        """From the response's ``cnf``: ``jwk`` (in clear) or ``jwe`` (opened with ``decrypter``, a
        decryption key in the client's token)."""
        cnf = token.get("cnf")
        if not isinstance(cnf, dict):
            raise ValueError("the token response has no cnf")
        if "jwe" in cnf:
            if decrypter is None:
                raise ValueError("the key is encrypted to the client: pass its decryption key")
            return cls(decrypt_key(cnf["jwe"], decrypter))
        return cls(SymmetricKey.from_jwk_bytes(json.dumps(cnf.get("jwk")).encode()))

    def sign(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()


def sign_message(
    message: httpsig.Message, body: bytes | None, signer: PoPSigner, components: tuple[str, ...], *, nonce: bool = True
) -> None:
    """Add ``Signature-Input`` and ``Signature`` (and ``Content-Digest`` for a body) to ``message``."""
    handler = HTTPMessageSigner(signature_algorithm=httpsig.ALGORITHMS[signer.alg])
    created = datetime.datetime.fromtimestamp(int(clock.now()), datetime.UTC)
    prepared = handler.prepare(
        message,
        key_id=signer.keyid,
        created=created,
        covered_component_ids=components,
        nonce=secrets.token_urlsafe(16) if nonce else None,
        body=body or None,
        label="sig",
    )
    handler.apply(message, prepared, signer.sign(prepared.signature_base))


def _sign_into(method: str, url: str, headers: Any, body: bytes | None, signer: PoPSigner, components: tuple[str, ...]) -> None:
    message = httpsig.Message(method, url, httpsig.Lines(headers.items()))
    sign_message(message, body, signer, components)
    for name in ("Content-Digest", "Signature-Input", "Signature"):
        value = message.headers.get(name)
        if value is not None:
            headers[name] = value


def _as_bytes(body: Any) -> bytes | None:
    if body is None or body == b"" or body == "":
        return None
    return body.encode() if isinstance(body, str) else bytes(body)


class HTTPSignatureAuth(AuthBase, _HTTPXAuth):  # type: ignore[misc]  # _HTTPXAuth: httpx.Auth, or object without httpx
    """Resource requests with a PoP token, signed with its key, for ``requests`` and ``httpx``."""

    def __init__(self, access_token: str, signer: PoPSigner):
        self.access_token, self.signer = access_token, signer

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"PoP {self.access_token}"
        _sign_into(str(r.method), str(r.url), r.headers, _as_bytes(r.body), self.signer, RESOURCE_COMPONENTS)
        return r

    def auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        request.headers["Authorization"] = f"PoP {self.access_token}"
        _sign_into(request.method, str(request.url), request.headers, _as_bytes(request.read()), self.signer, RESOURCE_COMPONENTS)
        yield request


class PoPClientAuth:
    """An Authlib client authentication method that asks for a pop token (symmetric without
    ``key``; with an asymmetric ``key``: its ``req_cnf`` and the token request signed with it)."""

    def __init__(self, inner: ClientAuthMethod, key: HSMPoPKey | None = None):
        self.inner, self.key = inner, key

    def __call__(self, auth: Any, method: str, uri: str, headers: Any, body: str | None) -> tuple[str, Any, str]:
        if isinstance(body, bytes):
            body = body.decode()
        extra = {"token_type": "pop", **({"req_cnf": self.key.req_cnf()} if self.key is not None else {})}
        body = "&".join(p for p in (body, urlencode(extra)) if p)
        uri, headers, body = self.inner(auth, method, uri, headers, body)
        if self.key is not None:
            _sign_into(method, uri, headers, body.encode(), self.key, TOKEN_REQUEST_COMPONENTS)
        if "Content-Length" in headers:
            headers["Content-Length"] = str(len(body.encode()))
        return uri, headers, body
