"""The polling interval of a CIBA request (CIBA Core §7.3 ``interval``, §11 ``slow_down``).

Each request has a timing record (namespace ``ciba-poll``): the earliest time of the next poll and
the current interval. A poll before that time answers ``slow_down`` and adds 5 seconds to this
request's interval (CIBA Core §11: "the interval MUST be increased by at least 5 seconds for this
and all subsequent requests"). The record changes by compare-and-set (``Store.swap``), so of two
concurrent polls at most one passes: the other was, by definition, polling too fast.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import clock
from ..errors import SlowDownError
from ..store import Replayed

if TYPE_CHECKING:
    from ..store import Store

NAMESPACE = "ciba-poll"
SLOW_DOWN_STEP = 5  # CIBA Core §11


@dataclass(frozen=True)
class Timing:
    next_poll: float
    interval: int

    def encode(self) -> bytes:
        return json.dumps([self.next_poll, self.interval]).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Timing:
        next_poll, interval = json.loads(raw)
        return cls(float(next_poll), int(interval))


def start(store: Store, handle: str, interval: int, ttl: int) -> None:
    """The first poll may come at once; each later one ``interval`` seconds after the previous."""
    store.put(NAMESPACE, handle, Timing(clock.now(), interval).encode(), ttl)


def poll(store: Store, handle: str, ttl: int) -> None:
    """Count one poll; raises SlowDownError when it came too early (and lengthens the interval)."""
    now = clock.now()
    raw = store.read(NAMESPACE, handle)
    if raw is None:  # lost with a Redis reset while its request survived: start again, strictly
        with contextlib.suppress(Replayed):
            store.put(NAMESPACE, handle, Timing(now, 0).encode(), ttl)
        raise SlowDownError("polling too fast")
    timing = Timing.decode(raw)
    if now < timing.next_poll:
        slower = timing.interval + SLOW_DOWN_STEP
        store.swap(NAMESPACE, handle, raw, Timing(now + slower, slower).encode(), ttl)
        raise SlowDownError(f"polling too fast: wait at least {slower} seconds between polls")
    if not store.swap(NAMESPACE, handle, raw, Timing(now + timing.interval, timing.interval).encode(), ttl):
        raise SlowDownError("polling too fast: another poll of this request came at the same time")
