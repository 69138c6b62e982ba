"""One Redis connection per thread for the single commands of the token path.

redis-py's ``execute_command`` checks a pooled connection out and back in on every command (pool
lock, pid check, retry wrapper, argument filtering): about 40 µs of CPU per command on the 2-core
bench machine, two thirds of the client-side cost of the replay check (docs/benchmarks.md,
"Where a token request's time goes"). This keeps one connection per thread and process instead.

The checks that matter are kept: a connection with unread data or at EOF (Redis restarted) is
reconnected before use, as the pool does; a connection is kept only after a complete reply was
read, and on any other outcome (timeout, connection error, interruption) it is closed and
dropped, so a stale reply can never be read by the next command. A connection inherited across
fork is left alone (its socket is the parent's) and a new one is made. Only for a plain client we
built from ``OAUTH_HSM_REDIS_URL``: Sentinel and Cluster clients route commands themselves.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from redis.connection import AbstractConnection


class ThreadConnections:
    """``execute(*command)``: ``client.execute_command`` on this thread's own connection."""

    def __init__(self, pool: redis.ConnectionPool):
        self._pool = pool
        self._local = threading.local()

    def _connection(self) -> AbstractConnection:
        conn: AbstractConnection | None = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
            self._local.conn = conn
        return conn

    def execute(self, *command: Any) -> Any:
        conn = self._connection()
        try:  # what the pool checks too: unread data or EOF (Redis restarted) means reconnect
            stale = conn.can_read()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True
        if stale:
            conn.disconnect()
        try:
            conn.send_packed_command(conn.pack_command(*command), check_health=False)
            return conn.read_response()
        except redis.ResponseError:
            raise  # an error reply (e.g. NOSCRIPT) was read completely: the connection is clean
        except BaseException:
            self._local.conn = None
            conn.disconnect()
            raise


def thread_executor(client: Any) -> Any:
    """``client.execute_command``, or a per-thread connection's when ``client`` is a plain Redis
    client on a plain connection pool (not Sentinel's, not a Cluster)."""
    pool = getattr(client, "connection_pool", None)
    if type(client) is redis.Redis and type(pool) is redis.ConnectionPool:
        return ThreadConnections(pool).execute
    return client.execute_command
