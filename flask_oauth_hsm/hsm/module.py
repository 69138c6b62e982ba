"""One PKCS#11 module, initialised once per process, and the gate that keeps ``C_Finalize`` safe.

* PKCS#11 state does not survive ``fork`` (PKCS#11 v2.40 §6.7.1): each process initialises lazily
  on first use; a child never touches the sessions it inherited, and every lock that might have
  been held by another thread at the moment of the fork is replaced in the child.
* ``generation`` counts initialisations: sessions from an older generation are dead, whoever
  re-initialised (after fork, or after the module failed underneath us).
* PKCS#11 leaves ``C_Finalize`` undefined while other threads are inside the library (v2.40
  §5.4). Every operation therefore runs inside :meth:`Module.operation`, and re-initialisation
  waits for the operations in flight to leave (bounded) and keeps new ones out meanwhile.
* Calls into the library run under a deadline (:meth:`Module.bounded`, deadline.py): a hung
  network HSM costs a request the deadline, not its thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pkcs11

from .. import errors
from .cryptoki import Cryptoki
from .deadline import Deadlines

T = TypeVar("T")


class OperationGate:
    """Many operations at once, or one re-initialisation alone (a small readers-writer lock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._closed = False

    @contextmanager
    def operation(self, timeout: float) -> Iterator[None]:
        with self._cond:
            if not self._cond.wait_for(lambda: not self._closed, timeout):
                raise errors.HSMUnavailable("HSM unavailable: the module is being re-initialised")
            self._inside += 1
        try:
            yield
        finally:
            self.release()

    def hold(self) -> None:
        """An abandoned call (deadline.py) keeps its place until it returns: never finalise under it."""
        with self._cond:
            self._inside += 1

    def release(self) -> None:
        with self._cond:
            self._inside -= 1
            self._cond.notify_all()

    @contextmanager
    def exclusive(self, timeout: float) -> Iterator[None]:
        with self._cond:
            if not self._cond.wait_for(lambda: not self._closed, timeout):
                raise errors.HSMUnavailable("HSM unavailable: the module is being re-initialised")
            self._closed = True
            drained = self._cond.wait_for(lambda: self._inside == 0, timeout)
            if not drained:
                self._closed = False
                self._cond.notify_all()
                raise errors.HSMUnavailable("HSM unavailable: operations still in flight; not re-initialising under them")
        try:
            yield
        finally:
            with self._cond:
                self._closed = False
                self._cond.notify_all()


class Module:
    """A PKCS#11 module initialised once per process and shared by every HSM object using it."""

    def __init__(self, path: str, os_locking: bool, drain_timeout: float = 5.0):
        self.path = path
        self.os_locking = os_locking
        self.drain_timeout = drain_timeout
        self.lock = threading.Lock()
        self.gate = OperationGate()
        self.pid = 0
        self.generation = 0
        self.lib: Any = None
        self.cryptoki: Cryptoki | None = None
        self.deadlines = Deadlines()

    def after_fork_in_child(self) -> None:
        # Another thread may have held these at the fork: the child gets fresh ones.
        self.lock = threading.Lock()
        self.gate = OperationGate()
        self.deadlines.after_fork_in_child()

    def bounded(
        self, fn: Callable[[], T], timeout: float, on_late: Callable[[Any], None] | None = None, *, gated: bool = True
    ) -> T:
        """``fn()`` (calls into the library) within ``timeout`` (deadline.py); ``gated``: the caller
        is inside :meth:`operation`, and an abandoned call keeps that place until it returns."""
        if gated:
            return self.deadlines.call(fn, timeout, hold=self.gate.hold, release=self.gate.release, on_late=on_late)
        return self.deadlines.call(fn, timeout, on_late=on_late)

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

    @contextmanager
    def operation(self, timeout: float) -> Iterator[None]:
        with self.gate.operation(timeout):
            yield

    def _initialize(self) -> None:
        if not os.path.isfile(self.path):
            raise errors.HSMConfigError(f"OAUTH_HSM_PKCS11_MODULE: no such file: {self.path}")
        try:
            self.lib = pkcs11.lib(self.path)  # cached per path by python-pkcs11: one instance per process
            self.cryptoki = Cryptoki(self.lib)
        except pkcs11.PKCS11Error as exc:
            if "loading" in str(exc):  # dlopen or C_GetFunctionList failed
                raise errors.HSMConfigError(f"OAUTH_HSM_PKCS11_MODULE: {self.path} is not a loadable PKCS#11 module") from None
            raise errors.HSMConfigError(
                f"OAUTH_HSM_PKCS11_MODULE: {self.path} failed to initialise (for SoftHSM: is SOFTHSM2_CONF right?)"
            ) from None
        except (OSError, AttributeError):
            raise errors.HSMConfigError(f"OAUTH_HSM_PKCS11_MODULE: {self.path} is not a loadable PKCS#11 module") from None
        # Always a fresh C_Initialize of our own: python-pkcs11 initialised without locking, and
        # after fork the inherited state must not be used (PKCS#11 v2.40 §6.7.1). In this process,
        # no thread may be inside the library while it is finalised.
        forked = self.pid != 0 and self.pid != os.getpid()
        if forked or self.pid == 0 and self.generation == 0:
            self.cryptoki.reinitialize(self.os_locking)
        else:
            with self.gate.exclusive(self.drain_timeout):
                self.cryptoki.reinitialize(self.os_locking)
        self.generation += 1
        self.pid = os.getpid()


_modules: dict[str, Module] = {}
_modules_lock = threading.Lock()


def module(path: str, os_locking: bool) -> Module:
    with _modules_lock:
        mod = _modules.get(path)
        if mod is None:
            mod = _modules[path] = Module(path, os_locking)
        return mod


def _after_fork_in_child() -> None:
    global _modules_lock
    _modules_lock = threading.Lock()
    for mod in _modules.values():
        mod.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
