"""Shared helpers for the data-driven JOSE tests against published vectors.

Used by tests/test_vectors_*.py and tests/test_jose_roundtrip.py. The vectors themselves are data
written by others (/work/shared/vectors, see its README.md): they are read, never trusted as code.

Conventions of these tests
--------------------------
* Every case is *classified* statically from the vector data before it runs:

  - ``MATCH``       our outcome must equal the vector's ``result`` (valid -> accepted,
                    invalid -> refused with a :class:`JoseError` subclass, nothing else);
  - ``UNSUPPORTED`` the case uses an algorithm / serialization outside our profile (HS*, RSA1_5,
                    A*KW, dir, PBES2, A192*, A*CBC-HS384/512, JSON serialization ...): it must be
                    refused with RefusedAlgorithm or MalformedJose whatever the vector expects;
  - ``DIVERGENCE``  listed by tcId in the test module with the reason: the vector expects
                    leniency, we refuse on purpose; the test asserts we refuse;
  - ``OUT_OF_PROFILE`` (primitive files only) parameters JOSE never uses (OAEP labels, GCM IVs
                    other than 96 bits, 192-bit AES keys, ...): asserted refused where reachable;
  - ``ACCEPTABLE``  Wycheproof "acceptable": either way is fine, the test records which way we go.

* Keys from vectors that must be used *privately* are imported into a SoftHSM token of the test
  module's own (:class:`VectorToken`), so decryption and key agreement run through the same
  PKCS#11 path as production keys. All keys are imported before the module's HSM is created.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

import support
from flask_oauth_hsm.algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT, SIGNING
from flask_oauth_hsm.errors import JoseError

VECTORS_DIR = Path(os.environ.get("OAUTH_HSM_VECTORS", "/work/shared/vectors"))
WYCHEPROOF_DIR = VECTORS_DIR / "wycheproof" / "testvectors_v1"
COOKBOOK_DIR = VECTORS_DIR / "jose-cookbook"

SIGNING_ALGS: tuple[str, ...] = tuple(SIGNING)
KEY_MANAGEMENT_ALGS: tuple[str, ...] = tuple(KEY_MANAGEMENT)
ENCRYPTIONS: tuple[str, ...] = tuple(CONTENT_ENCRYPTION)

MATCH = "match"
UNSUPPORTED = "unsupported"
DIVERGENCE = "divergence"
OUT_OF_PROFILE = "out-of-profile"
ACCEPTABLE = "acceptable"
CATEGORIES = (MATCH, UNSUPPORTED, DIVERGENCE, OUT_OF_PROFILE, ACCEPTABLE)

_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def skip_without_vectors() -> None:
    """Module-level skip with a clear reason when the shared vector directory is missing."""
    if not WYCHEPROOF_DIR.is_dir() or not COOKBOOK_DIR.is_dir():
        pytest.skip(f"published JOSE vectors not found under {VECTORS_DIR}", allow_module_level=True)


# --- loading ---------------------------------------------------------------------------------------


def load_json(path: Path | str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def wycheproof(name: str) -> dict:
    return load_json(WYCHEPROOF_DIR / name)


def cookbook(relative: str) -> dict:
    return load_json(COOKBOOK_DIR / relative)


def wycheproof_cases(data: dict) -> list[tuple[int, dict, dict]]:
    """(group index, group, test) for every test of a Wycheproof file, in file order."""
    return [(gi, group, test) for gi, group in enumerate(data["testGroups"]) for test in group["tests"]]


def check_count(data: dict) -> int:
    """The file's declared numberOfTests, checked against the tests actually present."""
    declared = data["numberOfTests"]
    present = sum(len(g["tests"]) for g in data["testGroups"])
    assert declared == present, f"vector file declares {declared} tests but holds {present}"
    return declared


# --- lenient decoding (test side only: to *classify* cases, never to verify them) -------------------


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_lenient(value: str) -> bytes:
    raw = value.strip().rstrip("=")
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))


def lenient_header(token: Any) -> dict | None:
    """Best-effort protected header of a compact or JSON-serialized JWS/JWE, or None."""
    try:
        if isinstance(token, dict):
            protected = token.get("protected")
            if protected is None and token.get("signatures"):
                protected = token["signatures"][0].get("protected")
        elif isinstance(token, str) and token.lstrip().startswith("{"):
            return lenient_header(json.loads(token))
        else:
            protected = token.split(".")[0]
        header = json.loads(b64u_lenient(protected))
        return header if isinstance(header, dict) else None
    except (ValueError, TypeError, AttributeError, binascii.Error, UnicodeDecodeError, IndexError):
        return None


def is_compact(token: Any) -> bool:
    return isinstance(token, str) and not token.lstrip().startswith("{")


# --- keys ------------------------------------------------------------------------------------------


def public_part(jwk_dict: dict) -> dict:
    """A JWK without its private members (the public half our loader accepts)."""
    return {k: v for k, v in jwk_dict.items() if k not in _PRIVATE_MEMBERS}


def _int(value: str) -> int:
    return int.from_bytes(b64u_lenient(value), "big")


_CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
_CURVE_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66}


