#!/usr/bin/env python3
"""Chaos soak: mixed traffic for ~5 minutes while Redis, the Sentinel master, the remote HSM and
gunicorn workers are killed and brought back at random, bounded intervals.

The deployment (everything ours, on 127.0.0.1, removed at the end):

* a SoftHSM2 token exported by ``p11-kit server`` and used through ``p11-kit-client.so`` (the
  network-HSM test bed of tests/ha_support.py);
* Redis Sentinel: one master, two replicas, three sentinels (``OAUTH_HSM_REDIS_URL=redis+sentinel://…``,
  WAIT for one replica, the default);
* gunicorn: 2 gthread workers x 4 threads, ``--preload``, pool 4, pool timeout 1 s, operation
  deadline 1 s, rate limits on (high limits: the counters live in the same Redis).

Traffic (``--clients`` spawned processes, keep-alive): the mix of bench/soak.py — tokens,
introspection (JSON and JWT), revocation followed by introspection, hostile input — where every
request may also get ``503`` (with ``Retry-After`` and ``temporarily_unavailable``) and hostile
replays re-post assertions that were accepted earlier.

Faults, one at a time, every ``--gap`` seconds (random within the bounds), kinds in shuffled
rounds so each occurs about equally often:

* ``redis-master``: SIGKILL the master; the sentinels promote a replica; the old one rejoins as a
  replica 2–4 s later;
* ``redis-replica``: SIGKILL a replica, restart it 1–3 s later (no outage expected: one replica
  still acknowledges);
* ``hsm-kill``: SIGKILL the p11-kit server and its per-connection processes, restart 1–3 s later;
* ``hsm-stop``: SIGSTOP the p11-kit server for 2 s;
* ``worker-kill``: SIGKILL one gunicorn worker (the master starts another).

Reported: requests; unexpected answers (must be 0: only the expected answer, a 4xx where one is
due, or a correct 503); tokens issued while a dependency was down (a 200 for a request that
started after the fault and finished before the dependency was back: must be 0); replays
accepted (must be 0); tokens whose replay record is missing on the current master, checked
within seconds of each token (must be 0); connections dropped (only a killed worker's own); and
per fault, how long the dependency was down and how long after it came back the first token was
issued.

    .venv/bin/python bench/chaos.py [--seconds 300] [--clients 6] [--gap 8 15] [--seed N]

Writes bench/results/chaos.txt.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import queue as queue_mod
import random
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402  (sets up sys.path for tests/ helpers)
import ha_support  # noqa: E402
import soak  # noqa: E402

ASSERTION_TYPE = soak.ASSERTION_TYPE
DROP_WINDOW = 3.0  # seconds after a worker kill in which its clients' connections may drop
KINDS = ("redis-master", "redis-replica", "hsm-kill", "hsm-stop", "worker-kill")


# --- one load process ------------------------------------------------------------------------------


class ChaosClient(soak.Client):
    """soak.Client where any request may also get a correct 503, and every answer is timed."""

    def __init__(self, port: int, keys: dict, deadline: float, tokens_out):
        super().__init__(port, keys, deadline)
        self.tokens_out = tokens_out
        self.timeline: list[tuple[str, float, float, int]] = []  # kind, started (wall), elapsed, status
        self.accepted: list[bytes] = []  # bodies of token requests that got a token (for replays)
        self.replays_accepted = 0

    def request(self, kind: str, method: str, path: str, body: bytes | None, expect: set[int], headers=None):
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        started, t0 = time.time(), time.perf_counter()
        retry_after = None
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            resp = self.conn.getresponse()
            data, status, retry_after = resp.read(), resp.status, resp.getheader("Retry-After")
            if resp.getheader("Connection", "").lower() == "close":
                self.conn.close()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            status, data = -1, repr(exc).encode()
        elapsed = time.perf_counter() - t0
        self.samples.append((kind, elapsed))
        self.timeline.append((kind, started, elapsed, status))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if status == -1:
            return status, data  # classified later: only a killed worker may drop a connection
        if status == 503:
            if not retry_after or b'"temporarily_unavailable"' not in data or b"access_token" in data:
                self.unexpected.append(f"{kind}: 503 without Retry-After or error: {data[:120]!r}")
        elif status not in expect or (status >= 400 and not data.startswith(b"{")):
            self.unexpected.append(f"{kind}: {status} {data[:120]!r}")
        return status, data

    def get_token(self) -> None:
        from as_helpers import claims_for

        jti = secrets.token_urlsafe(16)
        assertion = self.keys["soak-client"].jws(claims_for("soak-client", benchlib.ISSUER, jti=jti))
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": "read",
        }
        body = urlencode(form).encode()
        status, data = self.request("token", "POST", "/oauth2/token", body, {200})
        if status == 200:
            self.tokens.append(json.loads(data)["access_token"])
            del self.tokens[:-50]
            self.accepted.append(body)
            del self.accepted[:-50]
            self.tokens_out.put((jti, time.time()))

    def hostile(self) -> None:
        if self.accepted and random.random() < 0.4:  # a replay of an assertion accepted earlier
            status, _ = self.request("hostile-replay", "POST", "/oauth2/token", random.choice(self.accepted), {401})
            self.replays_accepted += status == 200
            return
        super().hostile()


def client_process(port: int, keys: dict, deadline: float, results, tokens_out) -> None:
    client = ChaosClient(port, keys, deadline, tokens_out)
    client.run()
    results.put((client.timeline, client.unexpected, client.counts, client.replays_accepted))


# --- the faults ----------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    at: float  # wall time of the fault
    back: float  # wall time the dependency was back (restarted, resumed, promoted)
    down_window: tuple[float, float] | None  # no token may be issued entirely inside it
    note: str = ""
    ready_after: float | None = None  # seconds from `back` until /ready answered 200


@dataclass
class Deployment:
    ws: benchlib.Workspace
    sentinel: ha_support.SentinelDeployment
    hsm: ha_support.P11KitServer
    server: benchlib.Server | None = None
    faults: list[Fault] = field(default_factory=list)

    def inject(self, kind: str, rng: random.Random) -> Fault:
        now = time.time
        if kind == "redis-master":
            old = self.sentinel.master()
            old.kill()
            at = now()  # windows open once the fault is complete, close before the repair begins
            new = self.sentinel.wait_for_new_master(old, timeout=30)
            back = promotion_time(self.sentinel, at) or now()
            time.sleep(rng.uniform(2, 4))
            self.sentinel.restart_as_replica(old)
            return Fault(kind, at, back, (at, back), f"{old.name} → {new.name}")
        if kind == "redis-replica":
            victim = rng.choice(self.sentinel.replicas())
            victim.kill()
            at = now()
            time.sleep(rng.uniform(1, 3))
            self.sentinel.restart_as_replica(victim)
            return Fault(kind, at, now(), None, victim.name)
        if kind == "hsm-kill":
            self.hsm.kill()
            at = now()
            time.sleep(rng.uniform(1, 3))
            back = now()
            self.hsm.start()
            return Fault(kind, at, back, (at, back))
        if kind == "hsm-stop":
            self.hsm.pause()
            at = now()
            time.sleep(2)
            back = now()
            self.hsm.resume()
            return Fault(kind, at, back, (at, back))
        assert self.server is not None
        workers = self.server.pids()[1:]
        victim_pid = rng.choice(workers)
        os.kill(victim_pid, signal.SIGKILL)
        at = now()
        return Fault("worker-kill", at, at, None, f"pid {victim_pid}")

    def wait_ready(self, timeout: float = 60) -> float:
        assert self.server is not None
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                status, _, _ = benchlib.http_request(self.server.base, "GET", "/oauth2/ready", timeout=5)
                if status == 200:
                    return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("not ready again within a minute")


def promotion_time(sentinel: ha_support.SentinelDeployment, after: float) -> float | None:
    """When the leading sentinel sent ``REPLICAOF NO ONE`` to the replica it chose (its log, ms
    resolution, local time): no write can land on the new master before it."""
    from datetime import datetime

    times = []
    for s in sentinel.sentinels:
        for line in (s.dir / "log.txt").read_text(errors="replace").splitlines():
            if "+failover-state-send-slaveof-noone" in line:
                stamp = " ".join(line.split()[1:5])  # "123:X 01 Dec 2025 11:27:44.123 # +failover-…"
                try:
                    t = datetime.strptime(stamp, "%d %b %Y %H:%M:%S.%f").timestamp()
                except ValueError:
                    continue
                if t >= after - 1.0:  # the kill itself was at most a moment before ``after``
                    times.append(t)
    return min(times, default=None)


def fault_loop(dep: Deployment, rng: random.Random, stop_at: float, gap: tuple[float, float]) -> None:
    kinds: list[str] = []
    while True:
        wait = rng.uniform(*gap)
        if time.monotonic() + wait + 12 > stop_at:  # room for the fault and its recovery
            return
        time.sleep(wait)
        if not kinds:
            kinds = list(KINDS)
            rng.shuffle(kinds)
        fault = dep.inject(kinds.pop(), rng)
        fault.ready_after = dep.wait_ready()
        dep.faults.append(fault)
        print(
            f"  {fault.kind:<13} {fault.note:<22} down {fault.back - fault.at:5.2f} s, ready {fault.ready_after:5.2f} s after",
            flush=True,
        )


# --- replay records --------------------------------------------------------------------------------


class RecordChecker:
    """Every issued token's assertion jti must be on the current master (its replay record)."""

    def __init__(self, sentinel: ha_support.SentinelDeployment, tokens_in, prefix: str = "oauth-hsm:"):
        from flask_oauth_hsm.store.layout import Layout

        self.layout = Layout(prefix, 1)
        self.client = sentinel.client(timeout=1.0)
        self.tokens_in = tokens_in
        self.pending: list[tuple[str, float]] = []
        self.checked = self.missing = 0
        self.samples: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set() or self.pending:
            self.drain()
            try:
                self.check()
            except Exception:  # noqa: BLE001 - no master right now: try again in a moment
                time.sleep(0.5)
            if self.stop.is_set() and not self.pending:
                return
            time.sleep(0.5)

    def drain(self) -> None:
        while True:
            try:
                self.pending.append(self.tokens_in.get_nowait())
            except queue_mod.Empty:
                return

    def check(self) -> None:
        batch, self.pending = self.pending, []
        try:
            pipe = self.client.pipeline(transaction=False)
            for jti, _ in batch:
                pipe.exists(self.layout.place("jti", "soak-client\0" + jti).key)
            found = pipe.execute()
        except Exception:
            self.pending = batch + self.pending
            raise
        for (jti, _), present in zip(batch, found, strict=True):
            self.checked += 1
            if not present:
                self.missing += 1
                self.samples.append(jti)


