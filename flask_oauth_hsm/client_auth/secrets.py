"""Client secrets: stored hashed (never in clear), compared in constant time (RFC 6749 §2.3.1).

``sha256`` suits generated secrets (≥ 256 bits of entropy: nothing to brute-force);
``pbkdf2-sha256`` suits human-chosen ones (NIST SP 800-132, 600,000 iterations).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from ..jose import compact
from .base import AuthFailure

PBKDF2_ITERATIONS = 600_000
_DUMMY = "sha256:" + "A" * 43


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hash_secret(secret: str, scheme: str = "sha256") -> str:
    """The registry form of a client secret."""
    if scheme == "sha256":
        return "sha256:" + _b64(hashlib.sha256(secret.encode()).digest())
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, PBKDF2_ITERATIONS)
    return f"pbkdf2-sha256:{PBKDF2_ITERATIONS}:{_b64(salt)}:{_b64(digest)}"


def verify_secret(secret: str, stored: str | None) -> None:
    """Raise AuthFailure unless ``secret`` matches ``stored``; a missing hash still costs a
    comparison against a dummy one."""
    stored = stored or _DUMMY
    if stored.startswith("sha256:"):
        actual = hashlib.sha256(secret.encode()).digest()
        expected = compact.b64url_decode(stored[7:])
    else:
        _, iterations, salt, digest = stored.split(":")
        expected = compact.b64url_decode(digest)
        actual = hashlib.pbkdf2_hmac("sha256", secret.encode(), compact.b64url_decode(salt), int(iterations))
    if not hmac.compare_digest(actual, expected) or stored is _DUMMY:
        raise AuthFailure("wrong secret")
