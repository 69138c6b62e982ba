"""HA experiments on real Redis Sentinel and Cluster deployments (tests/ha_support.py).

What each experiment measures (results: /work/notes/ha.md, later docs/benchmarks.md):

* ``sentinel-kill``: the current Store on redis-py's Sentinel client, one thread of replay checks
  while the master is SIGKILLed: exceptions seen, how long until checks succeed again on the new
  master (same client object), and how long each failing call took.
* ``sentinel-stop``: the same with the master SIGSTOPped past down-after (then SIGCONT: it comes
  back and is demoted).
* ``cluster-kill``: the Store on RedisCluster (prefix ``{oauth}:``) with the node serving that
  slot SIGKILLed, without replicas (then restarted) and with replicas (failover).
* ``wait-latency``: cost of ``WAIT 1 <timeout>`` sent in the same round trip as the replay script.
* ``durability``: jti acknowledged, master killed at once, replica promoted: is the jti there?
  With and without WAIT, and with ``min-replicas-to-write``.
* ``cluster-buckets``: the proposed bucketed layout; share of checks failing with one master down.
* ``cluster-migration``: the ``{oauth}`` slot migrated to another master under load.
* ``eviction``: what ``CONFIG GET maxmemory-policy`` and ``INFO memory`` say, with CONFIG renamed.

    .venv/bin/python bench/ha_redis.py [experiment ...]
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import redis  # noqa: E402

import ha_support  # noqa: E402
from flask_oauth_hsm.errors import StoreUnavailable  # noqa: E402
from flask_oauth_hsm.store import Replayed, ResetRule, Store  # noqa: E402

TIMEOUT = 0.25


def _store(client, prefix: str) -> Store:
    """The store as these experiments measured it: no replica acknowledgement (the failure modes
    WAIT was then added for), one layout given by the prefix."""
    return Store(client, prefix, ResetRule(5), wait_replicas=0)


def sentinel_client(dep: ha_support.SentinelDeployment):
    return dep.client(TIMEOUT)


def cluster_client(dep: ha_support.ClusterDeployment):
    return dep.client(TIMEOUT)


def raw_errors(client, op):
    """Call ``op`` on the client, returning the exception class name redis-py raised (or 'ok')."""
    try:
        op(client)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - we want to see everything
        return type(exc).__name__


class Load:
    """One thread of replay checks (fresh ids) recording (t, outcome, duration)."""

    def __init__(self, store: Store, raw=None):
        self.store, self.raw = store, raw
        self.rows: list[tuple[float, str, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            t0 = time.monotonic()
            if self.raw is not None:
                outcome = raw_errors(self.raw, lambda c: c.set(f"{{oauth}}:raw:{i}", 1, ex=5))  # noqa: B023 - called now
            else:
                try:
                    self.store.use_once("jti", f"id-{i}-{t0}", expires_at=time.time() + 60, issued_at=time.time(), window=0)
                    outcome = "ok"
                except StoreUnavailable as exc:
                    outcome = str(exc).split(": ", 1)[-1]
                except Replayed:
                    outcome = "replayed"
            self.rows.append((t0, outcome, time.monotonic() - t0))
            time.sleep(0.002)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)

    def summary(self, fault_at: float) -> dict:
        after = [r for r in self.rows if r[0] >= fault_at]
        failures = [r for r in after if r[1] != "ok"]
        kinds: dict[str, int] = {}
        for _, outcome, _ in failures:
            kinds[outcome] = kinds.get(outcome, 0) + 1
        last_fail = max((r[0] for r in failures), default=fault_at)
        first_ok_after = next((r[0] for r in after if r[1] == "ok" and r[0] > last_fail), None)
        durations = [d for _, _, d in failures]
        return {
            "calls_after_fault": len(after),
            "failures": len(failures),
            "errors": kinds,
            "unavailable_for_s": round((first_ok_after or last_fail) - fault_at, 2),
            "failing_call_ms_max": round(max(durations, default=0) * 1000, 1),
            "failing_call_ms_median": round(statistics.median(durations) * 1000, 1) if durations else 0,
        }


def exp_sentinel_kill(base: Path, raw: bool = False) -> dict:
    dep = ha_support.SentinelDeployment(base / ("skr" if raw else "sk")).start()
    try:
        client = sentinel_client(dep)
        store = _store(client, "oauth:")
        store.ensure_epoch()
        with Load(store, client if raw else None) as load:
            time.sleep(1)
            fault_at = time.monotonic()
            old = dep.kill_master()
            new = dep.wait_for_new_master(old)
            promoted_after = time.monotonic() - fault_at
            time.sleep(3)
        result = load.summary(fault_at)
        result["sentinels_promoted_after_s"] = round(promoted_after, 2)
        result["new_master"] = new.name
        return result
    finally:
        dep.stop()


def exp_sentinel_stop(base: Path) -> dict:
    dep = ha_support.SentinelDeployment(base / "ss").start()
    try:
        client = sentinel_client(dep)
        store = _store(client, "oauth:")
        store.ensure_epoch()
        with Load(store) as load:
            time.sleep(1)
            fault_at = time.monotonic()
            old = dep.master()
            old.pause()
            dep.wait_for_new_master(old)
            promoted_after = time.monotonic() - fault_at
            old.resume()
            time.sleep(3)
        result = load.summary(fault_at)
        result["sentinels_promoted_after_s"] = round(promoted_after, 2)
        result["old_master_role_after_resume"] = old.info("replication")["role"]
        return result
    finally:
        dep.stop()


def exp_cluster_kill(base: Path, replicas: int) -> dict:
    dep = ha_support.ClusterDeployment(base / f"ck{replicas}", replicas=replicas).start()
    try:
        client = cluster_client(dep)
        store = _store(client, "{oauth}:")
        store.ensure_epoch()
        with Load(store) as load:
            time.sleep(1)
            victim = dep.node_for_key("{oauth}:epoch")
            fault_at = time.monotonic()
            dep.kill(victim)
            if replicas:
                dep.wait_for_failover(victim)
                recovered = time.monotonic() - fault_at
            else:
                time.sleep(3)
                restart_at = time.monotonic()
                dep.restart(victim)
                recovered = time.monotonic() - fault_at
            time.sleep(2)
        result = load.summary(fault_at)
        result["cluster_recovered_after_s"] = round(recovered, 2)
        if not replicas:
            result["restart_at_s"] = round(restart_at - fault_at, 2)
        # Another slot on another node kept working?
        return result
    finally:
        dep.stop()


def exp_cluster_other_slots(base: Path) -> dict:
    """Kill a node that does not hold {oauth}: the Store is unaffected (full-coverage no)."""
    dep = ha_support.ClusterDeployment(base / "co").start()
    try:
        client = cluster_client(dep)
        store = _store(client, "{oauth}:")
        store.ensure_epoch()
        holder = dep.node_for_key("{oauth}:epoch")
        other = next(n for n in dep.nodes if n is not holder)
        with Load(store) as load:
            time.sleep(0.5)
            fault_at = time.monotonic()
            dep.kill(other)
            time.sleep(3)
        return load.summary(fault_at)
    finally:
        dep.stop()


USE_ONCE = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then epoch = ARGV[1]; redis.call('SET', KEYS[1], epoch) end
local fresh = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2])
if fresh then return {1, tonumber(epoch)} end
return {0, tonumber(epoch)}
"""


