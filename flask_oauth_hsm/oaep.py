"""EME-OAEP decoding (RFC 8017 §7.1.2 step 3) for tokens without a native RSA-OAEP-SHA-256.

The RSA private operation (RSAEP⁻¹) runs in the token through CKM_RSA_X_509; only the padding is
removed here, from the encoded message the token returns. No private key is involved.

Every check is evaluated and combined before the result is used, so the three ways to fail (Y,
label hash, separator) are not told apart by an early return (Manger's attack, RFC 8017 §7.1.2
note). Python gives no constant-time guarantee; the JWE layer additionally substitutes a random
CEK on failure (RFC 7516 §11.5), so the caller sees one outcome whatever went wrong.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from .errors import DecryptionFailed


class _Hash(Protocol):
    @property
    def digest_size(self) -> int: ...

    def digest(self) -> bytes: ...


class HashConstructor(Protocol):
    """What hashlib.sha256 and its siblings are: called with no data, or with the data to hash."""

    def __call__(self, data: bytes = ..., /) -> _Hash: ...


def mgf1(seed: bytes, length: int, hash_fn: HashConstructor) -> bytes:
    """RFC 8017 Appendix B.2.1."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hash_fn(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def oaep_decode(em: bytes, hash_fn: HashConstructor = hashlib.sha256, label: bytes = b"") -> bytes:
    """Return M from the k-octet encoded message EM; raises DecryptionFailed (one message)."""
    h_len = hash_fn().digest_size
    k = len(em)
    if k < 2 * h_len + 2:
        raise DecryptionFailed("decryption error")
    y, masked_seed, masked_db = em[0], em[1 : h_len + 1], em[h_len + 1 :]
    seed = _xor(masked_seed, mgf1(masked_db, h_len, hash_fn))
    db = _xor(masked_db, mgf1(seed, k - h_len - 1, hash_fn))
    label_ok = hmac.compare_digest(db[:h_len], hash_fn(label).digest())
    # Find the 0x01 separator after the zero padding without branching on where it is.
    rest = db[h_len:]
    index, looking, bad_padding = 0, 1, 0
    for i, byte in enumerate(rest):
        is_one = int(byte == 1)
        is_zero = int(byte == 0)
        index |= looking * is_one * i
        bad_padding |= looking * (1 - is_one) * (1 - is_zero)
        looking &= 1 - is_one
    if y != 0 or not label_ok or looking or bad_padding:
        raise DecryptionFailed("decryption error")
    return rest[index + 1 :]
