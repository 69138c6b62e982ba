"""Redis: single-use records, revoked token ids, and the replay epoch (docs/operations.md).

Every key comes from :meth:`Store.key` (the layout, :mod:`.layout`: hashed ids, and on a Cluster
hash-tagged buckets whose epoch shares the slot of the ids it guards) and carries a TTL, except
the epochs. The rules are in :mod:`.single_use`; the connection and its failure mapping in
:mod:`.connection`; replica acknowledgement in :mod:`.replication`; the eviction check in
:mod:`.health`. Redis unreachable, slow past the timeout, answering errors, or not replicating
a write that must survive a failover: :class:`~flask_oauth_hsm.errors.StoreUnavailable`
(endpoints answer 503 and issue nothing).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from .. import clock
from ..errors import StoreUnsafe
from .connection import connect, redacted, topology, unavailable_on_error
from .health import UNKNOWN, eviction_risk, replica_shortfall
from .layout import Layout, Placement
from .replication import ReplicatedWrites, Written
from .single_use import (
    CONSUME_SCRIPT,
    GRANT_CREATE_SCRIPT,
    GRANT_REVOKE_SCRIPT,
    ROTATE_SCRIPT,
    SWAP_SCRIPT,
    TOMBSTONE,
    USE_ONCE_SCRIPT,
    Replayed,
    ResetRule,
)

__all__ = [
    "Consumed",
    "GrantState",
    "Layout",
    "Replayed",
    "ResetRule",
    "RevocationState",
    "Store",
    "connect",
    "redacted",
    "topology",
]
log = logging.getLogger("flask_oauth_hsm")


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
    """``wait_replicas``: replicas that must acknowledge a replay record, a revocation or a
    consumed record before we act on it (None: 1 on Sentinel and Cluster, 0 on one Redis).
    ``allow_eviction``: readiness stays green on a Redis that may evict (logged instead)."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        rule: ResetRule,
        *,
        wait_replicas: int | None = None,
        wait_timeout: float = 0.1,
        allow_eviction: bool = False,
    ):
        self.client = client
        self.prefix = prefix
        self.rule = rule
        self.kind = topology(client)
        self.layout = Layout.for_prefix(prefix, self.kind == "cluster")
        self.wait_replicas = (0 if self.kind == "single" else 1) if wait_replicas is None else wait_replicas
        self.allow_eviction = allow_eviction
        self._writes = ReplicatedWrites(client, self.kind == "cluster", self.wait_replicas, wait_timeout)
        self._sha = hashlib.sha1(USE_ONCE_SCRIPT.encode()).hexdigest()
        self._policy_seen: str | None = None

    def key(self, namespace: str, ident: str) -> str:
        """The key of a record: every record of every feature is placed here, nowhere else."""
        return self.layout.place(namespace, ident).key

    # -- the epoch ----------------------------------------------------------------------------

    def ensure_epoch(self) -> float:
        """Start every epoch that does not exist (at start-up, so probes rather than clients start
        them); returns the latest start in seconds."""
        now_ms = int(clock.now() * 1000)
        with unavailable_on_error():
            pipe = self.client.pipeline(transaction=False)
            for epoch in self.layout.epochs():
                pipe.set(epoch, now_ms, nx=True)
                pipe.get(epoch)
            values = pipe.execute()[1::2]
        return max(int(v) for v in values) / 1000

    def _epoch_of(self, epoch_key: str) -> float:
        now_ms = int(clock.now() * 1000)
        with unavailable_on_error():
            self.client.set(epoch_key, now_ms, nx=True)
            return int(self.client.get(epoch_key)) / 1000

    # -- ids minted by others -----------------------------------------------------------------

    def use_once(self, namespace: str, ident: str, *, expires_at: float, issued_at: float | None, window: float) -> None:
        """Record ``ident`` as used until ``expires_at``; raises Replayed if it was (or may have
        been) used before. ``window``: the longest lifetime such an id can have."""
        self._use_once_at(self.layout.place(namespace, ident), expires_at=expires_at, issued_at=issued_at, window=window)

    def _use_once_at(self, at: Placement, *, expires_at: float, issued_at: float | None, window: float) -> None:
        now = clock.now()
        ttl = max(1, int(expires_at - now) + 1)
        command = ("EVALSHA", self._sha, 2, at.epoch, at.key, int(now * 1000), ttl)
        with unavailable_on_error():
            written = self._writes.run(at.key, [command], USE_ONCE_SCRIPT)
        ((fresh, epoch_ms),) = written.results
        if not fresh:
            raise Replayed("already used")  # a refusal stands whatever the replicas have
        written.confirmed()
        if self.rule.may_predate(issued_at, epoch_ms / 1000, window, now):
            raise Replayed("may have been used before the replay state was reset")

    # -- records we mint ----------------------------------------------------------------------

    def put(self, namespace: str, ident: str, value: bytes, ttl: int) -> None:
        """Store a new one-time record; an existing one is never overwritten (ids are random).
        Not replica-acknowledged: a record lost in a failover is simply gone (fails closed)."""
        with unavailable_on_error():
            created = self.client.set(self.key(namespace, ident), value, ex=max(1, int(ttl)), nx=True)
        if not created:
            raise Replayed("record id already in use")

    def take(self, namespace: str, ident: str) -> bytes | None:
        """Consume a record: of concurrent callers exactly one gets it (GETDEL), the rest None.
        Replica-acknowledged: a consumption lost in a failover would let the record be taken twice."""
        key = self.key(namespace, ident)
        with unavailable_on_error():
            written = self._writes.run(key, [("GETDEL", key)])
        taken: bytes | None = written.results[0]
        if taken is not None:
            written.confirmed()
        return taken

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

    def consume(self, namespace: str, ident: str, tombstone: bytes, ttl: int) -> Consumed:
        """``take`` that leaves ``tombstone`` behind for ``ttl`` seconds: of concurrent consumers
        exactly one gets the record, and every later one learns who used it (single_use.py)."""
        with unavailable_on_error():
            written = self._eval(CONSUME_SCRIPT, self.key(namespace, ident), TOMBSTONE + tombstone, max(1, int(ttl)))
        consumed = self.tombstone_or_record(written.results[0])
        if consumed.record is not None:
            written.confirmed()  # a consumption lost in a failover would let the record be used twice
        return consumed

    @staticmethod
    def tombstone_or_record(value: bytes | None) -> Consumed:
        if value is not None and value.startswith(TOMBSTONE):
            return Consumed(used_by=value[len(TOMBSTONE) :])
        return Consumed(record=value)

    def swap(self, namespace: str, ident: str, expected: bytes, new: bytes, ttl: int) -> bool:
        """Replace the record with ``new`` only if it still holds ``expected`` (one server-side step);
        False when it is gone or another writer changed it first. Replica-acknowledged: a state
        change lost in a failover would be decided again."""
        with unavailable_on_error():
            written = self._eval(SWAP_SCRIPT, self.key(namespace, ident), expected, new, max(1, int(ttl)))
        swapped = bool(written.results[0])
        if swapped:
            written.confirmed()
        return swapped

    def save(self, namespace: str, ident: str, value: bytes, ttl: int) -> None:
        """Store (or replace) a record that is not single-use, e.g. a remembered consent."""
        with unavailable_on_error():
            self.client.set(self.key(namespace, ident), value, ex=max(1, int(ttl)))

    # -- grants: refresh rotation and revocation (single_use.py) ----------------------------------

    def grant_create(self, grant_id: str, refresh_id: str | None, release: bytes, ttl: int) -> bool:
        """Record a new grant; False when it was revoked before it was recorded (it stays revoked)."""
        current = _id_hash(refresh_id) if refresh_id else ""
        with unavailable_on_error():
            written = self._eval(GRANT_CREATE_SCRIPT, self.key("grant", grant_id), current, release, max(1, int(ttl)))
        return bool(written.confirmed()[0])

    def grant_rotate(self, grant_id: str, presented: str, new: str, ttl: int) -> int:
        """Replace the grant's current refresh token id; single_use.ROTATED/UNKNOWN/REVOKED/REUSED."""
        with unavailable_on_error():
            written = self._eval(ROTATE_SCRIPT, self.key("grant", grant_id), _id_hash(presented), _id_hash(new), max(1, int(ttl)))
        outcome: int = written.confirmed()[0]  # a rotation lost in a failover would reopen the old token
        return outcome

    def grant_revoke(self, grant_id: str, ttl: int) -> None:
        """Mark the grant revoked (every token descended from it), kept at least ``ttl`` seconds."""
        with unavailable_on_error():
            self._eval(GRANT_REVOKE_SCRIPT, self.key("grant", grant_id), max(1, int(ttl))).confirmed()

    def grant_state(self, grant_id: str) -> GrantState | None:
        """The grant's record, or None when it is unknown (expired, or lost in a Redis reset)."""
        with unavailable_on_error():
            rev, release = self.client.hmget(self.key("grant", grant_id), "rev", "rel")
        if rev is None:
            return None
        return GrantState(revoked=rev == b"1", release=release or b"{}")

    def _eval(self, script: str, key: str, *args: Any) -> Written:
        """One single-key script (Cluster-safe) by SHA, replica-acknowledged like every write that
        must survive a failover (replication.py); loaded again after a Redis restart."""
        sha = _SCRIPT_SHAS.get(script) or _SCRIPT_SHAS.setdefault(script, hashlib.sha1(script.encode()).hexdigest())
        return self._writes.run(key, [("EVALSHA", sha, 1, key, *args)], script)

    # -- revocation -----------------------------------------------------------------------------

    def revoke(self, jti: str, expires_at: float) -> None:
        key = self.key("revoked", jti)
        with unavailable_on_error():
            self._writes.run(key, [("SET", key, 1, "EXAT", max(int(expires_at), int(clock.now()) + 1))]).confirmed()

    def revocation(self, jti: str) -> RevocationState:
        """Whether ``jti`` was revoked, and the epoch guarding it (one round trip)."""
        at = self.layout.place("revoked", jti)
        with unavailable_on_error():
            revoked, epoch = self.client.mget(at.key, at.epoch)
        epoch_s = self._epoch_of(at.epoch) if epoch is None else int(epoch) / 1000
        return RevocationState(revoked is not None, epoch_s)

    def vouches_for(self, jti: str, issued_at: float, lifetime: float) -> bool:
        """Our own token ``jti``: not revoked, and not issued before a reset that may have lost
        its revocation (the reset rule with our own clock)."""
        state = self.revocation(jti)
        if state.revoked:
            return False
        return not self.rule.may_predate(issued_at, state.epoch, lifetime, clock.now(), own_clock=True)

    # -- readiness and start-up checks ------------------------------------------------------------

    def probe(self) -> None:
        """Readiness: run the replay script itself (a throwaway id, 1 s TTL) in one bucket of every
        master, so whatever would fail a token request — a dead shard, a read-only replica,
        replicas not acknowledging — fails here too; then the eviction policy (a master promoted
        by a failover may be configured differently)."""
        now = clock.now()
        for bucket in self._bucket_per_master():
            try:
                at = self.layout.place_in_bucket(bucket, "probe", secrets.token_hex(8))
                self._use_once_at(at, expires_at=now, issued_at=now, window=0)
            except Replayed:
                pass
        risk = self.eviction_risk()
        if risk is not None and risk != UNKNOWN and not self.allow_eviction:
            raise StoreUnsafe(f"Redis may evict replay records ({risk})")

    def _bucket_per_master(self) -> list[int]:
        if self.layout.buckets == 1:
            return [0]
        with unavailable_on_error():
            owners = {self.client.get_node_from_key(self.layout.epoch(b)).name: b for b in range(self.layout.buckets)}
        return sorted(owners.values())

    def eviction_risk(self) -> str | None:
        """``maxmemory-policy …`` if Redis may evict our records, else None (logged when it changes)."""
        with unavailable_on_error():
            risk = eviction_risk(self.client, self.kind == "cluster")
        if risk != self._policy_seen:
            self._policy_seen = risk
            if risk == UNKNOWN:
                log.warning("cannot verify Redis's eviction policy (INFO refused): make sure it is noeviction")
            elif risk is not None:
                log.error("Redis may evict replay records (%s): set maxmemory-policy noeviction", risk)
        return risk

    def replica_shortfall(self) -> str | None:
        """A master with fewer replicas than ``wait_replicas`` (every request would answer 503)."""
        with unavailable_on_error():
            return replica_shortfall(self.client, self.kind == "cluster", self.wait_replicas)
