"""Strict parsing shared by JWS (RFC 7515) and JWE (RFC 7516) compact serializations.

Everything here runs before any cryptography: size cap, strict base64url (RFC 7515 §2: no padding,
no stray characters, canonical trailing bits), JSON objects without duplicate member names
(RFC 7515 §5.2 step 4 allows a parser to reject them; we do, as RFC 8725 §3.1 suggests), and
header members we never honour (``crit`` we do not understand, ``b64=false``, ``zip``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from ..errors import MalformedJose, RefusedAlgorithm

# A compact JOSE object larger than this is refused before it is split or decoded. Callers with
# larger legitimate inputs (nested JWE access tokens with cnf.jwe) pass their own cap.
MAX_COMPACT_LEN = 16 * 1024
_B64URL = re.compile(rb"[A-Za-z0-9_-]*")
# RFC 7515 §4.1.11: we implement no extension, so any `crit` is refused.
UNDERSTOOD_CRIT: frozenset[str] = frozenset()


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: str | bytes, what: str = "value") -> bytes:
    """Decode unpadded base64url; refuse padding, other alphabets and non-canonical encodings."""
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    if not _B64URL.fullmatch(raw) or len(raw) % 4 == 1:
        raise MalformedJose(f"{what}: not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise MalformedJose(f"{what}: not unpadded base64url") from None
    # Non-zero unused trailing bits give a second spelling of the same bytes: refuse it, so one
    # token has one encoding (Wycheproof json_web_signature tcId 372/373).
    if base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        raise MalformedJose(f"{what}: non-canonical base64url")
    return data


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise MalformedJose(f"duplicate JSON member {key[:40]!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> None:
    raise MalformedJose(f"JSON constant {name} is not allowed")


# One decoder for every call: json.loads with hooks would build a new JSONDecoder each time.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def parse_json_object(data: bytes, what: str = "JSON") -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object with unique member names (RFC 8259 §4)."""
    try:
        obj = _DECODER.decode(data.decode("utf-8"))
    except MalformedJose:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedJose(f"{what}: not valid JSON") from None
    if not isinstance(obj, dict):
        raise MalformedJose(f"{what}: not a JSON object")
    return obj


def split_compact(token: str | bytes, parts: int, max_len: int = MAX_COMPACT_LEN) -> list[bytes]:
    """Split a compact serialization into its ``parts`` base64url segments (still encoded)."""
    if isinstance(token, str):
        try:
            token = token.encode("ascii")
        except UnicodeEncodeError:
            raise MalformedJose("compact serialization: not ASCII") from None
    if not isinstance(token, bytes):
        raise MalformedJose("compact serialization: not a string")
    if len(token) > max_len:
        raise MalformedJose(f"compact serialization: longer than {max_len} bytes")
    segments = token.split(b".")
    if len(segments) != parts:
        raise MalformedJose(f"compact serialization: expected {parts} parts, got {len(segments)}")
    return segments


def parse_protected_header(segment: bytes) -> dict[str, Any]:
    """Decode and check a protected header; refuse features we never honour."""
    if not segment:
        raise MalformedJose("protected header: empty")
    header = parse_json_object(b64url_decode(segment, "protected header"), "protected header")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise MalformedJose("protected header: alg missing or not a string")
    _check_crit(header)
    if "b64" in header:  # RFC 7797: unencoded payloads are never accepted
        raise RefusedAlgorithm("b64 header parameter is not accepted")
    if "zip" in header:  # RFC 8725 §3.6: compression before encryption leaks plaintext
        raise RefusedAlgorithm("zip header parameter is not accepted")
    for name in ("kid", "typ", "cty", "enc"):
        if name in header and not isinstance(header[name], str):
            raise MalformedJose(f"protected header: {name} is not a string")
    return header


def _check_crit(header: dict[str, Any]) -> None:
    """RFC 7515 §4.1.11: a non-empty list of names present in the header that we understand."""
    if "crit" not in header:
        return
    crit = header["crit"]
    if not isinstance(crit, list) or not crit or not all(isinstance(n, str) for n in crit):
        raise MalformedJose("crit must be a non-empty list of strings")
    unknown = [n for n in crit if n not in UNDERSTOOD_CRIT or n not in header]
    if unknown:
        raise RefusedAlgorithm(f"crit names an extension we do not process: {unknown[0][:40]!r}")


def typ_is(header: dict[str, Any], expected: str) -> bool:
    """Compare ``typ`` per RFC 7515 §4.1.9: case-insensitive, ``application/`` prefix optional."""
    typ = header.get("typ")
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    if typ.startswith("application/"):
        typ = typ[len("application/") :]
    return typ == expected.lower()
