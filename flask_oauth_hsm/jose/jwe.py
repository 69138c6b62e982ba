"""JWE compact serialization (RFC 7516 §7.1): decrypt with token keys, encrypt to public JWKs.

Key management (RFC 7518 §4): RSA-OAEP-256, RSA-OAEP, ECDH-ES, ECDH-ES+A128KW, ECDH-ES+A256KW.
Content encryption (RFC 7518 §5): A128GCM, A256GCM, and A128CBC-HS256 on input only.
Never RSA1_5, PBES2, ``dir``, symmetric key wrapping or ``zip``: refused before any cryptography.

Decryption needs a *decrypter* for the private half: an HSM key exposing ``alg``, ``kty``, ``crv``,
``size``, ``rsa_decrypt(ciphertext)`` (the CEK, or DecryptionFailed) and ``ecdh(point)`` (Z).
Every failure after the header checks is one DecryptionFailed, and a bad RSA-encrypted CEK is
replaced by a random one so the failure happens at the same later step (RFC 7516 §11.5).
"""

from __future__ import annotations

import hmac
import json
import os
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding as sym_padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms as ciphers, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ..algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT, AlgSpec, EncSpec
from ..errors import DecryptionFailed, InvalidKey, MalformedJose, RefusedAlgorithm
from .compact import MAX_COMPACT_LEN, b64url_decode, b64url_encode, parse_protected_header, split_compact
from .jwk import PublicJWK, load_jwk, public_jwk_dict

