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
from .single_use import (
    CONSUME_SCRIPT, GRANT_CREATE_SCRIPT, GRANT_REVOKE_SCRIPT, ROTATE_SCRIPT, TOMBSTONE, USE_ONCE_SCRIPT, Replayed,
    ResetRule, hashed_key,
)

__all__ = ["Consumed", "GrantState", "Replayed", "ResetRule", "RevocationState", "Store", "connect", "redacted"]


@dataclass(frozen=True)
class Consumed:
    """What :meth:`Store.consume` found: the record (first use), or the tombstone of an earlier use."""

    record: bytes | None = None
    used_by: bytes | None = None  # the tombstone's content: the record was consumed before


@dataclass(frozen=True)
class GrantState:
    """A grant's record: whether it was revoked, and what the user agreed to release (JSON)."""

    revoked: bool
    release: bytes


@dataclass(frozen=True)
class RevocationState:
    revoked: bool
    epoch: float  # seconds


_SCRIPT_SHAS: dict[str, str] = {}


def _id_hash(ident: str) -> str:
    """Refresh token ids are kept hashed: whoever reads Redis cannot make a token that rotates."""
    return hashlib.sha256(ident.encode()).hexdigest()


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

    def consume(self, namespace: str, ident: str, tombstone: bytes, ttl: int) -> Consumed:
        """``take`` that leaves ``tombstone`` behind for ``ttl`` seconds: of concurrent consumers
        exactly one gets the record, and every later one learns who used it (single_use.py)."""
        with unavailable_on_error():
            value = self._eval(CONSUME_SCRIPT, self.key(namespace, ident), TOMBSTONE + tombstone, max(1, int(ttl)))
        return self.tombstone_or_record(value)

    @staticmethod
    def tombstone_or_record(value: bytes | None) -> Consumed:
        if value is not None and value.startswith(TOMBSTONE):
            return Consumed(used_by=value[len(TOMBSTONE):])
        return Consumed(record=value)

    def save(self, namespace: str, ident: str, value: bytes, ttl: int) -> None:
        """Store (or replace) a record that is not single-use, e.g. a remembered consent."""
        with unavailable_on_error():
            self.client.set(self.key(namespace, ident), value, ex=max(1, int(ttl)))

    # -- grants: refresh rotation and revocation (single_use.py) ----------------------------------

    def grant_create(self, grant_id: str, refresh_id: str | None, release: bytes, ttl: int) -> bool:
        """Record a new grant; False when it was revoked before it was recorded (it stays revoked)."""
        current = _id_hash(refresh_id) if refresh_id else ""
        with unavailable_on_error():
            return bool(self._eval(GRANT_CREATE_SCRIPT, self.key("grant", grant_id), current, release, max(1, int(ttl))))

    def grant_rotate(self, grant_id: str, presented: str, new: str, ttl: int) -> int:
        """Replace the grant's current refresh token id; single_use.ROTATED/UNKNOWN/REVOKED/REUSED."""
        with unavailable_on_error():
            outcome: int = self._eval(ROTATE_SCRIPT, self.key("grant", grant_id), _id_hash(presented), _id_hash(new),
                                      max(1, int(ttl)))
        return outcome

    def grant_revoke(self, grant_id: str, ttl: int) -> None:
        """Mark the grant revoked (every token descended from it), kept at least ``ttl`` seconds."""
        with unavailable_on_error():
            self._eval(GRANT_REVOKE_SCRIPT, self.key("grant", grant_id), max(1, int(ttl)))

    def grant_state(self, grant_id: str) -> GrantState | None:
        """The grant's record, or None when it is unknown (expired, or lost in a Redis reset)."""
        with unavailable_on_error():
            rev, release = self.client.hmget(self.key("grant", grant_id), "rev", "rel")
        if rev is None:
            return None
        return GrantState(revoked=rev == b"1", release=release or b"{}")

    def _eval(self, script: str, key: str, *args: Any) -> Any:
        """One single-key script (Cluster-safe), by SHA, loaded again after a Redis restart."""
        sha = _SCRIPT_SHAS.get(script) or _SCRIPT_SHAS.setdefault(script, hashlib.sha1(script.encode()).hexdigest())
        try:
            return self.client.execute_command("EVALSHA", sha, 1, key, *args)
        except NoScriptError:
            self.client.script_load(script)
            return self.client.execute_command("EVALSHA", sha, 1, key, *args)

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
