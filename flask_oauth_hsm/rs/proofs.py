"""Sender constraints at the resource server: a token with a ``cnf`` is worth nothing without its
proof, and is never accepted as a bearer token.

* ``cnf.jkt`` — DPoP (RFC 9449 §7): ``Authorization: DPoP``, a proof for this request (§4.3 with
  ``ath``) made with that key, the nonce (§9) and the proof's single use when we have Redis;
* ``cnf.jwk`` / ``cnf.jwe`` — PoP tokens (draft-ietf-oauth-pop-key-distribution-07):
  ``Authorization: PoP``, the request signed (RFC 9421) with the token's key — the client's public
  key, or the symmetric key the AS encrypted to us, opened in our token;
* ``cnf["x5t#S256"]`` — certificate-bound (RFC 8705 §3): the TLS client certificate, passed on by a
  trusted proxy, is the one the token was issued to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Request

from ..algorithms import http_signature_alg
from ..binding import dpop, httpsig, key_ids, use_proof_once, use_signature_nonce_once
from ..binding.nonces import NonceRequired
from ..binding.pop_keys import decrypt_key
from ..errors import InvalidKey, JoseError
from ..hsm import TokenKey
from ..jose import jwk
from ..tokens.access import MAX_ACCESS_TOKEN_LEN

if TYPE_CHECKING:
    from .state import RSState

SCHEMES = {"bearer": "Bearer", "dpop": "DPoP", "pop": "PoP"}
DPOP_REPLAY_NAMESPACE = "dpop-rs"
MAX_SIGNED_BODY = 1024 * 1024  # a signed body is read whole to check its Content-Digest


class TokenRejected(Exception):
    """RFC 6750 §3.1 / RFC 9449 §7.1 error for the caller: code, status, description; the
    challenge uses the scheme the client used (``scheme``, set once it is known), and offers
    DPoP too where that is what the client should have used."""

    def __init__(
        self,
        error: str,
        status: int,
        description: str,
        scope: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        offer_dpop: bool = False,
    ):
        super().__init__(description)
        self.error, self.status, self.description, self.scope = error, status, description, scope
        self.headers, self.offer_dpop = dict(headers or {}), offer_dpop
        self.scheme: str | None = None


@dataclass(frozen=True)
class Presented:
    scheme: str  # bearer | dpop | pop
    token: str


def presented_token(req: Request) -> Presented:
    """RFC 6750 §2.1 / RFC 9449 §7.1: the Authorization header only; schemes case-insensitive."""
    header = req.headers.get("Authorization")
    if header is None:
        raise TokenRejected("", 401, "access token required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() not in SCHEMES or not token or " " in token:
        raise TokenRejected("invalid_request", 400, "use Authorization: Bearer, DPoP or PoP <token>")
    if len(token) > MAX_ACCESS_TOKEN_LEN:
        raise TokenRejected("invalid_token", 401, "token too large")
    return Presented(scheme.lower(), token)


def target_uri(state: RSState, req: Request) -> str:
    """The URI the client addressed (RFC 9421 §2.2.2 @target-uri, RFC 9449 htu): our configured
    origin (never the Host header) and the request target exactly as sent, when the server tells
    it (``RAW_URI``: gunicorn, Werkzeug); else the path re-encoded."""
    raw = req.environ.get("RAW_URI") or req.environ.get("REQUEST_URI")
    if isinstance(raw, str) and raw.startswith("/"):
        return state.settings.origin + raw
    path = quote(req.script_root + req.path, safe="/:@!$&'()*+,;=-._~%")
    query = req.query_string.decode("latin-1")
    return state.settings.origin + path + (f"?{query}" if query else "")


def check_sender(state: RSState, req: Request, presented: Presented, claims: Mapping[str, Any]) -> dict[str, str]:
    """Raise TokenRejected unless the request proves the token's binding; returns response headers."""
    cnf = claims.get("cnf")
    if cnf is None:
        if presented.scheme != "bearer":
            raise TokenRejected("invalid_token", 401, "this token is not bound to a key: send it as Bearer")
        return {}
    if not isinstance(cnf, dict):
        raise TokenRejected("invalid_token", 401, "the token's confirmation is malformed")
    if "jkt" in cnf:
        return _check_dpop(state, req, presented, claims, cnf["jkt"])
    if presented.scheme == "dpop":
        raise TokenRejected("invalid_token", 401, "this token is not DPoP-bound")
    if "x5t#S256" in cnf:
        _check_certificate(state, req, presented, cnf["x5t#S256"])
    elif "jwk" in cnf or "jwe" in cnf:
        _check_signature(state, req, presented, claims, cnf)
    else:
        raise TokenRejected("invalid_token", 401, "the token is bound by a method this server does not know")
    return {}


def decrypter(state: RSState) -> TokenKey:
    if state.settings.decryption_key is None or state.hsm is None:
        raise TokenRejected("invalid_token", 401, "encrypted token, but no decryption key is configured")
    return state.hsm.key(state.settings.decryption_key)


