"""URI comparison for ``htu`` (RFC 9449 §4.3 step 9): RFC 3986 §6.2.2 syntax-based and §6.2.3
scheme-based normalisation, with the query and fragment left out.

Both sides are normalised the same way: case of scheme and host, percent-encoding (upper-case hex,
unreserved characters decoded), dot segments, the default port and an empty path. Anything we
cannot parse as an http(s) URI with a host normalises to None and never matches.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URI_LEN = 4096


def _normalise_percent(text: str) -> str:
    """RFC 3986 §6.2.2.1 (upper-case hex) and §6.2.2.2 (decode unreserved characters)."""

    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _PERCENT.sub(fix, text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4."""
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    if path.split("/")[-1] in (".", ".."):
        output.append("")  # a trailing dot segment leaves a trailing slash
    return "/" + "/".join(output)


@lru_cache(maxsize=256)
def normalise(uri: str) -> str | None:
    """``scheme://host[:port]/path`` of an http(s) URI, normalised; None if it is not one."""
    if len(uri) > MAX_URI_LEN or any(c in uri for c in " \t\r\n\\"):
        return None
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    host = _normalise_percent(host).lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    authority = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _remove_dot_segments(_normalise_percent(parts.path)) if parts.path else "/"
    return f"{scheme}://{authority}{path}"


def same_resource(presented: str, expected: str) -> bool:
    """RFC 9449 §4.3 step 9: equal after normalisation, ignoring query and fragment."""
    a, b = normalise(presented), normalise(expected)
    return a is not None and a == b
