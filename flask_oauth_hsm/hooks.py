"""Host hooks: the functions a host app registers on ``OAuthHSM``, in one place.

Each hook has a spec here: its name, what it receives and returns, and the features that need
it. ``init_app`` checks that every hook a configured feature needs is present and stops with one
line naming the missing one. Hooks are plain decorated functions (no subclassing)::

    @oauth.client_loader
    def load_client(client_id): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

Hook = Callable[..., Any]


@dataclass(frozen=True)
class HookSpec:
    name: str
    signature: str  # what the function receives and returns (for the error message and docs)
    needed_by: frozenset[str] = frozenset()  # features that cannot work without it


SPECS: dict[str, HookSpec] = {
    s.name: s
    for s in (
        HookSpec("client_loader", "fn(client_id) -> registry-shaped dict | None"),
        HookSpec("resource_server_loader", "fn(client_id=None, resource=None) -> registry-shaped dict | None"),
        # Users (docs/users.md): the host owns them; these tell the extension who is signed in.
        HookSpec("current_user", "fn() -> flask_oauth_hsm.User | None", frozenset({"users", "ciba"})),
        HookSpec("login_url", "fn(next_url) -> URL of the host's login page", frozenset({"users"})),
        HookSpec("skip_consent", "fn(client_id, user) -> bool (first-party clients)"),
        HookSpec("user_claims", "fn(subject) -> dict of the user's claims | None", frozenset({"introspection_claims"})),
        # CIBA (docs/ciba.md): who a hint names, and the authentication device that asks them.
        HookSpec("ciba_user", "fn(kind, value) -> the user's subject | None", frozenset({"ciba"})),
        HookSpec("ciba_notify", "fn(flask_oauth_hsm.ciba.CibaRequest) -> None", frozenset({"ciba"})),
    )
}


class Hooks:
    """Registered hooks; frozen by ``init_app`` (registering afterwards is a programming error)."""

    def __init__(self) -> None:
        self._fns: dict[str, Hook] = {}
        self._frozen = False

    def register(self, name: str, fn: Hook) -> Hook:
        if name not in SPECS:
            raise ConfigError(f"OAuthHSM: there is no hook named {name!r}")
        if self._frozen:
            raise ConfigError(f"OAuthHSM: register @{name} before init_app")
        if not callable(fn):
            raise ConfigError(f"OAuthHSM: @{name} must decorate a function")
        self._fns[name] = fn
        return fn

    def get(self, name: str) -> Hook | None:
        return self._fns.get(name)

    def missing_for(self, feature: str) -> list[str]:
        """Hooks ``feature`` needs that are not registered (sorted)."""
        return sorted(s.name for s in SPECS.values() if feature in s.needed_by and s.name not in self._fns)

    def freeze(self, features: Iterable[str]) -> Mapping[str, Hook]:
        """Check that every feature has its hooks, then forbid changes."""
        enabled = set(features)
        for spec in SPECS.values():
            needed = spec.needed_by & enabled
            if needed and spec.name not in self._fns:
                raise ConfigError(f"OAuthHSM: {sorted(needed)[0]} needs @oauth.{spec.name} ({spec.signature})")
        self._frozen = True
        return dict(self._fns)
