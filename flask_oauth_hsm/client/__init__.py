"""Client side, keys in the client's own PKCS#11 token: Authlib auth classes for ``requests`` and
``httpx`` that sign ``private_key_jwt`` assertions and DPoP proofs in the token, and sign RFC 9421
requests with a distributed PoP key (docs/proof-of-possession.md, "Clients").

Only :mod:`.sessions` imports Authlib itself; the rest works with plain ``requests``/``httpx``.
"""

from .assertions import HSMPrivateKeyJWT
from .dpop import DPoPAuth, DPoPClientAuth, DPoPKey
from .signatures import HSMPoPKey, HTTPSignatureAuth, PoPClientAuth, SymmetricPoPKey, sign_message

__all__ = [
    "DPoPAuth",
    "DPoPClientAuth",
    "DPoPKey",
    "HSMPoPKey",
    "HSMPrivateKeyJWT",
    "HTTPSignatureAuth",
    "PoPClientAuth",
    "SymmetricPoPKey",
    "sign_message",
]
