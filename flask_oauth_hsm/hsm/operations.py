"""Operations with keys in the token, as the JOSE layer and the stores see them.

:class:`TokenKey` is a key pair (a ``jws.Signer`` and a ``jwe.Decrypter``); :class:`TokenSecretKey`
is an AES or HMAC key. Both hold no session or handle: each call borrows a pooled session through
the adapter (``HSM.run``), which recovers from stale handles and maps PKCS#11 errors.

Hostile input must never reach the token unchecked: SoftHSM answers some malformed inputs with
``CKR_GENERAL_ERROR``, indistinguishable from a failing token. Everything that can be checked in
software is checked here first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import KDF, MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams

from .. import errors
from ..oaep import oaep_decode
from .inventory import CURVES, KeyInfo, SecretKeyInfo
from .pool import KeyRef

if TYPE_CHECKING:
    from .adapter import HSM

_HASH_MECH = {"sha256": Mechanism.SHA256, "sha384": Mechanism.SHA384}
_MGF = {"sha256": MGF.SHA256, "sha384": MGF.SHA384}
GCM_IV_LEN = 12
GCM_TAG_BITS = 128


class Rejected(Exception):
    """The token refused the data of an operation (internal: mapped by each caller)."""


class TokenKey:
    """A key pair in the token (``jws.Signer`` / ``jwe.Decrypter``)."""

    __slots__ = ("hsm", "info", "ref", "label", "alg", "kid", "kty", "crv", "size", "_sign_op", "_prepare", "_sig_len")

    def __init__(self, hsm: HSM, info: KeyInfo):
        self.hsm, self.info = hsm, info
        self.ref = KeyRef(info.label)
        self.label, self.alg, self.kid = info.label, info.alg, info.kid
        self.kty, self.crv, self.size = info.kty, info.crv, info.size
        spec = info.spec
        self._prepare: Callable[[bytes], bytes] | None = None
        self._sig_len = 0
        param: Any = None
        if spec.kind == "ecdsa":  # CKM_ECDSA over the digest returns raw r || s (RFC 7518 §3.4)
            digest = getattr(hashlib, spec.hash or "sha256")
            self._prepare = lambda data: digest(data).digest()
            self._sig_len = 2 * ((info.size + 7) // 8)
            mech: Mechanism | None = Mechanism.ECDSA
        elif spec.kind == "pss":  # python-pkcs11's default PSS parameters are wrong for JOSE
            hash_name = spec.hash or ""
            param = (_HASH_MECH[hash_name], _MGF[hash_name], hashlib.new(hash_name).digest_size)
            combined = f"{hash_name.upper()}_RSA_PKCS_PSS"
            if hsm.has_mechanism(combined):
                mech = Mechanism[combined]
            else:  # CKM_RSA_PKCS_PSS signs a digest made here (PKCS#11 v2.40 §2.1.12), as ECDSA does
                pss_digest = getattr(hashlib, hash_name)
                self._prepare = lambda data: pss_digest(data).digest()
                mech = Mechanism.RSA_PKCS_PSS
        elif spec.kind == "pkcs1":
            mech = Mechanism.SHA256_RSA_PKCS
        elif spec.kind == "eddsa":
            mech = Mechanism.EDDSA
        else:
            mech = None
        self._sign_op = None if mech is None else (lambda k, data: k.sign(data, mechanism=mech, mechanism_param=param))

    @property
    def public_key(self) -> Any:
        return self.info.public_key

    def public_jwk(self) -> dict[str, Any]:
        return self.info.public_jwk()

    def sign(self, data: bytes) -> bytes:
        """JWS signature octets of ``data`` (the JWS signing input)."""
        op = self._sign_op
        if op is None:
            raise errors.UnsupportedAlgorithm(f"key {self.label!r} is not a signing key")
        message = self._prepare(data) if self._prepare else data
        try:
            sig: bytes = self.hsm.run(self.ref, lambda k: op(k, message))
        except Rejected:
            raise errors.HSMError("the token refused to sign") from None
        if self._sig_len:  # fixed-width r || s, left-padded if a token trims leading zeros
            half = len(sig) // 2
            width = self._sig_len // 2
            sig = sig[:half].rjust(width, b"\0") + sig[half:].rjust(width, b"\0")
        return sig

    def rsa_decrypt(self, ciphertext: bytes) -> bytes:
        """RSA-OAEP key unwrapping; any bad ciphertext raises DecryptionFailed."""
        if self.info.spec.kind != "oaep":
            raise errors.UnsupportedAlgorithm(f"key {self.label!r} is not an RSA-OAEP key")
        k = (self.size + 7) // 8
        # RFC 8017 §7.1.2 step 1 and RSADP §5.1.2 step 1, checked here: SoftHSM answers an
        # out-of-range ciphertext with CKR_GENERAL_ERROR, which we could not tell from an outage.
        if len(ciphertext) != k or int.from_bytes(ciphertext, "big") >= self.public_key.public_numbers().n:
            raise errors.DecryptionFailed("decryption error")
        try:
            return self._rsa_oaep(ciphertext, self.info.spec.hash or "sha1")
        except Rejected:
            raise errors.DecryptionFailed("decryption error") from None

    def _rsa_oaep(self, ciphertext: bytes, hash_name: str) -> bytes:
        """RSA-OAEP unwrapping (RFC 8017 §7.1.2) with one failure path for every bad ciphertext.

        Where the token offers raw RSA (CKM_RSA_X_509) the private operation runs there and the
        OAEP decoding here: SoftHSM 2.6.1 has native OAEP with SHA-1 only, and answers a bad
        padding with CKR_GENERAL_ERROR, which must not read as an outage. Tokens without raw RSA
        (many production HSMs forbid it) get the native mechanism.
        """
        if self.hsm.has_mechanism("RSA_X_509"):
            em: bytes = self.hsm.run(self.ref, lambda k: k.decrypt(ciphertext, mechanism=Mechanism.RSA_X_509))
            return oaep_decode(em.rjust((self.size + 7) // 8, b"\0"), getattr(hashlib, hash_name))
        mgf = {"sha1": MGF.SHA1, "sha256": MGF.SHA256}[hash_name]
        param = ({"sha1": Mechanism.SHA_1, "sha256": Mechanism.SHA256}[hash_name], mgf, None)
        result: bytes = self.hsm.run(
            self.ref,
            lambda k: k.decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=param),
            input_dependent=True,
        )
        return result

    def ecdh(self, peer_point: bytes) -> bytes:
        """ECDH (CKM_ECDH1_DERIVE, null KDF) with an uncompressed peer point; returns Z.

        The point is checked on this key's curve here, whatever the caller did: SoftHSM answers
        an off-curve point with CKR_GENERAL_ERROR, and invalid-curve points leak key bits.
        """
        if self.info.spec.kind != "ecdh":
            raise errors.UnsupportedAlgorithm(f"key {self.label!r} is not an ECDH key")
        size = (self.size + 7) // 8
        if len(peer_point) != 1 + 2 * size or peer_point[0] != 4:
            raise errors.DecryptionFailed("invalid peer point")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(CURVES[self.crv or ""][1], peer_point)
        except ValueError:
            raise errors.DecryptionFailed("invalid peer point") from None
        template = {Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}

        def derive(key: Any) -> bytes:
            secret = key.derive_key(
                KeyType.GENERIC_SECRET,
                size * 8,
                mechanism=Mechanism.ECDH1_DERIVE,
                mechanism_param=(KDF.NULL, None, peer_point),
                template=template,
            )
            try:
                return bytes(secret[Attribute.VALUE])
            finally:
                secret.destroy()

        try:
            result: bytes = self.hsm.run(self.ref, derive)
            return result
        except Rejected:
            raise errors.DecryptionFailed("invalid peer point") from None


class TokenSecretKey:
    """An AES-256 or HMAC-SHA-256 key in the token; its value never leaves it."""

    __slots__ = ("hsm", "info", "ref", "label", "kind")

    def __init__(self, hsm: HSM, info: SecretKeyInfo):
        self.hsm, self.info = hsm, info
        self.ref = KeyRef(info.label, ObjectClass.SECRET_KEY)
        self.label, self.kind = info.label, info.kind

    def hmac_sha256(self, data: bytes) -> bytes:
        """HMAC-SHA-256 (RFC 2104) computed in the token."""
        self._need("hmac")
        result: bytes = self.hsm.run(self.ref, lambda k: k.sign(data, mechanism=Mechanism.SHA256_HMAC))
        return result

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """AES-256-GCM in the token: ``iv || ciphertext || tag`` (NIST SP 800-38D, 96-bit IV)."""
        self._need("aes")
        iv = os.urandom(GCM_IV_LEN)
        params = GCMParams(iv, aad, GCM_TAG_BITS)
        sealed: bytes = self.hsm.run(
            self.ref, lambda k: k.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params)
        )
        return iv + sealed

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """Inverse of :meth:`seal`; a wrong key, tampered data or wrong ``aad`` raise DecryptionFailed."""
        self._need("aes")
        if len(sealed) < GCM_IV_LEN + GCM_TAG_BITS // 8:
            raise errors.DecryptionFailed("sealed value too short")
        params = GCMParams(sealed[:GCM_IV_LEN], aad, GCM_TAG_BITS)
        body = sealed[GCM_IV_LEN:]
        try:
            result: bytes = self.hsm.run(
                self.ref,
                lambda k: k.decrypt(body, mechanism=Mechanism.AES_GCM, mechanism_param=params),
                input_dependent=True,
            )
            return result
        except Rejected:
            raise errors.DecryptionFailed("cannot open the sealed value") from None

    def _need(self, kind: str) -> None:
        if self.kind != kind:
            raise errors.UnsupportedAlgorithm(f"secret key {self.label!r} is an {self.kind} key, not {kind}")
