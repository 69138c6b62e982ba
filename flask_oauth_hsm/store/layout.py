"""Where each record lives: its key, and the epoch key that guards it (always in the same slot).

The correctness rule: **an epoch key lives in the same hash slot as every id it guards** — the
same node, the same replication stream, the same failover and restart. An epoch on another node
would survive when an id's node restarts empty, and the reset rule would not fire. The replay
script touches both keys, the revocation lookup reads both: one slot is also what Redis Cluster
requires of them.

Two layouts, chosen by :meth:`Layout.for_prefix`:

* **one slot** (one Redis, a Sentinel service, or a Cluster with a hash tag in the prefix such as
  ``{oauth-hsm}:``): ``<prefix>epoch``, ``<prefix><namespace>:<hash>``;
* **buckets** (a Cluster, prefix without a hash tag): 64 buckets, each with its own epoch, so the
  records spread over the masters and losing one master stops only its buckets:
  ``{<prefix><bb>}epoch``, ``{<prefix><bb>}<namespace>:<hash>`` where ``bb`` (two hex digits)
  comes from the record's own hash. The count is fixed here, not a setting: every process sharing
  the Redis must put an id in the same bucket, or a replay would be checked in another bucket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .single_use import hashed_key, id_digest

CLUSTER_BUCKETS = 64  # 64 buckets fall 21/20/23 on three masters; even on up to ~20 masters
_HASH_TAG = re.compile(r"\{[^{}]+\}")


@dataclass(frozen=True)
class Placement:
    key: str  # the record
    epoch: str  # the epoch key guarding it (same slot)


@dataclass(frozen=True)
class Layout:
    prefix: str
    buckets: int  # 1: one slot

    @classmethod
    def for_prefix(cls, prefix: str, cluster: bool) -> Layout:
        """Buckets on a Cluster unless the prefix pins one slot with its own hash tag."""
        return cls(prefix, CLUSTER_BUCKETS if cluster and not has_hash_tag(prefix) else 1)

    def place(self, namespace: str, ident: str) -> Placement:
        digest = id_digest(namespace, ident)
        return self._in(digest[0] % self.buckets, hashed_key(namespace, digest))

    def place_in_bucket(self, bucket: int, namespace: str, ident: str) -> Placement:
        """A record in a chosen bucket (readiness probes one bucket per master)."""
        return self._in(bucket, hashed_key(namespace, id_digest(namespace, ident)))

    def epoch(self, bucket: int) -> str:
        return self._tag(bucket) + "epoch"

    def epochs(self) -> list[str]:
        return [self.epoch(b) for b in range(self.buckets)]

    def _in(self, bucket: int, rest: str) -> Placement:
        tag = self._tag(bucket)
        return Placement(tag + rest, tag + "epoch")

    def _tag(self, bucket: int) -> str:
        return self.prefix if self.buckets == 1 else "{" + self.prefix + format(bucket, "02x") + "}"


def has_hash_tag(prefix: str) -> bool:
    return bool(_HASH_TAG.search(prefix))


def prefix_problem(prefix: str) -> str | None:
    """Braces in a prefix must form one hash tag (``{name}``), or the slot rule becomes a puzzle."""
    if ("{" in prefix or "}" in prefix) and not re.fullmatch(r"[^{}]*\{[^{}]+\}[^{}]*", prefix):
        return "braces must form one hash tag such as {oauth-hsm}: (or leave them out)"
    return None
