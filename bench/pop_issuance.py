#!/usr/bin/env python3
"""Issue 13: tokens/s for bearer, DPoP, asymmetric PoP and symmetric PoP issuance side by side, and
proof verifications/s at the resource-server helper.

    .venv/bin/python bench/pop_issuance.py [--duration 5] [--rounds 3]

Every variant runs ``--rounds`` times, the variants interleaved (one round: every issuance variant,
then every verification variant), so that each round compares them under the same machine load;
the tables give medians, and ratios to bearer within each round.

Issuance (POST /oauth2/token, client credentials, private_key_jwt ES256, ES256 access token signed
in SoftHSM, gunicorn sync 2 workers, wrk 16 keep-alive connections; every request pre-built and used
once — its own client assertion, and its own DPoP proof or RFC 9421 signature):

* bearer              the baseline
* DPoP                an ES256 proof (RFC 9449 §4.3 checks, jti single use in Redis)
* DPoP + nonce        the same for a client registered with dpop_nonce_required (the nonce
                      fetched before each run)
* asymmetric PoP      req_cnf (ES256 public key) and the request signed with it (RFC 9421)
* symmetric PoP       a key from C_GenerateRandom, JWE to the resource server, sealed (AES-GCM in
                      the token) into Redis for the token's lifetime

Verification at the resource server (GET /api/items of the example app, local validation, same
server): bearer, DPoP (proof + ath + replay in Redis), asymmetric PoP (ECDSA P-256 signature +
nonce in Redis), symmetric PoP (cnf.jwe opened in the token with ECDH-ES+A256KW once per token
and process, then HMAC + nonce).
Then the bare checks in one process, without HTTP: DPoP proof, and each RFC 9421 algorithm.

Self-contained: throwaway SoftHSM2 token store, keys made in the token, private redis-server.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

KEYS = {"sig-es256": ("ES256", "sig"), "sig-ps256": ("PS256", "sig"), "rs-enc": ("ECDH-ES+A256KW", "enc")}
SECRETS = {"dpop-nonce": "hmac", "pop-wrap": "aes"}
RS = "https://rs.example.test"
TOKEN_URL = benchlib.ISSUER + "/oauth2/token"
API = RS + "/api/items"
CONNECTIONS = 16


def line(method: str, path: str, body: str, headers: dict[str, str]) -> str:
    return "\t".join([method, path, body, *(f"{k}: {v}" for k, v in headers.items())])


class Bench:
    def __init__(self) -> None:
        from as_helpers import ClientKey

        self.ws = benchlib.Workspace.create("pop")
        self.ws.generate_keys(KEYS)
        self._generate_secrets()
        self.redis = self.ws.start_redis()
        self.client_key = ClientKey.new("ES256")
        self.dpop_key = ClientKey.new("ES256")
        self.pop_key = ClientKey.new("ES256")
        rs_enc = benchlib.public_jwk_of("rs-enc")
        registry = {
            "clients": [
                {
                    "client_id": cid,
                    "token_endpoint_auth_method": "private_key_jwt",
                    "scope": "read write",
                    "jwks": {"keys": [self.client_key.public_jwk]},
                    "resources": [RS],
                    "pop_keys": ["symmetric", "asymmetric"],
                    "dpop_nonce_required": cid == "cn",
                }
                for cid in ("c", "cn")
            ],  # cn: DPoP nonces required for it (RFC 9449 §8)
            "resource_servers": [
                {
                    "resource": RS,
                    "client_id": "rs",
                    "token_endpoint_auth_method": "private_key_jwt",
                    "jwks": {"keys": [ClientKey.new("ES256").public_jwk, rs_enc]},
                    "scope": "read write",
                }
            ],
        }
        path = self.ws.base / "registry.json"
        path.write_text(json.dumps(registry))
        self.settings = benchlib.as_settings(
            self.redis.url,
            str(path),
            OAUTH_HSM_RATE_LIMITS="off",
            OAUTH_HSM_DPOP_NONCE_KEY="dpop-nonce",
            OAUTH_HSM_POP_KEY_WRAP_KEY="pop-wrap",
            OAUTH_HSM_RS_ISSUER=benchlib.ISSUER,
            OAUTH_HSM_RS_RESOURCE=RS,
            OAUTH_HSM_RS_DECRYPTION_KEY="rs-enc",
        )
        self.requests_file = self.ws.base / "requests.txt"

    def _generate_secrets(self) -> None:
        import subprocess

        code = (
            "import json, sys\nfrom flask_oauth_hsm.hsm import HSM, HSMConfig\ncfg = json.loads(sys.argv[1])\n"
            "hsm = HSM(HSMConfig(module=cfg['module'], token_label=cfg['token'], pin=cfg['pin']))\n"
            "[hsm.generate_secret_key(kind, label) for label, kind in cfg['keys'].items()]\nhsm.close()\n"
        )
        arg = json.dumps(
            {"module": benchlib.support.SOFTHSM_MODULE, "token": benchlib.TOKEN_LABEL, "pin": benchlib.PIN, "keys": SECRETS}
        )
        subprocess.run([sys.executable, "-c", code, arg], check=True, cwd=benchlib.ROOT, timeout=120)

    # --- token requests --------------------------------------------------------------------------

    def token_lines(self, kind: str, count: int, nonce: str | None = None) -> list[str]:
        from pop_proofs import dpop_proof, jkt, req_cnf, signed_headers

        extra = {"grant_type": "client_credentials", "resource": RS}
        if kind.startswith("pop"):
            extra["token_type"] = "pop"
        if kind == "pop-asymmetric":
            extra["req_cnf"] = req_cnf(self.pop_key)
        client_id = "cn" if kind == "dpop-nonce" else "c"
        forms = benchlib.presign_forms(self.client_key, client_id, benchlib.ISSUER, count, extra)
        out = []
        for form in forms:
            headers: dict[str, str] = {}
            if kind.startswith("dpop"):
                headers["DPoP"] = dpop_proof(self.dpop_key, nonce=nonce)
            elif kind == "pop-asymmetric":
                signed = signed_headers(
                    "POST",
                    TOKEN_URL,
                    {"Content-Type": "application/x-www-form-urlencoded"},
                    form.encode(),
                    key=self.pop_key.private,
                    alg="ES256",
                    keyid=jkt(self.pop_key),
                    components=("@method", "@target-uri"),
                )
                headers = {k: v for k, v in signed.items() if k != "Content-Type"}
            out.append(line("POST", "/oauth2/token", form, headers))
        return out

    def one_token(self, server, kind: str, nonce: str | None = None) -> dict:
        status, _, answer = self.send(server, self.token_lines(kind, 1, nonce)[0])
        if status != 200:
            raise RuntimeError(f"{kind}: token endpoint answered {status}: {answer[:300]!r}")
        return json.loads(answer)

    def send(self, server, request_line: str) -> tuple[int, dict, bytes]:
        method, path, body, *headers = request_line.split("\t")
        fields = dict(h.split(": ", 1) for h in headers)
        if body:
            fields["Content-Type"] = "application/x-www-form-urlencoded"
        return benchlib.http_request(server.base, method, path, body or None, fields)

    def nonce(self, server) -> str:
        """The current DPoP nonce: a request of cn without one gets use_dpop_nonce and the nonce."""
        status, headers, body = self.send(server, self.token_lines("dpop-nonce", 1)[0])
        value = {k.lower(): v for k, v in headers.items()}.get("dpop-nonce")
        if status != 400 or not value:
            raise RuntimeError(f"expected use_dpop_nonce, got {status} {body[:200]!r}")
        return value

    # --- resource requests -------------------------------------------------------------------------

    def resource_lines(self, kind: str, token: dict, count: int) -> list[str]:
        from pop_proofs import ath, dpop_proof, signed_headers, symmetric_secret

        access = token["access_token"]
        out = []
        for _ in range(count):
            if kind == "bearer":
                headers = {"Authorization": f"Bearer {access}"}
            elif kind == "dpop":
                headers = {"Authorization": f"DPoP {access}", "DPoP": dpop_proof(self.dpop_key, "GET", API, ath=ath(access))}
            elif kind == "pop-asymmetric":
                headers = signed_headers(
                    "GET",
                    API,
                    {"Authorization": f"PoP {access}"},
                    None,
                    key=self.pop_key.private,
                    alg="ES256",
                    keyid=self.pop_key.kid,
                )
            else:
                secret, kid = symmetric_secret(token["cnf"])
                headers = signed_headers("GET", API, {"Authorization": f"PoP {access}"}, None, key=secret, alg="hmac", keyid=kid)
            out.append(line("GET", "/api/items", "", headers))
        return out

    def close(self) -> None:
        self.ws.close()


ISSUANCE = [
    ("bearer", "bearer"),
    ("DPoP", "dpop"),
    ("DPoP + nonce", "dpop-nonce"),
    ("asymmetric PoP", "pop-asymmetric"),
    ("symmetric PoP", "pop-symmetric"),
]
VERIFICATION = [
    ("bearer", "bearer"),
    ("DPoP", "dpop"),
    ("asymmetric PoP (ecdsa-p256-sha256)", "pop-asymmetric"),
    ("symmetric PoP (hmac-sha256, cnf.jwe opened in the token)", "pop-symmetric"),
]


def measure(bench: Bench, server, lines_fn, estimate: float, duration: float, gate) -> benchlib.LoadResult:
    count = int(estimate * duration * 1.6) + 2000
    benchlib.write_bodies(bench.requests_file, lines_fn(count))
    gate.wait()
    return benchlib.run_wrk_measured(
        server,
        "/",
        bench.requests_file,
        duration=duration,
        connections=CONNECTIONS,
        redis_pid=bench.redis.proc.pid,
        whole_requests=True,
    )


def summary(name: str, runs: list[benchlib.LoadResult], bases: list[benchlib.LoadResult]) -> list[str]:
    """Medians over the rounds; ÷ bearer is the median of the per-round ratios (same load)."""
    import statistics

    med = statistics.median
    rates = [r.rate for r in runs]
    return [
        name,
        f"{med(rates):,.0f}",
        f"{min(rates):,.0f}–{max(rates):,.0f}",
        f"{med(r.rate / b.rate for r, b in zip(runs, bases, strict=False)):.0%}",
        f"{med(r.p50_ms for r in runs):.2f}",
        f"{med(r.p99_ms for r in runs):.2f}",
        str(sum(r.errors for r in runs)),
        f"{med(r.cpu_ms(r.server_cpu) for r in runs):.3f}",
        f"{med(r.cpu_ms(r.server_cpu) for r in runs) / med(b.cpu_ms(b.server_cpu) for b in bases):.2f}",
        f"{med(r.cpu_ms(r.redis_cpu) for r in runs):.3f}",
        f"{med(r.foreign for r in runs):.2f}",
    ]


def micro(bench: Bench, seconds: float = 2.0) -> list[list[str]]:
    """The checks alone, in this process: proofs per second on one core."""
    from as_helpers import ClientKey
    from flask_oauth_hsm.binding import dpop, httpsig
    from flask_oauth_hsm.binding.pop_keys import decrypt_key, encrypt_key, new_symmetric_key
    from flask_oauth_hsm.hsm import HSM, HSMConfig
    from flask_oauth_hsm.jose import jwk
    from pop_proofs import ath, dpop_proof, signed_headers

    rows = []

    def rate(name: str, fn, prepared: list) -> None:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds and done < len(prepared):
            fn(prepared[done])
            done += 1
        elapsed = time.perf_counter() - start
        rows.append([name, f"{done / elapsed:,.0f}", f"{elapsed / done * 1e6:.0f}"])

    token = "x" * 600
    proofs = [dpop_proof(bench.dpop_key, "GET", API, ath=ath(token)) for _ in range(20000)]
    rate(
        "DPoP proof (ES256), RFC 9449 §4.3 with ath",
        lambda p: dpop.verify_proof(p, method="GET", url=API, algorithms=("ES256",), max_age=60, leeway=30, access_token=token),
        proofs,
    )
    rules = httpsig.Rules(("@method", "@target-uri", "authorization"), 60, 30)
    for alg, key_alg in (
        ("ecdsa-p256-sha256", "ES256"),
        ("ed25519", "EdDSA"),
        ("rsa-pss-sha512", "PS256"),
        ("hmac-sha256", "hmac"),
    ):
        if key_alg == "hmac":
            secret, public, keyid = b"k" * 32, b"k" * 32, "k"
        else:
            ck = ClientKey.new(key_alg)
            secret, public, keyid = ck.private, jwk.load_jwk(ck.public_jwk).key, ck.kid
        messages = []
        for _ in range(3000 if key_alg == "PS256" else 15000):
            headers = signed_headers("GET", API, {"Authorization": f"PoP {token}"}, None, key=secret, alg=key_alg, keyid=keyid)
            messages.append(httpsig.Message("GET", API, httpsig.Lines(headers.items())))
        rate(
            f"RFC 9421 {alg} (package base + verify, our checks)",
            lambda m, public=public, alg=alg, keyid=keyid: httpsig.verify(m, b"", public, alg, {keyid}, rules),
            messages,
        )
    hsm = HSM(HSMConfig(module=benchlib.support.SOFTHSM_MODULE, token_label=benchlib.TOKEN_LABEL, pin=benchlib.PIN))
    try:
        rs_key = hsm.key("rs-enc")
        target = (jwk.load_jwk(rs_key.public_jwk()), rs_key.alg)
        sealed = [encrypt_key(new_symmetric_key(hsm), target) for _ in range(5000)]
        rate("cnf.jwe opened in SoftHSM (ECDH-ES+A256KW / A256GCM)", lambda t: decrypt_key(t, rs_key), sealed)
    finally:
        hsm.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every variant, interleaved (default 3)")
    args = ap.parse_args()
    out = benchlib.Report("pop_issuance")
    started = time.monotonic()
    out.line("# bench/pop_issuance.py — sender-constrained tokens: issuance and resource-server verification")
    benchlib.print_facts(out)
    bench = Bench()
    config = benchlib.WorkerConfig("sync-2", "sync")
    gate = benchlib.QuietGate(budget=20, per_wait=2)
    issued: dict[str, list[benchlib.LoadResult]] = {name: [] for name, _ in ISSUANCE}
    verified: dict[str, list[benchlib.LoadResult]] = {name: [] for name, _ in VERIFICATION}
    server = benchlib.start_gunicorn(bench.ws, "example_app:app", bench.settings, config, ready_path="/oauth2/jwks")
    try:
        benchlib.wait_for_epoch(bench.redis.url)
        estimate = 2500.0
        for _ in range(args.rounds):
            # Variants interleaved, so that each round's ratios compare runs under the same load.
            for name, kind in ISSUANCE:
                nonce = bench.nonce(server) if kind == "dpop-nonce" else None
                bench.one_token(server, kind, nonce)  # correct before the run
                r = measure(
                    bench,
                    server,
                    lambda n, kind=kind, nonce=nonce: bench.token_lines(kind, n, nonce),
                    estimate,
                    args.duration,
                    gate,
                )
                bench.one_token(server, kind, nonce)  # and after
                estimate = max(estimate, r.rate)
                issued[name].append(r)
            for name, kind in VERIFICATION:
                token = bench.one_token(server, kind)
                verified[name].append(
                    measure(
                        bench,
                        server,
                        lambda n, kind=kind, token=token: bench.resource_lines(kind, token, n),
                        estimate,
                        args.duration,
                        gate,
                    )
                )
    finally:
        server.stop()
    try:
        headers = [
            "",
            "req/s (median)",
            "min–max",
            "÷ bearer",
            "p50 ms",
            "p99 ms",
            "errors",
            "server CPU ms/req",
            "CPU ÷ bearer",
            "redis CPU ms/req",
            "other load",
        ]
        runs = f"{args.rounds} rounds × {args.duration:g} s, variants interleaved"
        out.section(f"Issuance: POST /oauth2/token, gunicorn {config.describe()}, {CONNECTIONS} connections, {runs}")
        out.table(headers, [summary(name, issued[name], issued["bearer"]) for name, _ in ISSUANCE])
        out.line()
        out.line(
            "Medians over the rounds; ÷ bearer = median of each round's ratio to that round's bearer run. "
            "DPoP + nonce: a client registered with dpop_nonce_required, the nonce fetched before each run. "
            "other load = CPU other programs used on this shared machine during the run, in cores (of 2)."
        )
        out.section(f"Verification at the resource server: GET /api/items (local validation), same server, {runs}")
        out.table(headers, [summary(name, verified[name], verified["bearer"]) for name, _ in VERIFICATION])
        out.line()
        out.line(
            "Symmetric PoP: the key opened from cnf.jwe in the token once per token and process, then cached until "
            "the token expires (rs/state.py); the cost of opening it is in the next table."
        )
        out.section("The checks alone, one process, no HTTP (per second on one core)")
        out.table(["check", "per second", "µs each"], micro(bench))
        out.line()
        out.line(benchlib.errors_line([r for runs_ in (*issued.values(), *verified.values()) for r in runs_]))
        return benchlib.finish(out, started)
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
