#!/usr/bin/env python3
"""Token endpoint tokens/s with the signing key behind p11-kit (a "network HSM") next to local SoftHSM.

Same set-up as bench/token_endpoint.py (its Bench class: throwaway token, Redis, registry, wrk with
one pre-signed assertion per request, 16 keep-alive connections), ES256 access tokens, rate limits
off. gunicorn gthread 2 workers x 8 threads and sync 2 workers, example_app as it is; the remote
runs set OAUTH_HSM_PKCS11_MODULE = p11-kit-client.so and P11_KIT_SERVER_ADDRESS. Rows:

* local, gthread, OAUTH_HSM_OPERATION_TIMEOUT 2 (the default) and 0 (no deadline): what the
  deadline's thread hand-off costs;
* local, sync;
* remote, gthread, each ``--pool`` size (OAUTH_HSM_POOL_SIZE): what pool the remote case needs;
* remote, sync, pool 1.

    .venv/bin/python bench/ha_remote_tokens.py [--duration 10] [--pool 2 4 8]

Writes bench/results/ha_remote_tokens.txt. Numbers from a shared machine are noisy: the table
says how much CPU other programs used during each run ("other load").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import ha_support  # noqa: E402  (tests/, on sys.path through benchlib)
import token_endpoint  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--pool", type=int, nargs="*", default=[2, 4, 8])
    args = parser.parse_args()
    started = time.monotonic()
    out = benchlib.Report("ha_remote_tokens")
    out.line("# bench/ha_remote_tokens.py — POST /oauth2/token, ES256, local SoftHSM vs p11-kit remote")
    benchlib.print_facts(out)
    bench = token_endpoint.Bench(out)
    server_p11 = ha_support.P11KitServer(bench.ws.base / "p11kit", os.environ["SOFTHSM2_CONF"], benchlib.TOKEN_LABEL)
    server_p11.start()
    os.environ["P11_KIT_SERVER_ADDRESS"] = server_p11.address  # gunicorn inherits it
    rows = []
    gate = benchlib.QuietGate(budget=120.0)  # wait (bounded) for other programs to go quiet before each run
    try:
        gthread = benchlib.WorkerConfig("gthread-2x8", "gthread", threads=8)
        sync = benchlib.WorkerConfig("sync-2", "sync")
        runs = [("local", gthread, 16, "2.0"), ("local", gthread, 16, "0"), ("local", sync, 16, "2.0")]
        runs += [("remote", gthread, pool, "2.0") for pool in args.pool] + [("remote", sync, 1, "2.0")]
        for where, config, pool, deadline in runs:
            settings = {
                **bench.settings("ES256"),
                "OAUTH_HSM_RATE_LIMITS": "off",
                "OAUTH_HSM_POOL_SIZE": str(pool),
                "OAUTH_HSM_OPERATION_TIMEOUT": deadline,
            }
            if where == "remote":
                settings["OAUTH_HSM_PKCS11_MODULE"] = ha_support.P11KIT_CLIENT_MODULE
            server = benchlib.start_gunicorn(bench.ws, "example_app:app", settings, config, ready_path="/oauth2/jwks")
            try:
                benchlib.wait_for_epoch(bench.redis.url)
                bench.check_token(server, "ES256")
                gate.wait()
                r = bench.load(server, int(3000 * args.duration * 1.4) + 2000, args.duration)
                bench.check_token(server, "ES256")
            finally:
                server.stop()
            rows.append(
                [
                    where,
                    config.name,
                    str(pool),
                    deadline,
                    f"{r.rate:,.0f}",
                    f"{r.p50_ms:.2f}",
                    f"{r.p99_ms:.2f}",
                    str(r.errors),
                    f"{r.cpu_ms(r.server_cpu):.3f}",
                    f"{r.foreign:.2f}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
        out.section(f"ES256 access tokens, 16 connections, {args.duration:g} s per run")
        out.table(
            [
                "HSM",
                "gunicorn",
                "OAUTH_HSM_POOL_SIZE",
                "OAUTH_HSM_OPERATION_TIMEOUT",
                "tokens/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "server CPU ms/req",
                "other load (cores)",
            ],
            rows,
        )
        out.line()
        out.line(
            "remote = p11-kit server (SoftHSM2 behind a Unix socket, one p11-kit-remote process per "
            "client connection, on the same 2 cores); its CPU is not in 'server CPU'."
        )
        return benchlib.finish(out, started)
    finally:
        server_p11.stop()
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
