"""DPoP server nonces (RFC 9449 §8 at the token endpoint, §9 at resource servers).

Stateless, so that every worker and every host accepts what any of them issued without sharing
state: a nonce is ``base64url(slot ‖ HMAC-SHA-256(K, "dpop-nonce" ‖ audience ‖ slot)[:16])`` where
``slot = ⌊now / step⌋`` and ``step`` is half the lifetime. ``K`` is an HMAC key in the HSM (hosts
sharing the HSM share it; its value never leaves the token). A nonce is accepted while its slot
began at most ``lifetime`` ago (and at most ``skew`` ahead, for hosts whose clocks run ahead);
a new one is issued every ``step`` seconds: nonces expire and rotate by construction. The HMAC
is deterministic, so each process computes the nonce of a slot once and then compares strings.

The ``audience`` (our issuer, or a resource server's URI) keeps a nonce of one server from
being accepted by another that shares the key.

Policy (``OAUTH_HSM_DPOP_NONCE`` / ``OAUTH_HSM_RS_DPOP_NONCE``): ``required``; ``optional`` — a
nonce is offered in every ``DPoP-Nonce`` header, and once a client has been given one, proofs
without a nonce are refused (no downgrade: a client cannot fall back to proofs it pre-computed);
``off`` — only clients registered with ``dpop_nonce_required``. A proof carrying a nonce is
always checked, whatever the mode.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import clock
from ..errors import MalformedJose
from ..jose.compact import b64url_decode, b64url_encode
from .dpop import Proof

if TYPE_CHECKING:
    from ..hsm import TokenSecretKey
    from ..store import Store

_SLOT_BYTES, _MAC_BYTES = 8, 16
MAX_NONCE_LEN = 64
# How long "this client was given a nonce" is remembered (optional mode): long enough that a
# client that stops using nonces is noticed, short enough that Redis forgets idle clients.
NONCE_GIVEN_TTL = 30 * 86400


class NonceRequired(Exception):
    """The proof must carry a (fresh) server nonce: answer use_dpop_nonce with a new one."""


class NonceIssuer:
    """Issues and checks the stateless nonces of one audience (module docstring)."""

    def __init__(self, key: TokenSecretKey, audience: str, lifetime: int, skew: int):
        self._key, self._label = key, b"dpop-nonce\0" + audience.encode() + b"\0"
        self.lifetime, self.step, self.skew = lifetime, max(1, lifetime // 2), skew
        self._cache: dict[int, str] = {}
        self._lock = threading.Lock()

    def current(self) -> str:
        return self._for_slot(int(clock.now() // self.step))

    def accepts(self, nonce: str) -> bool:
        if len(nonce) > MAX_NONCE_LEN:
            return False
        try:
            raw = b64url_decode(nonce, "nonce")
        except MalformedJose:
            return False
        if len(raw) != _SLOT_BYTES + _MAC_BYTES:
            return False
        slot = int.from_bytes(raw[:_SLOT_BYTES], "big")
        issued, now = slot * self.step, clock.now()
        if issued > now + self.skew or issued + self.lifetime <= now:
            return False  # expired, or from too far ahead: checked before the HSM is asked
        return hmac.compare_digest(nonce, self._for_slot(slot))

    def _for_slot(self, slot: int) -> str:
        nonce = self._cache.get(slot)
        if nonce is None:
            slot_bytes = slot.to_bytes(_SLOT_BYTES, "big")
            nonce = b64url_encode(slot_bytes + self._key.hmac_sha256(self._label + slot_bytes)[:_MAC_BYTES])
            with self._lock:
                self._cache[slot] = nonce
                for old in sorted(self._cache)[:-4]:  # a few slots are ever valid at once
                    del self._cache[old]
        return nonce


@dataclass(frozen=True)
class NoncePolicy:
    """When a proof must carry a nonce (module docstring); ``issuer`` is None without a key."""

    mode: str  # off | optional | required
    issuer: NonceIssuer | None
    namespace: str  # the Store namespace of "this client was given a nonce"

    def check_presented(self, proof: Proof) -> None:
        """Before we know the client: a nonce that is there must be ours and fresh; none at all
        is refused in ``required`` mode. Raises NonceRequired."""
        if proof.nonce is not None and self.issuer is not None:
            if not self.issuer.accepts(proof.nonce):
                raise NonceRequired("the nonce is unknown or expired")
        elif proof.nonce is None and self.mode == "required":
            raise NonceRequired("a nonce is required")

    def check_client(self, store: Store | None, proof: Proof, who: str, client_requires: bool = False) -> None:
        """Once the client is known: its own requirement, and no downgrade in optional mode."""
        if proof.nonce is not None or self.issuer is None:
            return
        if client_requires:
            raise NonceRequired("this client must use nonces")
        if self.mode == "optional" and store is not None and store.read(self.namespace, who) is not None:
            raise NonceRequired("this client was given a nonce before: no downgrade")

    def offer(self, store: Store | None, who: str, client_requires: bool = False) -> dict[str, str]:
        """The ``DPoP-Nonce`` header of a successful answer (§8.2), remembering that ``who`` got it."""
        if self.issuer is None or (self.mode == "off" and not client_requires):
            return {}
        if self.mode == "optional" and store is not None:
            store.mark(self.namespace, who, NONCE_GIVEN_TTL)
        return {"DPoP-Nonce": self.issuer.current()}

    def challenge(self) -> dict[str, str]:
        """The header of a use_dpop_nonce answer: a fresh nonce."""
        return {"DPoP-Nonce": self.issuer.current()} if self.issuer is not None else {}
