#!/usr/bin/env python3
"""Issue 2: raw PKCS#11 C_Sign rate vs complete compact JWS through our layer, ES256 and PS256.

    .venv/bin/python bench/hsm_sign.py [--duration 5]

For each algorithm, in one process and in one process per core (2 spawned processes started
together at a barrier, rates summed), for ``--duration`` seconds each:

* raw-null     python-pkcs11 ``key.sign(...)`` on one logged-in session, module initialised the
               way python-pkcs11 does it: ``C_Initialize(NULL)`` (no locking).
* raw-locking  the same loop after ``C_Finalize`` + ``C_Initialize(CKF_OS_LOCKING_OK)``, which is
               how our HSM class initialises the module (thread safety, docs/hsm-and-keys.md).
* ours         ``flask_oauth_hsm.jose.jws.sign(payload, hsm.key(label), {"typ": "at+jwt"})``
               with an RFC 9068 claims payload: header JSON, base64url, SHA-256 (ES256), session
               pool, C_Sign, r||s fixing.

Mechanisms are the ones our layer uses: CKM_ECDSA over a SHA-256 digest (ES256), and
CKM_SHA256_RSA_PKCS_PSS with (SHA256, MGF1-SHA256, salt 32) (PS256, RSA 2048).
Ratios compare "ours" with raw under the same initialisation (OS locking) and with plain
python-pkcs11. Targets (issue 2): ours >= 85 % of raw for PS256, >= 60 % for ES256.

Self-contained: a throwaway SoftHSM2 token store in a temp directory (SOFTHSM2_CONF set before
the module loads), keys generated in the token with HSM.generate_key, removed at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

KEYS = {"sig-es256": ("ES256", "sig"), "sig-ps256": ("PS256", "sig")}
TARGETS = {"ES256": 0.60, "PS256": 0.85}
MODES = ("raw-null", "raw-locking", "ours", "interleaved")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    ap.add_argument("--processes", type=int, default=2, help="concurrent processes for the per-core run (default 2)")
    args = ap.parse_args()
    out = benchlib.Report("hsm_sign")
    started = time.monotonic()
    ws = benchlib.Workspace.create("sign")
    try:
        out.line("# bench/hsm_sign.py — raw C_Sign vs compact JWS through flask_oauth_hsm")
        benchlib.print_facts(out)
        ws.generate_keys(KEYS)
        rates: dict[tuple[str, int, str], float] = {}
        foreign: dict[tuple[str, int], float] = {}
        inter: dict[tuple[str, int], benchlib.SignRate] = {}
        gate = benchlib.QuietGate(budget=30)
        for alg, label in (("ES256", "sig-es256"), ("PS256", "sig-ps256")):
            for procs in (1, args.processes):
                for mode in MODES:
                    gate.wait()
                    r = benchlib.measure_signing(mode, alg, label, procs, args.duration)
                    rates[(alg, procs, mode)] = r.rate
                    if mode == "interleaved":
                        inter[(alg, procs)] = r
                    foreign[(alg, procs)] = max(foreign.get((alg, procs), 0.0), r.foreign_cores)
        out.section(f"Signatures per second ({args.duration:g} s per cell; {args.processes}-process rows are summed)")
        rows = []
        verdicts = []
        for alg in ("ES256", "PS256"):
            for procs in (1, args.processes):
                raw_null = rates[(alg, procs, "raw-null")]
                raw_lock = rates[(alg, procs, "raw-locking")]
                ours = rates[(alg, procs, "ours")]
                ratio = ours / raw_lock
                i = inter[(alg, procs)]
                inter_ratio = i.rate / i.raw_rate
                ok = ratio >= TARGETS[alg] and inter_ratio >= TARGETS[alg]
                verdicts.append((alg, procs, ratio, inter_ratio, ok))
                rows.append(
                    [
                        alg,
                        procs,
                        f"{raw_null:,.0f}",
                        f"{raw_lock:,.0f}",
                        f"{ours:,.0f}",
                        f"{ratio:.1%}",
                        f"{ours / raw_null:.1%}",
                        f"{inter_ratio:.1%}",
                        f"≥ {TARGETS[alg]:.0%}: {'met' if ok else 'MISSED'}",
                        f"{foreign[(alg, procs)]:.2f}",
                    ]
                )
        out.table(
            [
                "alg",
                "procs",
                "raw/s NULL init",
                "raw/s OS_LOCKING",
                "ours JWS/s",
                "ours/raw same init",
                "ours/raw NULL init",
                "ours/raw interleaved",
                "target",
                "other load",
            ],
            rows,
        )
        out.line()
        out.line(
            "raw: python-pkcs11 key.sign() on one session of a process; ours: jws.sign() through HSM "
            "(which always initialises with CKF_OS_LOCKING_OK). The target column uses the same-init ratio."
        )
        out.line(
            "interleaved: raw and ours alternate in 0.1 s slices inside the same processes (our HSM class's "
            "OS_LOCKING initialisation, one extra raw python-pkcs11 session), so both loops see the same load; "
            "the target needs both ratios to pass."
        )
        out.line(
            "other load: the largest average CPU (in cores) used by programs other than the measuring "
            "processes during the row's four windows (/proc/stat); the machine is shared, and a value "
            "well above 0 means that row is disturbed."
        )
        out.line(
            "Per-signature cost (1 process): "
            + "; ".join(
                f"{alg} raw {1e6 / rates[(alg, 1, 'raw-locking')]:.0f} µs, ours {1e6 / rates[(alg, 1, 'ours')]:.0f} µs "
                f"({1e6 / rates[(alg, 1, 'ours')] - 1e6 / rates[(alg, 1, 'raw-locking')]:+.0f} µs)"
                for alg in ("ES256", "PS256")
            )
        )
        out.line(
            f"Scaling 1 → {args.processes} processes: "
            + "; ".join(
                f"{alg} raw ×{rates[(alg, args.processes, 'raw-locking')] / rates[(alg, 1, 'raw-locking')]:.2f}, "
                f"ours ×{rates[(alg, args.processes, 'ours')] / rates[(alg, 1, 'ours')]:.2f}"
                for alg in ("ES256", "PS256")
            )
        )
        out.section("Targets")
        for alg, procs, ratio, inter_ratio, ok in verdicts:
            out.line(
                f"- {alg}, {procs} process{'es' if procs > 1 else ''}: ours = {ratio:.1%} of raw in separate "
                f"processes, {inter_ratio:.1%} interleaved (target ≥ {TARGETS[alg]:.0%}) — {'MET' if ok else 'MISSED'}"
            )
        out.line()
        return benchlib.finish(out, started)
    finally:
        ws.close()


if __name__ == "__main__":
    sys.exit(main())
