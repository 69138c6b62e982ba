"""PKCE (RFC 7636), mandatory for every client and ``S256`` only (OAuth 2.1 §7.5.1, RFC 9700 §2.1.1).

``plain`` and a missing method are refused at the authorization endpoint: ``plain`` protects
nothing against an attacker who reads the authorization request, and RFC 7636 §4.3 makes
``plain`` the default when the method is missing.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from ..errors import InvalidGrantError, InvalidRequestError
from ..jose.compact import b64url_encode

S256 = "S256"
# RFC 7636 §4.1: code-verifier = 43*128unreserved; unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# RFC 7636 §4.2: S256 is BASE64URL(SHA256(verifier)): exactly 43 base64url characters.
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


def check_challenge(challenge: str | None, method: str | None) -> str:
    """The ``code_challenge`` of an authorization request (RFC 7636 §4.3, §4.4.1); raises
    InvalidRequestError, which goes back to the client's redirect URI."""
    if challenge is None:
        raise InvalidRequestError("code_challenge is required (PKCE with S256)")
    if method != S256:
        raise InvalidRequestError("code_challenge_method must be S256")
    if not _S256_CHALLENGE.fullmatch(challenge):
        raise InvalidRequestError("code_challenge is not an S256 challenge")
    return challenge


def challenge_of(verifier: str) -> str:
    return b64url_encode(hashlib.sha256(verifier.encode("ascii")).digest())


def verify(verifier: str | None, challenge: str | None) -> None:
    """RFC 7636 §4.6 at the token endpoint: the verifier must hash to the code's challenge."""
    if challenge is None:
        if verifier is not None:  # OAuth 2.1 §4.1.3: a verifier for a code issued without challenge
            raise InvalidGrantError("code_verifier sent for a code issued without code_challenge")
        return
    if verifier is None:
        raise InvalidGrantError("code_verifier is required (PKCE)")
    if not _VERIFIER.fullmatch(verifier):
        raise InvalidRequestError("code_verifier must be 43-128 unreserved characters (RFC 7636 section 4.1)")
    if not hmac.compare_digest(challenge_of(verifier), challenge):
        raise InvalidGrantError("code_verifier does not match the code_challenge")
