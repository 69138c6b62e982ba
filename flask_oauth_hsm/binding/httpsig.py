"""HTTP Message Signatures (RFC 9421) as the proof of possession of PoP keys, on top of the
``http-message-signatures`` package (its evaluation: docs/proof-of-possession.md).

The package builds signature bases (every RFC 9421 component, Structured Fields through
``http-sf``), checks Content-Digest (RFC 9530) and verifies. What this module adds:

* the algorithm comes from the key, never from the message: the verifier is built for the key's
  algorithm, and an ``alg`` parameter must agree with it (RFC 9421 §3.2 step 6);
* ``keyid`` must name the bound key; exactly one signature (several need a ``tag`` to choose);
* time from :func:`flask_oauth_hsm.clock.now`: ``created`` is required and within the window,
  ``expires`` (if any) not past (RFC 9421 §3.2.1);
* the components a proof must cover, plus ``content-digest`` whenever there is a body, and that
  digest checked against the body.

The single use of ``nonce`` is the caller's (it needs the caller's Store).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from http_message_signatures import HTTPMessageVerifier, InvalidSignature, algorithms
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from .. import clock

ALGORITHMS: dict[str, type[algorithms.HTTPSignatureAlgorithm]] = {
    "hmac-sha256": algorithms.HMAC_SHA256,  # RFC 9421 §3.3.3
    "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,  # §3.3.4
    "ecdsa-p384-sha384": algorithms.ECDSA_P384_SHA384,  # §3.3.5
    "ed25519": algorithms.ED25519,  # §3.3.6
    "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,  # §3.3.1
}
MAX_NONCE_LEN = 256


class SignatureError(Exception):
    """The request carries no acceptable signature; the message says why (logs only)."""


class Lines:
    """Header field lines in order, as the package reads them (and, when signing, writes them)."""

    def __init__(self, lines: Iterable[tuple[str, str]]):
        self.lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return list(self.lines)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self.lines])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self.lines)

    def __setitem__(self, name: str, value: str) -> None:
        del self[name]
        self.lines.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.lines = [(n, v) for n, v in self.lines if n.lower() != name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = [v for n, v in self.lines if n.lower() == name.lower()]
        return ", ".join(values) if values else default


@dataclass
class Message:
    """A request as RFC 9421 sees it: the method, the target URI as the client wrote it, fields."""

    method: str
    url: str
    headers: Lines


@dataclass(frozen=True)
class Rules:
    components: tuple[str, ...]  # always covered; content-digest is added when there is a body
    max_age: int  # seconds a signature may be old (created)
    leeway: int  # clock difference tolerated both ways


@dataclass(frozen=True)
class Signed:
    keyid: str
    created: int
    nonce: str | None


def verify(message: Message, body: bytes, key: Any, alg: str, keyids: Collection[str], rules: Rules) -> Signed:
    """Verify the one signature of ``message`` with ``key`` under ``alg``; raises SignatureError."""
    required = rules.components + (("content-digest",) if body else ())
    verifier = _Verifier(rules, signature_algorithm=ALGORITHMS[alg], key_resolver=_Resolver(key, keyids))
    # The body is checked whenever there is one or a Content-Digest claims one: a digest that is
    # there must be signed and right (the package refuses an unsigned one).
    checked_body = body if body or "Content-Digest" in message.headers else None
    try:
        result = verifier.verify(message, max_age=None, body=checked_body)[0]
    except (InvalidSignature, HTTPMessageSignaturesException, ValueError, TypeError, KeyError) as exc:
        raise SignatureError(f"{type(exc).__name__}: {str(exc)[:120]}") from None
    # Coverage checked here rather than by the package's require_components, which parses the
    # list again on every call (a third of the verification time): a component without
    # parameters is covered when its serialized identifier is.
    missing = [c for c in required if f'"{c}"' not in result.covered_components]
    if missing:
        raise SignatureError(f"Required component {missing[0]} was not covered by the signature")
    params = result.parameters
    nonce = params.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or not 0 < len(nonce) <= MAX_NONCE_LEN):
        raise SignatureError("nonce is empty or too long")
    return Signed(str(params["keyid"]), int(params["created"]), nonce)


class _Resolver:
    """The one key the token is bound to; a keyid naming anything else is refused."""

    def __init__(self, key: Any, keyids: Collection[str]):
        self._key, self._keyids = key, keyids

    def resolve_public_key(self, key_id: str) -> Any:
        if key_id not in self._keyids:
            raise InvalidSignature("keyid does not name the bound key")
        return self._key

    def resolve_private_key(self, key_id: str) -> Any:
        raise InvalidSignature("no private keys here")


class _Verifier(HTTPMessageVerifier):
    """The package's verifier with our clock and window (RFC 9421 §3.2.1)."""

    def __init__(self, rules: Rules, **kwargs: Any):
        super().__init__(**kwargs)
        self._rules = rules

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        now, leeway = clock.now(), self._rules.leeway
        created, expires = sig_input.params.get("created"), sig_input.params.get("expires")
        if type(created) is not int:
            raise InvalidSignature("created is required and must be an integer")
        if created > now + leeway:
            raise InvalidSignature("created is in the future")
        if created < now - self._rules.max_age - leeway:
            raise InvalidSignature("the signature is too old")
        if expires is not None and (type(expires) is not int or expires <= now - leeway):
            raise InvalidSignature("the signature has expired")
