"""This app's configuration of sender-constrained tokens, built once by ``init_app``
(``ServerContext.binding``), the start-up checks of registrations against it, and the metadata
it advertises (only what is enforced)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..clients import Client, Credentials, IPNetwork
from ..errors import ConfigError, KeyNotFound
from . import httpsig
from .mtls import CertificateSource
from .nonces import NonceIssuer, NoncePolicy
from .pop_keys import KeyVault

if TYPE_CHECKING:
    from ..hsm import HSM, TokenSecretKey
    from ..server import ServerContext, Urls
    from ..settings import Settings


@dataclass(frozen=True)
class Bindings:
    """This app's configuration and keys for sender-constrained tokens (``ServerContext.binding``)."""

    token_url: str  # htu and @target-uri of token requests: our public URL, never the Host header
    dpop_algs: tuple[str, ...]
    dpop_max_age: int
    leeway: int
    nonces: NoncePolicy
    vault: KeyVault | None  # None: no symmetric PoP keys
    certificates: CertificateSource | None  # None: no mTLS
    signature_max_age: int

    @classmethod
    def setup(cls, settings: Settings, hsm: HSM, urls: Urls, trusted: tuple[IPNetwork, ...]) -> Bindings:
        """Built once by init_app; a configured key that is missing stops start-up."""
        nonce_key = _secret_key(hsm, settings.dpop_nonce_key, "OAUTH_HSM_DPOP_NONCE_KEY", "hmac")
        issuer = NonceIssuer(nonce_key, settings.issuer, settings.dpop_nonce_lifetime, settings.clock_skew) if nonce_key else None
        wrap_key = _secret_key(hsm, settings.pop_key_wrap_key, "OAUTH_HSM_POP_KEY_WRAP_KEY", "aes")
        certificates = None
        if settings.mtls_cert_header:
            certificates = CertificateSource(settings.mtls_cert_header, settings.mtls_verify_header, trusted)
        return cls(
            urls.token,
            settings.dpop_algs,
            settings.dpop_proof_max_age,
            settings.clock_skew,
            NoncePolicy(settings.dpop_nonce, issuer, "dpop-nonce-given"),
            KeyVault(wrap_key) if wrap_key else None,
            certificates,
            settings.http_signature_max_age,
        )


def _secret_key(hsm: HSM, label: str | None, variable: str, kind: str) -> TokenSecretKey | None:
    if label is None:
        return None
    try:
        key = hsm.secret_key(label)
    except KeyNotFound as exc:
        raise KeyNotFound(
            f"{variable}: {exc} (`flask oauth-hsm keys generate-secret --kind {kind} --label {label}` creates it)"
        ) from None
    if key.kind != kind:
        raise ConfigError(f"{variable}: secret key {label!r} is an {key.kind} key, not {kind}")
    return key


def fits(settings: Settings, entity: Credentials) -> None:
    """Start-up check (clients/fit.py): a registration this server's settings could never serve."""
    where = f"OAUTH_HSM_REGISTRY: {entity.client_id!r}"
    if entity.token_endpoint_auth_method in ("tls_client_auth", "self_signed_tls_client_auth") and not settings.mtls_cert_header:
        raise ConfigError(f"{where} uses {entity.token_endpoint_auth_method}, but OAUTH_HSM_MTLS_CERT_HEADER is not set")
    if entity.token_endpoint_auth_method == "tls_client_auth" and not settings.mtls_verify_header:
        raise ConfigError(
            f"{where} uses tls_client_auth, which needs the proxy's chain verification (OAUTH_HSM_MTLS_VERIFY_HEADER)"
        )
    if not isinstance(entity, Client):
        return
    if entity.tls_client_certificate_bound_access_tokens and not settings.mtls_cert_header:
        raise ConfigError(f"{where} wants certificate-bound tokens, but OAUTH_HSM_MTLS_CERT_HEADER is not set")
    if entity.dpop_nonce_required and not settings.dpop_nonce_key:
        raise ConfigError(f"{where} requires DPoP nonces, but OAUTH_HSM_DPOP_NONCE_KEY is not set")
    if "symmetric" in entity.pop_keys and not settings.pop_key_wrap_key:
        raise ConfigError(f"{where} may get symmetric PoP keys, but OAUTH_HSM_POP_KEY_WRAP_KEY is not set")


def metadata(ctx: ServerContext) -> dict[str, Any]:
    """What the token endpoint enforces (RFC 9449 §5.1, RFC 8705 §3.3, and our PoP members)."""
    b = ctx.binding
    symmetric = b.vault is not None
    meta: dict[str, Any] = {
        "dpop_signing_alg_values_supported": list(b.dpop_algs),
        "pop_key_types_supported": ["asymmetric", "symmetric"] if symmetric else ["asymmetric"],
        "pop_signature_alg_values_supported": [a for a in httpsig.ALGORITHMS if symmetric or a != "hmac-sha256"],
    }
    if b.certificates is not None:
        meta["tls_client_certificate_bound_access_tokens"] = True
    return meta