def private_key_from_jwk(jwk_dict: dict):
    """A ``cryptography`` private key from a private JWK (test vectors only)."""
    kty = jwk_dict["kty"]
    if kty == "RSA":
        public = rsa.RSAPublicNumbers(_int(jwk_dict["e"]), _int(jwk_dict["n"]))
        return rsa.RSAPrivateNumbers(
            _int(jwk_dict["p"]),
            _int(jwk_dict["q"]),
            _int(jwk_dict["d"]),
            _int(jwk_dict["dp"]),
            _int(jwk_dict["dq"]),
            _int(jwk_dict["qi"]),
            public,
        ).private_key()
    if kty == "EC":
        return ec.derive_private_key(_int(jwk_dict["d"]), _CURVES[jwk_dict["crv"]]())
    if kty == "OKP":
        cls = {"Ed25519": ed25519.Ed25519PrivateKey, "X25519": x25519.X25519PrivateKey}[jwk_dict["crv"]]
        return cls.from_private_bytes(b64u_lenient(jwk_dict["d"]))
    raise ValueError(f"no private key for kty {kty!r}")


def ec_jwk_from_uncompressed(crv: str, uncompressed_hex: str) -> dict:
    """Public EC JWK (fixed-length coordinates, RFC 7518 §6.2.1.2) from an X9.62 point in hex."""
    point = bytes.fromhex(uncompressed_hex)
    size = _CURVE_BYTES[crv]
    assert point[0] == 4 and len(point) == 1 + 2 * size
    return {"kty": "EC", "crv": crv, "x": b64u(point[1 : 1 + size]), "y": b64u(point[1 + size :])}


# --- outcomes ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one call of our JOSE layer did: accepted with a value, or refused with a JoseError.

    Any exception that is not a JoseError propagates out of :func:`attempt` and fails the test:
    hostile input must never leak another exception type (or crash).
    """

    accepted: bool
    value: Any = None
    error: JoseError | None = None

    @property
    def error_name(self) -> str:
        return type(self.error).__name__ if self.error is not None else "-"


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome:
    try:
        return Outcome(True, fn(*args, **kwargs))
    except JoseError as exc:
        return Outcome(False, error=exc)


class KeySelectionForbidden(AssertionError):
    """Raised by a key resolver that must not be reached (refusal must come earlier)."""


def forbid_key_selection(header: dict) -> Any:
    raise KeySelectionForbidden(f"key selection reached for a case that must be refused first: {header!r}")


@dataclass
class Tally:
    """Counts per category for one vector file (what docs/jose-conformance.md reports)."""

    counts: collections.Counter = field(default_factory=collections.Counter)
    divergent: list[int] = field(default_factory=list)

    def add(self, category: str, tc_id: int | None = None) -> None:
        assert category in CATEGORIES, category
        self.counts[category] += 1
        if category == DIVERGENCE and tc_id is not None:
            self.divergent.append(tc_id)

    def as_dict(self) -> dict[str, int]:
        return {c: self.counts[c] for c in CATEGORIES if self.counts[c]}

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# --- a token of the test module's own, for vector keys ---------------------------------------------


class VectorToken:
    """A fresh SoftHSM token holding published vector keys, imported sensitive and non-extractable.

    Import every key first (:meth:`add`, through ``support.import_private_key``), then :meth:`open`
    the HSM: no HSM is logged in to this token while imports run. A key in the token is bound to
    exactly one JOSE alg, so the same key material used with two algs is imported twice under two
    labels (deduplicated by RFC 7638 thumbprint and alg).
    """

    def __init__(self, token_label: str):
        assert len(token_label) <= 32, "PKCS#11 token labels have at most 32 characters"
        self.token_label = token_label
        self._labels: dict[tuple[str, str], str] = {}
        self.hsm = None
        support.init_token(token_label)

    def add(self, private_key: Any, alg: str, use: str) -> str:
        """Import ``private_key`` for ``alg`` (once per key and alg); returns its label."""
        from flask_oauth_hsm.jose.jwk import thumbprint

        if self.hsm is not None:
            raise RuntimeError("import every vector key before opening the HSM")
        tp = thumbprint(private_key.public_key())
        label = self._labels.get((tp, alg))
        if label is None:
            label = f"v-{alg}-{tp[:16]}"
            support.import_private_key(support.USER_PIN, self.token_label, label, private_key, alg, use)
            self._labels[(tp, alg)] = label
        return label

    def open(self):
        from flask_oauth_hsm.hsm import HSM, HSMConfig

        self.hsm = HSM(HSMConfig(module=support.SOFTHSM_MODULE, token_label=self.token_label, pin=support.USER_PIN))
        return self.hsm

    def key(self, label: str):
        assert self.hsm is not None, "open() the token first"
        return self.hsm.key(label)

    def close(self) -> None:
        """Close this module's sessions (the process-wide PKCS#11 module stays initialised)."""
        if self.hsm is not None:
            self.hsm.close()


class CountingDecrypter:
    """A real token key, counting how often the token is asked for a private-key operation.

    Not a mock: every call goes to the token. Used to prove hostile input is refused *before* the
    token sees it (invalid-curve points, RSA1_5, ...).
    """

    def __init__(self, token_key: Any):
        self._key = token_key
        self.alg, self.kty, self.crv, self.size = token_key.alg, token_key.kty, token_key.crv, token_key.size
        self.calls = 0

    def ecdh(self, peer_point: bytes) -> bytes:
        self.calls += 1
        return self._key.ecdh(peer_point)

    def rsa_decrypt(self, ciphertext: bytes) -> bytes:
        self.calls += 1
        return self._key.rsa_decrypt(ciphertext)
