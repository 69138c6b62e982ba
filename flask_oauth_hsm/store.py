"""Redis: single-use ids (replay caches), revoked token ids, and the epoch sentinel (DESIGN.md §9).

* Every key lives under the configured prefix and carries a TTL; ids are hashed, so a 64 KB jti
  costs a 43-character key.
* A replay check is one atomic server-side step (a Lua script: ``SET NX EX`` plus the epoch
  read), never get-then-set.
* Epoch sentinel: a key without TTL holding the time (in milliseconds) the current replay state
  began. When Redis is flushed or restarts without persistence the sentinel disappears with the
  replay keys; the next check starts a new epoch, and until every assertion of the old epoch has
  expired (``window`` seconds) only an id whose ``iat`` is at or after the epoch is accepted —
  anything older may have been used already. ``iat`` has one-second resolution, so for the
  rest of the epoch's own second nothing is accepted: that second fails closed, not open.
  Revocations are treated the same way: tokens issued before the epoch are inactive.
* Redis unreachable, slow past the timeout, or answering errors: :class:`StoreUnavailable`
  (endpoints answer 503 and issue nothing).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
import time
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry

from .errors import StoreUnavailable

_USE_ONCE = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local fresh = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2])
if fresh then return {1, tonumber(epoch)} end
return {0, tonumber(epoch)}
"""


# RedisClusterException (e.g. CROSSSLOT without a hash-tagged prefix) is not a RedisError.
_REDIS_ERRORS = (redis.RedisError, RedisClusterException, OSError)


class Replayed(Exception):
    """This id was used before (or may have been: see the epoch rule)."""


@dataclass(frozen=True)
class RevocationState:
    revoked: bool
    epoch: float  # seconds


def _hashed(namespace: str, ident: str) -> str:
    digest = hashlib.sha256(namespace.encode() + b"\0" + ident.encode("utf-8", "surrogatepass")).digest()
    return namespace + ":" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class _ThreadConnections:
    """One connection per thread (and process) for the replay check, the one command on the
    token path. redis-py's ``execute_command`` checks a pooled connection out and in on every
    command (pool lock, pid check, retry wrapper, argument filtering): about 40 µs of CPU per
    command on the 2-core bench machine, two thirds of the request's client-side Redis cost.

    The checks that matter are kept: a connection with unread data or at EOF (Redis restarted)
    is reconnected before use, as the pool does; a connection is kept only after a complete
    reply was read, and on any other outcome (timeout, connection error, interruption) it is
    closed and dropped, so no stale reply can ever be read by the next command. A connection
    inherited across fork is dropped without touching the parent's socket.
    """

    def __init__(self, pool: redis.ConnectionPool):
        self._pool = pool
        self._local = threading.local()

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
            self._local.conn = conn
        return conn

    def execute(self, *args):
        conn = self._connection()
        try:  # what the pool checks too: unread data or EOF (Redis restarted) means reconnect
            stale = conn.can_read()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True
        if stale:
            conn.disconnect()
        try:
            conn.send_packed_command(conn.pack_command(*args), check_health=False)
            return conn.read_response()
        except redis.ResponseError:
            raise  # an error reply (e.g. NOSCRIPT): read completely, the connection is clean
        except BaseException:
            self._local.conn = None
            conn.disconnect()
            raise


class Store:
    def __init__(self, client: redis.Redis, prefix: str, *, owned: bool = False):
        self.client = client
        self.prefix = prefix
        self._epoch_key = prefix + "epoch"
        self._sha = hashlib.sha1(_USE_ONCE.encode()).hexdigest()
        # Only for a client we built from a URL: an injected one (Sentinel, Cluster, ...) routes
        # its commands itself and is always used through its own API.
        self._direct = _ThreadConnections(client.connection_pool) if owned else None

    @classmethod
    def from_url(cls, url: str, prefix: str, timeout: float) -> "Store":
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # fail fast: the endpoint answers 503, the client retries
            health_check_interval=0,
            max_connections=256,
        )
        return cls(client, prefix, owned=True)

    def _key(self, namespace: str, ident: str) -> str:
        return self.prefix + _hashed(namespace, ident)

    def ensure_epoch(self) -> float:
        """Start an epoch if none exists (at start-up, so the first requests are not refused);
        returns its start in seconds."""
        try:
            self.client.set(self._epoch_key, int(time.time() * 1000), nx=True)
            return int(self.client.get(self._epoch_key)) / 1000
        except _REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from None

    def use_once(self, namespace: str, ident: str, *, expires_at: float, issued_at: float | None, window: int) -> None:
        """Record ``ident`` as used until ``expires_at``; raises Replayed if it was used before.

        ``window``: how long after a new epoch ids issued before it are refused (the longest
        lifetime such an id can have).
        """
        now = time.time()
        ttl = max(1, int(expires_at - now) + 1)
        try:
            fresh, epoch_ms = self._run_script(self._epoch_key, self._key(namespace, ident), int(now * 1000), ttl)
        except _REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from None
        if not fresh:
            raise Replayed("already used")
        epoch = epoch_ms / 1000
        if now < epoch + window and (issued_at is None or issued_at < epoch):
            raise Replayed("issued before the replay state was reset")

    def _run_script(self, *keys_and_args):
        """EVALSHA straight through execute_command (redis-py's Script object costs a visible
        share of the token path); the script is loaded again after a Redis restart or flush."""
        execute = self._direct.execute if self._direct is not None else self.client.execute_command
        try:
            return execute("EVALSHA", self._sha, 2, *keys_and_args)
        except NoScriptError:
            self.client.script_load(_USE_ONCE)
            return execute("EVALSHA", self._sha, 2, *keys_and_args)

    def revoke(self, jti: str, expires_at: float) -> None:
        try:
            self.client.set(self._key("revoked", jti), 1, exat=max(int(expires_at), int(time.time()) + 1))
        except _REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from None

    def revocation(self, jti: str) -> RevocationState:
        """Whether ``jti`` was revoked, and the current epoch (one round trip)."""
        try:
            revoked, epoch = self.client.mget(self._key("revoked", jti), self._epoch_key)
        except _REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from None
        epoch_s = self.ensure_epoch() if epoch is None else int(epoch) / 1000
        return RevocationState(revoked is not None, epoch_s)

    def probe(self) -> None:
        """Readiness: run the replay script itself (a throwaway id, 1 s TTL), so whatever would
        fail a token request — a Cluster slot error, a read-only replica — fails here too."""
        try:
            self.use_once("probe", secrets.token_hex(8), expires_at=time.time(), issued_at=time.time(), window=0)
        except Replayed:
            pass
