"""Reading requests: bounded form bodies and query strings with the OAuth parameter rules.

RFC 6749 §3.1 and §3.2: parameters are sent at most once (except where their RFC says otherwise:
``resource``, RFC 8707 §2), and parameters sent without a value are treated as omitted. Token
requests are ``application/x-www-form-urlencoded``; we read at most ``max_bytes`` of the body
(whatever Content-Length claims), so an oversized or endless body costs bounded memory and time.
"""

from __future__ import annotations

from urllib.parse import unquote

from flask import Request

from ..errors import InvalidRequestError, MethodNotAllowedError, RequestTooLargeError

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 32


def require_post(request: Request) -> None:
    if request.method != "POST":
        raise MethodNotAllowedError("use POST", headers={"Allow": "POST"})


class Form(dict[str, str]):
    """Parameters, each at most once; names allowed to repeat keep every value in ``multi``."""

    def __init__(self, single: dict[str, str], multi: dict[str, list[str]]):
        super().__init__(single)
        self.multi = multi
        self.body = b""  # the raw body it was read from (RFC 9421 Content-Digest needs the bytes)

    def getlist(self, name: str) -> list[str]:
        return self.multi.get(name, [self[name]] if name in self else [])


def parse_params(text: str, repeatable: frozenset[str] = frozenset(), max_fields: int = MAX_FIELDS) -> Form:
    """Parameters of a form body or query string; raises InvalidRequestError (never echoing input)."""
    try:
        pairs = parse_form_pairs(text, max_fields)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("malformed parameters") from None
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in repeatable:
            if value:
                multi.setdefault(name, []).append(value)
            continue
        if name in seen:
            raise InvalidRequestError("a parameter is repeated")
        seen.add(name)
        if value:  # RFC 6749 §3.1: parameters sent without a value are treated as omitted
            single[name] = value
    return Form(single, multi)


def parse_form_pairs(text: str, max_fields: int = MAX_FIELDS) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict",
    max_num_fields=max_fields)``: the same pairs and the same ValueError, in a third of the time (a
    field with neither ``%`` nor ``+``, such as a client assertion, is taken as it is instead of
    going through ``unquote``; tests/test_forms.py checks the equivalence on random bodies)."""
    if not text:
        return []
    fields = text.split("&")
    if len(fields) > max_fields:
        raise ValueError("too many fields")
    pairs = []
    for field in fields:
        name, sep, value = field.partition("=")
        if not sep:  # strict parsing: every field is name=value (an empty field too)
            raise ValueError("bad form field")
        pairs.append((_unquote_plus(name), _unquote_plus(value)))
    return pairs


def _unquote_plus(text: str) -> str:
    if "%" in text or "+" in text:
        return unquote(text.replace("+", " "), errors="strict")
    return text


def read_form(request: Request, max_bytes: int, repeatable: frozenset[str] = frozenset(), max_fields: int = MAX_FIELDS) -> Form:
    """The request's form parameters; raises an OAuthError for anything else."""
    if request.mimetype != FORM_TYPE:
        raise InvalidRequestError(f"the request body must be {FORM_TYPE}")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise InvalidRequestError("the request body must be UTF-8")
    if request.content_length is not None and request.content_length > max_bytes:
        raise RequestTooLargeError(f"request body larger than {max_bytes} bytes")
    body = request.stream.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise RequestTooLargeError(f"request body larger than {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("malformed form body") from None
    form = parse_params(text, repeatable, max_fields)
    form.body = body
    return form
