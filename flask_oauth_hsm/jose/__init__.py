"""Compact JOSE for flask-oauth-hsm: private-key operations in the token, the rest in software.

Modules: :mod:`.compact` (strict parsing), :mod:`.jwk` (public keys, RFC 7638 thumbprints),
:mod:`.jws` (RFC 7515), :mod:`.jwe` (RFC 7516), :mod:`.jwt` (RFC 7519 claims and nesting).
"""

from . import compact, jwe, jwk, jws, jwt

__all__ = ["compact", "jwe", "jwk", "jws", "jwt"]
