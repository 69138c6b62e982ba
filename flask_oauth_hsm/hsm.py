"""PKCS#11 adapter: the only module of flask-oauth-hsm that imports ``pkcs11``.

Everything private happens here: signing, RSA decryption, ECDH derivation, key generation.
PKCS#11 errors are translated into :mod:`flask_oauth_hsm.errors` at this boundary, so no return
code or library message ever travels further.

Facts this module is built around (docs/hsm-and-keys.md):

* python-pkcs11 calls ``C_Initialize(NULL)``, which tells the module the application is single
  threaded; SoftHSM then uses no mutexes and two threads on two sessions crash the process.
  We finalise and initialise again with ``CKF_OS_LOCKING_OK`` (PKCS#11 v2.40 §5.4) through the
  module's own function list, before any session exists.
* PKCS#11 state does not survive ``fork`` (PKCS#11 v2.40 §6.7.1): each process initialises
  lazily on first use; a child never touches the sessions it inherited.
* Login state belongs to the application: one logged-in anchor session keeps it, pooled sessions
  share it. ``C_Login`` is called on a session we own, so a wrong PIN cannot leak a handle.
* Hostile input must never reach the token unchecked: SoftHSM answers some malformed inputs with
  ``CKR_GENERAL_ERROR``, indistinguishable from a failing token. Callers validate first.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11 import KDF, MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from . import errors
from .algorithms import ALGORITHMS, CURVE_BITS, AlgSpec, default_alg
from .jose.jwk import public_jwk_dict, thumbprint
from .oaep import oaep_decode

METADATA_APPLICATION = "flask-oauth-hsm"
log = logging.getLogger("flask_oauth_hsm.hsm")

# PKCS#11 constants used through ctypes (pkcs11t.h).
_CKF_OS_LOCKING_OK = 0x00000002
_CKU_USER = 1
_CKR_OK = 0x000
_CKR_PIN_INCORRECT = 0x0A0
_CKR_PIN_LOCKED = 0x0A4
_CKR_USER_ALREADY_LOGGED_IN = 0x100
_CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
_CKS_RO_USER_FUNCTIONS = 1
_CKS_RW_USER_FUNCTIONS = 3

# "The handle we hold is stale": recover with a new session and one retry.
_STALE = (
    pkcs11.SessionHandleInvalid,
    pkcs11.SessionClosed,
    pkcs11.ObjectHandleInvalid,
    pkcs11.KeyHandleInvalid,
    pkcs11.UserNotLoggedIn,
)
# Caused by the data we were given (decrypt paths map these to one uniform failure).
_INPUT = (
    pkcs11.DataInvalid,
    pkcs11.DataLenRange,
    pkcs11.EncryptedDataInvalid,
    pkcs11.EncryptedDataLenRange,
    pkcs11.ArgumentsBad,
    pkcs11.DomainParamsInvalid,
    pkcs11.MechanismParamInvalid,
)

_CURVES = {  # JOSE crv -> (named-curve OID for CKA_EC_PARAMS, cryptography curve)
    "P-256": ("secp256r1", ec.SECP256R1()),
    "P-384": ("secp384r1", ec.SECP384R1()),
    "P-521": ("secp521r1", ec.SECP521R1()),
}
_CURVE_BY_PARAMS = {encode_named_curve_parameters(oid): crv for crv, (oid, _) in _CURVES.items()}
_ED25519_PARAMS = {
    encode_named_curve_parameters("1.3.101.112"),  # id-Ed25519 (RFC 8410)
    b"\x13\x0cedwards25519",  # PrintableString form some tokens use (PKCS#11 v3.0 §2.3.10)
}
_HASH_MECH = {"sha256": Mechanism.SHA256, "sha384": Mechanism.SHA384}
_MGF = {"sha256": MGF.SHA256, "sha384": MGF.SHA384}

# Mechanisms an algorithm needs, for generation and for refusing what a token cannot do.
# Each entry is a set of requirements; a requirement is satisfied by any one of its names.
_RSA_OAEP = ("RSA_X_509", "RSA_PKCS_OAEP")  # raw RSA + software OAEP, or native (see HSM._rsa_oaep)
_REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "ES256": (("EC_KEY_PAIR_GEN",), ("ECDSA",)),
    "ES384": (("EC_KEY_PAIR_GEN",), ("ECDSA",)),
    "PS256": (("RSA_PKCS_KEY_PAIR_GEN",), ("SHA256_RSA_PKCS_PSS",)),
    "RS256": (("RSA_PKCS_KEY_PAIR_GEN",), ("SHA256_RSA_PKCS",)),
    "EdDSA": (("EC_EDWARDS_KEY_PAIR_GEN",), ("EDDSA",)),
    "RSA-OAEP": (("RSA_PKCS_KEY_PAIR_GEN",), _RSA_OAEP),
    "RSA-OAEP-256": (("RSA_PKCS_KEY_PAIR_GEN",), _RSA_OAEP),
    "ECDH-ES": (("EC_KEY_PAIR_GEN",), ("ECDH1_DERIVE",)),
    "ECDH-ES+A128KW": (("EC_KEY_PAIR_GEN",), ("ECDH1_DERIVE",)),
    "ECDH-ES+A256KW": (("EC_KEY_PAIR_GEN",), ("ECDH1_DERIVE",)),
}


@dataclass(frozen=True)
class HSMConfig:
    """Where the token is and how to log in. ``pin`` never appears in ``repr``."""

    module: str
    token_label: str | None = None
    slot: int | None = None
    pin: str = field(default="", repr=False)
    pool_size: int = 16
    pool_timeout: float = 5.0
    reconnect_backoff: float = 1.0  # after a failed (re)connect, fail fast for this long

    @staticmethod
    def read_pin_file(path: str) -> str:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise errors.HSMConfigError(f"OAUTH_HSM_PIN_FILE: cannot read {path}: {exc.strerror}") from None


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

    def public_jwk(self) -> dict:
        return public_jwk_dict(self.public_key, kid=self.kid, alg=self.alg, use=self.use)


@dataclass(frozen=True)
class KeyProblem:
    """A key pair in the token that we would refuse to use, and why."""

    label: str
    problem: str


# --- ctypes access to the parts of the function list python-pkcs11 does not expose ------------


class _InitArgs(ctypes.Structure):
    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    ]


class _SessionInfo(ctypes.Structure):
    _fields_ = [
        ("slotID", ctypes.c_ulong),
        ("state", ctypes.c_ulong),
        ("flags", ctypes.c_ulong),
        ("ulDeviceError", ctypes.c_ulong),
    ]


_FN = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)
_FN_LOGIN = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong)
_FN_SINFO = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.POINTER(_SessionInfo))
# Order of CK_FUNCTION_LIST (PKCS#11 v2.40 §5.2, pkcs11f.h) up to C_Login.
_FN_NAMES = (
    "C_Initialize C_Finalize C_GetInfo C_GetFunctionList C_GetSlotList C_GetSlotInfo "
    "C_GetTokenInfo C_GetMechanismList C_GetMechanismInfo C_InitToken C_InitPIN C_SetPIN "
    "C_OpenSession C_CloseSession C_CloseAllSessions C_GetSessionInfo C_GetOperationState "
    "C_SetOperationState C_Login"
).split()


class _FunctionList(ctypes.Structure):
    _fields_ = [("version", ctypes.c_ubyte * 2)] + [(name, ctypes.c_void_p) for name in _FN_NAMES]


class _Cryptoki:
    """The module's own function list, reached through ``C_GetFunctionList``.

    dlopen of the same path returns the handle python-pkcs11 already holds, so these calls act on
    the same library state.
    """

    def __init__(self, path: str):
        dll = ctypes.CDLL(path)
        fl = ctypes.POINTER(_FunctionList)()
        if dll.C_GetFunctionList(ctypes.byref(fl)) != _CKR_OK:
            raise errors.HSMConfigError(f"OAUTH_HSM_PKCS11_MODULE: {path}: C_GetFunctionList failed")
        self._dll, self._fl = dll, fl.contents
        self._initialize = _FN(self._fl.C_Initialize)
        self._finalize = _FN(self._fl.C_Finalize)
        self._login = _FN_LOGIN(self._fl.C_Login)
        self._session_info = _FN_SINFO(self._fl.C_GetSessionInfo)

    def reinitialize(self, os_locking: bool) -> None:
        """Finalize whatever state exists and initialise again (with CKF_OS_LOCKING_OK)."""
        if self._finalize(None) not in (_CKR_OK, _CKR_CRYPTOKI_NOT_INITIALIZED):
            raise errors.HSMUnavailable("HSM unavailable: C_Finalize failed")
        args = _InitArgs(flags=_CKF_OS_LOCKING_OK)
        if self._initialize(ctypes.addressof(args) if os_locking else None) != _CKR_OK:
            raise errors.HSMUnavailable("HSM unavailable: C_Initialize failed")

    def login(self, session_handle: int, pin: str) -> int:
        data = pin.encode("utf-8")
        return self._login(session_handle, _CKU_USER, data, len(data))

    def logged_in(self, session_handle: int) -> bool:
        info = _SessionInfo()
        if self._session_info(session_handle, ctypes.byref(info)) != _CKR_OK:
            return False
        return info.state in (_CKS_RO_USER_FUNCTIONS, _CKS_RW_USER_FUNCTIONS)


# --- one initialisation per module per process --------------------------------------------------


class _Module:
    """A PKCS#11 module initialised once per process and shared by every HSM using it.

    ``generation`` counts initialisations: sessions from an older generation are dead, whoever
    re-initialised (after fork, or after the module failed underneath us).
    """

    def __init__(self, path: str, os_locking: bool):
        self.path = path
        self.os_locking = os_locking
        self.lock = threading.Lock()
        self.pid = 0
        self.generation = 0
        self.lib = None
        self.cryptoki: _Cryptoki | None = None

    def current(self) -> int:
        """The live generation, initialising first if this process has not yet (or forked)."""
        if self.pid == os.getpid():
            return self.generation
        with self.lock:
            if self.pid != os.getpid():
                self._initialize()
            return self.generation

    def reset(self, failed_generation: int) -> None:
        """Initialise again after a failure seen in ``failed_generation`` (once per failure)."""
        with self.lock:
            if self.generation == failed_generation and self.pid == os.getpid():
                self.pid = 0  # next current() initialises

    def _initialize(self) -> None:
        if not os.path.isfile(self.path):
            raise errors.HSMConfigError(f"OAUTH_HSM_PKCS11_MODULE: no such file: {self.path}")
        try:
            self.lib = pkcs11.lib(self.path)
            self.cryptoki = _Cryptoki(self.path)
        except pkcs11.PKCS11Error as exc:
            if "loading" in str(exc):  # dlopen or C_GetFunctionList failed
                raise errors.HSMConfigError(f"OAUTH_HSM_PKCS11_MODULE: {self.path} is not a loadable PKCS#11 module") from None
            raise errors.HSMConfigError(
                f"OAUTH_HSM_PKCS11_MODULE: {self.path} failed to initialise (for SoftHSM: is SOFTHSM2_CONF right?)"
            ) from None
        except (OSError, AttributeError):
            raise errors.HSMConfigError(f"OAUTH_HSM_PKCS11_MODULE: {self.path} is not a loadable PKCS#11 module") from None
        # Always a fresh C_Initialize of our own: python-pkcs11 initialised without locking, and
        # after fork the inherited state must not be used (PKCS#11 v2.40 §6.7.1).
        self.cryptoki.reinitialize(self.os_locking)
        self.generation += 1
        self.pid = os.getpid()


_modules: dict[str, _Module] = {}
_modules_lock = threading.Lock()


def _module(path: str, os_locking: bool) -> _Module:
    with _modules_lock:
        mod = _modules.get(path)
        if mod is None:
            mod = _modules[path] = _Module(path, os_locking)
        return mod


# --- per-process token state -------------------------------------------------------------------


class _PooledSession:
    __slots__ = ("session", "keys")

    def __init__(self, session):
        self.session = session
        self.keys: dict[str, Any] = {}  # label -> private key object bound to this session

    def private_key(self, label: str):
        key = self.keys.get(label)
        if key is None:
            key = self.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            self.keys[label] = key
        return key


class _TokenState:
    """One process's view of the token: library, anchor login, session pool."""

    def __init__(self, config: HSMConfig, cryptoki: _Cryptoki, token, generation: int):
        self.pid = os.getpid()
        self.generation = generation
        self.config = config
        self.cryptoki = cryptoki
        self.token = token
        self.anchor = None
        self.pool: queue.LifoQueue[_PooledSession] = queue.LifoQueue()
        self.opened = 0
        self.lock = threading.Lock()
        self.broken = False

    def login(self) -> None:
        session = self.token.open(rw=True)
        rv = self.cryptoki.login(session.handle, self.config.pin)
        if rv not in (_CKR_OK, _CKR_USER_ALREADY_LOGGED_IN):
            _close_quietly(session)
            if rv in (_CKR_PIN_INCORRECT, _CKR_PIN_LOCKED):
                what = "incorrect" if rv == _CKR_PIN_INCORRECT else "locked"
                raise errors.WrongPin(f"OAUTH_HSM_PIN: the user PIN is {what} for token {self.token.label!r}")
            raise errors.HSMConfigError(f"OAUTH_HSM_PIN: login to token {self.token.label!r} failed")
        self.anchor = session

    def acquire(self) -> _PooledSession:
        try:
            return self.pool.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            may_open = self.opened < self.config.pool_size
            if may_open:
                self.opened += 1
        if may_open:
            try:
                return _PooledSession(self.token.open())
            except BaseException:
                with self.lock:
                    self.opened -= 1
                raise
        try:
            return self.pool.get(timeout=self.config.pool_timeout)
        except queue.Empty:
            raise errors.HSMUnavailable("HSM unavailable: no session free within the pool timeout") from None

    def release(self, ps: _PooledSession) -> None:
        self.pool.put(ps)

    def discard(self, ps: _PooledSession) -> None:
        _close_quietly(ps.session)
        with self.lock:
            self.opened -= 1

    def still_logged_in(self) -> bool:
        return self.anchor is not None and self.cryptoki.logged_in(self.anchor.handle)

    def close(self) -> None:
        while True:
            try:
                _close_quietly(self.pool.get_nowait().session)
            except queue.Empty:
                break
        if self.anchor is not None:
            _close_quietly(self.anchor)
            self.anchor = None


