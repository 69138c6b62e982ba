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

from .config import Bindings, fits, metadata
from .issued import describe, forget
from .proofs import (
    SIGNATURE_NONCE_NAMESPACE,
    Proofs,
    key_ids,
    presented_certificate,
    read_dpop_proof,
    read_proofs,
    use_proof_once,
    use_signature_nonce_once,
)
from .step import BEARER, Binding, Confirmation, accept_dpop_proof, bind

__all__ = [
    "BEARER",
    "Binding",
    "Bindings",
    "Confirmation",
    "Proofs",
    "SIGNATURE_NONCE_NAMESPACE",
    "accept_dpop_proof",
    "bind",
    "describe",
    "fits",
    "forget",
    "key_ids",
    "metadata",
    "presented_certificate",
    "read_dpop_proof",
    "read_proofs",
    "use_proof_once",
    "use_signature_nonce_once",
]