def use_once_with_wait(client, sha: str, prefix: str, ident: str, replicas: int = 1, wait_ms: int = 100):
    """The replay script and WAIT in one round trip (a non-transactional pipeline: WAIT is not
    allowed inside scripts or MULTI? — it is allowed in MULTI, but a pipeline is enough)."""
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("EVALSHA", sha, 2, prefix + "epoch", prefix + "jti:" + ident, int(time.time() * 1000), 60)
    pipe.execute_command("WAIT", replicas, wait_ms)
    (fresh, epoch), acked = pipe.execute()
    return fresh, acked


def exp_wait_latency(base: Path, n: int = 3000) -> dict:
    dep = ha_support.SentinelDeployment(base / "wl").start()
    try:
        client = sentinel_client(dep)
        sha = client.script_load(USE_ONCE)
        out = {}
        for name, fn in (
            ("evalsha", lambda i: client.execute_command("EVALSHA", sha, 2, "oauth:epoch", f"oauth:jti:a{i}", 1, 60)),
            ("evalsha+wait1 (pipeline)", lambda i: use_once_with_wait(client, sha, "oauth:", f"b{i}")),
            ("evalsha+wait2 (pipeline)", lambda i: use_once_with_wait(client, sha, "oauth:", f"c{i}", replicas=2)),
            (
                "evalsha; wait1 (2 round trips)",
                lambda i: (
                    client.execute_command("EVALSHA", sha, 2, "oauth:epoch", f"oauth:jti:d{i}", 1, 60),
                    client.execute_command("WAIT", 1, 100),
                ),
            ),
        ):
            for i in range(200):
                fn(f"warm{i}")
            samples = []
            for i in range(n):
                t0 = time.perf_counter()
                fn(i)
                samples.append(time.perf_counter() - t0)
            samples.sort()
            out[name] = {
                "p50_us": round(samples[n // 2] * 1e6),
                "p99_us": round(samples[int(n * 0.99)] * 1e6),
                "mean_us": round(statistics.mean(samples) * 1e6),
            }
        return out
    finally:
        dep.stop()


def exp_durability(base: Path) -> dict:
    """The replicas' links are partitioned (the master still counts them as connected), a jti is
    acknowledged, the master is killed, the links are cut, a replica is promoted."""
    out = {}
    variants = (
        "no WAIT",
        "WAIT 1 100ms",
        "min-replicas-to-write 1, max-lag 1 (no WAIT)",
        "no WAIT, links healthy",
        "WAIT 1 100ms, links healthy",
    )
    for n, variant in enumerate(variants):
        extra = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "1"] if "min-replicas" in variant else None
        dep = ha_support.SentinelDeployment(base / f"d{n}", master_extra=extra).start()
        try:
            client = sentinel_client(dep)
            sha = client.script_load(USE_ONCE)
            ident = f"jti-{n}"
            if "healthy" not in variant:
                dep.partition_replicas()
            t0 = time.perf_counter()
            try:
                if variant.startswith("WAIT"):
                    fresh, acked = use_once_with_wait(client, sha, "oauth:", ident, wait_ms=100)
                    ack = {"fresh": fresh, "replicas_acked": acked, "accepted": bool(fresh and acked >= 1)}
                else:
                    fresh, _ = client.execute_command("EVALSHA", sha, 2, "oauth:epoch", "oauth:jti:" + ident, 1, 60)
                    ack = {"fresh": fresh, "accepted": bool(fresh)}
            except redis.RedisError as exc:
                ack = {"error": f"{type(exc).__name__}: {exc}", "accepted": False}
            ack["ms"] = round((time.perf_counter() - t0) * 1000, 1)
            old = dep.kill_master()
            dep.cut_replica_links()
            new = dep.wait_for_new_master(old)
            present = new.client().exists("oauth:jti:" + ident) == 1
            out[variant] = {
                **ack,
                "jti_on_promoted_replica": present,
                "replay_window_reopened": ack.get("accepted", False) and not present,
            }
        finally:
            dep.stop()
    return out


def exp_eviction(base: Path) -> dict:
    out = {}
    for name, extra in (
        ("default", []),
        ("allkeys-lru", ["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]),
        ("CONFIG renamed", ["--rename-command", "CONFIG", '""', "--maxmemory-policy", "volatile-lru"]),
    ):
        node = ha_support.RedisNode(base / "ev", name.replace(" ", "-"), extra)
        node.start()
        try:
            c = node.client()
            try:
                config = c.config_get("maxmemory-policy")
            except redis.RedisError as exc:
                config = f"{type(exc).__name__}: {exc}"
            info = c.info("memory")
            out[name] = {
                "CONFIG GET": config,
                "INFO memory maxmemory_policy": info.get("maxmemory_policy"),
                "INFO memory maxmemory": info.get("maxmemory"),
            }
        finally:
            node.kill()
    return out


def exp_cluster_buckets(base: Path, buckets: int = 64, n: int = 600) -> dict:
    """The proposed layout: {prefix:bb} per bucket, epoch per bucket. Kill one master (no
    replicas): which share of fresh replay checks fails, and does any check need two slots?"""
    import hashlib

    from redis.exceptions import RedisClusterException

    dep = ha_support.ClusterDeployment(base / "cb").start()
    try:
        client = cluster_client(dep)
        sha = client.script_load(USE_ONCE)

        def check(ident: str) -> str:
            digest = hashlib.sha256(b"jti\0" + ident.encode()).digest()
            tag = f"{{oauth-hsm:{digest[0] % buckets:02x}}}"
            try:
                client.execute_command("EVALSHA", sha, 2, tag + "epoch", tag + "jti:" + digest.hex(), int(time.time() * 1000), 60)
                return "ok"
            except (redis.RedisError, RedisClusterException) as exc:
                return type(exc).__name__

        before = [check(f"a{i}") for i in range(n)]
        victim = dep.nodes[1]
        dep.kill(victim)
        t0 = time.monotonic()
        during = [check(f"b{i}") for i in range(n)]
        elapsed = time.monotonic() - t0
        kinds: dict[str, int] = {}
        for outcome in during:
            kinds[outcome] = kinds.get(outcome, 0) + 1
        return {
            "buckets": buckets,
            "ok_before": before.count("ok"),
            "during_kill": kinds,
            "failed_share": round(1 - during.count("ok") / n, 3),
            "ms_per_check_during": round(1000 * elapsed / n, 2),
        }
    finally:
        dep.stop()


def exp_cluster_migration(base: Path, fill: int = 50000) -> dict:
    """Move the {oauth} slot (filled with ``fill`` jti keys) to another master while replay checks
    run (SETSLOT IMPORTING/MIGRATING, MIGRATE in batches of 10, SETSLOT NODE: what
    ``redis-cli --cluster reshard`` does): ASK/TRYAGAIN for the two-key script?"""
    import redis.crc

    dep = ha_support.ClusterDeployment(base / "cm").start()
    try:
        client = cluster_client(dep)
        store = _store(client, "{oauth}:")
        store.ensure_epoch()
        slot = redis.crc.key_slot(b"{oauth}:epoch")
        source = dep.node_for_slot(slot)
        target = next(n for n in dep.nodes if n is not source)
        pipe = source.client().pipeline(transaction=False)
        for i in range(fill):
            pipe.set(f"{{oauth}}:jti:fill{i}", 1, ex=600)
        pipe.execute()
        ids = {n.port: n.client().execute_command("CLUSTER", "MYID") for n in dep.nodes}
        with Load(store) as load:
            time.sleep(0.3)
            fault_at = time.monotonic()
            # Move exactly this slot, key by key in batches of 10 (MIGRATE), as an operator would.
            tc, sc = target.client(), source.client()
            tc.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port])
            sc.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.port])
            moved = 0
            while True:
                keys = sc.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10)
                if not keys:
                    break
                sc.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
            for n in dep.nodes:
                n.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target.port])
            migration_s = time.monotonic() - fault_at
            time.sleep(1)
        result = load.summary(fault_at)
        result.update({"keys_moved": moved, "migration_s": round(migration_s, 2)})
        return result
    finally:
        dep.stop()


EXPERIMENTS = {
    "cluster-migration": exp_cluster_migration,
    "cluster-buckets": exp_cluster_buckets,
    "sentinel-kill": lambda b: exp_sentinel_kill(b),
    "sentinel-kill-raw": lambda b: exp_sentinel_kill(b, raw=True),
    "sentinel-stop": exp_sentinel_stop,
    "cluster-kill": lambda b: exp_cluster_kill(b, 0),
    "cluster-kill-replicas": lambda b: exp_cluster_kill(b, 1),
    "cluster-other-slots": exp_cluster_other_slots,
    "wait-latency": exp_wait_latency,
    "durability": exp_durability,
    "eviction": exp_eviction,
}


def main(argv: list[str]) -> None:
    names = argv or list(EXPERIMENTS)
    base = Path(tempfile.mkdtemp(prefix="ha-redis-"))
    try:
        for name in names:
            t0 = time.monotonic()
            result = EXPERIMENTS[name](base)
            print(json.dumps({"experiment": name, "seconds": round(time.monotonic() - t0, 1), "result": result}), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
