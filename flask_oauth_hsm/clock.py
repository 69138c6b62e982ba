"""The one clock every time rule reads: JWT claims, lifetimes, replay epochs, expiry.

``now()`` is wall-clock seconds (``time.time``). Tests install a :class:`FakeClock` with
:func:`use` so expiry can be tested without sleeping; nothing else ever replaces it. Redis TTLs
still run on Redis's own clock: a fake clock changes our decisions, not how long Redis keeps a key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_source: Callable[[], float] = time.time


def now() -> float:
    return _source()


class FakeClock:
    """A clock that moves only when told to (thread-safe)."""

    def __init__(self, start: float | None = None):
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def set(self, at: float) -> None:
        with self._lock:
            self._now = at

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@contextmanager
def use(source: Callable[[], float]) -> Iterator[Callable[[], float]]:
    """Read time from ``source`` inside the block (tests only)."""
    global _source
    previous, _source = _source, source
    try:
        yield source
    finally:
        _source = previous
