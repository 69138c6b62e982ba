"""Connecting to Redis (one server, a Sentinel service, a Cluster), and the one mapping of Redis
failures to :class:`StoreUnavailable`.

Short timeouts and no retries: a slow or unreachable Redis must become a quick 503 (the client
retries), never a hung worker. The URL is never echoed with its password. Sentinel and Cluster go
through redis-py's own clients: the Sentinel pool asks the sentinels for the master on every new
connection, so traffic follows a failover without a restart; the cluster client follows MOVED
and re-reads the topology after a node failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from ..errors import StoreUnavailable
from .urls import Kind, RedisTarget, parse_redis_url

# RedisClusterException (e.g. CROSSSLOT, "no startup node answers") is not a RedisError.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, OSError)
MAX_CONNECTIONS = 256  # per process and node: above any sane thread count


def _no_retries() -> Retry:
    return Retry(NoBackoff(), 0)  # fail fast: the endpoint answers 503, the OAuth client retries


def connect(url: str, timeout: float) -> Any:
    """A client for ``url`` (any form of :mod:`.urls`) with ``timeout`` on every connect and read."""
    target = parse_redis_url(url)
    if target.kind == "sentinel":
        return _sentinel_master(target, timeout)
    if target.kind == "cluster":
        return _cluster(target, timeout)
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_no_retries(),
        health_check_interval=0,
        max_connections=MAX_CONNECTIONS,
    )


def _sentinel_master(target: RedisTarget, timeout: float) -> redis.Redis:
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "ssl": target.tls}
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.sentinel_username is not None:
        sentinel_kwargs["username"] = target.sentinel_username
    sentinel = Sentinel(
        list(target.hosts), sentinel_kwargs=sentinel_kwargs, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    assert target.service is not None
    master: redis.Redis = sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_no_retries(),
        health_check_interval=0,
        max_connections=MAX_CONNECTIONS,
    )
    return master


def _cluster(target: RedisTarget, timeout: float) -> RedisCluster:
    # retry=Retry(NoBackoff(), 0): no command retried by the client. MOVED/ASK are still followed
    # (redirections, not retries); the node clients themselves never retry (redis-py's default).
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_no_retries(),
        max_connections=MAX_CONNECTIONS,  # reads from masters only (the default)
    )


def topology(client: Any) -> Kind:
    """What an (injected or built) client talks to: the WAIT default and the key layout depend on it."""
    if isinstance(client, RedisCluster):
        return "cluster"
    if isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool):
        return "sentinel"
    return "single"


def redacted(url: str) -> str:
    """``url`` without its passwords, for messages and logs."""
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    query = (
        "&".join(("sentinel_password=***" if q.startswith("sentinel_password=") else q) for q in parts.query.split("&"))
        if parts.query
        else ""
    )
    return urlunsplit((parts.scheme, userinfo + at + hostlist, parts.path, query, parts.fragment))


@contextmanager
def unavailable_on_error() -> Iterator[None]:
    """Turn any Redis failure inside the block into StoreUnavailable (fail closed)."""
    try:
        yield
    except StoreUnavailable:
        raise
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from None
