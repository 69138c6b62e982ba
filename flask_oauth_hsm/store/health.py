"""What a Redis says about itself that decides whether our records are safe there.

* **Eviction**: under any eviction policy a Redis that reaches ``maxmemory`` may drop live replay
  records — ``volatile-*`` too, since every record carries a TTL — and silently reopen their
  replay windows. Unsafe iff ``maxmemory`` > 0 and ``maxmemory-policy`` is not ``noeviction``
  (with ``noeviction`` a full Redis refuses writes: the endpoints answer 503, nothing reopens).
  Read from ``INFO memory``, which answers where ``CONFIG`` is renamed or forbidden (managed
  services); an INFO refused by an ACL leaves the question open (``None`` + a warning).
* **Replicas**: how many replicas each master has, against ``OAUTH_HSM_REDIS_WAIT_REPLICAS``.

On a Cluster every master is asked (``target_nodes=PRIMARIES``); on Sentinel, the master.
"""

from __future__ import annotations

from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import NoPermissionError, ResponseError

UNKNOWN = "unknown"


def _infos(client: Any, cluster: bool, section: str) -> dict[str, dict[str, Any]] | None:
    """``INFO <section>`` of the master (every master on a Cluster); None if INFO is refused."""
    try:
        if not cluster:
            return {"the master": client.info(section)}
        answer = client.info(section, target_nodes=RedisCluster.PRIMARIES)
    except ResponseError as exc:
        if isinstance(exc, NoPermissionError) or "unknown command" in str(exc).lower():
            return None
        raise
    if isinstance(answer, dict) and answer and all(isinstance(v, dict) for v in answer.values()):
        return dict(answer)
    return {"the master": answer}


def eviction_risk(client: Any, cluster: bool) -> str | None:
    """What may evict our records (``maxmemory-policy … on …``), None if nothing, UNKNOWN if INFO
    is refused. Connection errors propagate (the caller maps them)."""
    infos = _infos(client, cluster, "memory")
    if infos is None:
        return UNKNOWN
    for node, info in sorted(infos.items()):
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if int(info.get("maxmemory", 0)) > 0 and policy != "noeviction":
            return f"maxmemory-policy {policy} with maxmemory {info.get('maxmemory_human') or info.get('maxmemory')} on {node}"
    return None


def replica_shortfall(client: Any, cluster: bool, wanted: int) -> str | None:
    """A master with fewer connected replicas than ``wanted``, or None (also if INFO is refused)."""
    infos = _infos(client, cluster, "replication") if wanted else None
    for node, info in sorted((infos or {}).items()):
        connected = int(info.get("connected_slaves", 0))
        if connected < wanted:
            return f"{node} has {connected} connected replica{'s' if connected != 1 else ''}"
    return None