_TAG_LEN = 16
_OAEP_HASH: dict[str, Callable[[], hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


class Decrypter(Protocol):
    alg: str
    kty: str
    crv: str | None
    size: int

    def rsa_decrypt(self, ciphertext: bytes) -> bytes: ...

    def ecdh(self, peer_point: bytes) -> bytes: ...


@dataclass(frozen=True)
class Decrypted:
    header: dict[str, Any]
    plaintext: bytes


def key_accepts(key: Decrypter, alg: str) -> bool:
    """A token key serves exactly the alg recorded for it (RFC 7517 §4.4), nothing else."""
    return alg in KEY_MANAGEMENT and alg == key.alg


@dataclass(frozen=True)
class _Parsed:
    head: bytes
    header: dict[str, Any]
    enc: EncSpec
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes


def _parse(token: str | bytes, encryptions: Collection[str], max_len: int, algorithms: Collection[str] | None = None) -> _Parsed:
    head, ek_b64, iv_b64, ct_b64, tag_b64 = split_compact(token, 5, max_len)
    header = parse_protected_header(head)
    if algorithms is not None and (header["alg"] not in KEY_MANAGEMENT or header["alg"] not in algorithms):
        # RFC 8725 §3.1: the alg is checked against the allow-list first, so an alg we never accept
        # (A*KW, dir, RSA1_5, PBES2 ...) is refused as such, whatever the IV or tag lengths are
        # (Wycheproof json_web_encryption tcId 25-27 were DecryptionFailed, not RefusedAlgorithm).
        raise RefusedAlgorithm(f"JWE alg {header['alg'][:20]!r} is not accepted here")
    enc_name = header.get("enc")
    enc = CONTENT_ENCRYPTION.get(enc_name) if isinstance(enc_name, str) else None
    if enc is None or enc_name not in encryptions:
        raise RefusedAlgorithm(f"JWE enc {str(enc_name)[:20]!r} is not accepted here")
    parsed = _Parsed(
        head,
        header,
        enc,
        b64url_decode(ek_b64, "JWE encrypted key"),
        b64url_decode(iv_b64, "JWE IV"),
        b64url_decode(ct_b64, "JWE ciphertext"),
        b64url_decode(tag_b64, "JWE tag"),
    )
    if len(parsed.iv) != enc.iv_len or len(parsed.tag) != _TAG_LEN:
        raise DecryptionFailed("JWE could not be decrypted")
    return parsed


def protected_header(token: str | bytes, max_len: int = MAX_COMPACT_LEN) -> dict[str, Any]:
    """The checked protected header of a compact JWE, before any key is used: to decide whether
    the sender may make us spend a private-key operation (e.g. a replicated ``iss``, RFC 7519 §5.3)."""
    return parse_protected_header(split_compact(token, 5, max_len)[0])


def decrypt(
    token: str | bytes,
    key_for: Callable[[dict[str, Any]], Decrypter],
    algorithms: Collection[str],
    encryptions: Collection[str],
    *,
    max_len: int = MAX_COMPACT_LEN,
) -> Decrypted:
    """Decrypt a compact JWE; raises MalformedJose, RefusedAlgorithm or DecryptionFailed."""
    p = _parse(token, encryptions, max_len, algorithms)
    alg = p.header["alg"]
    spec = KEY_MANAGEMENT[alg]  # _parse refused any alg outside the allow-list
    key = key_for(p.header)
    if not key_accepts(key, alg):
        raise RefusedAlgorithm(f"the selected key may not be used with {alg}")
    cek = _recover_cek(p.header, spec, p.enc, p.encrypted_key, key)
    return Decrypted(p.header, _decrypt_content(p.enc, cek, p.iv, p.ciphertext, p.tag, p.head))


def decrypt_with_cek(
    token: str | bytes,
    cek_for: Callable[[dict[str, Any]], bytes],
    encryptions: Collection[str],
    *,
    max_len: int = MAX_COMPACT_LEN,
) -> Decrypted:
    """Decrypt with a CEK obtained otherwise (``cek_for(header)``), e.g. escrowed to ourselves."""
    p = _parse(token, encryptions, max_len)
    cek = cek_for(p.header)
    if len(cek) != p.enc.cek_len:
        raise DecryptionFailed("JWE could not be decrypted")
    return Decrypted(p.header, _decrypt_content(p.enc, cek, p.iv, p.ciphertext, p.tag, p.head))


def _recover_cek(header: dict[str, Any], spec: AlgSpec, enc: EncSpec, encrypted_key: bytes, key: Decrypter) -> bytes:
    if spec.kind == "oaep":
        return _rsa_cek(encrypted_key, enc, key)
    if not spec.key_wrap_bits and encrypted_key:
        # RFC 7516 §5.2 step 10: direct key agreement means an empty JWE Encrypted Key.
        raise DecryptionFailed("JWE could not be decrypted")
    z = key.ecdh(_peer_point(header, key))
    if not spec.key_wrap_bits:
        return concat_kdf(z, enc.name, enc.cek_len, header)
    kek = concat_kdf(z, spec.name, spec.key_wrap_bits // 8, header)
    try:
        cek = aes_key_unwrap(kek, encrypted_key)
    except (InvalidUnwrap, ValueError):
        raise DecryptionFailed("JWE could not be decrypted") from None
    if len(cek) != enc.cek_len:
        raise DecryptionFailed("JWE could not be decrypted")
    return cek


def _rsa_cek(encrypted_key: bytes, enc: EncSpec, key: Decrypter) -> bytes:
    """RFC 7516 §11.5: on any failure continue with a random CEK, so every bad input fails later."""
    random_cek = os.urandom(enc.cek_len)
    try:
        cek = key.rsa_decrypt(encrypted_key)
    except DecryptionFailed:
        return random_cek
    return cek if len(cek) == enc.cek_len else random_cek


def _peer_point(header: dict[str, Any], key: Decrypter) -> bytes:
    """The sender's ephemeral public key, checked on our curve *before* the token sees it."""
    epk = header.get("epk")
    if not isinstance(epk, dict) or epk.get("kty") != "EC":
        raise MalformedJose("JWE epk missing or not an EC public key")
    try:
        peer = load_jwk(epk)  # refuses private members, checks the point is on the curve
    except InvalidKey:
        raise DecryptionFailed("JWE could not be decrypted") from None
    if peer.crv != key.crv:
        raise DecryptionFailed("JWE could not be decrypted")
    point: bytes = peer.key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return point


def _party_info(header: dict[str, Any], name: str) -> bytes:
    value = header.get(name)
    if value is None:
        return b""
    if not isinstance(value, str):
        raise MalformedJose(f"JWE {name} is not a string")
    return b64url_decode(value, f"JWE {name}")


def concat_kdf(z: bytes, algorithm_id: str, key_len: int, header: dict[str, Any]) -> bytes:
    """RFC 7518 §4.6.2: Concat KDF (NIST SP 800-56A §5.8.1) with SHA-256."""

    def lv(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    other_info = (
        lv(algorithm_id.encode("ascii"))
        + lv(_party_info(header, "apu"))
        + lv(_party_info(header, "apv"))
        + struct.pack(">I", key_len * 8)
    )
    return ConcatKDFHash(hashes.SHA256(), key_len, other_info).derive(z)


# --- content encryption (RFC 7518 §5) --------------------------------------------------------------


def _cbc_hs_tag(mac_key: bytes, aad: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    al = struct.pack(">Q", len(aad) * 8)  # RFC 7518 §5.2.2.1 step 4
    return hmac.new(mac_key, aad + iv + ciphertext + al, "sha256").digest()[:_TAG_LEN]


def _decrypt_content(enc: EncSpec, cek: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
    try:
        if enc.mode == "gcm":
            return AESGCM(cek).decrypt(iv, ciphertext + tag, aad)
        half = len(cek) // 2
        if not hmac.compare_digest(_cbc_hs_tag(cek[:half], aad, iv, ciphertext), tag):
            raise InvalidTag
        decryptor = Cipher(ciphers.AES(cek[half:]), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = sym_padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except (InvalidTag, ValueError):
        raise DecryptionFailed("JWE could not be decrypted") from None


def _encrypt_content(enc: EncSpec, cek: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes, bytes]:
    iv = os.urandom(enc.iv_len)
    if enc.mode == "gcm":
        sealed = AESGCM(cek).encrypt(iv, plaintext, aad)
        return iv, sealed[:-_TAG_LEN], sealed[-_TAG_LEN:]
    half = len(cek) // 2
    padder = sym_padding.PKCS7(128).padder()
    encryptor = Cipher(ciphers.AES(cek[half:]), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(plaintext) + padder.finalize()) + encryptor.finalize()
    return iv, ciphertext, _cbc_hs_tag(cek[:half], aad, iv, ciphertext)


# --- encryption to a recipient's public key (software) ----------------------------------------------


def encrypt(
    plaintext: bytes,
    recipient: PublicJWK,
    alg: str,
    enc: str,
    header: dict[str, Any] | None = None,
    *,
    escrow: Callable[[bytes], dict[str, Any]] | None = None,
) -> str:
    """Compact JWE of ``plaintext`` to ``recipient``; ``kid`` is the recipient's when it has one.

    ``escrow(cek)`` may add protected header members derived from the CEK (they are covered by
    the authentication tag like the rest of the header).
    """
    spec, enc_spec = KEY_MANAGEMENT.get(alg), CONTENT_ENCRYPTION.get(enc)
    if spec is None or enc_spec is None:
        raise RefusedAlgorithm(f"cannot encrypt with alg {alg!r} and enc {enc!r}")
    if not recipient.allows(alg, "enc"):
        raise RefusedAlgorithm(f"the recipient key may not be used with {alg}")
    protected: dict[str, Any] = {**(header or {}), "alg": alg, "enc": enc}
    if recipient.kid:
        protected["kid"] = recipient.kid
    cek, encrypted_key = _wrap_cek(spec, enc_spec, recipient, protected)
    if escrow is not None:
        protected.update(escrow(cek))
    head = b64url_encode(json.dumps(protected, separators=(",", ":")).encode())
    iv, ciphertext, tag = _encrypt_content(enc_spec, cek, plaintext, head.encode("ascii"))
    return ".".join((head, *(b64url_encode(p) for p in (encrypted_key, iv, ciphertext, tag))))


def _wrap_cek(spec: AlgSpec, enc: EncSpec, recipient: PublicJWK, protected: dict[str, Any]) -> tuple[bytes, bytes]:
    if spec.kind == "oaep":
        cek = os.urandom(enc.cek_len)
        if spec.hash not in _OAEP_HASH:  # every RSA-OAEP algorithm of algorithms.py names one of these
            raise RefusedAlgorithm(f"{spec.name} has no digest we know")
        digest = _OAEP_HASH[spec.hash]()
        oaep = padding.OAEP(padding.MGF1(digest), digest, None)
        return cek, recipient.key.encrypt(cek, oaep)
    ephemeral = ec.generate_private_key(recipient.key.curve)
    protected["epk"] = public_jwk_dict(ephemeral.public_key())
    z = ephemeral.exchange(ec.ECDH(), recipient.key)
    if not spec.key_wrap_bits:
        return concat_kdf(z, enc.name, enc.cek_len, protected), b""
    cek = os.urandom(enc.cek_len)
    kek = concat_kdf(z, spec.name, spec.key_wrap_bits // 8, protected)
    return cek, aes_key_wrap(kek, cek)
