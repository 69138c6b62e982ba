#!/usr/bin/env python3
"""Issue 15 diagnosis: what a whole token request costs in one process, next to a do-nothing view.

    .venv/bin/python bench/stage_costs.py

No HTTP server: the example app (softhsm/env.sh settings, as bench/peer_ab.py configures it) is
built in this process, and its WSGI callable is called with pre-built environs, one unique
pre-signed assertion each (ES256 and PS256 access tokens), then the do-nothing Flask view and a
bare WSGI callable. Each figure is the median over 5 repetitions of a timed loop, in µs of wall
time per call, single-threaded; the process also reports the CPU time it used, and the other
load on the machine (shared: compare rows within one run, not across runs). The per-stage split
of a served request is ``bench/profile_example.py --stages``; ``environ_for`` and ``call_wsgi``
are also used by bench/ab_inprocess.py.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import peer_ab  # noqa: E402

REPEATS = 5


def timed(fn, n: int) -> str:
    """ "wall | CPU" µs per call: medians over REPEATS loops of n calls (fn gets the call index)."""
    wall, cpu = [], []
    for rep in range(REPEATS):
        base = rep * n
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(n):
            fn(base + i)
        wall.append((time.perf_counter() - t0) / n * 1e6)
        cpu.append((time.process_time() - c0) / n * 1e6)
    w, c = statistics.median(wall), statistics.median(cpu)
    return f"{w:.1f} | {c:.1f}" if w < 20 else f"{w:.0f} | {c:.0f}"


def environ_for(path: str, body: str) -> dict:
    from werkzeug.test import EnvironBuilder

    env = EnvironBuilder(
        path=path, method="POST", data=body.encode(), content_type=peer_ab.FORM["Content-Type"], base_url="http://127.0.0.1:5000"
    ).get_environ()
    env["REMOTE_ADDR"] = "127.0.0.1"
    return env


def call_wsgi(app, env: dict) -> tuple[str, bytes]:
    status = []

    def start_response(s, headers, exc_info=None):
        status.append(s)

    env = dict(env)
    env["wsgi.input"] = io.BytesIO(env["_body"])
    out = b"".join(app(env, start_response))
    return status[0], out


def main() -> int:
    out = benchlib.Report("stage_costs")
    started = time.monotonic()
    out.line("# bench/stage_costs.py — µs per stage of POST /oauth2/token, in one process (no HTTP server)")
    benchlib.print_facts(out)
    from as_helpers import ClientKey

    key = ClientKey.new("ES256")
    ours = peer_ab.Ours(key, {})
    try:
        return run(out, ours, key, started)
    finally:
        ours.close()


def run(out, ours, key, started) -> int:
    import os

    issuer = "http://127.0.0.1:5000"
    resource = issuer + "/api"
    n = 1500
    rows = []
    system = benchlib.SystemMeter()
    system.start()
    cpu0 = time.process_time()

    for alg in ("ES256", "PS256"):
        settings = ours.settings(issuer, resource, alg)
        os.environ.update(settings)
        # a fresh import per alg would be cleaner; the app reads settings at create_app()
        import example_app

        app = example_app.create_app()
        benchlib.wait_for_epoch(ours.redis.url)
        target = peer_ab.Target("in-process", None, 5000, "/oauth2/token", "/oauth2/jwks", issuer, resource, Path("."), "")
        count = n * REPEATS + 10
        bodies = peer_ab.bodies(target, key, count)
        envs = []
        for b in bodies:
            e = environ_for("/oauth2/token", b)
            e["_body"] = b.encode()
            envs.append(e)
        st, body = call_wsgi(app, envs[-1])
        assert st.startswith("200") and b'"access_token":"ey' in body, (st, body[:200])
        rows.append([f"whole WSGI call, example app, {alg} access token", timed(lambda i: call_wsgi(app, envs[i]), n)])  # noqa: B023 - timed() calls it now
        del sys.modules["example_app"]

    # the do-nothing Flask view (bench/noop_app.py), same Flask/Werkzeug
    import noop_app

    noop_env = environ_for("/oauth2/token", "x=1")
    noop_env["_body"] = b"x=1"
    rows.append(
        ["whole WSGI call, do-nothing Flask view (bench/noop_app.py)", timed(lambda i: call_wsgi(noop_app.app, noop_env), 5000)]
    )
    rows.append(
        [
            "whole WSGI call, bare WSGI callable (bench/noop_app.py bare)",
            timed(lambda i: call_wsgi(noop_app.bare, noop_env), 20000),
        ]
    )

    window, busy = system.stop()
    cpu = time.process_time() - cpu0
    out.section("µs per call, one thread: wall time | CPU time of this process (medians of 5 loops)")
    out.table(["stage", "µs wall | CPU"], rows)
    out.line()
    out.line(
        f"this process used {cpu / window:.2f} cores of the window; whole machine busy {busy / window:.2f} cores "
        f"(other load ≈ {max(0.0, busy - cpu) / window:.2f} cores, redis included)"
    )
    out.line()
    return benchlib.finish(out, started)
