"""``tls_client_auth`` and ``self_signed_tls_client_auth`` (RFC 8705 §2): mutual TLS.

The credentials are the client certificate of the TLS connection, which a trusted proxy passes
on (binding/mtls.py), not anything in the form: the request names its client with ``client_id``
(RFC 8705 §2) and that client's registered method decides. ``tls_client_auth`` needs a chain the
proxy validated against its trust anchors and the registered subject DN or SAN (§2.1);
``self_signed_tls_client_auth`` needs exactly one of the certificates registered in ``jwks``
``x5c`` (§2.2), whoever issued it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..binding import presented_certificate
from ..binding.mtls import ClientCertificate, matches_registration, registered_certificate
from ..clients import Credentials
from .base import AssertionPolicy, AuthFailure, Finder, Presented

if TYPE_CHECKING:
    from ..server import ServerContext


def _entity_and_certificate(
    ctx: ServerContext, presented: Presented, find: Finder, method: str
) -> tuple[Credentials, ClientCertificate]:
    """The entity the request names, registered for ``method``, and the certificate presented."""
    entity = find(presented.client_id) if presented.client_id else None
    if entity is None or entity.token_endpoint_auth_method != method:
        raise AuthFailure(f"{method}: unknown client or not its method", client_id=presented.client_id)
    cert = presented_certificate(ctx)
    if cert is None:
        raise AuthFailure(f"{method}: no client certificate from a trusted proxy", client_id=entity.client_id)
    return entity, cert


def verify_pki(ctx: ServerContext, presented: Presented, find: Finder, policy: AssertionPolicy) -> Credentials:
    entity, cert = _entity_and_certificate(ctx, presented, find, "tls_client_auth")
    if not cert.chain_verified:
        raise AuthFailure("tls_client_auth: the proxy did not validate the certificate chain", client_id=entity.client_id)
    if not matches_registration(cert.cert, entity):
        raise AuthFailure("tls_client_auth: certificate subject or SAN differs from the registration", client_id=entity.client_id)
    return entity


def verify_self_signed(ctx: ServerContext, presented: Presented, find: Finder, policy: AssertionPolicy) -> Credentials:
    entity, cert = _entity_and_certificate(ctx, presented, find, "self_signed_tls_client_auth")
    if not registered_certificate(cert, entity):
        raise AuthFailure("self_signed_tls_client_auth: not a registered certificate", client_id=entity.client_id)
    return entity
