"""What the token holds: key pairs (with their JOSE alg and use), secret keys, and key creation.

Every private or secret key we create is a token object, private, sensitive and never
extractable (docs/hsm-and-keys.md). A key's JOSE ``alg`` and ``use`` are recorded in a public data object of
the same label (``CKA_APPLICATION`` = ``flask-oauth-hsm``): a key is bound to one algorithm. A
metadata object that is ours but unreadable stops start-up; it never falls back to a default.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from .. import errors
from ..algorithms import ALGORITHMS, CURVE_BITS, AlgSpec, default_alg
from ..jose.jwk import public_jwk_dict, thumbprint

METADATA_APPLICATION = "flask-oauth-hsm"
MAX_LABEL = 64  # the longest CKA_LABEL we make (docs/hsm-and-keys.md, "Key attributes")
log = logging.getLogger("flask_oauth_hsm.hsm")

CURVES = {  # JOSE crv -> (named-curve OID for CKA_EC_PARAMS, cryptography curve)
    "P-256": ("secp256r1", ec.SECP256R1()),
    "P-384": ("secp384r1", ec.SECP384R1()),
    "P-521": ("secp521r1", ec.SECP521R1()),
}
_CURVE_BY_PARAMS = {encode_named_curve_parameters(oid): crv for crv, (oid, _) in CURVES.items()}
_ED25519_PARAMS = {
    encode_named_curve_parameters("1.3.101.112"),  # id-Ed25519 (RFC 8410)
    b"\x13\x0cedwards25519",  # PrintableString form some tokens use (PKCS#11 v3.0 §2.3.10)
}

# Mechanisms an algorithm needs, for generation and for refusing what a token cannot do.
# Each entry is a set of requirements; a requirement is satisfied by any one of its names.
_RSA_OAEP = ("RSA_X_509", "RSA_PKCS_OAEP")  # raw RSA + software OAEP, or native (operations.py)
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "ES256": (("EC_KEY_PAIR_GEN",), ("ECDSA",)),
    "ES384": (("EC_KEY_PAIR_GEN",), ("ECDSA",)),
    # PSS over a digest made here when the token lacks the combined mechanism (p11-kit 0.24 does not
    # forward CKM_SHA256_RSA_PKCS_PSS; operations.py).
    "PS256": (("RSA_PKCS_KEY_PAIR_GEN",), ("SHA256_RSA_PKCS_PSS", "RSA_PKCS_PSS")),
    "RS256": (("RSA_PKCS_KEY_PAIR_GEN",), ("SHA256_RSA_PKCS",)),
    "EdDSA": (("EC_EDWARDS_KEY_PAIR_GEN",), ("EDDSA",)),
    "RSA-OAEP": (("RSA_PKCS_KEY_PAIR_GEN",), _RSA_OAEP),
    "RSA-OAEP-256": (("RSA_PKCS_KEY_PAIR_GEN",), _RSA_OAEP),
    "ECDH-ES": (("EC_KEY_PAIR_GEN",), ("ECDH1_DERIVE",)),
    "ECDH-ES+A128KW": (("EC_KEY_PAIR_GEN",), ("ECDH1_DERIVE",)),
    "ECDH-ES+A256KW": (("EC_KEY_PAIR_GEN",), ("ECDH1_DERIVE",)),
}

# What using (not generating) a key of each algorithm needs: checked when a key is loaded.
USE_MECHANISMS: dict[str, tuple[tuple[str, ...], ...]] = {alg: needs[1:] for alg, needs in REQUIRED.items()}

# Secret keys: what each kind is for, and what the token needs to make and use it.
SECRET_KINDS: dict[str, tuple[KeyType, int, tuple[tuple[str, ...], ...]]] = {
    # AES-256-GCM inside the token: wraps short-lived secrets kept in Redis (PoP keys).
    "aes": (KeyType.AES, 256, (("AES_KEY_GEN",), ("AES_GCM",))),
    # HMAC-SHA-256 inside the token: pairwise subjects, stateless nonces.
    "hmac": (KeyType.GENERIC_SECRET, 256, (("GENERIC_SECRET_KEY_GEN",), ("SHA256_HMAC",))),
}


@dataclass(frozen=True)
class KeyInfo:
    """Public facts about a key pair in the token. Holds no handle, so it survives fork."""

    label: str
    alg: str
    use: str
    kid: str
    kty: str  # "RSA", "EC", "OKP"
    size: int  # RSA modulus bits, or curve bits
    crv: str | None
    public_key: Any = field(repr=False, compare=False)

    @property
    def spec(self) -> AlgSpec:
        return ALGORITHMS[self.alg]

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk_dict(self.public_key, kid=self.kid, alg=self.alg, use=self.use)


@dataclass(frozen=True)
class SecretKeyInfo:
    """A secret key in the token (never extractable): its label and what it is for."""

    label: str
    kind: str  # "aes" | "hmac"


@dataclass(frozen=True)
class KeyProblem:
    """A key in the token that we would refuse to use, and why."""

    label: str
    problem: str


def missing_mechanisms(available: set[str], required: tuple[tuple[str, ...], ...]) -> list[str]:
    return [" or ".join(names) for names in required if not available.intersection(names)]


def check_new_label(session: Any, label: str) -> None:
    if not label or len(label) > MAX_LABEL:
        raise errors.HSMConfigError(f"a key label must have 1 to {MAX_LABEL} characters")
    if list(session.get_objects({Attribute.LABEL: label})):
        raise errors.HSMConfigError(f"a key labelled {label!r} already exists")


def write_metadata(session: Any, label: str, meta: dict[str, str]) -> None:
    session.create_object(
        {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.LABEL: label,
            Attribute.APPLICATION: METADATA_APPLICATION,
            Attribute.VALUE: json.dumps(meta).encode(),
        }
    )


def read_metadata(session: Any, label: str) -> dict[str, Any]:
    """Our metadata for ``label`` ({} when a key was made by another tool); refuses a broken one."""
    for obj in session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label}):
        try:
            application = obj[Attribute.APPLICATION]
        except pkcs11.PKCS11Error:
            continue
        if application != METADATA_APPLICATION:
            continue
        try:
            meta = json.loads(obj[Attribute.VALUE])
        except (pkcs11.PKCS11Error, ValueError):
            meta = None
        if not isinstance(meta, dict) or not all(isinstance(meta.get(k, ""), str) for k in ("alg", "use", "kind")):
            raise errors.HSMConfigError(
                f"key {label!r}: its flask-oauth-hsm metadata object is unreadable; refusing to guess its algorithm"
            )
        return meta
    return {}


def generate_pair(session: Any, spec: AlgSpec, label: str, rsa_bits: int, crv: str) -> None:
    key_id = os.urandom(16)
    sign = spec.use == "sig"
    private = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: sign,
        Attribute.DECRYPT: not sign and spec.kty == "RSA",
        Attribute.DERIVE: not sign and spec.kty == "EC",
        Attribute.UNWRAP: False,
    }
    public: dict[Attribute, bool | bytes] = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: sign,
        Attribute.ENCRYPT: not sign and spec.kty == "RSA",
        Attribute.WRAP: False,
    }
    if spec.kty == "RSA":
        public[Attribute.PUBLIC_EXPONENT] = b"\x01\x00\x01"
        session.generate_keypair(
            KeyType.RSA,
            rsa_bits,
            id=key_id,
            label=label,
            store=True,
            public_template=public,
            private_template=private,
        )
        return
    if spec.kty == "OKP":
        key_type, params, mech = (
            KeyType.EC_EDWARDS,
            encode_named_curve_parameters("1.3.101.112"),
            Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
        )
    else:
        key_type, params, mech = KeyType.EC, encode_named_curve_parameters(CURVES[crv][0]), Mechanism.EC_KEY_PAIR_GEN
    domain = session.create_domain_parameters(key_type, {Attribute.EC_PARAMS: params}, local=True)
    domain.generate_keypair(
        id=key_id,
        label=label,
        store=True,
        mechanism=mech,
        public_template=public,
        private_template=private,
    )


def generate_secret(session: Any, kind: str, label: str) -> None:
    key_type, bits, _ = SECRET_KINDS[kind]
    template = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.ENCRYPT: kind == "aes",
        Attribute.DECRYPT: kind == "aes",
        Attribute.SIGN: kind == "hmac",
        Attribute.VERIFY: kind == "hmac",
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
    mechanism = Mechanism.AES_KEY_GEN if kind == "aes" else Mechanism.GENERIC_SECRET_KEY_GEN
    session.generate_key(key_type, bits, id=os.urandom(16), label=label, store=True, template=template, mechanism=mechanism)


def public_key_of(key_type: Any, pub: Any) -> tuple[Any, str, int, str | None]:
    """cryptography public key, kty, size and crv from a PKCS#11 public key object."""
    if key_type == KeyType.RSA:
        n = int.from_bytes(pub[Attribute.MODULUS], "big")
        e = int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key(), "RSA", n.bit_length(), None
    params = pub[Attribute.EC_PARAMS]
    point = _unwrap_octet_string(pub[Attribute.EC_POINT])
    if key_type == KeyType.EC_EDWARDS and params in _ED25519_PARAMS:
        return ed25519.Ed25519PublicKey.from_public_bytes(point), "OKP", CURVE_BITS["Ed25519"], "Ed25519"
    crv = _CURVE_BY_PARAMS.get(params)
    if key_type != KeyType.EC or crv is None:
        raise errors.UnsupportedAlgorithm("the token holds a key of a type or curve we do not support")
    curve = CURVES[crv][1]
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point), "EC", CURVE_BITS[crv], crv


