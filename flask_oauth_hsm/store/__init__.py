"""Redis: single-use records, revoked token ids, and the replay epoch (docs/operations.md).

Every key lives under the configured prefix and carries a TTL (except the epoch); ids are
hashed. The rules are in :mod:`.single_use`; the connection and its failure mapping in
:mod:`.connection`. Redis unreachable, slow past the timeout, or answering errors:
:class:`~flask_oauth_hsm.errors.StoreUnavailable` (endpoints answer 503 and issue nothing).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

from .. import clock
from .connection import connect, redacted, unavailable_on_error
from .single_use import USE_ONCE_SCRIPT, Replayed, ResetRule, hashed_key

__all__ = ["Replayed", "ResetRule", "RevocationState", "Store", "connect", "redacted"]


@dataclass(frozen=True)
class RevocationState:
    revoked: bool
    epoch: float  # seconds


class Store:
    def __init__(self, client: Any, prefix: str, rule: ResetRule):
        self.client = client
        self.prefix = prefix
        self.rule = rule
        self._epoch_key = prefix + "epoch"
        self._sha = hashlib.sha1(USE_ONCE_SCRIPT.encode()).hexdigest()

    def key(self, namespace: str, ident: str) -> str:
        return self.prefix + hashed_key(namespace, ident)

    # -- the epoch ----------------------------------------------------------------------------

    def ensure_epoch(self) -> float:
        """Start an epoch if none exists (at start-up, so probes rather than clients start it);
        returns its start in seconds."""
        with unavailable_on_error():
            self.client.set(self._epoch_key, int(clock.now() * 1000), nx=True)
            return int(self.client.get(self._epoch_key)) / 1000

    # -- ids minted by others -----------------------------------------------------------------

    def use_once(self, namespace: str, ident: str, *, expires_at: float, issued_at: float | None, window: float) -> None:
        """Record ``ident`` as used until ``expires_at``; raises Replayed if it was (or may have
        been) used before. ``window``: the longest lifetime such an id can have."""
        now = clock.now()
        ttl = max(1, int(expires_at - now) + 1)
        with unavailable_on_error():
            fresh, epoch_ms = self._run_script(self._epoch_key, self.key(namespace, ident), int(now * 1000), ttl)
        if not fresh:
            raise Replayed("already used")
        if self.rule.may_predate(issued_at, epoch_ms / 1000, window, now):
            raise Replayed("may have been used before the replay state was reset")

    def _run_script(self, *keys_and_args: Any) -> Any:
        """EVALSHA straight through execute_command (redis-py's Script object costs a visible
        share of the token path); the script is loaded again after a Redis restart or flush."""
        try:
            return self.client.execute_command("EVALSHA", self._sha, 2, *keys_and_args)
        except NoScriptError:
            self.client.script_load(USE_ONCE_SCRIPT)
            return self.client.execute_command("EVALSHA", self._sha, 2, *keys_and_args)

    # -- records we mint ----------------------------------------------------------------------

    def put(self, namespace: str, ident: str, value: bytes, ttl: int) -> None:
        """Store a new one-time record; an existing one is never overwritten (ids are random)."""
        with unavailable_on_error():
            created = self.client.set(self.key(namespace, ident), value, ex=max(1, int(ttl)), nx=True)
        if not created:
            raise Replayed("record id already in use")

    def take(self, namespace: str, ident: str) -> bytes | None:
        """Consume a record: of concurrent callers exactly one gets it (GETDEL), the rest None."""
        with unavailable_on_error():
            value: bytes | None = self.client.getdel(self.key(namespace, ident))
        return value

    def read(self, namespace: str, ident: str) -> bytes | None:
        with unavailable_on_error():
            value: bytes | None = self.client.get(self.key(namespace, ident))
        return value

    def mark(self, namespace: str, ident: str, ttl: int) -> None:
        """Remember a fact about ``ident`` for ``ttl`` seconds (set again: the TTL starts over)."""
        with unavailable_on_error():
            self.client.set(self.key(namespace, ident), 1, ex=max(1, int(ttl)))

    def forget(self, namespace: str, ident: str) -> None:
        with unavailable_on_error():
            self.client.delete(self.key(namespace, ident))

    # -- revocation -----------------------------------------------------------------------------

    def revoke(self, jti: str, expires_at: float) -> None:
        with unavailable_on_error():
            self.client.set(self.key("revoked", jti), 1, exat=max(int(expires_at), int(clock.now()) + 1))

    def revocation(self, jti: str) -> RevocationState:
        """Whether ``jti`` was revoked, and the current epoch (one round trip)."""
        with unavailable_on_error():
            revoked, epoch = self.client.mget(self.key("revoked", jti), self._epoch_key)
        epoch_s = self.ensure_epoch() if epoch is None else int(epoch) / 1000
        return RevocationState(revoked is not None, epoch_s)

    def vouches_for(self, jti: str, issued_at: float, lifetime: float) -> bool:
        """Our own token ``jti``: not revoked, and not issued before a reset that may have lost
        its revocation (the reset rule with our own clock)."""
        state = self.revocation(jti)
        if state.revoked:
            return False
        return not self.rule.may_predate(issued_at, state.epoch, lifetime, clock.now(), own_clock=True)

    def probe(self) -> None:
        """Readiness: run the replay script itself (a throwaway id, 1 s TTL), so whatever would
        fail a token request — a Cluster slot error, a read-only replica — fails here too."""
        try:
            now = clock.now()
            self.use_once("probe", secrets.token_hex(8), expires_at=now, issued_at=now, window=0)
        except Replayed:
            pass