# --- the run -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--gap", type=float, nargs=2, default=[8.0, 15.0])
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 30)
    rng = random.Random(seed)

    from cryptography.hazmat.primitives import serialization

    from as_helpers import ClientKey

    started = time.monotonic()
    out = benchlib.Report("chaos")
    out.line("# bench/chaos.py — mixed traffic while Redis (Sentinel), the remote HSM and gunicorn workers fail")
    benchlib.print_facts(out)
    ws = benchlib.Workspace.create("chaos")
    sentinel = hsm = None
    try:
        ws.generate_keys({"sig-es256": ("ES256", "sig"), "sig-ps256": ("PS256", "sig")})
        hsm = ha_support.P11KitServer(ws.base / "p11kit", os.environ["SOFTHSM2_CONF"], benchlib.TOKEN_LABEL)
        hsm.start()
        os.environ["P11_KIT_SERVER_ADDRESS"] = hsm.address  # gunicorn inherits it
        sentinel = ha_support.SentinelDeployment(ws.base / "sentinel").start()
        dep = Deployment(ws, sentinel, hsm)
        keys = {"soak-client": ClientKey.new("ES256"), "soak-rs": ClientKey.new("ES256")}
        registry = ws.base / "registry.json"
        registry.write_text(json.dumps(soak.build_registry(keys["soak-client"], keys["soak-rs"])))
        settings = benchlib.as_settings(
            sentinel.url(),
            str(registry),
            OAUTH_HSM_PKCS11_MODULE=ha_support.P11KIT_CLIENT_MODULE,
            OAUTH_HSM_POOL_SIZE="4",
            OAUTH_HSM_POOL_TIMEOUT="1",
            OAUTH_HSM_OPERATION_TIMEOUT="1",
            OAUTH_HSM_RETRY_AFTER="1",
            OAUTH_HSM_RATE_LIMITS="address=100000/second,client=100000/second,hsm=100000/second",
        )
        config = benchlib.WorkerConfig("gthread-2x4", "gthread", threads=4)
        dep.server = benchlib.start_gunicorn(ws, "example_app:app", settings, config, ready_path="/oauth2/ready")
        time.sleep(1.1)  # past the epoch's first second (the reset rule)

        ctx = mp.get_context("spawn")
        results, tokens = ctx.Queue(), ctx.Queue()
        checker = RecordChecker(sentinel, tokens)
        checker.thread.start()
        portable = {
            who: (
                k.alg,
                k.private.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
                k.kid,
            )
            for who, k in keys.items()
        }
        traffic_start = time.time()
        deadline = time.monotonic() + args.seconds
        procs = [
            ctx.Process(target=client_process, args=(dep.server.port, portable, deadline, results, tokens))
            for _ in range(args.clients)
        ]
        for p in procs:
            p.start()
        print(f"chaos: {args.seconds:.0f} s, seed {seed}", flush=True)
        load_before = os.getloadavg()[0]
        fault_loop(dep, rng, deadline, tuple(args.gap))
        collected = [results.get(timeout=args.seconds + 120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        checker.stop.set()
        checker.thread.join(timeout=60)
        dep.server.stop()
        report(out, args, seed, config, collected, dep.faults, checker, traffic_start)
        out.line(
            f"load average (1 min) at the start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f} on 2 cores "
            "(this run's own processes included: gunicorn, 6 redis-server, p11-kit, the clients)"
        )
    finally:
        if sentinel is not None:
            sentinel.stop()
        if hsm is not None:
            hsm.stop()
        ws.close()
    return benchlib.finish(out, started)


def report(out, args, seed: int, config, collected, faults: list[Fault], checker: RecordChecker, t0: float) -> None:
    timeline = sorted(t for r in collected for t in r[0])
    unexpected = [u for r in collected for u in r[1]]
    replays = sum(r[3] for r in collected)
    kills = [f.at for f in faults if f.kind == "worker-kill"]
    drops = [t for t in timeline if t[3] == -1]
    stray_drops = [t for t in drops if not any(k <= t[1] + t[2] and t[1] <= k + DROP_WINDOW for k in kills)]
    tokens = [t for t in timeline if t[0] == "token" and t[3] == 200]
    while_down = [
        t for t in tokens for f in faults if f.down_window and f.down_window[0] <= t[1] and t[1] + t[2] <= f.down_window[1]
    ]
    kinds = sorted({t[0] for t in timeline})

    out.section(
        f"Chaos soak: {args.seconds:.0f} s, {args.clients} client processes (keep-alive), gunicorn "
        f"{config.describe()}, seed {seed}"
    )
    out.table(
        [
            "requests",
            "unexpected answers",
            "tokens issued while a dependency was down",
            "replays accepted",
            "tokens without their replay record",
            "connections dropped (killed worker's)",
            "stray drops",
        ],
        [
            [
                f"{len(timeline):,}",
                str(len(unexpected)),
                str(len(while_down)),
                str(replays),
                f"{checker.missing} of {checker.checked:,} checked",
                str(len(drops) - len(stray_drops)),
                str(len(stray_drops)),
            ]
        ],
    )
    out.line()
    rows = []
    for kind in kinds:
        mine = [t for t in timeline if t[0] == kind]
        lat = [t[2] for t in mine]
        rows.append(
            [
                kind,
                f"{len(mine):,}",
                f"{sum(t[3] == 503 for t in mine):,}",
                f"{soak.percentile(lat, 0.5):.1f}",
                f"{soak.percentile(lat, 0.99):.1f}",
                f"{max(lat, default=0) * 1000:.0f}",
            ]
        )
    out.table(["request", "count", "503", "p50 ms", "p99 ms", "max ms"], rows)
    out.line()
    rows = []
    for f in faults:
        first = next((t for t in tokens if t[1] >= f.back), None)
        recovery = f"{first[1] + first[2] - f.back:.2f}" if first else "none"
        during = [t for t in timeline if f.at <= t[1] <= (first[1] if first else f.back)]
        inside = [t for t in tokens if f.down_window and f.down_window[0] <= t[1] and t[1] + t[2] <= f.down_window[1]]
        rows.append(
            [
                f"{f.at - t0:.0f}",
                f.kind,
                f.note,
                f"{f.back - f.at:.2f}",
                recovery,
                f"{f.ready_after:.2f}" if f.ready_after is not None else "-",
                f"{sum(t[3] == 503 for t in during):,}",
                str(len(inside)),
            ]
        )
    out.table(
        [
            "at (s)",
            "fault",
            "detail",
            "down (s)",
            "first token after it was back (s)",
            "/ready 200 after (s)",
            "503 answers",
            "tokens while down",
        ],
        rows,
    )
    out.line()
    out.line(
        "down: SIGKILL to restart (hsm-kill, redis-replica), SIGSTOP to SIGCONT (hsm-stop), SIGKILL to the "
        "sentinels' promotion (redis-master); 0 for a worker kill. 'first token' counts from that moment to "
        "the end of the first successful token request started after it."
    )
    if unexpected:
        out.line()
        out.line("unexpected answers (first 10):")
        for sample in unexpected[:10]:
            out.line(f"  {sample}")
    if stray_drops or checker.samples:
        out.line(f"stray drops: {stray_drops[:5]}; jtis without record: {checker.samples[:5]}")


if __name__ == "__main__":
    raise SystemExit(main())
