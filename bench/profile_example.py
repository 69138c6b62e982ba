#!/usr/bin/env python3
"""Issue 15 diagnosis: where the example app's CPU goes per token request, as served.

    .venv/bin/python bench/profile_example.py                       # the documented command
    .venv/bin/python bench/profile_example.py --server granian --no-access-log
    .venv/bin/python bench/profile_example.py --app noop            # the do-nothing Flask view

Starts ``example_app:app`` configured like bench/peer_ab.py (softhsm/env.sh settings) under the
chosen server, loads it with wrk (16 keep-alive connections, unique pre-signed assertions) and
records every server process with py-spy (``--subprocesses --nonblocking``, 250 Hz, on-CPU
samples only: a thread blocked in a system call or waiting for the GIL is not counted). Each
sample is put in one category (first matching rule from the innermost frame, the RULES below);
a category's µs per request is its share of the samples times the server CPU per request
measured from /proc over the same run. Native code (C_Sign in SoftHSM, OpenSSL, hiredis, the
kernel's socket work) is charged to the Python frame that called it.

py-spy itself costs the server some throughput (it reads the processes' memory 250 times a
second); shares are what matters, the absolute rate under py-spy is not a benchmark.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import peer_ab  # noqa: E402
import profile_analysis  # noqa: E402

# (category, path substring, function regex or None); the first rule matching the innermost
# frame wins, then the next frame outwards, and so on.
RULES = [
    ("HSM sign (SoftHSM C_Sign via python-pkcs11, session pool)", "flask_oauth_hsm/hsm.py", None),
    ("HSM sign (SoftHSM C_Sign via python-pkcs11, session pool)", "/pkcs11/", None),
    (
        "ECDSA verify of the client assertion (OpenSSL via cryptography)",
        "flask_oauth_hsm/jose/jws.py",
        r"(^|\.)verify_signature$",
    ),
    (
        "Redis round trip: socket send/recv (kernel, loopback TCP)",
        "/redis/",
        r"(send_packed_command|read_from_socket|_socket_can_read|recv|sendall)",
    ),
    ("Redis: redis-py command machinery (pool, retry, pack, parse)", "/redis/", None),
    ("Redis: use_once (key hashing, script call)", "flask_oauth_hsm/store.py", None),
    ("access log (gunicorn glogging: atoms, strftime, logging)", "/gunicorn/glogging.py", None),
    ("access log (gunicorn glogging: atoms, strftime, logging)", "/logging/", None),
    ("JSON encode/decode (stdlib json)", "/json/", None),
    ("form parsing (read_form, parse_qsl)", "/urllib/parse.py", None),
    ("form parsing (read_form, parse_qsl)", "flask_oauth_hsm/http.py", r"(^|\.)read_form$"),
    ("JOSE parsing/encoding (compact, base64url, header checks)", "flask_oauth_hsm/jose/", None),
    ("token endpoint logic (client_auth, token, access_tokens, registry, events)", "flask_oauth_hsm/", None),
    ("Werkzeug (Request/Response objects, headers, routing)", "/werkzeug/", None),
    ("Flask (app/request contexts, dispatch, signals)", "/flask/", None),
    ("Flask (app/request contexts, dispatch, signals)", "/blinker/", None),
    ("gunicorn HTTP parsing + WSGI environ", "/gunicorn/http/", None),
    ("gunicorn worker loop (accept, keep-alive, response write)", "/gunicorn/", None),
    ("threads, futures, selectors (gthread pool)", "/concurrent/futures/", None),
    ("threads, futures, selectors (gthread pool)", "/threading.py", None),
    ("threads, futures, selectors (gthread pool)", "/selectors.py", None),
    ("socket (server side, stdlib)", "/socket.py", None),
    ("gevent hub / greenlets", "/gevent/", None),
    ("granian (Python side of the WSGI bridge)", "/granian/", None),
]
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def categorise(frames: list[str]) -> str:
    for raw in reversed(frames):
        m = _FRAME.match(raw)
        func, file = (m.group("func"), m.group("file")) if m else (raw, "")
        for name, part, func_re in RULES:
            if part in file and (func_re is None or re.search(func_re, func)):
                return name
    return "other (interpreter, stdlib)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--server",
        type=peer_ab.ServerSpec.parse,
        default=peer_ab.ServerSpec.parse("granian:2"),
        help="as bench/peer_ab.py (default granian:2, the documented command)",
    )
    ap.add_argument("--access-log", dest="access_log", action="store_true", help="with the server's access log")
    ap.add_argument("--app", choices=["example", "noop"], default="example")
    ap.add_argument("--alg", default="ES256", choices=["ES256", "PS256"])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=250)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument(
        "--stages", action="store_true", help="no py-spy: serve bench/diag_app.py and report per-stage thread CPU time instead"
    )
    args = ap.parse_args()
    if args.stages:
        return stages(args)
    peer_ab.ensure_wrk()
    extra = dict(e.split("=", 1) for e in args.env)

    label = f"{args.server.label.replace(':', 'x')}{'' if args.access_log else '-nolog'}-{args.app}-{args.alg}"
    out = benchlib.Report(f"profile_example-{label}")
    started = time.monotonic()
    out.line(f"# bench/profile_example.py — {args.app} app, {args.alg}, where the server CPU goes per request")
    benchlib.print_facts(out)
    from as_helpers import ClientKey

    key = ClientKey.new("ES256")
    ours = peer_ab.Ours(key, {})
    app = "example_app:app" if args.app == "example" else "noop_app:app"
    target = None
    try:
        target = ours.start(
            args.server, args.alg, workers=2, access_log=args.access_log, preload=False, app=app, env_overrides=extra
        )
        bodies_file = ours.ws.base / "bodies.txt"
        if args.app == "example":
            peer_ab.measure(target, key, args.alg, 2, bodies_file, ours.redis.proc.pid, 0, benchlib.QuietGate(5, 3))
            benchlib.write_bodies(bodies_file, peer_ab.bodies(target, key, int(max(target.rates) * args.duration * 1.3) + 2000))
        else:
            benchlib.write_bodies(bodies_file, ["x=1"] * 1000)
        raw = benchlib.RESULTS_DIR / f"profile_example-{label}.raw.txt"
        benchlib.RESULTS_DIR.mkdir(exist_ok=True)
        spy = subprocess.Popen(
            [
                profile_analysis.py_spy(),
                "record",
                "--pid",
                str(target.proc.pid),
                "--subprocesses",
                "--nonblocking",
                "--rate",
                str(args.rate),
                "--duration",
                str(int(args.duration + 2)),
                "--format",
                "raw",
                "--full-filenames",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)
        system = benchlib.SystemMeter()
        system.start()
        r = benchlib.run_wrk(
            target,
            target.token_path,
            bodies_file,
            duration=args.duration,
            connections=peer_ab.CONNECTIONS,
            cycle=args.app != "example",
            redis_pid=ours.redis.proc.pid,
            expect=peer_ab.EXPECT if args.app == "example" else None,
        )
        window, busy = system.stop()
        foreign = max(0.0, busy - r.server_cpu - r.wrk_cpu - r.redis_cpu) / window
        profile_analysis.wait_py_spy(spy)
        cpu_us = 1000 * r.cpu_ms(r.server_cpu)

        cats: Counter = Counter()
        total = 0
        master = f"process {target.proc.pid}:"
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            parts = stack.split(";")
            procs = [p for p in parts if p.startswith("process ")]
            if not procs or procs[-1].startswith(master):
                continue  # the master (gunicorn arbiter / granian main) does no request work
            frames = [p for p in parts[len(procs) :] if not p.startswith("thread ")]
            cats[categorise(frames)] += int(count)
            total += int(count)
        out.section(f"{target.describe} — {args.app} app, {args.alg}")
        out.line(
            f"under py-spy: {r.rate:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, errors {r.errors}, "
            f"server CPU {cpu_us:.0f} µs/req, redis CPU {1000 * r.cpu_ms(r.redis_cpu):.0f} µs/req, "
            f"wrk CPU {1000 * r.cpu_ms(r.wrk_cpu):.0f} µs/req, other load {foreign:.2f} cores; "
            f"{total} worker samples; settings {extra or 'as peer_ab'}"
        )
        out.line()
        out.table(
            ["category", "share of worker samples", "≈ µs CPU per request"],
            [[name, f"{c / total:.1%}", f"{cpu_us * c / total:.0f}"] for name, c in cats.most_common()],
        )
        out.line()
        out.line(f"raw stacks: {raw.relative_to(benchlib.ROOT)}")
        return benchlib.finish(out, started)
    finally:
        if target is not None:
            target.stop()
        ours.close()


def _read_stages(directory: Path) -> dict[str, list[float]]:
    total: dict[str, list[float]] = {}
    for f in directory.glob("stage-*.json"):
        for name, (count, cpu) in json.loads(f.read_text()).items():
            t = total.setdefault(name, [0, 0.0])
            t[0] += count
            t[1] += cpu
    return total


def stages(args) -> int:
    """The example app as served, with bench/diag_app.py's stage timers: µs of CPU per request."""
    peer_ab.ensure_wrk()
    extra = dict(e.split("=", 1) for e in args.env)
    label = f"{args.server.label.replace(':', 'x')}{'' if args.access_log else '-nolog'}-{args.alg}"
    out = benchlib.Report(f"stages-{label}")
    started = time.monotonic()
    out.line(f"# bench/profile_example.py --stages — thread CPU per stage of a token request, {args.alg}")
    benchlib.print_facts(out)
    from as_helpers import ClientKey

    key = ClientKey.new("ES256")
    ours = peer_ab.Ours(key, {})
    diag_dir = ours.ws.base / "diag"
    diag_dir.mkdir()
    target = None
    try:
        target = ours.start(
            args.server,
            args.alg,
            workers=2,
            access_log=args.access_log,
            preload=False,
            app="diag_app:app",
            env_overrides={
                **extra,
                "DIAG_DIR": str(diag_dir),
                # the HSM call in the request's own thread, where
                # the stage timers (thread CPU) can see it
                "OAUTH_HSM_OPERATION_TIMEOUT": "0",
            },
        )
        bodies_file = ours.ws.base / "bodies.txt"
        peer_ab.measure(target, key, args.alg, 2, bodies_file, ours.redis.proc.pid, 0, benchlib.QuietGate(5, 3))
        benchlib.write_bodies(bodies_file, peer_ab.bodies(target, key, int(max(target.rates) * args.duration * 1.8) + 2000))
        time.sleep(1.5)
        before = _read_stages(diag_dir)
        system = benchlib.SystemMeter()
        system.start()
        r = benchlib.run_wrk(
            target,
            target.token_path,
            bodies_file,
            duration=args.duration,
            connections=peer_ab.CONNECTIONS,
            redis_pid=ours.redis.proc.pid,
            expect=peer_ab.EXPECT,
        )
        window, busy = system.stop()
        time.sleep(1.5)  # the workers' next writes
        after = _read_stages(diag_dir)
        foreign = max(0.0, busy - r.server_cpu - r.wrk_cpu - r.redis_cpu) / window
        n = after["view"][0] - before.get("view", [0, 0])[0]
        us = {k: 1e6 * (after[k][1] - before.get(k, [0, 0.0])[1]) / n for k in after}
        server_us = 1000 * r.cpu_ms(r.server_cpu) * r.requests / n if n else 0.0
        redis_us = 1000 * r.cpu_ms(r.redis_cpu) * r.requests / n if n else 0.0
        get = lambda k: us.get(k, 0.0)  # noqa: E731
        rows = [
            ["WSGI server (outside the app: HTTP parsing, sockets, threads, access log)", server_us - get("wsgi")],
            ["Flask + Werkzeug around the view (contexts, routing, Request/Response)", get("wsgi") - get("view")],
            ["read_form (body read, parse_qsl)", get("read_form")],
            [
                "client auth: assertion parsing, lookup, claims checks (no crypto, no Redis)",
                get("authenticate") - get("ecdsa_verify") - get("redis_use_once"),
            ],
            ["client auth: ES256 verify (cryptography/OpenSSL)", get("ecdsa_verify")],
            ["client auth: replay check, Redis round trip (client side: redis-py + syscalls)", get("redis_use_once")],
            ["DPoP / PoP binding steps (no proof presented: the checks that there is none)", get("binding")],
            ["grant: client credentials (RFC 8707 resources, scope)", get("grant")],
            ["access token: claims, JSON, JWS encoding", get("issue") - get("hsm_sign")],
            [f"access token: {args.alg} signature in the HSM (our layer + python-pkcs11 + SoftHSM C_Sign)", get("hsm_sign")],
            ["json_response", get("json_response")],
            ["security event (events.emit)", get("events")],
            [
                "view glue (grant type, scope, current_state, remaining lines)",
                get("view")
                - sum(get(k) for k in ("read_form", "binding", "authenticate", "grant", "issue", "json_response", "events")),
            ],
        ]
        out.section(f"{target.describe} — diag_app (example app + stage timers), {args.alg}")
        out.line(
            f"{r.rate:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, errors {r.errors}, {n} requests in "
            f"the stage window; other load {foreign:.2f} cores"
        )
        out.line()
        out.table(
            ["stage", "µs CPU per request", "share"],
            [[name, f"{v:.0f}", f"{v / server_us:.0%}"] for name, v in rows]
            + [
                ["**server total** (all worker processes, /proc)", f"{server_us:.0f}", "100%"],
                ["redis-server (its own process, /proc)", f"{redis_us:.0f}", ""],
            ],
        )
        out.line()
        out.line(
            "Thread CPU time per stage (time.thread_time: waits for Redis, the GIL or a CPU are not counted); "
            "nested stages subtracted. Timer overhead ≈ 1 µs per wrapped call (12 per request) is in the "
            "enclosing stages."
        )
        return benchlib.finish(out, started)
    finally:
        if target is not None:
            target.stop()
        ours.close()


if __name__ == "__main__":
    sys.exit(main())
