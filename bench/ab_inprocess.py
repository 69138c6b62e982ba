#!/usr/bin/env python3
"""Issue 15: A/B two versions of the package on the token request, in process, alternating.

    git archive <base-commit> | tar -x -C /tmp/base          # the version to compare against
    .venv/bin/python bench/ab_inprocess.py /tmp/base .         # A = /tmp/base, B = this checkout

Two child processes, one per code root (``PYTHONPATH`` = that checkout), each build the example app
(softhsm/env.sh settings, as bench/peer_ab.py; same token store, same Redis) and pre-sign their
own unique assertions. The parent then alternates: A serves ``--calls`` WSGI calls of
``POST /oauth2/token`` (one unique assertion each, no HTTP server), then B, for ``--rounds``
rounds. Each slice reports CPU µs per call (``time.process_time``) and wall µs per call; the
summary gives medians and the median of the per-round ratio B/A. Both versions see the same
machine state, so a difference of a few percent is visible despite other load; a ratio
below 1 means B is cheaper.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import peer_ab  # noqa: E402

CHILD = r"""
import io, json, os, sys, time
sys.path[:0] = [os.environ["AB_ROOT"]]
import example_app, flask_oauth_hsm  # from AB_ROOT, before benchlib puts this checkout on sys.path
sys.path.append(os.environ["AB_BENCH"])
import benchlib, peer_ab, stage_costs
from as_helpers import ClientKey
from cryptography.hazmat.primitives import serialization
key_pem = os.environ["AB_KEY"].encode()
key = ClientKey("ES256", serialization.load_pem_private_key(key_pem, None), os.environ["AB_KID"])
assert os.path.dirname(flask_oauth_hsm.__file__).startswith(os.environ["AB_ROOT"]), flask_oauth_hsm.__file__
app = example_app.create_app()
issuer = os.environ["OAUTH_HSM_ISSUER"]
target = peer_ab.Target("x", None, 0, "/oauth2/token", "/oauth2/jwks", issuer, issuer + "/api", None, "")
n, rounds = int(sys.argv[1]), int(sys.argv[2])
benchlib.wait_for_epoch(os.environ["OAUTH_HSM_REDIS_URL"])  # assertions must be issued after the epoch began
envs = []
for b in peer_ab.bodies(target, key, n * (rounds + 1) + 10):
    e = stage_costs.environ_for("/oauth2/token", b)
    e["_body"] = b.encode()
    envs.append(e)
for e in envs[:n]:  # warm-up
    st, body = stage_costs.call_wsgi(app, e)
    assert st.startswith("200") and b'"access_token":"ey' in body, (st, body[:200])
i = n
print("ready", flush=True)
for line in sys.stdin:
    c0, t0 = time.process_time(), time.perf_counter()
    for e in envs[i:i + n]:
        st, body = stage_costs.call_wsgi(app, e)
        if not st.startswith("200"):
            raise SystemExit(f"non-200: {st} {body[:200]!r}")
    print(json.dumps({"cpu": (time.process_time() - c0) / n * 1e6, "wall": (time.perf_counter() - t0) / n * 1e6}), flush=True)
    i += n
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="code root of version A (the reference)")
    ap.add_argument("b", help="code root of version B")
    ap.add_argument("--alg", default="ES256", choices=["ES256", "PS256"])
    ap.add_argument("--calls", type=int, default=1500, help="WSGI calls per slice (default 1500)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--env", action="append", default=[], metavar="A|B:NAME=VALUE", help="a setting for one side")
    args = ap.parse_args()
    from cryptography.hazmat.primitives import serialization

    from as_helpers import ClientKey

    out = benchlib.Report("ab_inprocess")
    started = time.monotonic()
    roots = {"A": str(Path(args.a).resolve()), "B": str(Path(args.b).resolve())}
    out.line(
        f"# bench/ab_inprocess.py — A = {roots['A']}, B = {roots['B']}, {args.alg}, {args.rounds} rounds × {args.calls} calls"
    )
    key = ClientKey.new("ES256")
    pem = key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    ours = peer_ab.Ours(key, {})
    procs = {}
    try:
        issuer = "http://127.0.0.1:5000"
        for side, root in roots.items():
            extra = {}
            for e in args.env:
                s, _, kv = e.partition(":")
                if s == side:
                    k, _, v = kv.partition("=")
                    extra[k] = v
            env = {
                **os.environ,
                **ours.settings(issuer, issuer + "/api", args.alg),
                **extra,
                "AB_BENCH": str(benchlib.BENCH_DIR),
                "AB_ROOT": root,
                "AB_KEY": pem,
                "AB_KID": key.kid,
                "PYTHONPATH": root,
            }
            procs[side] = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(args.calls), str(args.rounds)],
                env=env,
                cwd=root,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        for side, p in procs.items():
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{side} did not start")
        res = {"A": [], "B": []}
        out.line()
        out.line("  round | side | CPU µs/call | wall µs/call")
        for r in range(args.rounds):
            for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                p = procs[side]
                p.stdin.write("go\n")
                p.stdin.flush()
                d = json.loads(p.stdout.readline())
                res[side].append(d)
                out.line(f"  {r + 1} | {side} | {d['cpu']:.0f} | {d['wall']:.0f}")
        cpu_ratio = statistics.median(b["cpu"] / a["cpu"] for a, b in zip(res["A"], res["B"], strict=True))
        wall_ratio = statistics.median(b["wall"] / a["wall"] for a, b in zip(res["A"], res["B"], strict=True))
        out.section("Summary (medians)")
        out.table(
            ["side", "code root", "CPU µs/call", "wall µs/call"],
            [
                [
                    s,
                    roots[s],
                    f"{statistics.median(d['cpu'] for d in res[s]):.0f}",
                    f"{statistics.median(d['wall'] for d in res[s]):.0f}",
                ]
                for s in ("A", "B")
            ],
        )
        out.line()
        out.line(f"B/A: CPU {cpu_ratio:.3f}, wall {wall_ratio:.3f} (median of per-round ratios)")
        out.line()
        return benchlib.finish(out, started)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
        ours.close()


if __name__ == "__main__":
    sys.exit(main())
