"""Where clients and resource servers come from: one JSON file, or the host app's loaders.

The file is validated whole at start-up (errors name the entry and field). Loader entries
(``@oauth.client_loader``, ``@oauth.resource_server_loader``) go through the same validation and
the same fit checks, and are cached per process for a short while. A loader that fails is an
outage (503); a loader entry that is invalid, or that is not what was asked for, is unknown.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from marshmallow import ValidationError

from ..errors import ConfigError, RegistryUnavailable
from .model import Client, Credentials, ResourceServer
from .schema import build_client, build_resource_server, entry_error

log = logging.getLogger("flask_oauth_hsm")
Check = Callable[[Credentials], None]
E = TypeVar("E", bound=Credentials)


class ClientRegistry(Protocol):
    """What the endpoints need from a registry, whatever stores it."""

    def client(self, client_id: str) -> Client | None: ...

    def resource_server(self, client_id: str) -> ResourceServer | None: ...

    def resource_server_for(self, resource: str) -> ResourceServer | None: ...

    def auth_methods(self) -> list[str]: ...


class Registry:
    """Lookups by client_id (clients and resource servers) and by resource URI."""

    def __init__(self, clients: dict[str, Client], resource_servers: dict[str, ResourceServer]):
        self._clients = clients
        self._rs_by_id = resource_servers
        self._rs_by_resource = {rs.resource: rs for rs in resource_servers.values()}

    @classmethod
    def from_file(cls, path: str, check: Check | None = None) -> Registry:
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except OSError as exc:
            raise ConfigError(f"OAUTH_HSM_REGISTRY: cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"OAUTH_HSM_REGISTRY: {path} is not valid JSON ({exc})") from None
        return cls.from_document(doc, check)

    @classmethod
    def from_document(cls, doc: Any, check: Check | None = None) -> Registry:
        if not isinstance(doc, dict) or set(doc) - {"clients", "resource_servers"}:
            raise ConfigError("OAUTH_HSM_REGISTRY: must be an object with 'clients' and 'resource_servers' lists")
        clients = _entries(doc.get("clients", []), "clients", build_client)
        servers = _entries(doc.get("resource_servers", []), "resource_servers", build_resource_server)
        clashing = sorted(set(clients) & set(servers))
        if clashing:
            raise ConfigError(f"OAUTH_HSM_REGISTRY: {clashing[0]!r} is both a client and a resource server")
        resources = [rs.resource for rs in servers.values()]
        if len(resources) != len(set(resources)):
            raise ConfigError("OAUTH_HSM_REGISTRY: two resource servers share one resource URI")
        for client in clients.values():
            unknown = [r for r in client.resources if r not in resources]
            if unknown:
                raise ConfigError(
                    f"OAUTH_HSM_REGISTRY: client {client.client_id!r}: resource {unknown[0]!r} "
                    "is not a registered resource server"
                )
        registry = cls(clients, servers)
        for entity in registry.entities():
            if check is not None:
                check(entity)
        return registry

    def client(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def resource_server(self, client_id: str) -> ResourceServer | None:
        return self._rs_by_id.get(client_id)

    def resource_server_for(self, resource: str) -> ResourceServer | None:
        return self._rs_by_resource.get(resource)

    def resource_servers(self) -> list[ResourceServer]:
        return list(self._rs_by_id.values())

    def clients(self) -> list[Client]:
        return list(self._clients.values())

    def entities(self) -> list[Credentials]:
        return [*self._clients.values(), *self._rs_by_id.values()]

    def auth_methods(self) -> list[str]:
        return sorted({e.token_endpoint_auth_method for e in self.entities()}) or ["private_key_jwt"]


def _entries(items: Any, kind: str, build: Callable[[Any], E]) -> dict[str, E]:
    if not isinstance(items, list):
        raise ConfigError(f"OAUTH_HSM_REGISTRY: {kind} must be a list")
    out: dict[str, E] = {}
    for index, entry in enumerate(items):
        try:
            item = build(entry)
        except ValidationError as exc:
            raise entry_error(kind, index, entry, exc.messages) from None
        if item.client_id in out:
            raise ConfigError(f"OAUTH_HSM_REGISTRY: {kind}[{index}]: client_id {item.client_id!r} is listed twice")
        out[item.client_id] = item
    return out


class BoundedCache:
    """Least-recently-used entries with an expiry; full means the oldest entry goes, never all."""

    def __init__(self, max_entries: int, ttl: float):
        self._entries: OrderedDict[tuple[str, str], tuple[float, Credentials | None]] = OrderedDict()
        self._max, self._ttl = max_entries, ttl
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[bool, Credentials | None]:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or hit[0] <= time.monotonic():
                return False, None
            self._entries.move_to_end(key)
            return True, hit[1]

    def put(self, key: tuple[str, str], value: Credentials | None) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + self._ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


class LoaderRegistry:
    """Entries from host callbacks (their database), validated like file entries, cached briefly.

    Known entries and misses are cached apart: misses are attacker-chosen ids, and a flood of them
    may evict other misses but never a known client.
    """

    TTL = 30.0

    def __init__(
        self,
        client_loader: Callable[..., Any] | None,
        resource_server_loader: Callable[..., Any] | None,
        auth_methods: list[str],
        check: Check,
    ):
        self._client_loader = client_loader
        self._rs_loader = resource_server_loader
        self._auth_methods = auth_methods
        self._check = check
        self._known = BoundedCache(10_000, self.TTL)
        self._misses = BoundedCache(2_000, self.TTL)

    def _cached(self, key: tuple[str, str], load: Callable[[], E | None]) -> E | None:
        for cache in (self._known, self._misses):
            found, value = cache.get(key)
            if found:
                # cast: the key's kind ("c" or "r") says which type was put under it (_client, _resource_server)
                return cast("E | None", value)
        value = load()
        (self._known if value is not None else self._misses).put(key, value)
        return value

    def _load(
        self, loader: Callable[..., Any] | None, build: Callable[[Any], E], kind: str, matches: Callable[[E], bool], **kwargs: str
    ) -> E | None:
        if loader is None:
            return None
        try:
            entry = loader(**kwargs)
        except Exception as exc:  # the host's database: an outage, not the caller's fault
            log.error("registry loader failed: %s", type(exc).__name__)
            raise RegistryUnavailable("registry loader failed") from None
        if entry is None:
            return None
        try:
            entity = build(entry)
            self._check(entity)
        except ValidationError as exc:
            log.error("ignoring an invalid registry entry from a loader: %s", entry_error(kind, None, entry, exc.messages))
            return None
        except ConfigError as exc:
            log.error("ignoring an invalid registry entry from a loader: %s", exc)
            return None
        if not matches(entity):
            log.error("%s returned an entry for something else than what was asked: treated as unknown", kind)
            return None
        return entity

    def _client(self, client_id: str) -> Client | None:
        return self._cached(
            ("c", client_id),
            lambda: self._load(
                self._client_loader, build_client, "client_loader", lambda c: c.client_id == client_id, client_id=client_id
            ),
        )

    def _resource_server(self, client_id: str) -> ResourceServer | None:
        return self._cached(
            ("r", client_id),
            lambda: self._load(
                self._rs_loader,
                build_resource_server,
                "resource_server_loader",
                lambda r: r.client_id == client_id,
                client_id=client_id,
            ),
        )

    def _unique(self, client_id: str, entity: E | None) -> E | None:
        """docs/registry.md: ids never collide; an id both loaders know is nobody's."""
        if entity is None:
            return None
        other = self._resource_server(client_id) if isinstance(entity, Client) else self._client(client_id)
        if other is not None:
            log.error("loaders: %r is both a client and a resource server: treated as unknown", client_id)
            return None
        return entity

    def client(self, client_id: str) -> Client | None:
        return self._unique(client_id, self._client(client_id))

    def resource_server(self, client_id: str) -> ResourceServer | None:
        return self._unique(client_id, self._resource_server(client_id))

    def resource_server_for(self, resource: str) -> ResourceServer | None:
        server = self._cached(
            ("u", resource),
            lambda: self._load(
                self._rs_loader,
                build_resource_server,
                "resource_server_loader",
                lambda r: r.resource == resource,
                resource=resource,
            ),
        )
        return self._unique(server.client_id, server) if server is not None else None

    def auth_methods(self) -> list[str]:
        return self._auth_methods
