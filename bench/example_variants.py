#!/usr/bin/env python3
"""Issue 15 diagnosis: which difference between bench/token_endpoint.py and the example app as
documented costs throughput. Variants of our server, measured in alternating rounds (no peer).

    .venv/bin/python bench/example_variants.py                       # the default set of variants
    .venv/bin/python bench/example_variants.py --variants bench,documented --runs 5
    .venv/bin/python bench/example_variants.py --app noop            # do-nothing Flask view instead

Every variant serves ``example_app:app`` (or, with ``--app noop``, bench/noop_app.py's do-nothing
Flask view on the same path) with 2 workers, from the same token store, Redis and registry as
bench/peer_ab.py (softhsm/env.sh settings; see peer_ab.py's docstring). Each round runs every
variant once for ``--duration`` s with wrk (16 keep-alive connections, unique pre-signed
assertions), in an order that rotates between rounds. Printed: the median req/s, p50, p99, server
CPU ms per request, and the ratio to the first variant (median of the per-round ratios).

Variants (name: what changes; "example settings" = softhsm/env.sh: encryption key and the
example's resource server mounted; "bench settings" = bench/token_endpoint.py's: neither):
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import peer_ab  # noqa: E402

BENCH_ONLY = {  # bench/token_endpoint.py sets none of these
    "OAUTH_HSM_ENCRYPTION_KEYS": None,
    "OAUTH_HSM_RS_ISSUER": None,
    "OAUTH_HSM_RS_RESOURCE": None,
    "OAUTH_HSM_RS_MODE": None,
    "OAUTH_HSM_RS_CLIENT_ID": None,
    "OAUTH_HSM_RS_SIGNING_KEY": None,
    "OAUTH_HSM_RS_DECRYPTION_KEY": None,
}


@dataclass(frozen=True)
class Variant:
    name: str
    server: str
    access_log: bool
    preload: bool
    env: tuple = ()  # (name, value or None) pairs
    what: str = ""


VARIANTS = {
    v.name: v
    for v in [
        Variant(
            "bench",
            "sync",
            False,
            True,
            tuple(BENCH_ONLY.items()),
            "bench/token_endpoint.py: sync 2, --preload, no access log, bench settings",
        ),
        Variant(
            "bench-gthread",
            "gthread:8",
            False,
            True,
            tuple(BENCH_ONLY.items()),
            "gthread 2x8, --preload, no access log, bench settings",
        ),
        Variant("example-sync-nolog", "sync", False, False, (), "sync 2, no --preload, no access log, example settings"),
        Variant("example-sync", "sync", True, False, (), "sync 2, no --preload, --access-logfile -, example settings"),
        Variant("documented-nolog", "gthread:8", False, False, (), "the documented command without --access-logfile -"),
        Variant(
            "documented",
            "gthread:8",
            True,
            False,
            (),
            "the documented command: gthread 2x8, --access-logfile -, example settings",
        ),
        Variant("granian", "granian:1", False, False, (), "granian wsgi, 2 workers, 1 blocking thread, example settings"),
        Variant("gevent", "gevent", False, False, (), "gunicorn gevent 2, no access log, example settings"),
        Variant("granian-2t", "granian:2", False, False, (), "granian wsgi, 2 workers, 2 blocking threads, example settings"),
        Variant("bjoern", "bjoern", False, False, (), "bjoern, 2 forked workers (bench/bjoern_serve.py), example settings"),
        Variant("gthread-2x2", "gthread:2", False, False, (), "gunicorn gthread 2x2, no access log, example settings"),
    ]
}
__doc__ += "\n".join(f"  {v.name}: {v.what}" for v in VARIANTS.values()) + "\n"
DEFAULT = "bench,example-sync-nolog,example-sync,documented-nolog,documented"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--variants",
        default=DEFAULT,
        help=f"comma-separated, first is the reference (default {DEFAULT}); NAME@BASE copies variant BASE",
    )
    ap.add_argument("--app", choices=["example", "noop", "diag"], default="example")
    ap.add_argument("--alg", default="ES256", choices=["ES256", "PS256"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument(
        "--env", action="append", default=[], metavar="VARIANT:NAME=VALUE", help="an extra setting for one variant (repeatable)"
    )
    args = ap.parse_args()
    chosen = []
    for n in args.variants.split(","):
        name, _, base = n.partition("@")  # NAME@BASE: a copy of variant BASE (give it settings with --env)
        v = VARIANTS[base or name]
        chosen.append(Variant(name, v.server, v.access_log, v.preload, v.env, f"{v.what} (as {v.name})") if base else v)
    VARIANTS.update({v.name: v for v in chosen})
    extra: dict[str, dict] = {}
    for e in args.env:
        vname, _, setting = e.partition(":")
        k, _, v = setting.partition("=")
        extra.setdefault(vname, {})[k] = v

    peer_ab.ensure_wrk()
    out = benchlib.Report("example_variants")
    started = time.monotonic()
    out.line(f"# bench/example_variants.py — {args.app} app, {args.alg}, variants in alternating rounds")
    benchlib.print_facts(out)
    from as_helpers import ClientKey

    key = ClientKey.new("ES256")
    ours = peer_ab.Ours(key, {})
    app = {"example": "example_app:app", "noop": "noop_app:app", "diag": "diag_app:app"}[args.app]
    targets = []
    try:
        for v in chosen:
            env = {**dict(v.env), **extra.get(v.name, {})}
            targets.append(
                ours.start(
                    peer_ab.ServerSpec.parse(v.server),
                    args.alg,
                    workers=2,
                    access_log=v.access_log,
                    preload=v.preload,
                    env_overrides=env,
                    name=v.name,
                    app=app,
                )
            )
        if args.app != "noop":
            for t in targets:
                peer_ab.check_token(t, key, args.alg)
        bodies_file = ours.ws.base / "bodies.txt"
        gate = benchlib.QuietGate(budget=20, per_wait=3)
        runs: dict[str, list[benchlib.LoadResult]] = {t.name: [] for t in targets}
        order = list(targets)
        out.line()
        out.line("  round | variant | req/s | p50 ms | p99 ms | errors | server CPU ms/req | conns | other load")
        for i in range(args.runs + 1):
            for t in order:
                if args.app != "noop":
                    run = peer_ab.measure(
                        t, key, args.alg, args.warmup if i == 0 else args.duration, bodies_file, ours.redis.proc.pid, i, gate
                    )
                    r = run.result
                else:
                    benchlib.write_bodies(bodies_file, ["x=1"] * 1000)
                    gate.wait()
                    r = benchlib.run_wrk(
                        t,
                        "/oauth2/token",
                        bodies_file,
                        duration=args.warmup if i == 0 else args.duration,
                        cycle=True,
                        expect=peer_ab.EXPECT[:15],
                    )
                if i:
                    runs[t.name].append(r)
                    out.line(
                        f"  {i} | {t.name} | {r.rate:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | "
                        f"{r.cpu_ms(r.server_cpu):.3f} | {r.conns} | {r.foreign:.2f}"
                    )
            order = order[1:] + order[:1]
        ref = runs[targets[0].name]
        rows = []
        for t in targets:
            rs = runs[t.name]
            ratio = statistics.median(a.rate / b.rate for a, b in zip(rs, ref, strict=False))
            cpu_ratio = statistics.median(a.cpu_ms(a.server_cpu) / b.cpu_ms(b.server_cpu) for a, b in zip(rs, ref, strict=False))
            rows.append(
                [
                    t.name,
                    f"{statistics.median(r.rate for r in rs):,.0f}",
                    f"{statistics.median(r.p50_ms for r in rs):.2f}",
                    f"{statistics.median(r.p99_ms for r in rs):.2f}",
                    str(sum(r.errors for r in rs)),
                    f"{statistics.median(r.cpu_ms(r.server_cpu) for r in rs):.3f}",
                    f"{ratio:.2f}",
                    f"{cpu_ratio:.2f}",
                ]
            )
        out.section(f"Medians over {args.runs} rounds ({args.duration:g} s each); ratios to {targets[0].name}, per round")
        out.table(["variant", "req/s", "p50 ms", "p99 ms", "errors", "server CPU ms/req", "req/s ratio", "CPU/req ratio"], rows)
        out.line()
        for t in targets:
            out.line(f"- {t.name}: {VARIANTS[t.name].what} — `{t.describe}`" + (f" + {extra[t.name]}" if t.name in extra else ""))
        out.line()
        return benchlib.finish(out, started)
    finally:
        for t in targets:
            t.stop()
        ours.close()


if __name__ == "__main__":
    sys.exit(main())
