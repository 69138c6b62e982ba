"""Steps 2 to 4 of the binding (binding/__init__.py): the client's binding once it is known, the
binding confirmed for the audiences the grant chose, the symmetric key kept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Request

from .. import events
from ..algorithms import SIGNING, http_signature_alg
from ..clients import Client, ResourceServer
from ..errors import InvalidDPoPProofError, InvalidRequestError, UnsupportedPoPKeyError, UseDPoPNonceError
from ..jose.jwk import PublicJWK
from ..web import Form
from . import dpop, httpsig
from .nonces import NonceRequired
from .pop_keys import SymmetricKey, cnf_jwk, encrypt_key, encryption_target, new_symmetric_key
from .proofs import (
    DPOP_REPLAY_NAMESPACE,
    Proofs,
    key_ids,
    presented_certificate,
    use_proof_once,
    use_signature_nonce_once,
)

if TYPE_CHECKING:
    from ..server import ServerContext
    from ..tokens.access import IssuedToken


# --- step 2: the client's binding ------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """What a token request will be bound to; grants read ``cnf`` and ``jkt``."""

    method: str  # bearer | dpop | pop | mtls
    cnf: Mapping[str, Any] | None = None  # None for bearer tokens, and for pop until a symmetric key exists
    token_type: str = "Bearer"
    symmetric: bool = False
    pop_key: PublicJWK | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # DPoP-Nonce

    @property
    def jkt(self) -> str | None:
        """The DPoP key thumbprint (RFC 9449 §6.1): what a refresh token or code binds to."""
        return self.cnf.get("jkt") if self.cnf else None

    def confirm(self, ctx: ServerContext, client: Client, audiences: Sequence[ResourceServer]) -> Confirmation:
        """Step 3 (binding/__init__.py); raises OAuthError."""
        if self.method != "pop":
            return Confirmation(self.cnf, self.token_type, {}, self.headers)
        if self.symmetric:
            return _confirm_symmetric(ctx, client, audiences)
        return _confirm_asymmetric(self, audiences)


BEARER = Binding("bearer")


def bind(ctx: ServerContext, request: Request, form: Form, proofs: Proofs, client: Client) -> Binding:
    """Step 2 (binding/__init__.py); raises OAuthError."""
    wants_certificate = client.tls_client_certificate_bound_access_tokens
    if wants_certificate and (proofs.dpop is not None or proofs.pop):
        raise InvalidRequestError("this client gets certificate-bound tokens: no DPoP, no token_type=pop")
    if client.dpop_bound_access_tokens and proofs.dpop is None:
        raise InvalidDPoPProofError("this client must send a DPoP proof (dpop_bound_access_tokens)")  # RFC 9449 §5.2.1
    if proofs.dpop is not None:
        return _bind_dpop(ctx, proofs.dpop, client)
    if proofs.pop:
        return _bind_pop(ctx, request, form, proofs.pop_key, client)
    if wants_certificate:
        return _bind_certificate(ctx)
    return BEARER


def _bind_dpop(ctx: ServerContext, proof: dpop.Proof, client: Client) -> Binding:
    headers = accept_dpop_proof(ctx, proof, client)
    return Binding("dpop", {"jkt": proof.jkt}, "DPoP", headers=headers)


def accept_dpop_proof(ctx: ServerContext, proof: dpop.Proof, client: Client) -> dict[str, str]:
    """Once the client is known: its nonce rules, then the proof used once; returns the headers of
    the answer (a fresh DPoP-Nonce). Raises OAuthError."""
    b = ctx.binding
    try:
        b.nonces.check_client(ctx.store, proof, client.client_id, client.dpop_nonce_required)
    except NonceRequired as exc:
        raise UseDPoPNonceError(f"use the DPoP-Nonce: {exc}", headers=b.nonces.challenge()) from None
    try:
        use_proof_once(ctx.store, DPOP_REPLAY_NAMESPACE, proof, b.dpop_max_age, b.leeway, client.client_id)
    except dpop.ProofError as exc:
        raise InvalidDPoPProofError(f"invalid DPoP proof: {exc}") from None
    return b.nonces.offer(ctx.store, client.client_id, client.dpop_nonce_required)


def _bind_pop(ctx: ServerContext, request: Request, form: Form, key: PublicJWK | None, client: Client) -> Binding:
    kind = "asymmetric" if key is not None else "symmetric"
    if kind not in client.pop_keys:
        raise InvalidRequestError(f"this client may not request pop tokens with {kind} keys")
    if key is None:
        if ctx.binding.vault is None:
            raise InvalidRequestError("this server does not distribute symmetric PoP keys")
        return Binding("pop", None, "pop", symmetric=True)
    _verify_possession(ctx, request, form, key)
    return Binding("pop", {"jwk": cnf_jwk(key)}, "pop", pop_key=key)


def _verify_possession(ctx: ServerContext, request: Request, form: Form, key: PublicJWK) -> None:
    """RFC 9201 §3.1: the client holds the req_cnf key — the token request is signed with it
    (RFC 9421: @method, @target-uri and content-digest; a nonce, if any, used once)."""
    b = ctx.binding
    alg = http_signature_alg(key.kty, key.crv)
    if alg is None:
        raise InvalidRequestError("req_cnf.jwk: no HTTP signature algorithm for this key type")
    message = httpsig.Message(request.method, b.token_url, httpsig.Lines(request.headers.items()))
    rules = httpsig.Rules(("@method", "@target-uri"), b.signature_max_age, b.leeway)
    try:
        signed = httpsig.verify(message, form.body, key.key, alg, key_ids(key), rules)
    except httpsig.SignatureError as exc:
        events.emit(events.token_refused, endpoint="token", error="invalid_request", reason=f"req_cnf proof: {exc}")
        raise InvalidRequestError(
            "sign the token request with the req_cnf key (RFC 9421: @method, @target-uri, content-digest, created)"
        ) from None
    if signed.nonce is not None:
        try:
            use_signature_nonce_once(ctx.store, key.thumbprint, signed, b.signature_max_age, b.leeway)
        except httpsig.SignatureError:
            raise InvalidRequestError("the signature nonce was used before") from None


def _bind_certificate(ctx: ServerContext) -> Binding:
    cert = presented_certificate(ctx)
    if cert is None:
        raise InvalidRequestError("this client gets certificate-bound tokens: present a client certificate (mutual TLS)")
    return Binding("mtls", {"x5t#S256": cert.thumbprint}, "Bearer")  # RFC 8705 §3.1


# --- step 3 and 4: the audiences, the symmetric key ----------------------------------------------------


@dataclass(frozen=True)
class Confirmation:
    cnf: Mapping[str, Any] | None  # the access token's cnf claim
    token_type: str
    response: Mapping[str, Any]  # members the token response adds (cnf, rs_cnf)
    headers: Mapping[str, str]
    pending: SymmetricKey | None = None

    def keep(self, ctx: ServerContext, issued: IssuedToken) -> None:
        """Step 4: the symmetric key, sealed, in Redis for exactly the token's lifetime."""
        if self.pending is not None:
            assert ctx.binding.vault is not None  # step 2 refused symmetric keys without one
            ctx.binding.vault.keep(ctx.store, issued.claims["jti"], self.pending, issued.expires_in)


