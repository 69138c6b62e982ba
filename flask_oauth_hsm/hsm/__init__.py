"""PKCS#11 adapter: the only package of flask-oauth-hsm that imports ``pkcs11``.

Everything private happens here: signing, RSA decryption, ECDH derivation, AES-GCM and HMAC with
secret keys, random bytes, key generation. PKCS#11 errors are translated into
:mod:`flask_oauth_hsm.errors` at this boundary, so no return code or library message travels
further.

Modules: ``cryptoki`` (ctypes shim for C_Initialize flags, C_Login), ``module`` (one
initialisation per process, fork, the gate that keeps C_Finalize away from running operations),
``pool`` (anchor login, session pool), ``inventory`` (what keys exist, how they are made),
``records`` (key records: a key's rotation state, in the token), ``operations`` (what a key does),
``adapter`` (the :class:`HSM` object tying them together).
"""

from .adapter import HSM
from .inventory import METADATA_APPLICATION, KeyInfo, KeyProblem, SecretKeyInfo
from .operations import TokenKey, TokenSecretKey
from .pool import HSMConfig
from .records import destroy_pair, read_records, write_record

__all__ = [
    "HSM",
    "HSMConfig",
    "KeyInfo",
    "KeyProblem",
    "METADATA_APPLICATION",
    "SecretKeyInfo",
    "TokenKey",
    "TokenSecretKey",
    "destroy_pair",
    "read_records",
    "write_record",
]
