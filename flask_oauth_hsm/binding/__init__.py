"""Sender-constrained access tokens: DPoP (RFC 9449), PoP key distribution (RFC 9200/9201,
draft-ietf-oauth-pop-key-distribution-07) and certificate-bound tokens (RFC 8705).

One code path binds the token of every grant (the token endpoint runs it; grants only read it):

1. :func:`read_proofs` — before client authentication: the DPoP proof's stateless checks,
   including the nonce's freshness (so ``use_dpop_nonce`` never costs a client its one-time
   assertion), and ``token_type``/``req_cnf`` parsed;
2. :func:`bind` — once the client is known: its registered policy, the proof ``jti`` used once,
   the PoP request signature verified. The result, a :class:`Binding`, is ``TokenRequest.binding``
   (``cnf``, ``jkt``) for the grant;
3. :meth:`Binding.confirm` — once the grant chose the audiences: each can verify this kind of
   proof; a symmetric key is made. The :class:`Confirmation` holds the token's ``cnf``, the
   ``token_type`` and what the response adds;
4. :meth:`Confirmation.keep` — once the token is signed: the symmetric key goes to Redis. If that
   fails nothing is returned (503), and a token whose key record is gone is invalid.

Introspection (:func:`describe`) and revocation (:func:`forget`) read the same bindings back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from flask import Request, g

from .. import events
from ..algorithms import SIGNING, http_signature_alg
from ..clients import Client, Credentials, IPNetwork, ResourceServer
from ..errors import (
    ConfigError,
    InvalidDPoPProofError,
    InvalidRequestError,
    KeyNotFound,
    UnsupportedPoPKeyError,
    UseDPoPNonceError,
)
from ..jose.jwk import PublicJWK
from ..store import Replayed
from ..web import Form
from . import dpop, httpsig
from .mtls import CertificateSource, ClientCertificate
from .nonces import NonceIssuer, NoncePolicy, NonceRequired
from .pop_keys import KeyVault, SymmetricKey, cnf_jwk, encrypt_key, encryption_target, new_symmetric_key, parse_req_cnf

if TYPE_CHECKING:
    from ..hsm import HSM, TokenSecretKey
    from ..server import ServerContext, Urls
    from ..settings import Settings
    from ..store import Store
    from ..tokens.access import IssuedToken

__all__ = ["BEARER", "Binding", "Bindings", "Confirmation", "Proofs", "accept_dpop_proof", "bind", "describe", "fits",
           "forget", "metadata", "read_dpop_proof", "read_proofs"]

DPOP_REPLAY_NAMESPACE = "dpop"
SIGNATURE_NONCE_NAMESPACE = "httpsig-nonce"


@dataclass(frozen=True)
class Bindings:
    """This app's configuration and keys for sender-constrained tokens (``ServerContext.binding``)."""

    token_url: str  # htu and @target-uri of token requests: our public URL, never the Host header
    dpop_algs: tuple[str, ...]
    dpop_max_age: int
    leeway: int
    nonces: NoncePolicy
    vault: KeyVault | None  # None: no symmetric PoP keys
    certificates: CertificateSource | None  # None: no mTLS
    signature_max_age: int

    @classmethod
    def setup(cls, settings: "Settings", hsm: "HSM", urls: "Urls", trusted: tuple[IPNetwork, ...]) -> "Bindings":
        """Built once by init_app; a configured key that is missing stops start-up."""
        nonce_key = _secret_key(hsm, settings.dpop_nonce_key, "OAUTH_HSM_DPOP_NONCE_KEY", "hmac")
        issuer = NonceIssuer(nonce_key, settings.issuer, settings.dpop_nonce_lifetime, settings.clock_skew) if nonce_key else None
        wrap_key = _secret_key(hsm, settings.pop_key_wrap_key, "OAUTH_HSM_POP_KEY_WRAP_KEY", "aes")
        certificates = None
        if settings.mtls_cert_header:
            certificates = CertificateSource(settings.mtls_cert_header, settings.mtls_verify_header, trusted)
        return cls(urls.token, settings.dpop_algs, settings.dpop_proof_max_age, settings.clock_skew,
                   NoncePolicy(settings.dpop_nonce, issuer, "dpop-nonce-given"), KeyVault(wrap_key) if wrap_key else None,
                   certificates, settings.http_signature_max_age)


def _secret_key(hsm: "HSM", label: str | None, variable: str, kind: str) -> "TokenSecretKey | None":
    if label is None:
        return None
    try:
        key = hsm.secret_key(label)
    except KeyNotFound as exc:
        raise KeyNotFound(f"{variable}: {exc} (`flask oauth-hsm keys generate-secret --kind {kind} --label {label}` "
                          "creates it)") from None
    if key.kind != kind:
        raise ConfigError(f"{variable}: secret key {label!r} is an {key.kind} key, not {kind}")
    return key


