"""Rate limits backed by Redis, through Flask-Limiter (``OAUTH_HSM_RATE_LIMITS``).

Three kinds, each counted per endpoint (docs/configuration.md, "Rate limits"):

* ``address``: requests per source address, before anything is authenticated (Flask-Limiter's
  route decorator);
* ``client``: requests per authenticated client or resource server. Flask-Limiter evaluates route
  limits before the view runs, before we know who authenticated, so these use its limit as a
  context manager inside the endpoint, right after authentication (keying on a *claimed* id
  would let anyone exhaust another client's budget);
* ``hsm``: private-key operations spent before authentication (an encrypted client assertion is
  decrypted in the token before we know it is genuine), per source address.

A breach answers 429 with ``Retry-After``. Counters live in the same Redis as everything else,
through the store's own client (one Redis, a Sentinel master, or a Cluster: :class:`StoreClientStorage`);
when it is down, the request fails closed with 503 like any other Redis failure. ``off``
disables all of them (benchmarks, or a gateway that limits instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, request
from flask_limiter import Limiter, RateLimitExceeded
from limits.storage import RedisStorage

from .clients import IPNetwork
from .errors import RateLimitedError
from .settings import RateLimits
from .web import client_address

__all__ = ["RateLimitExceeded", "RateLimiter", "retry_after_seconds"]


class StoreClientStorage(RedisStorage):
    """limits' Redis storage on a client we already have (limits' documented extension point: a
    ``Storage`` subclass registers its ``STORAGE_SCHEME``). One Redis, a Sentinel master and a
    Cluster all work: the fixed window is one key per counter (INCR and EXPIRE in one script), so
    no operation spans slots; the counters share the store's timeouts, no-retry policy and pool."""

    STORAGE_SCHEME = ["flask-oauth-hsm"]

    def __init__(
        self, uri: str, client: Any = None, key_prefix: str = "LIMITS", wrap_exceptions: bool = False, **options: Any
    ) -> None:
        if client is None:
            raise ValueError("StoreClientStorage needs the store's Redis client")
        super(RedisStorage, self).__init__(uri, wrap_exceptions=wrap_exceptions)
        self.key_prefix = key_prefix
        self.target_server = "redis"
        self.dependency = self.dependencies["redis"].module
        self.storage = client
        self.initialize_storage(uri)


class RateLimiter:
    def __init__(self, app: Flask, limits: RateLimits | None, redis_client: Any, prefix: str, trusted: tuple[IPNetwork, ...]):
        self.limits = limits
        self._trusted = trusted
        self._limiter: Limiter | None = None
        if limits is not None:
            self._limiter = Limiter(
                key_func=self.address,
                app=app,
                storage_uri="flask-oauth-hsm://",
                storage_options={"client": redis_client, "key_prefix": prefix + "limits"},
                strategy="fixed-window",
                key_prefix="",
                swallow_errors=False,
                default_limits=[],
                headers_enabled=False,
            )

    def address(self) -> str:
        return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), self._trusted) or "unknown"

    def per_address(self, endpoint: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Route decorator: the ``address`` limit of ``endpoint``."""
        if self._limiter is None or self.limits is None:
            return lambda view: view
        return self._limiter.limit(self.limits.address, key_func=self.address, scope=f"{endpoint}:address")

    def count_client(self, endpoint: str, client_id: str) -> None:
        """Count one request of an authenticated ``client_id`` at ``endpoint`` (429 past the limit)."""
        if self._limiter is None or self.limits is None:
            return
        with self._limiter.limit(self.limits.client, key_func=lambda: client_id, scope=f"{endpoint}:client"):
            pass

    def spend_hsm_operation(self) -> None:
        """Count one unauthenticated private-key operation for the caller's address."""
        if self._limiter is None or self.limits is None:
            return
        with self._limiter.limit(self.limits.hsm, key_func=self.address, scope="hsm:address"):
            pass


def retry_after_seconds(exc: RateLimitExceeded) -> int:
    """Seconds until the breached window ends (at most one window)."""
    item = getattr(exc.limit, "limit", None)
    return max(1, int(item.get_expiry())) if item is not None else 1


def limited_error(exc: RateLimitExceeded) -> RateLimitedError:
    return RateLimitedError("too many requests", headers={"Retry-After": str(retry_after_seconds(exc))})
