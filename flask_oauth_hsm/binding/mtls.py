"""Mutual-TLS client certificates (RFC 8705) as passed on by a TLS-terminating proxy.

TLS ends at the proxy, so the certificate reaches us in a header (``OAUTH_HSM_MTLS_CERT_HEADER``,
the URL-encoded PEM of nginx's ``$ssl_client_escaped_cert``). The header is believed only when
the request comes straight from a proxy in ``OAUTH_HSM_TRUSTED_PROXIES``; from anyone else it is
ignored, as if no certificate had been presented (the proxy must overwrite it: docs).

Used by client authentication (``tls_client_auth``: RFC 8705 §2.1, ``self_signed_tls_client_auth``:
§2.2), by certificate-bound tokens (§3, ``cnf["x5t#S256"]``) and by the resource-server helper.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..clients import Credentials, IPNetwork
from ..jose.compact import b64url_encode

log = logging.getLogger("flask_oauth_hsm")
MAX_HEADER_LEN = 16 * 1024
VERIFIED = "SUCCESS"  # nginx $ssl_client_verify when the chain verified against ssl_client_certificate


@dataclass(frozen=True)
class ClientCertificate:
    cert: x509.Certificate
    der: bytes
    chain_verified: bool  # the proxy validated it against its trust anchors

    @property
    def thumbprint(self) -> str:
        """RFC 8705 §3.1 ``x5t#S256``: base64url SHA-256 of the DER certificate."""
        return b64url_encode(hashlib.sha256(self.der).digest())


@dataclass(frozen=True)
class CertificateSource:
    """Where certificates come from: the header, the verification header, the trusted proxies."""

    header: str
    verify_header: str | None
    trusted: tuple[IPNetwork, ...]

    def read(self, remote_addr: str | None, headers: HeaderLike) -> ClientCertificate | None:
        value = headers.get(self.header)
        if value is None or not value.strip():
            return None
        if not _from(remote_addr, self.trusted):
            log.warning("ignoring %s from %s: not a trusted proxy", self.header, remote_addr)
            return None
        cert = parse_escaped_pem(value)
        if cert is None:
            log.warning("ignoring %s: not a URL-encoded PEM certificate", self.header)
            return None
        verified = self.verify_header is not None and headers.get(self.verify_header) == VERIFIED
        return ClientCertificate(cert, cert.public_bytes(serialization.Encoding.DER), verified)


class HeaderLike(Protocol):
    def get(self, key: str) -> str | None: ...


def _from(remote_addr: str | None, trusted: Iterable[IPNetwork]) -> bool:
    try:
        peer = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return False
    return any(peer in net for net in trusted)


def parse_escaped_pem(value: str) -> x509.Certificate | None:
    if len(value) > MAX_HEADER_LEN:
        return None
    try:
        return x509.load_pem_x509_certificate(unquote(value.strip()).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None


# --- matching a certificate with a registration ----------------------------------------------------

_SAN_TYPES = {
    "tls_client_auth_san_dns": x509.DNSName,
    "tls_client_auth_san_uri": x509.UniformResourceIdentifier,
    "tls_client_auth_san_ip": x509.IPAddress,
    "tls_client_auth_san_email": x509.RFC822Name,
}


def matches_registration(cert: x509.Certificate, entity: Credentials) -> bool:
    """RFC 8705 §2.1.2: the subject DN, or one SAN entry of the registered type, equals the
    registered value (a DN compared attribute by attribute, RFC 4514 §2)."""
    if entity.tls_client_auth_subject_dn is not None:
        try:
            return cert.subject == x509.Name.from_rfc4514_string(entity.tls_client_auth_subject_dn)
        except ValueError:
            return False
    for field, kind in _SAN_TYPES.items():
        wanted: Any = getattr(entity, field)
        if wanted is not None:
            if kind is x509.IPAddress:
                wanted = ipaddress.ip_address(wanted)  # one address, many spellings
            return wanted in _san_values(cert, kind)
    return False


def _san_values(cert: x509.Certificate, kind: type) -> list[Any]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return list(san.get_values_for_type(kind))


def registered_certificate(cert: ClientCertificate, entity: Credentials) -> bool:
    """RFC 8705 §2.2: the certificate is one of those in the entity's jwks (``x5c``)."""
    return any(k.x5c and k.x5c[0] == cert.der for k in (entity.jwks or ()))
