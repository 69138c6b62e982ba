#!/usr/bin/env python3
"""Issue 3: load test of POST /oauth2/token (client credentials, private_key_jwt) under gunicorn.

    .venv/bin/python bench/token_endpoint.py              # the tables (about 2.5 minutes)
    .venv/bin/python bench/token_endpoint.py --profile    # py-spy profile of the request path

What one run does, all on 127.0.0.1:

1. A throwaway SoftHSM2 token with an ES256 and a PS256 signing key (generated in the token with
   HSM.generate_key), a private redis-server, a registry file with one private_key_jwt client
   (software ES256 key, like tests/conftest.py build_registry) and one resource server.
2. The raw HSM sign rate with the server's process count: 2 spawned processes signing with
   python-pkcs11 ``key.sign`` (CKM_ECDSA / CKM_SHA256_RSA_PKCS_PSS, module initialised with
   CKF_OS_LOCKING_OK like our HSM class), 5 s each, summed.
3. For each gunicorn worker model (sync 2 workers, gthread 2 workers x 8 threads, gevent 2 workers
   when gevent is installed), 16 concurrent wrk keep-alive connections against
     - a bare WSGI callable and a do-nothing Flask view answering static JSON (the ceiling of
       server + load generator, and of server + framework),
     - example_app (OAuthHSM) with OAUTH_HSM_SIGNING_KEY = the ES256 key, then the PS256 key.
   Every request carries its own client assertion, signed before the timed phase (unique jti,
   exp 240 s ahead: the run ends long before). A non-200 answer counts as an error.
4. Prints tokens/s, p50/p99 latency, errors, CPU per request (server, wrk, redis) and the load
   other programs put on the shared machine, then the ratios and targets:
   PS256 tokens/s >= 70 % of the raw PS256 sign rate; ES256 >= 1,500 tokens/s; p99 <= 3 x p50.

``--profile`` instead records the ES256 endpoint with py-spy (pip install py-spy), 12 s each:
sync 2 workers with idle samples (wall time of one request, Redis waits included), sync 2 on-CPU
only (what burns the cores), and gthread 2x8 (where handler threads sit, GIL waits included),
and prints where the time goes by category and by function (about 50 s).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

KEYS = {"sig-es256": ("ES256", "sig"), "sig-ps256": ("PS256", "sig")}
LABEL = {"ES256": "sig-es256", "PS256": "sig-ps256"}
RS1 = "https://rs1.example.test"
CLIENT_ID = "c-es256"
CONNECTIONS = 16
PS256_TARGET = 0.70
ES256_TARGET = 1500
TAIL_TARGET = 3.0


def build_registry(client_key, rs_key) -> dict:
    """Shaped like tests/conftest.py build_registry: a private_key_jwt client with a software key."""
    return {
        "clients": [
            {
                "client_id": CLIENT_ID,
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [client_key.public_jwk]},
                "scope": "read write",
                "resources": [RS1],
            }
        ],
        "resource_servers": [
            {
                "resource": RS1,
                "client_id": "rs-1",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [rs_key.public_jwk]},
                "scope": "read write",
            }
        ],
    }


class Bench:
    def __init__(self, out: benchlib.Report):
        from as_helpers import ClientKey

        self.out = out
        self.ws = benchlib.Workspace.create("token")
        self.ws.generate_keys(KEYS)
        self.redis = self.ws.start_redis()
        self.client_key = ClientKey.new("ES256")
        registry = self.ws.base / "registry.json"
        registry.write_text(json.dumps(build_registry(self.client_key, ClientKey.new("ES256"))))
        self.registry = str(registry)
        self.bodies = self.ws.base / "bodies.txt"

    def settings(self, alg: str) -> dict:
        other = "sig-ps256" if alg == "ES256" else "sig-es256"
        return benchlib.as_settings(
            self.redis.url, self.registry, OAUTH_HSM_SIGNING_KEY=LABEL[alg], OAUTH_HSM_PUBLISHED_KEYS=other
        )

    def forms(self, count: int) -> list[str]:
        return benchlib.presign_forms(
            self.client_key,
            CLIENT_ID,
            benchlib.ISSUER,
            count,
            {"grant_type": "client_credentials", "resource": RS1, "scope": "read"},
        )

    def start_as(self, alg: str, config: benchlib.WorkerConfig, extra_args=()) -> benchlib.Server:
        server = benchlib.start_gunicorn(
            self.ws, "example_app:app", self.settings(alg), config, ready_path="/oauth2/jwks", extra_args=list(extra_args)
        )
        benchlib.wait_for_epoch(self.redis.url)
        self.check_token(server, alg)
        return server

    def check_token(self, server: benchlib.Server, alg: str) -> None:
        """One real request before measuring: 200 and an at+jwt signed with ``alg``."""
        status, _, body = benchlib.http_request(
            server.base, "POST", "/oauth2/token", self.forms(1)[0], {"Content-Type": "application/x-www-form-urlencoded"}
        )
        if status != 200:
            raise RuntimeError(f"token endpoint answered {status}: {body[:300]!r}")
        token = json.loads(body)["access_token"]
        head = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        if head.get("alg") != alg or head.get("typ") != "at+jwt":
            raise RuntimeError(f"unexpected access token header {head}")

    def load(self, server, count: int, duration: float, *, cycle: bool = False) -> benchlib.LoadResult:
        benchlib.write_bodies(self.bodies, self.forms(count))
        return benchlib.run_wrk_measured(
            server,
            "/oauth2/token",
            self.bodies,
            duration=duration,
            connections=CONNECTIONS,
            cycle=cycle,
            redis_pid=self.redis.proc.pid,
        )

    def close(self) -> None:
        self.ws.close()


def run_tables(args) -> int:
    out = benchlib.Report("token_endpoint")
    started = time.monotonic()
    out.line("# bench/token_endpoint.py — POST /oauth2/token under gunicorn, 16 keep-alive connections (wrk)")
    benchlib.print_facts(out)
    bench = Bench(out)
    try:
        gate = benchlib.QuietGate(budget=8, per_wait=3)
        gate.wait()
        raw = {}
        for alg in ("ES256", "PS256"):
            raw[alg] = benchlib.measure_signing("raw-locking", alg, LABEL[alg], 2, args.raw_duration)
        rows, results = [], {}
        configs = benchlib.available_worker_configs()
        experiment = benchlib.WorkerConfig(
            "gthread-2x8-si",
            "gthread",
            threads=8,
            extra=("--config", str(benchlib.BENCH_DIR / "gunicorn_switchinterval.py")),
            note="sys.setswitchinterval(0.5 ms) in each worker (bench/gunicorn_switchinterval.py)",
        )
        fastest = 4000.0  # req/s guess for the first token run; then the fastest token run seen
        for config in [*configs, experiment]:
            if config is not experiment:
                # ceilings: bare WSGI and do-nothing Flask (bodies cycled: their content is never read)
                for app, label in (("noop_app:bare", "bare WSGI (no-op)"), ("noop_app:app", "Flask no-op")):
                    server = benchlib.start_gunicorn(bench.ws, app, {}, config, ready_path="/")
                    try:
                        gate.wait()
                        r = bench.load(server, 2000, args.noop_duration, cycle=True)
                    finally:
                        server.stop()
                    results[(config.name, label)] = r
                    rows.append(row(config, label, r))
            for alg in ("ES256",) if config is experiment else ("ES256", "PS256"):
                server = bench.start_as(alg, config)
                try:
                    # unique bodies, comfortably more than the run can use (a shortfall is reported)
                    count = int(fastest * args.duration * 1.4) + 2000
                    gate.wait()
                    r = bench.load(server, count, args.duration)
                    bench.check_token(server, alg)  # still issuing correctly after the run
                finally:
                    server.stop()
                fastest = max(fastest, r.rate)
                results[(config.name, alg)] = r
                rows.append(row(config, f"token endpoint, {alg} AT", r))

        out.section(f"Raw HSM sign rate, 2 processes (python-pkcs11, CKF_OS_LOCKING_OK), {args.raw_duration:g} s each")
        out.table(
            ["alg", "signatures/s (2 procs)", "other load (cores)"],
            [[alg, f"{raw[alg].rate:,.0f}", f"{raw[alg].foreign_cores:.2f}"] for alg in raw],
        )

        out.section(
            f"Load: {CONNECTIONS} connections, wrk 1 thread, {args.duration:g} s per token run "
            f"({args.noop_duration:g} s per no-op run)"
        )
        out.table(
            [
                "gunicorn",
                "app",
                "req/s",
                "p50 ms",
                "p99 ms",
                "p99/p50",
                "errors",
                "server CPU ms/req",
                "wrk CPU ms/req",
                "redis CPU ms/req",
                "conns per worker",
                "worker CPU split %",
                "other load",
            ],
            rows,
        )
        out.line()
        out.line(
            "errors = non-200 answers + socket errors (sync workers close every connection: wrk reconnects, "
            "which is not an error). CPU ms/req from /proc (utime+stime) over the run. other load = CPU used "
            "by other programs on this shared machine during the run, in cores (of 2). conns per worker: "
            "client connections each worker held mid-run (ss; sync workers close each connection, so few "
            "are open at any instant); worker CPU split: each worker's share of the workers' CPU."
        )
        for config in [*configs, experiment]:
            out.line(f"- {config.name}: gunicorn {config.describe()}")
        out.line(
            f"- {experiment.name} is an experiment (ES256 only), not one of the configurations the targets "
            "are judged on; it tests one remedy for the gthread latency tail."
        )

        out.section("Ratios (same run)")
        ratio_rows, verdicts = [], []
        for config in configs:
            es, ps = results[(config.name, "ES256")], results[(config.name, "PS256")]
            noop = results[(config.name, "Flask no-op")]
            ps_ratio = ps.rate / raw["PS256"].rate
            es_ratio = es.rate / raw["ES256"].rate
            ratio_rows.append(
                [
                    config.name,
                    f"{ps.rate:,.0f} / {raw['PS256'].rate:,.0f} = {ps_ratio:.1%}",
                    f"{es.rate:,.0f} / {raw['ES256'].rate:,.0f} = {es_ratio:.1%}",
                    f"{es.rate / noop.rate:.1%}",
                    f"{ps.rate / noop.rate:.1%}",
                ]
            )
            verdicts.append(
                (config.name, "PS256 tokens/s ≥ 70 % of raw PS256 sign rate", f"{ps_ratio:.1%}", ps_ratio >= PS256_TARGET)
            )
            verdicts.append((config.name, "ES256 ≥ 1,500 tokens/s", f"{es.rate:,.0f}/s", es.rate >= ES256_TARGET))
            for alg, r in (("ES256", es), ("PS256", ps)):
                verdicts.append(
                    (
                        config.name,
                        f"{alg} p99 ≤ 3 × p50",
                        f"{r.p99_ms:.1f} / {r.p50_ms:.1f} ms = ×{r.p99_ms / r.p50_ms:.2f}",
                        r.p99_ms <= TAIL_TARGET * r.p50_ms,
                    )
                )
                verdicts.append((config.name, f"{alg} errors = 0", str(r.errors), r.errors == 0))
        out.table(
            [
                "gunicorn",
                "PS256 tokens/s ÷ raw PS256 signs/s",
                "ES256 tokens/s ÷ raw ES256 signs/s",
                "ES256 ÷ Flask no-op",
                "PS256 ÷ Flask no-op",
            ],
            ratio_rows,
        )

        x = results[(experiment.name, "ES256")]
        base = results[("gthread-2x8", "ES256")]
        out.line()
        out.line(
            f"Experiment {experiment.name} (ES256): {x.rate:,.0f} tokens/s, p99/p50 = {x.p99_ms:.1f} / "
            f"{x.p50_ms:.1f} ms = ×{x.p99_ms / x.p50_ms:.2f}, errors {x.errors}; plain gthread-2x8 in this run: "
            f"{base.rate:,.0f} tokens/s, ×{base.p99_ms / base.p50_ms:.2f}."
        )

        out.section("Targets")
        out.table(
            ["gunicorn", "target", "measured", "verdict"], [[c, t, m, "met" if ok else "MISSED"] for c, t, m, ok in verdicts]
        )
        bad = [r.first_bad for r in results.values() if r.first_bad]
        if bad:
            out.line()
            out.line(f"first non-200 answer seen: {bad[0]}")
        out.line()
        return benchlib.finish(out, started)
    finally:
        bench.close()


def row(config, label: str, r: benchlib.LoadResult) -> list:
    return [
        config.name,
        label,
        f"{r.rate:,.0f}",
        f"{r.p50_ms:.2f}",
        f"{r.p99_ms:.2f}",
        f"×{r.p99_ms / r.p50_ms:.1f}",
        f"{r.errors}" + (f" ({r.exhausted} bodies exhausted)" if r.exhausted else ""),
        f"{r.cpu_ms(r.server_cpu):.3f}",
        f"{r.cpu_ms(r.wrk_cpu):.3f}",
        f"{r.cpu_ms(r.redis_cpu):.3f}",
        r.conns,
        r.cpu_split,
        f"{r.foreign:.2f}",
    ]


# --- profiling ----------------------------------------------------------------------------------------


def run_profile(args) -> int:
    import profile_analysis

    out = benchlib.Report("token_endpoint_profile")
    started = time.monotonic()
    out.line("# bench/token_endpoint.py --profile — where a token request's time goes (py-spy)")
    benchlib.print_facts(out)
    bench = Bench(out)
    configs = {c.name: c for c in benchlib.available_worker_configs()}
    try:
        # sync workers: one thread per process, so a sample's stack is exactly what that request
        # is doing (threaded workers add GIL waits charged to whatever line a thread waits on).
        for cfg_name, idle, what in (
            ("sync-2", True, "all samples incl. idle = wall time (Redis waits included)"),
            ("sync-2", False, "on-CPU samples only (py-spy drops sleeping threads)"),
            ("gthread-2x8", False, "handler threads (running, blocked on I/O or waiting for the GIL)"),
        ):
            config = configs[cfg_name]
            server = bench.start_as(args.profile_alg, config)
            try:
                count = int(3000 * args.profile_duration) + 2000
                benchlib.write_bodies(bench.bodies, bench.forms(count))
                raw_path = (
                    benchlib.RESULTS_DIR / f"profile-{args.profile_alg}-{cfg_name}-{'wall' if idle else 'cpu'}.collapsed.txt"
                )
                benchlib.RESULTS_DIR.mkdir(exist_ok=True)
                spy = profile_analysis.start_py_spy(server.proc.pid, raw_path, args.profile_duration + 1, idle=idle)
                time.sleep(1.0)  # py-spy attached to master and workers
                r = benchlib.run_wrk(
                    server,
                    "/oauth2/token",
                    bench.bodies,
                    duration=args.profile_duration,
                    connections=CONNECTIONS,
                    redis_pid=bench.redis.proc.pid,
                )
                profile_analysis.wait_py_spy(spy)
            finally:
                server.stop()
            out.section(f"{args.profile_alg} token endpoint, gunicorn {config.describe()} — {what}")
            out.line(
                f"under py-spy (100 Hz): {r.rate:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
                f"errors {r.errors}, server CPU {r.cpu_ms(r.server_cpu):.3f} ms/req"
            )
            out.line(f"collapsed stacks: {raw_path.relative_to(benchlib.ROOT)}")
            profile_analysis.report(
                out,
                raw_path,
                master_pid=server.proc.pid,
                server_cpu_ms=r.cpu_ms(r.server_cpu),
                idle=idle,
                workers_n=config.workers,
                spy_seconds=args.profile_duration + 1,
                requests=r.requests,
                threaded=config.worker_class == "gthread",
            )
        out.line()
        return benchlib.finish(out, started)
    finally:
        bench.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per token-endpoint run (default 10)")
    ap.add_argument("--noop-duration", type=float, default=3.0, help="seconds per do-nothing run (default 3)")
    ap.add_argument("--raw-duration", type=float, default=5.0, help="seconds per raw sign measurement (default 5)")
    ap.add_argument("--profile", action="store_true", help="profile the request path with py-spy instead")
    ap.add_argument("--profile-alg", default="ES256", choices=["ES256", "PS256"])
    ap.add_argument("--profile-duration", type=float, default=12.0)
    args = ap.parse_args()
    return run_profile(args) if args.profile else run_tables(args)


if __name__ == "__main__":
    sys.exit(main())
