"""A deadline for every call into the token (``OAUTH_HSM_OPERATION_TIMEOUT``).

A network HSM's client library may have no timeout of its own: ``p11-kit-client.so`` blocks for
as long as its server does not answer (a hung server, a partition that drops packets). Without a
deadline every request thread that reaches the token would block with it, and the pool timeout
would only protect the threads still waiting for a session. So each call runs on a worker thread
and the request waits at most the deadline; then it gets :class:`Abandoned` (an
``HSMUnavailable``: 503) and the call is left to finish on its own.

While an abandoned call has not returned, the module counts as hung: new calls fail fast (a
circuit, like the reconnect back-off) instead of queueing behind it, so at most the calls that
were in flight when the HSM stopped answering are ever stuck. An abandoned call keeps its place
in the module's operation gate until it returns, so the module is never finalised under it
(PKCS#11 v2.40 §5.4). When it returns, ``on_late`` cleans up what its caller gave up (a session
that goes back to no pool, a login nobody installed) and the circuit closes.

Cost: one thread hand-off per call (tens of µs, against ~0.4 ms for a remote ES256 signature);
``0`` runs calls inline, without a deadline. The workers are daemon threads: a call stuck in a
hung HSM must not keep the process from exiting (``ThreadPoolExecutor`` joins its threads at exit).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .. import errors

T = TypeVar("T")
_MAX_WORKERS = 256  # threads are started on demand, so in practice: the peak of concurrent calls


class Abandoned(errors.HSMUnavailable):
    """The HSM did not answer within the deadline (the call goes on without its caller)."""


class _DaemonWorkers:
    """Daemon threads running submitted calls, started on demand up to ``limit`` (an idle one is
    reused first, as in ``ThreadPoolExecutor``)."""

    def __init__(self, limit: int):
        self._tasks: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._started = 0
        self._limit = limit

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._tasks.put((fn, future))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                start = self._started < self._limit
                self._started += start
            if start:
                threading.Thread(target=self._work, name="oauth-hsm-token", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            fn, future = self._tasks.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                    future.set_exception(exc)
            del fn, future
            self._idle.release()


class Deadlines:
    """One process's worker threads for token calls, and the count of abandoned calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: _DaemonWorkers | None = None
        self.abandoned = 0

    def after_fork_in_child(self) -> None:
        # The parent's worker threads do not exist in the child; nor do its abandoned calls.
        self._lock = threading.Lock()
        self._executor = None
        self.abandoned = 0

    def call(
        self,
        fn: Callable[[], T],
        timeout: float,
        *,
        hold: Callable[[], None] | None = None,
        release: Callable[[], None] | None = None,
        on_late: Callable[[Any], None] | None = None,
    ) -> T:
        """``fn()`` within ``timeout`` seconds, else :class:`Abandoned`. ``hold``/``release``: what
        the abandoned call keeps until it returns (its place in the operation gate)."""
        if timeout <= 0:
            return fn()
        if self.abandoned:
            raise errors.HSMUnavailable("HSM unavailable: an earlier call has not returned yet")
        future = self._pool().submit(fn)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.cancel():  # never started (every worker busy): nothing is stuck
                raise Abandoned("HSM unavailable: no worker free within the operation timeout") from None
            with self._lock:
                self.abandoned += 1
            if hold is not None:
                hold()
            future.add_done_callback(lambda done: self._returned(done, release, on_late))
            raise Abandoned(f"HSM unavailable: no answer within OAUTH_HSM_OPERATION_TIMEOUT ({timeout:g} s)") from None

    def _returned(
        self, done: concurrent.futures.Future[Any], release: Callable[[], None] | None, on_late: Callable[[Any], None] | None
    ) -> None:
        try:
            if on_late is not None:
                on_late(None if done.exception() is not None else done.result())
        finally:
            if release is not None:
                release()
            with self._lock:
                self.abandoned -= 1

    def _pool(self) -> _DaemonWorkers:
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = _DaemonWorkers(_MAX_WORKERS)
                executor = self._executor
        return executor
