"""Writes whose loss would reopen something, acknowledged by replicas before we act on them.

Redis replicates asynchronously: a master can acknowledge a ``jti`` and die before any replica
has it, and the promoted replica — which still holds the epoch key, so the reset rule does not
fire — accepts the same ``jti`` again. ``WAIT <replicas> <timeout>`` (sent in the same round trip,
on the same connection, right after the write) returns how many replicas have everything that
connection wrote; Sentinel promotes the replica with the largest replication offset, so one
acknowledgement survives the loss of the master. Too few acknowledgements → StoreUnavailable
(the write stays on the master: the id is used, fail closed; the client retries with a new one).
The same check refuses a resumed old master that the sentinels have not demoted yet (it has no
replica left to acknowledge), which would otherwise accept ids the new master never saw.
``min-replicas-to-write`` is not a substitute: it refuses writes only after ``min-replicas-max-lag``
seconds without contact (docs/operations.md, "Replication"). A refusal needs no acknowledgement: an id
found used is refused whatever the replicas have (:class:`Written`).

Cluster: ``WAIT`` names no key, so redis-py's cluster client would send it to any node. It runs
instead on the client of the node that owns the record's slot, in one pipeline with the write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError, MovedError, NoScriptError, TimeoutError as RedisTimeoutError

from ..errors import StoreUnavailable
from .connection import REDIS_ERRORS
from .thread_connection import thread_executor

Command = tuple[Any, ...]
UNACKNOWLEDGED = "Redis unavailable: replicas did not acknowledge"


class Written:
    """The results of a round trip, and whether enough replicas acknowledged it."""

    __slots__ = ("results", "acknowledged")

    def __init__(self, results: list[Any], acknowledged: bool):
        self.results, self.acknowledged = results, acknowledged

    def confirmed(self) -> list[Any]:
        """The results, if they will survive the loss of the master; else StoreUnavailable."""
        if not self.acknowledged:
            raise StoreUnavailable(UNACKNOWLEDGED)
        return self.results


class ReplicatedWrites:
    """Runs commands on the master owning ``key``; with ``replicas`` > 0, WAITs in the same round trip."""

    def __init__(self, client: Any, cluster: bool, replicas: int, timeout: float):
        self.client = client
        self.cluster = cluster
        self.replicas = replicas
        self.timeout_ms = max(1, int(timeout * 1000))
        self._execute = thread_executor(client)  # single commands: the token path's replay check

    def run(self, key: str, commands: Sequence[Command], script: str | None = None) -> Written:
        """``commands`` (all on ``key``'s slot) in one round trip. ``script``: loaded again on NoScriptError."""
        if self.replicas == 0 and len(commands) == 1:
            return Written([self._direct(commands[0], script)], True)  # the fast path: no pipeline
        for attempt in (1, 2):
            node = self._node_client(key)
            try:
                return self._pipeline(node, commands, script)
            except MovedError:  # the slot moved (failover, resharding): follow it once
                self._refresh()
                if attempt == 2:
                    raise
            except (RedisConnectionError, RedisTimeoutError):
                self._refresh()
                raise
        raise AssertionError("unreachable")

    def _direct(self, command: Command, script: str | None) -> Any:
        try:
            return self._execute(*command)
        except NoScriptError:
            if script is None:
                raise
            self.client.script_load(script)
            return self._execute(*command)

    def _pipeline(self, node: Any, commands: Sequence[Command], script: str | None) -> Written:
        try:
            results = self._send(node, commands)
        except NoScriptError:  # a restarted or flushed node: load and send the whole batch again
            if script is None:
                raise
            node.script_load(script)
            results = self._send(node, commands)
        acknowledged = not self.replicas or int(results.pop()) >= self.replicas
        return Written(results, acknowledged)

    def _send(self, node: Any, commands: Sequence[Command]) -> list[Any]:
        pipe = node.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        if self.replicas:
            pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        results: list[Any] = pipe.execute()
        return results

    def _node_client(self, key: str) -> Any:
        if not self.cluster:
            return self.client
        return self.client.get_redis_connection(self.client.get_node_from_key(key))

    def _refresh(self) -> None:
        """Read the Cluster's topology again (what redis-py's own client does after such errors)."""
        if self.cluster:
            with contextlib.suppress(*REDIS_ERRORS):  # no node answers: the next request tries again
                self.client.nodes_manager.initialize()