def fits(settings: "Settings", entity: Credentials) -> None:
    """Start-up check (clients/fit.py): a registration this server's settings could never serve."""
    where = f"OAUTH_HSM_REGISTRY: {entity.client_id!r}"
    if entity.token_endpoint_auth_method in ("tls_client_auth", "self_signed_tls_client_auth") and not settings.mtls_cert_header:
        raise ConfigError(f"{where} uses {entity.token_endpoint_auth_method}, but OAUTH_HSM_MTLS_CERT_HEADER is not set")
    if entity.token_endpoint_auth_method == "tls_client_auth" and not settings.mtls_verify_header:
        raise ConfigError(f"{where} uses tls_client_auth, which needs the proxy's chain verification "
                          "(OAUTH_HSM_MTLS_VERIFY_HEADER)")
    if not isinstance(entity, Client):
        return
    if entity.tls_client_certificate_bound_access_tokens and not settings.mtls_cert_header:
        raise ConfigError(f"{where} wants certificate-bound tokens, but OAUTH_HSM_MTLS_CERT_HEADER is not set")
    if entity.dpop_nonce_required and not settings.dpop_nonce_key:
        raise ConfigError(f"{where} requires DPoP nonces, but OAUTH_HSM_DPOP_NONCE_KEY is not set")
    if "symmetric" in entity.pop_keys and not settings.pop_key_wrap_key:
        raise ConfigError(f"{where} may get symmetric PoP keys, but OAUTH_HSM_POP_KEY_WRAP_KEY is not set")


# --- step 1: what the request shows ----------------------------------------------------------------


@dataclass(frozen=True)
class Proofs:
    dpop: dpop.Proof | None
    pop: bool  # token_type=pop (or req_cnf) was asked for
    pop_key: PublicJWK | None  # the req_cnf key; None with pop: a symmetric key


def read_proofs(ctx: "ServerContext", request: Request, form: Form) -> Proofs:
    """Step 1 (module docstring): checks that need no client identity; raises OAuthError."""
    proof = read_dpop_proof(ctx, request, ctx.binding.token_url)
    pop, key = _pop_request(form)
    if proof is not None and pop:
        raise InvalidRequestError("use either DPoP or token_type=pop, not both")
    return Proofs(proof, pop, key)


def read_dpop_proof(ctx: "ServerContext", request: Request, url: str) -> dpop.Proof | None:
    """The request's DPoP proof for our endpoint at ``url`` (the token endpoint; PAR, RFC 9449
    §10.1, once it exists), its stateless checks passed; None without one. Raises OAuthError."""
    b = ctx.binding
    try:
        value = dpop.read_header(request.headers.getlist("DPoP"))
        if value is None:
            return None
        proof = dpop.verify_proof(value, method=request.method, url=url, algorithms=b.dpop_algs,
                                  max_age=b.dpop_max_age, leeway=b.leeway)
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

    def confirm(self, ctx: "ServerContext", client: Client, audiences: Sequence[ResourceServer]) -> "Confirmation":
        """Step 3 (module docstring); raises OAuthError."""
        if self.method != "pop":
            return Confirmation(self.cnf, self.token_type, {}, self.headers)
        if self.symmetric:
            return _confirm_symmetric(ctx, client, audiences)
        return _confirm_asymmetric(self, audiences)


BEARER = Binding("bearer")


def bind(ctx: "ServerContext", request: Request, form: Form, proofs: Proofs, client: Client) -> Binding:
    """Step 2 (module docstring); raises OAuthError."""
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


def _bind_dpop(ctx: "ServerContext", proof: dpop.Proof, client: Client) -> Binding:
    headers = accept_dpop_proof(ctx, proof, client)
    return Binding("dpop", {"jkt": proof.jkt}, "DPoP", headers=headers)


def accept_dpop_proof(ctx: "ServerContext", proof: dpop.Proof, client: Client) -> dict[str, str]:
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


def use_proof_once(store: "Store", namespace: str, proof: dpop.Proof, max_age: int, leeway: int, who: str | None) -> None:
    """RFC 9449 §11.1: a proof ``jti`` is used once (keyed on the proof key, not on the token bytes),
    with the reset rule; raises ProofError."""
    try:
        store.use_once(namespace, proof.jkt + "\0" + proof.jti, expires_at=proof.iat + max_age + leeway,
                       issued_at=proof.iat, window=max_age + 2 * leeway)
    except Replayed as exc:
        events.emit(events.replay_detected, what="dpop proof", client_id=who, reason=str(exc))
        raise dpop.ProofError("the proof was used before") from None


