"""One process's sessions with the token: the logged-in anchor session and a pool of others.

Login state belongs to the application (PKCS#11 v2.40 §6.7.7): one logged-in anchor session keeps
it, pooled sessions share it, and closing the anchor would log every session out. Pooled sessions
cache the key objects they found, by (object class, label).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pkcs11
from pkcs11 import ObjectClass

from .. import errors
from .cryptoki import CKR_OK, CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_USER_ALREADY_LOGGED_IN, Cryptoki
from .deadline import Abandoned

# Runs a call into the library under the operation deadline: (call, cleanup if abandoned) -> result.
Bounded = Callable[[Callable[[], Any], Callable[[Any], None]], Any]


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
    operation_timeout: float = 2.0  # deadline of each call into the library (deadline.py); 0: none

    @staticmethod
    def read_pin_file(path: str) -> str:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise errors.HSMConfigError(f"OAUTH_HSM_PIN_FILE: cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class KeyRef:
    """Which object an operation uses: a private key (pairs) or a secret key (AES, HMAC)."""

    label: str
    object_class: ObjectClass = ObjectClass.PRIVATE_KEY


class PooledSession:
    __slots__ = ("session", "objects")

    def __init__(self, session: Any):
        self.session = session
        self.objects: dict[KeyRef, Any] = {}  # key objects bound to this session

    def key(self, ref: KeyRef) -> Any:
        obj = self.objects.get(ref)
        if obj is None:
            obj = self.session.get_key(object_class=ref.object_class, label=ref.label)
            self.objects[ref] = obj
        return obj


class TokenState:
    """One process's view of the token: library, anchor login, session pool."""

    def __init__(self, config: HSMConfig, cryptoki: Cryptoki, token: Any, generation: int):
        self.pid = os.getpid()
        self.generation = generation
        self.config = config
        self.cryptoki = cryptoki
        self.token = token
        self.anchor: Any = None
        self.pool: queue.LifoQueue[PooledSession] = queue.LifoQueue()
        self.opened = 0
        self.lock = threading.Lock()
        self.broken = False

    def login(self) -> None:
        session = self.token.open(rw=True)
        rv = self.cryptoki.login(session.handle, self.config.pin)
        if rv not in (CKR_OK, CKR_USER_ALREADY_LOGGED_IN):
            close_quietly(session)
            if rv in (CKR_PIN_INCORRECT, CKR_PIN_LOCKED):
                what = "incorrect" if rv == CKR_PIN_INCORRECT else "locked"
                raise errors.WrongPin(f"OAUTH_HSM_PIN: the user PIN is {what} for token {self.token.label!r}")
            raise errors.HSMConfigError(f"OAUTH_HSM_PIN: login to token {self.token.label!r} failed")
        self.anchor = session

    def acquire(self, bounded: Bounded) -> PooledSession:
        """A pooled session: an idle one, a new one (opened through ``bounded``: under the
        operation deadline), or one released within the pool timeout."""
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
                opened: PooledSession = bounded(lambda: PooledSession(self.token.open()), self._opened_late)
                return opened
            except Abandoned:
                raise  # still counted: _opened_late closes it and gives the place back
            except BaseException:
                self._uncount()
                raise
        try:
            return self.pool.get(timeout=self.config.pool_timeout)
        except queue.Empty:
            raise errors.HSMUnavailable("HSM unavailable: no session free within the pool timeout") from None

    def release(self, ps: PooledSession) -> None:
        self.pool.put(ps)

    def discard(self, ps: PooledSession) -> None:
        close_quietly(ps.session)
        self._uncount()

    def _opened_late(self, ps: PooledSession | None) -> None:
        if ps is not None:
            close_quietly(ps.session)
        self._uncount()

    def _uncount(self) -> None:
        with self.lock:
            self.opened -= 1

    def still_logged_in(self) -> bool:
        return self.anchor is not None and self.cryptoki.logged_in(self.anchor.handle)

    def close(self) -> None:
        while True:
            try:
                close_quietly(self.pool.get_nowait().session)
            except queue.Empty:
                break
        if self.anchor is not None:
            close_quietly(self.anchor)
            self.anchor = None


def close_quietly(session: Any) -> None:
    with contextlib.suppress(pkcs11.PKCS11Error):
        session.close()