def _unwrap_octet_string(data: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING (PKCS#11 v2.40 §2.3.3); some tokens return it bare."""
    if len(data) >= 2 and data[0] == 0x04:
        length, offset = data[1], 2
        if length & 0x80:
            count = length & 0x7F
            length, offset = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
        if offset + length == len(data):
            return data[offset:]
    return data


def _check_safe(obj: Any, label: str, what: str) -> None:
    if obj[Attribute.EXTRACTABLE] or not obj[Attribute.SENSITIVE]:
        raise errors.UnsafeKey(f"{what} {label!r} is extractable or not sensitive: refusing to use it")
    if not obj[Attribute.NEVER_EXTRACTABLE] or not obj[Attribute.ALWAYS_SENSITIVE]:
        # Imported (key ceremony) or once exportable: usable, but its history is worth knowing.
        log.warning("%s %r was not generated sensitive and non-extractable in this token", what, label)


def load_key_info(session: Any, label: str) -> KeyInfo:
    try:
        priv = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        pub = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
    except pkcs11.NoSuchKey:
        raise errors.KeyNotFound(f"no key pair labelled {label!r} in the token") from None
    except pkcs11.MultipleObjectsReturned:
        raise errors.HSMConfigError(f"more than one key pair is labelled {label!r}") from None
    _check_safe(priv, label, "private key")
    public_key, kty, size, crv = public_key_of(priv.key_type, pub)
    meta = read_metadata(session, label)
    use = meta.get("use") or ("sig" if priv[Attribute.SIGN] else "enc")
    alg = meta.get("alg") or default_alg(kty, crv, use)
    spec = ALGORITHMS.get(alg or "")
    if spec is None or alg is None or spec.kty != kty or (kty != "RSA" and crv not in spec.curves) or use != spec.use:
        raise errors.HSMConfigError(f"key {label!r}: recorded alg {alg!r} does not fit a {kty} {crv or size} key")
    return KeyInfo(label, alg, use, thumbprint(public_key), kty, size, crv, public_key)


def load_secret_info(session: Any, label: str) -> SecretKeyInfo:
    try:
        key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
    except pkcs11.NoSuchKey:
        raise errors.KeyNotFound(f"no secret key labelled {label!r} in the token") from None
    except pkcs11.MultipleObjectsReturned:
        raise errors.HSMConfigError(f"more than one secret key is labelled {label!r}") from None
    _check_safe(key, label, "secret key")
    kind = read_metadata(session, label).get("kind") or ("aes" if key.key_type == KeyType.AES else "hmac")
    expected = SECRET_KINDS.get(kind)
    if expected is None or expected[0] != key.key_type:
        raise errors.HSMConfigError(f"secret key {label!r}: recorded kind {kind!r} does not fit the key")
    return SecretKeyInfo(label, kind)


def list_keys(session: Any) -> list[KeyInfo | SecretKeyInfo | KeyProblem]:
    """Every key pair and secret key in the token; one we would refuse is listed with the reason."""
    rows: list[KeyInfo | SecretKeyInfo | KeyProblem] = []
    pairs = sorted({o[Attribute.LABEL] for o in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})})
    secrets = sorted({o[Attribute.LABEL] for o in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})})
    for labels, load in ((pairs, load_key_info), (secrets, load_secret_info)):
        for label in labels:
            try:
                rows.append(load(session, label))
            except (errors.HSMConfigError, errors.UnsupportedAlgorithm) as exc:
                rows.append(KeyProblem(label, str(exc)))
    return rows
