"""The HSM adapter: thread-safe, fork-safe access to one token, and the only PKCS#11 error mapping.

Facts this is built around (docs/hsm-and-keys.md):

* python-pkcs11 calls ``C_Initialize(NULL)``; we initialise again with ``CKF_OS_LOCKING_OK``
  (module.py) before any session exists.
* PKCS#11 state does not survive ``fork``: each process initialises lazily on first use.
* One logged-in anchor session keeps the login; pooled sessions share it (pool.py).
* A stale session or handle gets a new session and one retry; a module failure marks the state
  broken and re-initialises on the next call, after a short back-off. A wrong PIN is never
  retried: tokens lock PINs after a few failures.
* Every call into the library runs under ``operation_timeout`` (deadline.py): a network HSM that
  stops answering costs a request that long, then fails fast until the stuck calls return.
* A mechanism the token lacks is a configuration fact, not an outage: keys are checked against
  the token's mechanism list when loaded, and a refusal at run time resets nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pkcs11
from pkcs11 import Attribute

from .. import errors
from ..algorithms import ALGORITHMS
from .deadline import Abandoned
from .inventory import (
    CURVES,
    REQUIRED,
    SECRET_KINDS,
    USE_MECHANISMS,
    KeyInfo,
    KeyProblem,
    SecretKeyInfo,
    check_new_label,
    generate_pair,
    generate_secret,
    list_keys,
    load_key_info,
    load_secret_info,
    missing_mechanisms,
    write_metadata,
)
from .module import Module, module
from .operations import Rejected, TokenKey, TokenSecretKey
from .pool import HSMConfig, KeyRef, TokenState, close_quietly

# "The handle we hold is stale": recover with a new session and one retry.
_STALE = (
    pkcs11.SessionHandleInvalid,
    pkcs11.SessionClosed,
    pkcs11.ObjectHandleInvalid,
    pkcs11.KeyHandleInvalid,
    pkcs11.UserNotLoggedIn,
)
# The token cannot do what we asked (a mechanism it lacks): no outage, nothing to reset.
_UNSUPPORTED = (pkcs11.MechanismInvalid, pkcs11.FunctionNotSupported)
# Caused by the data we were given (callers map these to one uniform failure).
_INPUT = (
    pkcs11.DataInvalid,
    pkcs11.DataLenRange,
    pkcs11.EncryptedDataInvalid,
    pkcs11.EncryptedDataLenRange,
    pkcs11.ArgumentsBad,
    pkcs11.DomainParamsInvalid,
    pkcs11.MechanismParamInvalid,
)

log = logging.getLogger("flask_oauth_hsm.hsm")
_FIRST_OPEN_TIMEOUT = 30.0  # seconds: the first open of a process that never reached the token
_instances: weakref.WeakSet[HSM] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for hsm in list(_instances):
        hsm._forget_parent_state()


os.register_at_fork(after_in_child=_after_fork_in_child)


class HSM:
    """Thread-safe, fork-safe access to one token. Create once per app; share between threads."""

    def __init__(self, config: HSMConfig, *, os_locking: bool = True):
        # os_locking=False exists only so the test suite can prove the locking fix matters.
        self.config = config
        self._module: Module = module(config.module, os_locking)
        self._lock = threading.Lock()
        self._state: TokenState | None = None
        self._down_until = 0.0
        self._opened_once = False  # the configuration worked once (in this process or its parent)
        self._opened_pid = 0
        self._keys: dict[str, KeyInfo] = {}
        self._secrets: dict[str, SecretKeyInfo] = {}
        self._mechanisms: set[str] | None = None
        self._pin_refused: str | None = None  # the token refused our PIN once: never log in again
        _instances.add(self)

    # -- lifecycle -------------------------------------------------------------------------

    def _forget_parent_state(self) -> None:
        # Never touch the parent's sessions from the child (PKCS#11 v2.40 §6.7.1).
        self._lock = threading.Lock()
        self._state = None
        self._down_until = 0.0

    def _usable(self, state: TokenState | None) -> bool:
        return state is not None and not state.broken and state.generation == self._module.generation and state.pid == os.getpid()

    def _token_state(self) -> TokenState:
        state = self._state
        if state is not None and self._usable(state):
            return state
        with self._lock:
            state = self._state
            if state is not None and self._usable(state):
                return state
            if self._pin_refused is not None:
                # A real HSM locks its PIN after a few failures: one refusal per process is all.
                raise errors.HSMUnavailable(f"HSM unavailable: {self._pin_refused}")
            if time.monotonic() < self._down_until:
                raise errors.HSMUnavailable("HSM unavailable (waiting before reconnecting)")
            if state is not None and state.pid == os.getpid() and state.generation == self._module.generation:
                state.close()
            self._state = None
            try:
                self._state = new_state = self._open()
            except errors.HSMError as exc:
                self._down_until = time.monotonic() + self.config.reconnect_backoff
                if isinstance(exc, errors.WrongPin):
                    self._pin_refused = f"{exc} (no further login attempts in this process: fix the PIN and restart)"
                    log.error("%s", self._pin_refused)
                if self._opened_once and isinstance(exc, errors.HSMConfigError):
                    # It worked before: a token that vanished is an outage (a network HSM whose
                    # server is down shows no token), not a configuration error.
                    raise errors.HSMUnavailable(
                        f"HSM unavailable: the token is not visible (server unreachable?): {exc}"
                    ) from None
                raise
            self._opened_once = True
            self._opened_pid = os.getpid()
            return new_state

    def _open(self) -> TokenState:
        """Initialise (if needed), find the token and log in.

        SoftHSM's file store is read at C_Initialize, and a process that initialises while
        another holds a token's lock file sees no token, or fails to log in (several workers
        starting at once). So a failed attempt initialises the module again and retries, a few
        times at start-up, once when reconnecting (requests must not wait long). A wrong PIN is
        never retried: tokens lock PINs after a few failures. Each attempt runs under the
        operation deadline; a hung HSM is not retried.
        """
        delays = (0.05,) if self._opened_pid == os.getpid() else (0.05, 0.1, 0.2, 0.4, 0.8)
        failure: errors.HSMError = errors.HSMUnavailable("HSM unavailable")
        for delay in (*delays, None):
            try:
                state: TokenState = self._module.bounded(self._open_once, self._open_timeout(), _close_state, gated=False)
                return state
            except _RetryOpen as retry:
                failure = retry.failure
            if delay is None:
                break
            time.sleep(delay)
        raise failure

    def _open_timeout(self) -> float:
        """The operation deadline, once the configuration has worked (in this process or its
        parent); before that, start-up is no request and a slow first C_Initialize may take longer."""
        timeout = self.config.operation_timeout
        return timeout if self._opened_once or timeout <= 0 else max(timeout, _FIRST_OPEN_TIMEOUT)

    def _open_once(self) -> TokenState:
        generation = self._module.current()
        try:
            assert self._module.cryptoki is not None
            state = TokenState(self.config, self._module.cryptoki, self._find_token(), generation)
            state.login()
            return state
        except errors.WrongPin:
            raise
        except errors.HSMConfigError as exc:
            failure: errors.HSMError = exc
        except pkcs11.PKCS11Error:
            failure = errors.HSMUnavailable("HSM unavailable: cannot open a session")
        self._module.reset(generation)
        raise _RetryOpen(failure)

    def _find_token(self) -> Any:
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
            raise errors.HSMConfigError(f"OAUTH_HSM_TOKEN_LABEL: more than one token is labelled {cfg.token_label!r}") from None
        if cfg.token_label:
            raise errors.HSMConfigError(
                f"OAUTH_HSM_TOKEN_LABEL: no token labelled {cfg.token_label!r} in {cfg.module}; {self._present_tokens()}"
            )
        raise errors.HSMConfigError(f"OAUTH_HSM_SLOT: no token present in slot {cfg.slot}; {self._present_tokens()}")

    def _present_tokens(self) -> str:
        """What the module does show, so a wrong label or store is obvious from one line."""
        try:
            labels = sorted(
                label for s in self._module.lib.get_slots(token_present=True) if (label := str(s.get_token().label).strip())
            )  # a free slot has no label
        except pkcs11.PKCS11Error:
            labels = []
        seen = f"tokens present: {', '.join(repr(x) for x in labels)}" if labels else "the module shows no initialised token"
        return seen + _where_tokens_come_from(self.config.module)

    def close(self) -> None:
        """Close this process's sessions (logging out when the last one closes)."""
        with self._lock:
            if self._state is not None and self._state.pid == os.getpid():
                self._state.close()
            self._state = None

    def check(self) -> None:
        """Readiness: raises HSMUnavailable unless the token answers and we are logged in."""
        state = self._token_state()
        with self._module.operation(self.config.pool_timeout):
            if not self._bounded(state.still_logged_in):
                state.broken = True
                raise errors.HSMUnavailable("HSM unavailable: not logged in")

    def _bounded(self, fn: Callable[[], Any], on_late: Callable[[Any], None] | None = None) -> Any:
        """A call into the library, inside the operation gate, under the operation deadline."""
        return self._module.bounded(fn, self.config.operation_timeout, on_late)

    def _alive(self, state: TokenState) -> bool:
        try:
            return bool(self._bounded(state.still_logged_in))
        except errors.HSMUnavailable:
            return False

    # -- running operations ------------------------------------------------------------------

    def run(self, ref: KeyRef, op: Callable[[Any], Any], *, input_dependent: bool = False) -> Any:
        """Run ``op(key_object)`` on a pooled session; recover once from stale handles.

        ``input_dependent``: the operation's outcome depends on data from outside (a ciphertext).
        A generic failure while the session is still healthy is then the data's fault, not an
        outage (some tokens report bad padding or a bad GCM tag as CKR_GENERAL_ERROR).
        """
        for attempt in (1, 2):
            state = self._token_state()
            outcome, value = self._attempt(state, ref, op, input_dependent)
            if outcome == "ok":
                return value
            if outcome == "retry" and attempt == 1:
                continue
            if outcome == "failed":
                # Not a stale handle, not our input: the module or token failed. Start it afresh
                # on the next call (outside the operation gate: re-initialising waits for it).
                self._module.reset(state.generation)
            raise value
        raise AssertionError("unreachable")

    def _attempt(self, state: TokenState, ref: KeyRef, op: Callable[[Any], Any], input_dependent: bool) -> tuple[str, Any]:
        with self._module.operation(self.config.pool_timeout):
            ps = state.acquire(self._bounded)
            try:
                # Abandoned (the deadline passed): the call goes on; its session is closed when it
                # returns, never put back into the pool. Nothing is reset under it.
                result = self._bounded(lambda: op(ps.key(ref)), lambda _: state.discard(ps))
            except Abandoned as exc:
                return "error", exc
            except errors.HSMUnavailable as exc:  # the circuit is open (deadline.py): nothing ran
                state.release(ps)
                return "error", exc
            except _STALE:
                state.discard(ps)
                if not self._alive(state):
                    state.broken = True  # everything was closed underneath: log in again
                return "retry", errors.HSMUnavailable("HSM unavailable: session lost twice")
            except pkcs11.NoSuchKey:
                state.release(ps)
                if not self._alive(state):
                    state.broken = True
                    return "retry", errors.HSMUnavailable("HSM unavailable: not logged in")
                return "error", errors.KeyNotFound(f"no key labelled {ref.label!r} in the token")
            except _INPUT:
                state.release(ps)
                return "error", Rejected()
            except _UNSUPPORTED as exc:
                state.release(ps)
                return "error", errors.HSMError(f"the token cannot do this operation ({type(exc).__name__})")
            except pkcs11.PKCS11Error as exc:
                if input_dependent and self._alive(state):
                    state.release(ps)
                    return "error", Rejected()
                state.discard(ps)
                state.broken = True
                return "failed", errors.HSMUnavailable(f"HSM unavailable: {type(exc).__name__}")
            state.release(ps)
            return "ok", result

    def _with_session(self, fn: Callable[[Any], Any], *, rw: bool = False, deadline: bool = True) -> Any:
        """Run ``fn(session)`` on a fresh session: key management and lookups, not hot paths.
        ``deadline=False`` for key generation and deletion (an operator's command, not a request:
        generating an RSA key takes seconds)."""
        state = self._token_state()
        with self._module.operation(self.config.pool_timeout):
            if not deadline:
                return _in_new_session(state, fn, rw)
            return self._bounded(lambda: _in_new_session(state, fn, rw))

    def random(self, nbytes: int) -> bytes:
        """``nbytes`` from the token's random generator (C_GenerateRandom)."""
        if not 1 <= nbytes <= 1024:
            raise ValueError("1 to 1024 random bytes at a time")
        return bytes(self._with_session(lambda s: s.generate_random(nbytes * 8)))

    def mechanisms(self) -> set[str]:
        state = self._token_state()

        def listed() -> set[str]:
            return {m.name for m in state.token.slot.get_mechanisms() if hasattr(m, "name")}

        try:
            with self._module.operation(self.config.pool_timeout):
                names: set[str] = self._bounded(listed)
                return names
        except pkcs11.PKCS11Error:
            raise errors.HSMUnavailable("HSM unavailable: cannot list mechanisms") from None

    def mechanism_names(self) -> set[str]:
        if self._mechanisms is None:  # a token's mechanism list does not change while we run
            self._mechanisms = self.mechanisms()
        return self._mechanisms

    def has_mechanism(self, name: str) -> bool:
        return name in self.mechanism_names()

    # -- keys -----------------------------------------------------------------------------------

    def key(self, label: str) -> TokenKey:
        """The key pair labelled ``label``, checked safe (sensitive, never extractable) and
        usable: the token has the mechanisms its algorithm needs (refused here, at start-up,
        rather than failing every request)."""
        info = self._keys.get(label)
        if info is None:
            info = self.key_info(label)
            missing = missing_mechanisms(self.mechanism_names(), USE_MECHANISMS[info.alg])
            if missing:
                raise errors.HSMConfigError(f"key {label!r}: this token cannot do {info.alg} (it lacks {', '.join(missing)})")
            self._keys[label] = info
        return TokenKey(self, info)

    def key_info(self, label: str) -> KeyInfo:
        """Public facts of the key pair labelled ``label`` (its JWK), whatever the token can do with it."""
        info = self._keys.get(label)
        if info is None:
            info = self._with_session(lambda s: load_key_info(s, label))
        return info

    def secret_key(self, label: str) -> TokenSecretKey:
        """The AES or HMAC key labelled ``label``, checked safe."""
        info = self._secrets.get(label)
        if info is None:
            info = self._with_session(lambda s: load_secret_info(s, label))
            self._secrets[label] = info
        return TokenSecretKey(self, info)

    def forget_key_cache(self) -> None:
        """Read key facts from the token again on next use (rotation, destroy elsewhere)."""
        self._keys = {}
        self._secrets = {}

    def list_keys(self) -> list[KeyInfo | SecretKeyInfo | KeyProblem]:
        """Every key in the token; one we would refuse is listed with the reason."""
        rows: list[KeyInfo | SecretKeyInfo | KeyProblem] = self._with_session(list_keys)
        return rows

    def generate_key(self, alg: str, use: str, label: str, *, rsa_bits: int = 2048, crv: str = "P-256") -> KeyInfo:
        """Generate a key pair inside the token: token object, private, sensitive, never extractable."""
        spec = ALGORITHMS.get(alg)
        if spec is None:
            raise errors.UnsupportedAlgorithm(f"unknown or refused algorithm {alg!r}")
        if use != spec.use:
            raise errors.UnsupportedAlgorithm(f"{alg} keys have use {spec.use!r}, not {use!r}")
        missing = missing_mechanisms(self.mechanisms(), REQUIRED[alg])
        if missing:
            raise errors.UnsupportedAlgorithm(f"this token cannot do {alg}: it lacks {', '.join(missing)}")
        if spec.kty == "RSA" and not 2048 <= rsa_bits <= 8192:
            raise errors.UnsupportedAlgorithm("RSA keys must have 2048 to 8192 bits")
        curve = spec.crv or crv
        if spec.kty == "EC" and curve not in CURVES:
            raise errors.UnsupportedAlgorithm(f"unsupported curve {curve!r}")

        def generate(session: Any) -> KeyInfo:
            check_new_label(session, label)
            generate_pair(session, spec, label, rsa_bits, curve)
            write_metadata(session, label, {"alg": alg, "use": use})
            return load_key_info(session, label)

        info: KeyInfo = self._with_session(generate, rw=True, deadline=False)
        self._keys[label] = info
        return info

    def generate_secret_key(self, kind: str, label: str) -> SecretKeyInfo:
        """Generate an AES-256 (``aes``) or HMAC-SHA-256 (``hmac``) key inside the token."""
        if kind not in SECRET_KINDS:
            raise errors.UnsupportedAlgorithm(f"unknown secret key kind {kind!r} (aes or hmac)")
        missing = missing_mechanisms(self.mechanisms(), SECRET_KINDS[kind][2])
        if missing:
            raise errors.UnsupportedAlgorithm(f"this token cannot make {kind} keys: it lacks {', '.join(missing)}")

        def generate(session: Any) -> SecretKeyInfo:
            check_new_label(session, label)
            generate_secret(session, kind, label)
            write_metadata(session, label, {"kind": kind})
            return load_secret_info(session, label)

        info: SecretKeyInfo = self._with_session(generate, rw=True, deadline=False)
        self._secrets[label] = info
        return info

    def destroy_key(self, label: str) -> None:
        """Delete a key (pair or secret) and its metadata (key rotation's last step)."""

        def destroy(session: Any) -> None:
            objs = list(session.get_objects({Attribute.LABEL: label}))
            if not objs:
                raise errors.KeyNotFound(f"no key labelled {label!r} in the token")
            for obj in objs:
                obj.destroy()

        self._with_session(destroy, rw=True, deadline=False)
        self._keys.pop(label, None)
        self._secrets.pop(label, None)