def _close_quietly(session) -> None:
    try:
        session.close()
    except pkcs11.PKCS11Error:
        pass


_instances: "weakref.WeakSet[HSM]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for hsm in list(_instances):
        hsm._forget_parent_state()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Rejected(Exception):
    """The token refused the data of an operation (internal: mapped by each caller)."""


# --- the adapter ---------------------------------------------------------------------------------


class HSM:
    """Thread-safe, fork-safe access to one token. Create once per app; share between threads."""

    def __init__(self, config: HSMConfig, *, os_locking: bool = True):
        # os_locking=False exists only so the test suite can prove the locking fix matters.
        self.config = config
        self._module = _module(config.module, os_locking)
        self._lock = threading.Lock()
        self._state: _TokenState | None = None
        self._down_until = 0.0
        self._opened_once = False  # the configuration worked once (in this process or its parent)
        self._opened_pid = 0
        self._keys: dict[str, KeyInfo] = {}
        self._raw_rsa: bool | None = None  # CKM_RSA_X_509 available (decided on first use)
        _instances.add(self)

    # -- lifecycle -------------------------------------------------------------------------

    def _forget_parent_state(self) -> None:
        # Never touch the parent's sessions from the child (PKCS#11 v2.40 §6.7.1).
        self._lock = threading.Lock()
        self._state = None
        self._down_until = 0.0

    def _usable(self, state: _TokenState | None) -> bool:
        return state is not None and not state.broken and state.generation == self._module.generation and state.pid == os.getpid()

    def _token_state(self) -> _TokenState:
        state = self._state
        if self._usable(state):
            return state
        with self._lock:
            state = self._state
            if self._usable(state):
                return state
            if time.monotonic() < self._down_until:
                raise errors.HSMUnavailable("HSM unavailable (waiting before reconnecting)")
            if state is not None and state.pid == os.getpid() and state.generation == self._module.generation:
                state.close()
            self._state = None
            try:
                self._state = self._open()
            except errors.HSMError as exc:
                self._down_until = time.monotonic() + self.config.reconnect_backoff
                if self._opened_once and isinstance(exc, errors.HSMConfigError):
                    # It worked before: a token that vanished is an outage, not a config error.
                    raise errors.HSMUnavailable(f"HSM unavailable: {exc}") from None
                raise
            self._opened_once = True
            self._opened_pid = os.getpid()
            return self._state

    def _open(self) -> _TokenState:
        """Initialise (if needed), find the token and log in.

        SoftHSM's file store is read at C_Initialize, and a process that initialises while
        another holds a token's lock file sees no token, or fails to log in (several workers
        starting at once). So a failed attempt initialises the module again and retries, a few
        times at start-up, once when reconnecting (requests must not wait long). A wrong PIN is
        never retried: tokens lock PINs after a few failures.
        """
        delays = (0.05,) if self._opened_pid == os.getpid() else (0.05, 0.1, 0.2, 0.4, 0.8)
        for delay in (*delays, None):
            generation = self._module.current()
            try:
                state = _TokenState(self.config, self._module.cryptoki, self._find_token(), generation)
                state.login()
                return state
            except errors.WrongPin:
                raise
            except errors.HSMConfigError as exc:
                failure: errors.HSMError = exc
            except pkcs11.PKCS11Error:
                failure = errors.HSMUnavailable("HSM unavailable: cannot open a session")
            self._module.reset(generation)
            if delay is None:
                raise failure
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _find_token(self):
        cfg, lib = self.config, self._module.lib
        try:
            if cfg.token_label:
                return lib.get_token(token_label=cfg.token_label)
            for slot in lib.get_slots(token_present=True):
                if slot.slot_id == cfg.slot:
                    return slot.get_token()
        except (pkcs11.NoSuchToken, pkcs11.TokenNotPresent, pkcs11.TokenNotRecognised):
            pass
        except pkcs11.MultipleTokensReturned:
            raise errors.HSMConfigError(
                f"OAUTH_HSM_TOKEN_LABEL: more than one token is labelled {cfg.token_label!r}"
            ) from None
        if cfg.token_label:
            raise errors.HSMConfigError(f"OAUTH_HSM_TOKEN_LABEL: no token labelled {cfg.token_label!r} in {cfg.module}")
        raise errors.HSMConfigError(f"OAUTH_HSM_SLOT: no token present in slot {cfg.slot}")

    def close(self) -> None:
        """Close this process's sessions (logging out when the last one closes)."""
        with self._lock:
            if self._state is not None and self._state.pid == os.getpid():
                self._state.close()
            self._state = None

    def check(self) -> None:
        """Readiness: raises HSMUnavailable unless the token answers and we are logged in."""
        state = self._token_state()
        if not state.still_logged_in():
            state.broken = True
            raise errors.HSMUnavailable("HSM unavailable: not logged in")

    # -- running operations ------------------------------------------------------------------

    def _run(self, label: str, op: Callable[[Any], bytes], *, input_dependent: bool = False) -> bytes:
        """Run ``op(private_key)`` on a pooled session; recover once from stale handles.

        ``input_dependent``: the operation's outcome depends on data from outside (a ciphertext).
        A generic failure while the session is still healthy is then the data's fault, not an
        outage (some tokens report bad padding as CKR_GENERAL_ERROR).
        """
        for attempt in (1, 2):
            state = self._token_state()
            ps = state.acquire()
            try:
                result = op(ps.private_key(label))
            except _STALE:
                state.discard(ps)
                if not state.still_logged_in():
                    state.broken = True  # everything was closed underneath: log in again
                if attempt == 2:
                    raise errors.HSMUnavailable("HSM unavailable: session lost twice") from None
                continue
            except pkcs11.NoSuchKey:
                state.release(ps)
                if not state.still_logged_in():
                    state.broken = True
                    if attempt == 1:
                        continue
                raise errors.KeyNotFound(f"no private key labelled {label!r} in the token") from None
            except _INPUT:
                state.release(ps)
                raise _Rejected() from None
            except pkcs11.PKCS11Error as exc:
                if input_dependent and state.still_logged_in():
                    state.release(ps)
                    raise _Rejected() from None
                state.discard(ps)
                state.broken = True
                # Not a stale handle, not our input: the module or token failed. Start it afresh
                # on the next call (after the reconnect backoff).
                self._module.reset(state.generation)
                raise errors.HSMUnavailable(f"HSM unavailable: {type(exc).__name__}") from None
            state.release(ps)
            return result
        raise AssertionError("unreachable")

    def _with_session(self, fn: Callable[[Any], Any], *, rw: bool = False) -> Any:
        """Run ``fn(session)`` on a fresh session: key management and lookups, not hot paths."""
        state = self._token_state()
        try:
            session = state.token.open(rw=rw)
        except pkcs11.PKCS11Error:
            state.broken = True
            raise errors.HSMUnavailable("HSM unavailable: cannot open a session") from None
        try:
            return fn(session)
        except pkcs11.PKCS11Error as exc:
            raise errors.HSMError(f"token operation failed: {type(exc).__name__}") from None
        finally:
            _close_quietly(session)

    # -- keys -----------------------------------------------------------------------------------

    def key(self, label: str) -> "TokenKey":
        """The key pair labelled ``label``, checked safe (sensitive, never extractable)."""
        info = self._keys.get(label)
        if info is None:
            info = self._with_session(lambda s: _load_key_info(s, label))
            self._keys[label] = info
        return TokenKey(self, info)

    def list_keys(self) -> list["KeyInfo | KeyProblem"]:
        """Every key pair in the token; one we would refuse is listed with the reason."""

        def collect(session):
            objs = session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            labels = sorted({o[Attribute.LABEL] for o in objs})
            rows: list[KeyInfo | KeyProblem] = []
            for label in labels:
                try:
                    rows.append(_load_key_info(session, label))
                except (errors.HSMConfigError, errors.UnsupportedAlgorithm) as exc:
                    rows.append(KeyProblem(label, str(exc)))
            return rows

        return self._with_session(collect)

    def mechanisms(self) -> set[str]:
        state = self._token_state()
        try:
            return {m.name for m in state.token.slot.get_mechanisms() if hasattr(m, "name")}
        except pkcs11.PKCS11Error:
            raise errors.HSMUnavailable("HSM unavailable: cannot list mechanisms") from None

    def generate_key(self, alg: str, use: str, label: str, *, rsa_bits: int = 2048, crv: str = "P-256") -> KeyInfo:
        """Generate a key pair inside the token: token object, private, sensitive, never extractable."""
        spec = ALGORITHMS.get(alg)
        if spec is None:
            raise errors.UnsupportedAlgorithm(f"unknown or refused algorithm {alg!r}")
        if use != spec.use:
            raise errors.UnsupportedAlgorithm(f"{alg} keys have use {spec.use!r}, not {use!r}")
        available = self.mechanisms()
        missing = [" or ".join(names) for names in _REQUIRED[alg] if not available.intersection(names)]
        if missing:
            raise errors.UnsupportedAlgorithm(f"this token cannot do {alg}: it lacks {', '.join(missing)}")
        if spec.kty == "RSA" and not 2048 <= rsa_bits <= 8192:
            raise errors.UnsupportedAlgorithm("RSA keys must have 2048 to 8192 bits")
        curve = spec.crv or crv
        if spec.kty == "EC" and curve not in _CURVES:
            raise errors.UnsupportedAlgorithm(f"unsupported curve {curve!r}")
        if not label or len(label) > 64:
            raise errors.HSMConfigError("a key label must have 1 to 64 characters")

        def generate(session):
            if list(session.get_objects({Attribute.LABEL: label})):
                raise errors.HSMConfigError(f"a key labelled {label!r} already exists")
            _generate_pair(session, spec, label, rsa_bits, curve)
            session.create_object({
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.LABEL: label,
                Attribute.APPLICATION: METADATA_APPLICATION,
                Attribute.VALUE: json.dumps({"alg": alg, "use": use}).encode(),
            })
            return _load_key_info(session, label)

        info = self._with_session(generate, rw=True)
        self._keys[label] = info
        return info

    def destroy_key(self, label: str) -> None:
        """Delete a key pair and its metadata (key rotation's last step)."""

        def destroy(session):
            objs = list(session.get_objects({Attribute.LABEL: label}))
            if not objs:
                raise errors.KeyNotFound(f"no key labelled {label!r} in the token")
            for obj in objs:
                obj.destroy()

        self._with_session(destroy, rw=True)
        self._keys.pop(label, None)

    # -- operations used by TokenKey ------------------------------------------------------------

    def _rsa_oaep(self, info: KeyInfo, ciphertext: bytes, hash_name: str) -> bytes:
        """RSA-OAEP unwrapping (RFC 8017 §7.1.2) with one failure path for every bad ciphertext.

        Where the token offers raw RSA (CKM_RSA_X_509) the private operation runs there and the
        OAEP decoding here: SoftHSM 2.6.1 has native OAEP with SHA-1 only, and answers a bad
        padding with CKR_GENERAL_ERROR, which must not read as an outage. Tokens without raw RSA
        (many production HSMs forbid it) get the native mechanism.
        """
        if self._raw_rsa is None:
            self._raw_rsa = "RSA_X_509" in self.mechanisms()
        if self._raw_rsa:
            em = self._run(info.label, lambda k: k.decrypt(ciphertext, mechanism=Mechanism.RSA_X_509))
            return oaep_decode(em.rjust((info.size + 7) // 8, b"\0"), getattr(hashlib, hash_name))
        mgf = {"sha1": MGF.SHA1, "sha256": MGF.SHA256}[hash_name]
        param = ({"sha1": Mechanism.SHA_1, "sha256": Mechanism.SHA256}[hash_name], mgf, None)
        return self._run(
            info.label, lambda k: k.decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=param),
            input_dependent=True,
        )


class TokenKey:
    """A key pair in the token, as the JOSE layer sees it (``jws.Signer`` / ``jwe.Decrypter``)."""

    __slots__ = ("hsm", "info", "label", "alg", "kid", "kty", "crv", "size", "_sign_op", "_prepare", "_sig_len")

    def __init__(self, hsm: HSM, info: KeyInfo):
        self.hsm, self.info = hsm, info
        self.label, self.alg, self.kid = info.label, info.alg, info.kid
        self.kty, self.crv, self.size = info.kty, info.crv, info.size
        spec = info.spec
        self._prepare: Callable[[bytes], bytes] | None = None
        self._sig_len = 0
        if spec.kind == "ecdsa":  # CKM_ECDSA over the digest returns raw r || s (RFC 7518 §3.4)
            digest = getattr(hashlib, spec.hash)
            self._prepare = lambda data: digest(data).digest()
            self._sig_len = 2 * ((info.size + 7) // 8)
            mech, param = Mechanism.ECDSA, None
        elif spec.kind == "pss":  # python-pkcs11's default PSS parameters are wrong for JOSE
            mech = Mechanism.SHA256_RSA_PKCS_PSS
            param = (_HASH_MECH[spec.hash], _MGF[spec.hash], hashlib.new(spec.hash).digest_size)
        elif spec.kind == "pkcs1":
            mech, param = Mechanism.SHA256_RSA_PKCS, None
        elif spec.kind == "eddsa":
            mech, param = Mechanism.EDDSA, None
        else:
            mech = None
        self._sign_op = None if mech is None else (lambda k, data: k.sign(data, mechanism=mech, mechanism_param=param))

    @property
    def public_key(self):
        return self.info.public_key

    def public_jwk(self) -> dict:
        return self.info.public_jwk()

    def sign(self, data: bytes) -> bytes:
        """JWS signature octets of ``data`` (the JWS signing input)."""
        if self._sign_op is None:
            raise errors.UnsupportedAlgorithm(f"key {self.label!r} is not a signing key")
        message = self._prepare(data) if self._prepare else data
        op = self._sign_op
        try:
            sig = self.hsm._run(self.label, lambda k: op(k, message))
        except _Rejected:
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
            return self.hsm._rsa_oaep(self.info, ciphertext, self.info.spec.hash)
        except _Rejected:
            raise errors.DecryptionFailed("decryption error") from None

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
            ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[self.crv][1], peer_point)
        except ValueError:
            raise errors.DecryptionFailed("invalid peer point") from None
        template = {Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}

        def derive(key):
            secret = key.derive_key(
                KeyType.GENERIC_SECRET,
                size * 8,
                mechanism=Mechanism.ECDH1_DERIVE,
                mechanism_param=(KDF.NULL, None, peer_point),
                template=template,
            )
            try:
                return secret[Attribute.VALUE]
            finally:
                secret.destroy()

        try:
            return self.hsm._run(self.label, derive)
        except _Rejected:
            raise errors.DecryptionFailed("invalid peer point") from None


# --- key material helpers (run inside a session) ---------------------------------------------


def _generate_pair(session, spec: AlgSpec, label: str, rsa_bits: int, crv: str) -> None:
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
    public = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: sign,
        Attribute.ENCRYPT: not sign and spec.kty == "RSA",
        Attribute.WRAP: False,
    }
    if spec.kty == "RSA":
        public[Attribute.PUBLIC_EXPONENT] = b"\x01\x00\x01"
        session.generate_keypair(
            KeyType.RSA, rsa_bits, id=key_id, label=label, store=True,
            public_template=public, private_template=private,
        )
        return
    if spec.kty == "OKP":
        key_type, params, mech = KeyType.EC_EDWARDS, encode_named_curve_parameters("1.3.101.112"), Mechanism.EC_EDWARDS_KEY_PAIR_GEN
    else:
        key_type, params, mech = KeyType.EC, encode_named_curve_parameters(_CURVES[crv][0]), Mechanism.EC_KEY_PAIR_GEN
    domain = session.create_domain_parameters(key_type, {Attribute.EC_PARAMS: params}, local=True)
    domain.generate_keypair(
        id=key_id, label=label, store=True, mechanism=mech, public_template=public, private_template=private,
    )