def _bind_pop(ctx: "ServerContext", request: Request, form: Form, key: PublicJWK | None, client: Client) -> Binding:
    kind = "asymmetric" if key is not None else "symmetric"
    if kind not in client.pop_keys:
        raise InvalidRequestError(f"this client may not request pop tokens with {kind} keys")
    if key is None:
        if ctx.binding.vault is None:
            raise InvalidRequestError("this server does not distribute symmetric PoP keys")
        return Binding("pop", None, "pop", symmetric=True)
    _verify_possession(ctx, request, form, key)
    return Binding("pop", {"jwk": cnf_jwk(key)}, "pop", pop_key=key)


def _verify_possession(ctx: "ServerContext", request: Request, form: Form, key: PublicJWK) -> None:
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
        raise InvalidRequestError("sign the token request with the req_cnf key (RFC 9421: @method, @target-uri, "
                                  "content-digest, created)") from None
    if signed.nonce is not None:
        try:
            use_signature_nonce_once(ctx.store, key.thumbprint, signed, b.signature_max_age, b.leeway)
        except httpsig.SignatureError:
            raise InvalidRequestError("the signature nonce was used before") from None


def key_ids(key: PublicJWK) -> frozenset[str]:
    """The keyid values that name ``key`` in a signature: its RFC 7638 thumbprint, or its kid."""
    return frozenset({key.thumbprint, *((key.kid,) if key.kid else ())})


def use_signature_nonce_once(store: "Store", key_id: str, signed: httpsig.Signed, max_age: int, leeway: int) -> None:
    """RFC 9421 §7.2.2: a signature ``nonce`` is used once per key; raises SignatureError."""
    try:
        store.use_once(SIGNATURE_NONCE_NAMESPACE, key_id + "\0" + (signed.nonce or ""),
                       expires_at=signed.created + max_age + leeway, issued_at=signed.created, window=max_age + 2 * leeway)
    except Replayed as exc:
        events.emit(events.replay_detected, what="http signature nonce", reason=str(exc))
        raise httpsig.SignatureError("the nonce was used before") from None


def presented_certificate(ctx: "ServerContext") -> ClientCertificate | None:
    """The client certificate of this request (from a trusted proxy), read once per request."""
    source = ctx.binding.certificates
    if source is None:
        return None
    if "oauth_hsm_certificate" not in g:
        from flask import request

        g.oauth_hsm_certificate = source.read(request.remote_addr, request.headers)
    cert: ClientCertificate | None = g.oauth_hsm_certificate
    return cert


def _bind_certificate(ctx: "ServerContext") -> Binding:
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

    def keep(self, ctx: "ServerContext", issued: "IssuedToken") -> None:
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


def _confirm_symmetric(ctx: "ServerContext", client: Client, audiences: Sequence[ResourceServer]) -> Confirmation:
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


# --- introspection, revocation, metadata ---------------------------------------------------------------


def describe(ctx: "ServerContext", claims: Mapping[str, Any], rs: ResourceServer) -> tuple[str, Mapping[str, Any] | None] | None:
    """``token_type`` and ``cnf`` for an introspection answer to ``rs``; None: not active (a
    symmetric key whose record is gone, or that cannot be encrypted to this resource server)."""
    cnf = claims.get("cnf")
    if cnf is None:
        return "Bearer", None
    if not isinstance(cnf, dict):
        return None
    if "jkt" in cnf:
        return "DPoP", cnf  # RFC 9449 §6.2
    if "x5t#S256" in cnf:
        return "Bearer", cnf  # RFC 8705 §3.2
    if "jwk" in cnf:
        return "pop", cnf
    vault = ctx.binding.vault
    key = vault.fetch(ctx.store, str(claims.get("jti"))) if vault is not None and "jwe" in cnf else None
    to_rs = encryption_target(rs, rs.access_token_encrypted_response_alg)
    if key is None or to_rs is None:
        return None
    return "pop", {"jwe": encrypt_key(key, to_rs)}


def forget(ctx: "ServerContext", claims: Mapping[str, Any]) -> None:
    """A revoked token's symmetric key leaves Redis at once."""
    cnf = claims.get("cnf")
    if isinstance(cnf, dict) and "jwe" in cnf and ctx.binding.vault is not None:
        ctx.binding.vault.drop(ctx.store, str(claims.get("jti")))


def metadata(ctx: "ServerContext") -> dict[str, Any]:
    """What the token endpoint enforces (RFC 9449 §5.1, RFC 8705 §3.3, and our PoP members)."""
    b = ctx.binding
    symmetric = b.vault is not None
    meta: dict[str, Any] = {
        "dpop_signing_alg_values_supported": list(b.dpop_algs),
        "pop_key_types_supported": ["asymmetric", "symmetric"] if symmetric else ["asymmetric"],
        "pop_signature_alg_values_supported": [a for a in httpsig.ALGORITHMS if symmetric or a != "hmac-sha256"],
    }
    if b.certificates is not None:
        meta["tls_client_certificate_bound_access_tokens"] = True
    return meta
