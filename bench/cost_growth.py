#!/usr/bin/env python3
"""Issue 15 §3: what a token costs as the work grows, in one run.

    .venv/bin/python bench/cost_growth.py                 # the table and docs/img/cost_growth.png (~4 min)
    .venv/bin/python bench/cost_growth.py --duration 5 --rounds 3

``example_app`` served as documented (granian, ``--blocking-threads 2``, no access log; the set-up of
bench/peer_ab.py: throwaway SoftHSM2 token with the dev keys, private Redis, ES256 access tokens,
rate limits off), client credentials with ``private_key_jwt``, one pre-signed assertion per request,
16 keep-alive wrk connections. One thing changes per row, against the baseline (2 workers, 1
registered client, 1 resource per token, no access-token encryption, local SoftHSM):

* workers: 1 and 2 (and 4: more processes than cores);
* registered clients: 1, 10, 1,000 (the requests come from one of them; the rest sit in the registry);
* resources per token: 1 and 3 (``resource`` three times, RFC 8707: one ``aud`` array);
* access-token encryption: the resource server registered with
  ``access_token_encrypted_response_alg`` ECDH-ES+A256KW, so each token is a JWS nested in a JWE
  to the resource server's key (RFC 9068 §4; the AS only encrypts: public-key work in software);
* the HSM behind ``p11-kit server`` (a "network HSM" on a Unix socket, tests/ha_support.py), with
  ``OAUTH_HSM_POOL_SIZE`` 4 (bench/ha_remote_tokens.py measured the pool sizes), without the
  example resource server's ECDH-ES decryption key (p11-kit's client does not forward ECDH).

Rounds alternate over the rows (``--rounds``, median reported), so a burst of load from other
programs does not land on one row only; each row's "ratio" is its median tokens/s ÷ the baseline's
in the same round. Writes bench/results/cost_growth.txt and the plot docs/img/cost_growth.png
(matplotlib, ``pip install matplotlib``; skipped with a note when it is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import ha_support  # noqa: E402  (tests/, on sys.path through benchlib)
import peer_ab  # noqa: E402

SERVER = peer_ab.ServerSpec.parse("granian:2")
PLOT = benchlib.ROOT / "docs" / "img" / "cost_growth.png"


@dataclass(frozen=True)
class Variant:
    name: str
    group: str
    workers: int = 2
    clients: int = 1
    resources: int = 1
    encrypted: bool = False
    remote: bool = False


VARIANTS = [
    Variant("baseline", "baseline"),
    Variant("1 worker", "workers", workers=1),
    Variant("4 workers", "workers", workers=4),
    Variant("10 clients", "clients", clients=10),
    Variant("1,000 clients", "clients", clients=1000),
    Variant("3 resources", "resources", resources=3),
    Variant("encrypted token", "encryption", encrypted=True),
    Variant("remote HSM (p11-kit)", "remote HSM", remote=True),
]


@dataclass
class Row:
    variant: Variant
    rates: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: int = 0
    foreign: list[float] = field(default_factory=list)


def registry(ours: peer_ab.Ours, issuer: str, v: Variant) -> str:
    """peer_ab's registry, grown: ``v.clients`` clients (each with its own key) and ``v.resources``
    resource servers the measured client may ask for."""
    from as_helpers import ClientKey

    resources = [f"{issuer}/api"] + [f"{issuer}/api{i}" for i in range(2, v.resources + 1)]
    rs_entries = []
    for n, resource in enumerate(resources):
        entry = {
            "resource": resource,
            "client_id": peer_ab.RS_CLIENT_ID if n == 0 else f"{peer_ab.RS_CLIENT_ID}-{n}",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": ours.rs_jwks,
            "scope": "read write",
        }
        if v.encrypted:
            entry["access_token_encrypted_response_alg"] = "ECDH-ES+A256KW"
        rs_entries.append(entry)
    clients = [
        {
            "client_id": peer_ab.CLIENT_ID,
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks": {"keys": [ours.client_key.public_jwk]},
            "grant_types": ["client_credentials"],
            "scope": "read write",
            "resources": resources,
        }
    ]
    filler_key = ClientKey.new("ES256")  # one key for the idle clients: registry size is what grows
    for i in range(1, v.clients):
        clients.append(
            {
                "client_id": f"idle-{i:04d}",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [{**filler_key.public_jwk, "kid": f"idle-{i:04d}"}]},
                "grant_types": ["client_credentials"],
                "scope": "read",
                "resources": resources[:1],
            }
        )
    path = ours.ws.base / f"registry-{v.name.replace(' ', '_').replace(',', '')}.json"
    path.write_text(json.dumps({"clients": clients, "resource_servers": rs_entries}))
    return str(path)


def bodies_for(target: peer_ab.Target, key, v: Variant, count: int) -> list[str]:
    extra = {"grant_type": "client_credentials", "scope": "read", "resource": target.resource}
    forms = benchlib.presign_forms(key, peer_ab.CLIENT_ID, target.issuer, count, extra)
    if v.resources > 1:
        from urllib.parse import quote

        more = "".join(f"&resource={quote(f'{target.resource}{i}', safe='')}" for i in range(2, v.resources + 1))
        forms = [f + more for f in forms]
    return forms


def start(ours: peer_ab.Ours, v: Variant, p11: ha_support.P11KitServer) -> peer_ab.Target:
    overrides: dict[str, str | None] = {"OAUTH_HSM_RATE_LIMITS": "off"}
    if v.remote:
        overrides |= {
            "OAUTH_HSM_PKCS11_MODULE": ha_support.P11KIT_CLIENT_MODULE,
            "P11_KIT_SERVER_ADDRESS": p11.address,
            "OAUTH_HSM_POOL_SIZE": "4",
            # p11-kit's client module does not forward CKM_ECDH1_DERIVE: the example's resource
            # server (its ECDH-ES decryption key) stays off here; the token endpoint does not use it.
            "OAUTH_HSM_RS_DECRYPTION_KEY": None,
        }
    port = benchlib.support.free_port()  # the issuer names the port, and the registry the issuer
    overrides["OAUTH_HSM_REGISTRY"] = registry(ours, f"http://127.0.0.1:{port}", v)
    return ours.start(
        SERVER, "ES256", workers=v.workers, access_log=False, preload=False, env_overrides=overrides, name=v.name, port=port
    )


def measure(
    target: peer_ab.Target, ours: peer_ab.Ours, v: Variant, duration: float, gate: benchlib.QuietGate
) -> benchlib.LoadResult:
    bodies_file = ours.ws.base / "bodies.txt"
    guess = max([2500.0, *target.rates])
    benchlib.write_bodies(bodies_file, bodies_for(target, ours.client_key, v, int(guess * duration * 1.8) + 1000))
    _check(target, ours, v)
    gate.wait()
    system = benchlib.SystemMeter()
    system.start()
    result = benchlib.run_wrk(
        target,
        target.token_path,
        bodies_file,
        duration=duration,
        connections=peer_ab.CONNECTIONS,
        redis_pid=ours.redis.proc.pid if ours.redis.proc else None,
        expect=peer_ab.EXPECT,
    )
    window, busy = system.stop()
    result.foreign = max(0.0, busy - result.server_cpu - result.wrk_cpu - result.redis_cpu) / window
    target.rates.append(result.rate)
    _check(target, ours, v)
    return result


def _check(target: peer_ab.Target, ours: peer_ab.Ours, v: Variant) -> None:
    """One request answered with a token of the expected shape (JWE when encrypted, else JWS)."""
    status, _, raw = benchlib.http_request(
        target.base, "POST", target.token_path, bodies_for(target, ours.client_key, v, 1)[0], peer_ab.FORM
    )
    if status != 200:
        raise RuntimeError(f"{v.name}: token request answered {status}: {raw[:300]!r}")
    token = json.loads(raw)["access_token"]
    if token.count(".") != (4 if v.encrypted else 2):
        raise RuntimeError(f"{v.name}: unexpected token shape")


def plot(rows: list[Row], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plot written"
    names = [r.variant.name for r in rows]
    rates = [statistics.median(r.rates) for r in rows]
    cpu = [statistics.median(r.cpu) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.barh(names[::-1], rates[::-1], color="#4c72b0")
    left.set_xlabel("tokens/s (median of rounds)")
    left.set_title("Throughput")
    right.barh(names[::-1], cpu[::-1], color="#dd8452")
    right.set_xlabel("server CPU ms per token")
    right.set_title("Cost per token")
    fig.suptitle("POST /oauth2/token, ES256, granian 2 workers unless noted (bench/cost_growth.py)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return f"plot written to {path.relative_to(benchlib.ROOT)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all rows (default 3)")
    ap.add_argument("--quiet-budget", type=float, default=60.0, help="seconds, in total, to wait for quiet (default 60)")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    peer_ab.ensure_wrk()
    out = benchlib.Report("cost_growth")
    started = time.monotonic()
    out.line("# bench/cost_growth.py — POST /oauth2/token as the work grows (ES256, client credentials, private_key_jwt)")
    benchlib.print_facts(out)
    from as_helpers import ClientKey

    ours = peer_ab.Ours(ClientKey.new("ES256"), {})
    p11 = ha_support.P11KitServer(ours.ws.base / "p11kit", os.environ["SOFTHSM2_CONF"], benchlib.TOKEN_LABEL)
    p11.start()
    gate = benchlib.QuietGate(budget=args.quiet_budget, per_wait=10.0)
    rows = [Row(v) for v in VARIANTS]
    try:
        for round_no in range(1, args.rounds + 1):
            base_rate = None
            for row in rows:  # the baseline first: each row's ratio is against this round's baseline
                target = start(ours, row.variant, p11)
                try:
                    if round_no == 1:
                        measure(target, ours, row.variant, 2.0, gate)  # warm-up, not counted
                    r = measure(target, ours, row.variant, args.duration, gate)
                finally:
                    target.stop()
                base_rate = r.rate if base_rate is None else base_rate
                row.rates.append(r.rate)
                row.ratios.append(r.rate / base_rate if base_rate else 0.0)
                row.cpu.append(r.cpu_ms(r.server_cpu))
                row.p50.append(r.p50_ms)
                row.p99.append(r.p99_ms)
                row.errors += r.errors
                row.foreign.append(r.foreign)
                print(
                    f"round {round_no} | {row.variant.name} | {r.rate:,.0f}/s | {r.cpu_ms(r.server_cpu):.3f} ms CPU | "
                    f"errors {r.errors} | other load {r.foreign:.2f}",
                    flush=True,
                )
        out.section(f"Medians over {args.rounds} rounds of {args.duration:g} s (16 connections)")
        out.table(
            [
                "row",
                "what changes",
                "tokens/s",
                "ratio to baseline",
                "p50 ms",
                "p99 ms",
                "server CPU ms/token",
                "errors",
                "other load (cores)",
            ],
            [
                [
                    r.variant.name,
                    r.variant.group,
                    f"{statistics.median(r.rates):,.0f}",
                    f"{statistics.median(r.ratios):.2f}",
                    f"{statistics.median(r.p50):.2f}",
                    f"{statistics.median(r.p99):.2f}",
                    f"{statistics.median(r.cpu):.3f}",
                    str(r.errors),
                    f"{max(r.foreign):.2f}",
                ]
                for r in rows
            ],
        )
        out.line()
        out.line(
            "ratio to baseline = median over rounds of (row ÷ baseline) tokens/s in the same round. "
            "other load = the most CPU other programs used during any of the row's runs."
        )
        if not args.no_plot:
            out.line(plot(rows, PLOT))
        errors = sum(r.errors for r in rows)
        out.line(f"errors over all runs: {errors} (must be 0)")
        return benchlib.finish(out, started) if errors == 0 else (benchlib.finish(out, started) or 1)
    finally:
        p11.stop()
        ours.close()


if __name__ == "__main__":
    sys.exit(main())