def _confirm_asymmetric(binding: Binding, audiences: Sequence[ResourceServer]) -> Confirmation:
    key = binding.pop_key
    assert key is not None
    alg = http_signature_alg(key.kty, key.crv)
    if any(alg not in rs.pop_signature_algs for rs in audiences):
        raise UnsupportedPoPKeyError("a requested resource server cannot verify signatures made with this key type")
    response: dict[str, Any] = {}
    if len(audiences) == 1:
        rs_key = _signing_key(audiences[0])
        if rs_key is not None:
            response["rs_cnf"] = {"jwk": cnf_jwk(rs_key)}  # RFC 9201 §3.2
    return Confirmation(binding.cnf, "pop", response, binding.headers)


def _signing_key(rs: ResourceServer) -> PublicJWK | None:
    keys = [k for k in (rs.jwks or ()) if k.use == "sig" or k.alg in SIGNING]
    return keys[0] if len(keys) == 1 else None


def _confirm_symmetric(ctx: ServerContext, client: Client, audiences: Sequence[ResourceServer]) -> Confirmation:
    """RFC 9200 §5.8.1; the draft: one key for one resource server, which must be able to
    receive it encrypted (RFC 7800 §3.3), never in clear."""
    if len(audiences) != 1:
        raise InvalidRequestError("a symmetric PoP key is for one resource server: request one resource")
    rs = audiences[0]
    to_rs = encryption_target(rs, rs.access_token_encrypted_response_alg)
    if to_rs is None or "hmac-sha256" not in rs.pop_signature_algs:
        raise UnsupportedPoPKeyError("the resource server cannot receive symmetric PoP keys (no encryption key)")
    key = new_symmetric_key(ctx.hsm)
    to_client = encryption_target(client)
    client_cnf = {"jwe": encrypt_key(key, to_client)} if to_client else {"jwk": key.jwk()}  # the draft's Figures 3 and 2
    return Confirmation({"jwe": encrypt_key(key, to_rs)}, "pop", {"cnf": client_cnf}, {}, key)
