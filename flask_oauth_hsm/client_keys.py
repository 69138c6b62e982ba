"""Key pairs for clients outside our HSM: a software private key in a file, its public JWKS.

Behind ``flask oauth-hsm client keygen`` and ``client jwks``. A client authenticating with
``private_key_jwt`` (RFC 7523 §2.2) registers only the public half; the private half stays with
the client. Our own keys never come through here: they are generated inside the token.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .errors import ConfigError
from .jose import jwk

# The algorithms OAUTH_HSM_ASSERTION_ALGS accepts by default; RS256 is left out on purpose.
CLIENT_ALGS = ("ES256", "PS256", "EdDSA")
RSA_BITS = (jwk.MIN_RSA_BITS, jwk.MAX_RSA_BITS)  # the range the registry accepts for client RSA keys


def generate(alg: str, rsa_bits: int = 2048) -> Any:
    """A new private key for ``alg`` (cryptography objects; the OS CSPRNG)."""
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "PS256":
        if not RSA_BITS[0] <= rsa_bits <= RSA_BITS[1]:
            raise ConfigError(f"RSA keys must have {RSA_BITS[0]} to {RSA_BITS[1]} bits")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigError(f"client keys are {', '.join(CLIENT_ALGS)}, not {alg}")


def write_private_key(path: str | Path, key: Any) -> None:
    """PKCS#8 PEM, created with mode 0600; an existing file (or link) is never overwritten."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        # O_EXCL: refuse anything already there, a symlink included, without a check-then-open race.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists: not overwriting a key") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # the umask may only have narrowed it; make it exact
        fh.write(pem)


def public_jwks(key: Any, alg: str) -> dict[str, list[dict[str, str]]]:
    """``{"keys": [jwk]}`` for a registry entry's ``jwks``: kid = RFC 7638 thumbprint, alg, use=sig."""
    public = key.public_key() if hasattr(key, "public_key") else key
    _check_fits(public, alg)
    doc = jwk.public_jwk_dict(public, kid=jwk.thumbprint(public), alg=alg, use="sig")
    jwk.load_jwk(doc)  # the registry's own checks: what we print, it accepts
    return {"keys": [doc]}


def load_key_file(path: str | Path) -> Any:
    """A PEM or DER public or private key (unencrypted), e.g. exported from a PKCS#11 token."""
    data = Path(path).read_bytes()
    attempts: list[Callable[[], Any]] = [
        lambda: serialization.load_pem_public_key(data),
        lambda: serialization.load_der_public_key(data),
        lambda: serialization.load_pem_private_key(data, None),
        lambda: serialization.load_der_private_key(data, None),
    ]
    for attempt in attempts:
        try:
            return attempt()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
    raise ConfigError(f"{path}: not an unencrypted PEM or DER public or private key")


def _check_fits(public: Any, alg: str) -> None:
    fits = {
        "ES256": isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1",
        "PS256": isinstance(public, rsa.RSAPublicKey) and RSA_BITS[0] <= public.key_size <= RSA_BITS[1],
        "EdDSA": isinstance(public, ed25519.Ed25519PublicKey),
    }
    if alg not in fits:
        raise ConfigError(f"client keys are {', '.join(CLIENT_ALGS)}, not {alg}")
    if not fits[alg]:
        raise ConfigError(
            f"this key cannot be used with {alg} (ES256: EC P-256; PS256: RSA {RSA_BITS[0]}-{RSA_BITS[1]} bits; EdDSA: Ed25519)"
        )
