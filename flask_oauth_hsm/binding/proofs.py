"""Step 1 of the binding (binding/__init__.py): what a token request shows before we know who sent
it — the DPoP proof's stateless checks and the PoP request — and the single-use rules shared with
the resource-server helper (proof ``jti``, signature ``nonce``), and the client certificate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Request, g

from .. import events
from ..errors import InvalidDPoPProofError, InvalidRequestError, UseDPoPNonceError
from ..jose.jwk import PublicJWK
from ..store import Replayed
from ..web import Form
from . import dpop, httpsig
from .mtls import ClientCertificate
from .nonces import NonceRequired
from .pop_keys import parse_req_cnf

if TYPE_CHECKING:
    from ..server import ServerContext
    from ..store import Store

DPOP_REPLAY_NAMESPACE = "dpop"
SIGNATURE_NONCE_NAMESPACE = "httpsig-nonce"


@dataclass(frozen=True)
class Proofs:
    dpop: dpop.Proof | None
    pop: bool  # token_type=pop (or req_cnf) was asked for
    pop_key: PublicJWK | None  # the req_cnf key; None with pop: a symmetric key


def read_proofs(ctx: ServerContext, request: Request, form: Form) -> Proofs:
    """Step 1 (binding/__init__.py): checks that need no client identity; raises OAuthError."""
    proof = read_dpop_proof(ctx, request, ctx.binding.token_url)
    pop, key = _pop_request(form)
    if proof is not None and pop:
        raise InvalidRequestError("use either DPoP or token_type=pop, not both")
    return Proofs(proof, pop, key)


def read_dpop_proof(ctx: ServerContext, request: Request, url: str) -> dpop.Proof | None:
    """The request's DPoP proof for our endpoint at ``url`` (the token endpoint; PAR, RFC 9449
    §10.1, once it exists), its stateless checks passed; None without one. Raises OAuthError."""
    b = ctx.binding
    try:
        value = dpop.read_header(request.headers.getlist("DPoP"))
        if value is None:
            return None
        proof = dpop.verify_proof(
            value, method=request.method, url=url, algorithms=b.dpop_algs, max_age=b.dpop_max_age, leeway=b.leeway
        )
        b.nonces.check_presented(proof)  # RFC 9449 §4.3 step 10
        return proof
    except dpop.ProofError as exc:
        raise InvalidDPoPProofError(f"invalid DPoP proof: {exc}") from None
    except NonceRequired as exc:
        raise UseDPoPNonceError(f"use the DPoP-Nonce: {exc}", headers=b.nonces.challenge()) from None


def _pop_request(form: Form) -> tuple[bool, PublicJWK | None]:
    """draft-ietf-oauth-pop-key-distribution-07 §4: ``token_type`` (pop or bearer) and RFC 9201
    §3.1 ``req_cnf``; a ``req_cnf`` alone asks for a pop token too (RFC 9200 §5.8.4.1)."""
    token_type, req_cnf = form.get("token_type"), form.get("req_cnf")
    if token_type is not None and token_type.lower() not in ("pop", "bearer"):
        raise InvalidRequestError("token_type must be pop or bearer")
    if token_type is not None and token_type.lower() == "bearer":
        if req_cnf is not None:
            raise InvalidRequestError("req_cnf asks for a pop token, token_type for a bearer token")
        return False, None
    if token_type is None and req_cnf is None:
        return False, None
    return True, (parse_req_cnf(req_cnf) if req_cnf is not None else None)


# --- single use, and the certificate --------------------------------------------------------------------


def use_proof_once(store: Store, namespace: str, proof: dpop.Proof, max_age: int, leeway: int, who: str | None) -> None:
    """RFC 9449 §11.1: a proof ``jti`` is used once (keyed on the proof key, not on the token bytes),
    with the reset rule; raises ProofError."""
    try:
        store.use_once(
            namespace,
            proof.jkt + "\0" + proof.jti,
            expires_at=proof.iat + max_age + leeway,
            issued_at=proof.iat,
            window=max_age + 2 * leeway,
        )
    except Replayed as exc:
        events.emit(events.replay_detected, what="dpop proof", client_id=who, reason=str(exc))
        raise dpop.ProofError("the proof was used before") from None


def key_ids(key: PublicJWK) -> frozenset[str]:
    """The keyid values that name ``key`` in a signature: its RFC 7638 thumbprint, or its kid."""
    return frozenset({key.thumbprint, *((key.kid,) if key.kid else ())})


def use_signature_nonce_once(store: Store, key_id: str, signed: httpsig.Signed, max_age: int, leeway: int) -> None:
    """RFC 9421 §7.2.2: a signature ``nonce`` is used once per key; raises SignatureError."""
    try:
        store.use_once(
            SIGNATURE_NONCE_NAMESPACE,
            key_id + "\0" + (signed.nonce or ""),
            expires_at=signed.created + max_age + leeway,
            issued_at=signed.created,
            window=max_age + 2 * leeway,
        )
    except Replayed as exc:
        events.emit(events.replay_detected, what="http signature nonce", reason=str(exc))
        raise httpsig.SignatureError("the nonce was used before") from None


def presented_certificate(ctx: ServerContext) -> ClientCertificate | None:
    """The client certificate of this request (from a trusted proxy), read once per request."""
    source = ctx.binding.certificates
    if source is None:
        return None
    if "oauth_hsm_certificate" not in g:
        from flask import request

        g.oauth_hsm_certificate = source.read(request.remote_addr, request.headers)
    cert: ClientCertificate | None = g.oauth_hsm_certificate
    return cert
