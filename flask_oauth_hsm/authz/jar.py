"""JAR at the authorization endpoint (RFC 9101): the ``request`` parameter, by value, as a source of
the request's parameters (:mod:`.sources`).

RFC 9101 §6.3: the request object is the request. Its claims are the parameters; parameters sent
beside it in the query or form are ignored — except ``client_id``, which identified the client
whose keys verify the object and must equal the object's ``client_id`` claim (and ``iss``).
``request_uri`` by reference is never fetched (:mod:`.pushed` resolves our own PAR URIs only).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..clients import Client
from ..errors import InvalidRequestObjectError
from ..web import Form
from . import sources
from .request_object import verify_request_object

if TYPE_CHECKING:
    from ..server import ServerContext

# Claims about the JWT itself, not parameters of the request (RFC 7519 §4.1).
JWT_CLAIMS = frozenset({"iss", "aud", "exp", "nbf", "iat", "jti", "sub"})
MAX_RESOURCES = 8  # as in a query: every resource is a resource server to look up


def from_request_object(ctx: ServerContext, client: Client, raw: Form) -> Form:
    """The ``request`` source: the verified request object's parameters (RFC 9101 §5, §6.3)."""
    claims = verify_request_object(ctx, client, raw["request"], receiving_endpoint=ctx.urls.url("/authorize"))
    return parameters(claims)


def parameters(claims: dict[str, Any]) -> Form:
    """Authorization request parameters from request-object claims: strings, ``resource`` a string
    or an array of them (RFC 8707 §2), ``claims`` an object (OIDC Core §6.1), ``max_age`` a number."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in claims.items():
        if name in JWT_CLAIMS:
            continue
        if name in ("request", "request_uri"):  # RFC 9101 §4: never nested
            raise InvalidRequestObjectError("a request object must not contain request or request_uri")
        if name == "resource":
            multi[name] = _resources(value)
        elif name == "claims" and isinstance(value, dict):
            single[name] = json.dumps(value)
        elif name == "max_age" and isinstance(value, int) and not isinstance(value, bool):
            single[name] = str(value)
        elif isinstance(value, str):
            if value:  # RFC 6749 §3.1: a parameter without a value is omitted
                single[name] = value
        else:
            raise InvalidRequestObjectError("a parameter of the request object is not a string")
    return Form(single, multi)


def _resources(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not 0 < len(values) <= MAX_RESOURCES or not all(isinstance(v, str) and v for v in values):
        raise InvalidRequestObjectError("resource must be a URI or an array of at most 8 URIs")
    return list(values)


sources.SOURCES["request"] = from_request_object
