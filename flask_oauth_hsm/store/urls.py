"""The forms ``OAUTH_HSM_REDIS_URL`` accepts, parsed into a :class:`RedisTarget`.

* ``redis://``, ``rediss://``, ``unix://``: one Redis (anything ``redis.Redis.from_url`` reads);
* ``redis+sentinel://[user:password@]host:port[,host:port…]/<service>[/<db>][?sentinel_password=…]``:
  the master of a Sentinel service, found through redis-py's Sentinel client (port 26379 if omitted);
* ``redis+cluster://[user:password@]host:port[,host:port…]``: a Redis Cluster through redis-py's
  cluster client, every listed node a startup node (port 6379 if omitted);
* ``rediss+sentinel://`` and ``rediss+cluster://``: the same over TLS (to the sentinels too).

redis-py's own ``from_url`` takes one host only; several sentinels or startup nodes are what
survive the loss of one. Errors never repeat the URL: it may hold a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

Kind = Literal["single", "sentinel", "cluster"]
SINGLE_SCHEMES = ("redis", "rediss", "unix")
_MULTI = {"redis+sentinel": "sentinel", "rediss+sentinel": "sentinel", "redis+cluster": "cluster", "rediss+cluster": "cluster"}
_DEFAULT_PORT = {"sentinel": 26379, "cluster": 6379}
_SENTINEL_QUERY = ("sentinel_password", "sentinel_username")


@dataclass(frozen=True)
class RedisTarget:
    kind: Kind
    url: str = field(repr=False)  # the single-Redis URL as given (may hold a password)
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def parse_redis_url(url: str) -> RedisTarget:
    """Raises ValueError with a message that never contains the URL."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in SINGLE_SCHEMES:
        return RedisTarget("single", url)
    kind = _MULTI.get(scheme)
    if kind is None:
        raise ValueError(
            "must be a redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://, "
            "redis+cluster:// or rediss+cluster:// URL"
        )
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    hosts = tuple(_host(item, _DEFAULT_PORT[kind]) for item in hostlist.split(","))
    query = parse_qs(parts.query, keep_blank_values=True)
    if kind == "cluster":
        if parts.path not in ("", "/"):
            raise ValueError("a redis+cluster:// URL has no path (a Cluster has database 0 only)")
        if query:
            raise ValueError("a redis+cluster:// URL takes no query parameters")
        return RedisTarget("cluster", url, hosts, tls=scheme.startswith("rediss"), username=username, password=password)
    service, db = _service_and_db(parts.path)
    unknown = sorted(set(query) - set(_SENTINEL_QUERY))
    if unknown:
        raise ValueError(f"unknown query parameter {unknown[0][:40]!r} (only {', '.join(_SENTINEL_QUERY)})")
    return RedisTarget(
        "sentinel",
        url,
        hosts,
        service,
        db,
        scheme.startswith("rediss"),
        username,
        password,
        _one(query, "sentinel_username"),
        _one(query, "sentinel_password"),
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, sep, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if sep else None)


def _host(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError("every host needs a name or address (host:port,host:port)")
    if port_text == "":
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("every port must be a number from 1 to 65535")
    return host, int(port_text)


def _service_and_db(path: str) -> tuple[str, int]:
    pieces = [p for p in path.split("/") if p]
    if not pieces or len(pieces) > 2:
        raise ValueError("a redis+sentinel:// URL needs the service name as its path: /<service>[/<db>]")
    if len(pieces) == 2 and not pieces[1].isdigit():
        raise ValueError("the database after the service name must be a number")
    return unquote(pieces[0]), int(pieces[1]) if len(pieces) == 2 else 0


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None