def _public_key(key_type, pub) -> tuple[Any, str, int, str | None]:
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
    curve = _CURVES[crv][1]
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


def _load_key_info(session, label: str) -> KeyInfo:
    try:
        priv = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        pub = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
    except pkcs11.NoSuchKey:
        raise errors.KeyNotFound(f"no key pair labelled {label!r} in the token") from None
    except pkcs11.MultipleObjectsReturned:
        raise errors.HSMConfigError(f"more than one key pair is labelled {label!r}") from None
    if priv[Attribute.EXTRACTABLE] or not priv[Attribute.SENSITIVE]:
        raise errors.UnsafeKey(f"private key {label!r} is extractable or not sensitive: refusing to use it")
    if not priv[Attribute.NEVER_EXTRACTABLE] or not priv[Attribute.ALWAYS_SENSITIVE]:
        # Imported (key ceremony) or once exportable: usable, but its history is worth knowing.
        log.warning("private key %r was not generated sensitive and non-extractable in this token", label)
    public_key, kty, size, crv = _public_key(priv.key_type, pub)
    meta = _read_metadata(session, label)
    use = meta.get("use") or ("sig" if priv[Attribute.SIGN] else "enc")
    alg = meta.get("alg") or default_alg(kty, crv, use)
    spec = ALGORITHMS.get(alg or "")
    if spec is None or spec.kty != kty or (kty != "RSA" and crv not in spec.curves) or use != spec.use:
        raise errors.HSMConfigError(f"key {label!r}: recorded alg {alg!r} does not fit a {kty} {crv or size} key")
    return KeyInfo(label, alg, use, thumbprint(public_key), kty, size, crv, public_key)


def _read_metadata(session, label: str) -> dict:
    for obj in session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label}):
        try:
            if obj[Attribute.APPLICATION] == METADATA_APPLICATION:
                meta = json.loads(obj[Attribute.VALUE])
                return meta if isinstance(meta, dict) else {}
        except (pkcs11.PKCS11Error, ValueError):
            continue
    return {}
