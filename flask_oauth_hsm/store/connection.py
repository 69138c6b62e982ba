"""Connecting to Redis, and the one mapping of Redis failures to :class:`StoreUnavailable`.

Short timeouts and no retries: a slow or unreachable Redis must become a quick 503 (the client
retries), never a hung worker. The URL is never echoed with its password.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from ..errors import StoreUnavailable

# RedisClusterException (e.g. CROSSSLOT without a hash-tagged prefix) is not a RedisError.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, RedisClusterException, OSError)


def connect(url: str, timeout: float) -> "redis.Redis[bytes]":
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # fail fast: the endpoint answers 503, the client retries
        health_check_interval=0,
        max_connections=256,
    )


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = (f"{parts.username}:***@" if parts.username else ":***@") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@contextmanager
def unavailable_on_error() -> Iterator[None]:
    """Turn any Redis failure inside the block into StoreUnavailable (fail closed)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}") from None