class _RetryOpen(Exception):
    """An attempt to open the token failed in a way worth another attempt (``failure`` if not)."""

    def __init__(self, failure: errors.HSMError):
        super().__init__(str(failure))
        self.failure = failure


def _close_state(state: TokenState | None) -> None:
    """A login that finished after its caller gave up: nobody will use it."""
    if state is not None:
        state.close()


def _in_new_session(state: TokenState, fn: Callable[[Any], Any], rw: bool) -> Any:
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
        close_quietly(session)


def _where_tokens_come_from(module_path: str) -> str:
    """Why a module may show no token, for the one-line start-up error."""
    name = os.path.basename(module_path).lower()
    if "softhsm" in name:
        conf = os.environ.get("SOFTHSM2_CONF")
        return (
            f" (SoftHSM reads SOFTHSM2_CONF={conf})"
            if conf
            else " (SOFTHSM2_CONF is not set: SoftHSM uses its system-wide token directory)"
        )
    if "p11-kit-client" in name:
        address = os.environ.get("P11_KIT_SERVER_ADDRESS")
        if not address:
            return " (P11_KIT_SERVER_ADDRESS is not set: p11-kit-client.so does not know where the server is)"
        path = address.partition("unix:path=")[2]
        if path and not os.path.exists(path):
            return f" (no p11-kit server listens at P11_KIT_SERVER_ADDRESS={address})"
        return f" (as exported by the p11-kit server at P11_KIT_SERVER_ADDRESS={address})"
    return " (a network HSM's client library shows no token when it cannot reach its server)"