# --- DPoP ------------------------------------------------------------------------------------------


def _check_dpop(state: RSState, req: Request, presented: Presented, claims: Mapping[str, Any], jkt: Any) -> dict[str, str]:
    if presented.scheme != "dpop":  # RFC 9449 §7.1: a DPoP-bound token is no bearer token
        raise TokenRejected("invalid_token", 401, "a DPoP-bound token must be sent with the DPoP scheme", offer_dpop=True)
    s, who = state.settings, str(claims.get("client_id") or jkt)
    try:
        value = dpop.read_header(req.headers.getlist("DPoP"))
        if value is None:
            raise dpop.ProofError("no DPoP proof")
        proof = dpop.verify_proof(
            value,
            method=req.method,
            url=target_uri(state, req),
            algorithms=s.dpop_algs,
            max_age=s.proof_max_age,
            leeway=s.leeway,
            access_token=presented.token,
        )
        if proof.jkt != jkt:  # RFC 9449 §7.1: the proof key is the key the token is bound to
            raise dpop.ProofError("the proof key is not the token's key")
        state.nonces.check_presented(proof)
        state.nonces.check_client(state.store, proof, who)
        if state.store is not None:
            use_proof_once(state.store, DPOP_REPLAY_NAMESPACE, proof, s.proof_max_age, s.leeway, who)
    except dpop.ProofError as exc:
        raise TokenRejected("invalid_dpop_proof", 401, f"invalid DPoP proof: {exc}") from None
    except NonceRequired as exc:
        raise TokenRejected("use_dpop_nonce", 401, f"use the DPoP-Nonce: {exc}", headers=state.nonces.challenge()) from None
    return state.nonces.offer(state.store, who)


# --- PoP tokens (RFC 9421) ---------------------------------------------------------------------------


def _check_signature(
    state: RSState, req: Request, presented: Presented, claims: Mapping[str, Any], cnf: Mapping[str, Any]
) -> None:
    if presented.scheme != "pop":
        raise TokenRejected("invalid_token", 401, "a PoP token must be sent with the PoP scheme, signed (RFC 9421)")
    s = state.settings
    key, alg, ids = _bound_key(state, cnf, claims)
    if alg not in s.signature_algs:
        raise TokenRejected("invalid_token", 401, "this server does not verify signatures with the token's key type")
    if (req.content_length or 0) > MAX_SIGNED_BODY:
        raise TokenRejected("invalid_request", 413, "the signed body is too large")
    message = httpsig.Message(req.method, target_uri(state, req), httpsig.Lines(req.headers.items()))
    rules = httpsig.Rules(("@method", "@target-uri", "authorization"), s.proof_max_age, s.leeway)
    try:
        signed = httpsig.verify(message, req.get_data(cache=True), key, alg, ids, rules)
        if signed.nonce is None:
            raise httpsig.SignatureError("nonce is required")
        if state.store is not None:
            use_signature_nonce_once(state.store, signed.keyid, signed, s.proof_max_age, s.leeway)
    except httpsig.SignatureError:
        raise TokenRejected(
            "invalid_token",
            401,
            "the request signature is missing or invalid (RFC 9421: @method, "
            "@target-uri, authorization, content-digest, created, nonce)",
        ) from None


def _bound_key(state: RSState, cnf: Mapping[str, Any], claims: Mapping[str, Any]) -> tuple[Any, str | None, frozenset[str]]:
    """The token's key, its RFC 9421 algorithm and the keyids naming it."""
    try:
        if "jwk" in cnf:
            public = jwk.load_jwk(cnf["jwk"])
            return public.key, http_signature_alg(public.kty, public.crv), key_ids(public)
        sealed = cnf["jwe"]
        if not isinstance(sealed, str):
            raise JoseError("cnf.jwe is not a string")
        hit = state.pop_keys.get(sealed)
        if hit is not None:
            symmetric = hit[1]
        else:
            symmetric = decrypt_key(sealed, decrypter(state))  # RFC 7800 §3.3, in our token
            exp = claims.get("exp")
            state.pop_keys.put(sealed, float(exp) if isinstance(exp, (int, float)) else 0.0, symmetric)
        return symmetric.secret, "hmac-sha256", frozenset({symmetric.kid})
    except (JoseError, InvalidKey):
        raise TokenRejected("invalid_token", 401, "the token's PoP key cannot be read here") from None


# --- mTLS --------------------------------------------------------------------------------------------


def _check_certificate(state: RSState, req: Request, presented: Presented, thumbprint: Any) -> None:
    """RFC 8705 §3: the token goes with Bearer; the connection's certificate must be the bound one."""
    cert = state.certificates.read(req.remote_addr, req.headers) if state.certificates is not None else None
    if cert is None or cert.thumbprint != thumbprint:
        raise TokenRejected("invalid_token", 401, "the token is bound to another client certificate")
