#!/usr/bin/env python3
"""Issue 13: tokens/s for bearer, DPoP, asymmetric PoP and symmetric PoP issuance side by side, and
proof verifications/s at the resource-server helper.

    .venv/bin/python bench/pop_issuance.py [--duration 8]

Issuance (POST /oauth2/token, client credentials, private_key_jwt ES256, ES256 access token signed
in SoftHSM, gunicorn sync 2 workers, wrk 16 keep-alive connections; every request pre-built and used
once — its own client assertion, and its own DPoP proof or RFC 9421 signature):

* bearer              the baseline
* DPoP                an ES256 proof (RFC 9449 §4.3 checks, jti single use in Redis)
* DPoP + nonce        the same with OAUTH_HSM_DPOP_NONCE=required (the nonce fetched once before)
* asymmetric PoP      req_cnf (ES256 public key) and the request signed with it (RFC 9421)
* symmetric PoP       a key from C_GenerateRandom, JWE to the resource server, sealed (AES-GCM in
                      the token) into Redis for the token's lifetime

Verification at the resource server (GET /api/items of the example app, local validation, same
server): bearer, DPoP (proof + ath + replay in Redis), asymmetric PoP (ECDSA P-256 signature +
nonce in Redis), symmetric PoP (cnf.jwe opened in the token with ECDH-ES+A256KW, HMAC + nonce).
Then the bare checks in one process, without HTTP: DPoP proof, and each RFC 9421 algorithm.

Self-contained: throwaway SoftHSM2 token store, keys made in the token, private redis-server.
"""

from __future__ import annotations

import argparse
import datetime
import json
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

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
            "clients": [{"client_id": "c", "token_endpoint_auth_method": "private_key_jwt", "scope": "read write",
                         "jwks": {"keys": [self.client_key.public_jwk]}, "resources": [RS],
                         "pop_keys": ["symmetric", "asymmetric"]}],
            "resource_servers": [{"resource": RS, "client_id": "rs", "token_endpoint_auth_method": "private_key_jwt",
                                  "jwks": {"keys": [ClientKey.new("ES256").public_jwk, rs_enc]}, "scope": "read write"}],
        }
        path = self.ws.base / "registry.json"
        path.write_text(json.dumps(registry))
        self.settings = benchlib.as_settings(
            self.redis.url, str(path), OAUTH_HSM_RATE_LIMITS="off", OAUTH_HSM_DPOP_NONCE_KEY="dpop-nonce",
            OAUTH_HSM_POP_KEY_WRAP_KEY="pop-wrap", OAUTH_HSM_RS_ISSUER=benchlib.ISSUER, OAUTH_HSM_RS_RESOURCE=RS,
            OAUTH_HSM_RS_DECRYPTION_KEY="rs-enc")
        self.requests_file = self.ws.base / "requests.txt"

    def _generate_secrets(self) -> None:
        import subprocess

        code = ("import json, sys\nfrom flask_oauth_hsm.hsm import HSM, HSMConfig\ncfg = json.loads(sys.argv[1])\n"
                "hsm = HSM(HSMConfig(module=cfg['module'], token_label=cfg['token'], pin=cfg['pin']))\n"
                "[hsm.generate_secret_key(kind, label) for label, kind in cfg['keys'].items()]\nhsm.close()\n")
        arg = json.dumps({"module": benchlib.support.SOFTHSM_MODULE, "token": benchlib.TOKEN_LABEL, "pin": benchlib.PIN,
                          "keys": SECRETS})
        subprocess.run([sys.executable, "-c", code, arg], check=True, cwd=benchlib.ROOT, timeout=120)

    # --- token requests --------------------------------------------------------------------------

    def token_lines(self, kind: str, count: int, nonce: str | None = None) -> list[str]:
        from pop_proofs import dpop_proof, jkt, req_cnf, signed_headers

        extra = {"grant_type": "client_credentials", "resource": RS}
        if kind.startswith("pop"):
            extra["token_type"] = "pop"
        if kind == "pop-asymmetric":
            extra["req_cnf"] = req_cnf(self.pop_key)
        forms = benchlib.presign_forms(self.client_key, "c", benchlib.ISSUER, count, extra)
        out = []
        for form in forms:
            headers: dict[str, str] = {}
            if kind.startswith("dpop"):
                headers["DPoP"] = dpop_proof(self.dpop_key, nonce=nonce)
            elif kind == "pop-asymmetric":
                signed = signed_headers("POST", TOKEN_URL, {"Content-Type": "application/x-www-form-urlencoded"}, form.encode(),
                                        key=self.pop_key.private, alg="ES256", keyid=jkt(self.pop_key),
                                        components=("@method", "@target-uri"))
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
        """The current DPoP nonce: a request without one gets use_dpop_nonce and the nonce."""
        status, headers, body = self.send(server, self.token_lines("dpop", 1)[0])
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
                headers = signed_headers("GET", API, {"Authorization": f"PoP {access}"}, None, key=self.pop_key.private,
                                         alg="ES256", keyid=self.pop_key.kid)
            else:
                secret, kid = symmetric_secret(token["cnf"])
                headers = signed_headers("GET", API, {"Authorization": f"PoP {access}"}, None, key=secret, alg="hmac", keyid=kid)
            out.append(line("GET", "/api/items", "", headers))
        return out

    def close(self) -> None:
        self.ws.close()


ISSUANCE = [("bearer", "bearer"), ("DPoP", "dpop"), ("DPoP + nonce", "dpop-nonce"), ("asymmetric PoP", "pop-asymmetric"),
            ("symmetric PoP", "pop-symmetric")]
VERIFICATION = [("bearer", "bearer"), ("DPoP", "dpop"), ("asymmetric PoP (ecdsa-p256-sha256)", "pop-asymmetric"),
                ("symmetric PoP (hmac-sha256, cnf.jwe opened in the token)", "pop-symmetric")]


def measure(bench: Bench, server, lines_fn, estimate: float, duration: float, gate) -> benchlib.LoadResult:
    count = int(estimate * duration * 1.6) + 2000
    benchlib.write_bodies(bench.requests_file, lines_fn(count))
    gate.wait()
    return benchlib.run_wrk_measured(server, "/", bench.requests_file, duration=duration, connections=CONNECTIONS,
                                     redis_pid=bench.redis.proc.pid, whole_requests=True)


def row(name: str, r: benchlib.LoadResult, base: benchlib.LoadResult | None) -> list[str]:
    return [name, f"{r.rate:,.0f}", f"{r.rate / base.rate:.0%}" if base else "100%", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
            f"{r.errors}" + (f" ({r.exhausted} exhausted)" if r.exhausted else ""), f"{r.cpu_ms(r.server_cpu):.3f}",
            f"{r.cpu_ms(r.redis_cpu):.3f}", f"{r.foreign:.2f}"]


def micro(bench: Bench, seconds: float = 2.0) -> list[list[str]]:
    """The checks alone, in this process: proofs per second on one core."""
    from flask_oauth_hsm.binding import dpop, httpsig
    from flask_oauth_hsm.binding.pop_keys import decrypt_key, encrypt_key, new_symmetric_key
    from flask_oauth_hsm.hsm import HSM, HSMConfig
    from flask_oauth_hsm.jose import jwk
    from as_helpers import ClientKey
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
    rate("DPoP proof (ES256), RFC 9449 §4.3 with ath", lambda p: dpop.verify_proof(
        p, method="GET", url=API, algorithms=("ES256",), max_age=60, leeway=30, access_token=token), proofs)
    rules = httpsig.Rules(("@method", "@target-uri", "authorization"), 60, 30)
    for alg, key_alg in (("ecdsa-p256-sha256", "ES256"), ("ed25519", "EdDSA"), ("rsa-pss-sha512", "PS256"), ("hmac-sha256", "hmac")):
        if key_alg == "hmac":
            secret, public, keyid = b"k" * 32, b"k" * 32, "k"
        else:
            ck = ClientKey.new(key_alg)
            secret, public, keyid = ck.private, jwk.load_jwk(ck.public_jwk).key, ck.kid
        messages = []
        for _ in range(3000 if key_alg == "PS256" else 15000):
            headers = signed_headers("GET", API, {"Authorization": f"PoP {token}"}, None, key=secret, alg=key_alg, keyid=keyid)
            messages.append(httpsig.Message("GET", API, httpsig.Lines(headers.items())))
        rate(f"RFC 9421 {alg} (package base + verify, our checks)",
             lambda m, public=public, alg=alg, keyid=keyid: httpsig.verify(m, b"", public, alg, {keyid}, rules), messages)
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
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per run (default 8)")
    args = ap.parse_args()
    out = benchlib.Report("pop_issuance")
    started = time.monotonic()
    out.line("# bench/pop_issuance.py — sender-constrained tokens: issuance and resource-server verification")
    benchlib.print_facts(out)
    bench = Bench()
    config = benchlib.WorkerConfig("sync-2", "sync")
    gate = benchlib.QuietGate(budget=15, per_wait=3)
    try:
        issue_rows, verify_rows, errors, first_bad = [], [], 0, []
        estimate = 2500.0
        for nonce_mode in ("off", "required"):
            settings = {**bench.settings, "OAUTH_HSM_DPOP_NONCE": nonce_mode}
            server = benchlib.start_gunicorn(bench.ws, "example_app:app", settings, config, ready_path="/oauth2/jwks")
            try:
                benchlib.wait_for_epoch(bench.redis.url)
                kinds = [k for k in ISSUANCE if (k[1] == "dpop-nonce") == (nonce_mode == "required")]
                nonce = bench.nonce(server) if nonce_mode == "required" else None
                base = None
                for name, kind in kinds:
                    bench.one_token(server, kind, nonce)  # correct before the run
                    r = measure(bench, server, lambda n, kind=kind: bench.token_lines(kind, n, nonce), estimate, args.duration, gate)
                    bench.one_token(server, kind, nonce)  # and after
                    base = base or r
                    estimate, errors = max(estimate, r.rate), errors + r.errors
                    first_bad += [(name, r.first_bad)] if r.first_bad else []
                    issue_rows.append(row(name, r, base if nonce_mode == "off" else None))
                if nonce_mode == "off":
                    vbase = None
                    for name, kind in VERIFICATION:
                        token = bench.one_token(server, kind)
                        r = measure(bench, server, lambda n, kind=kind, token=token: bench.resource_lines(kind, token, n),
                                    estimate, args.duration, gate)
                        vbase = vbase or r
                        errors += r.errors
                        first_bad += [(name, r.first_bad)] if r.first_bad else []
                        verify_rows.append(row(name, r, vbase))
            finally:
                server.stop()
        headers = ["", "req/s", "÷ bearer", "p50 ms", "p99 ms", "errors", "server CPU ms/req", "redis CPU ms/req", "other load"]
        out.section(f"Issuance: POST /oauth2/token, gunicorn {config.describe()}, {CONNECTIONS} connections, {args.duration:g} s per run")
        out.table(headers, issue_rows)
        out.line()
        out.line("÷ bearer: of the bearer run on the same server (DPoP + nonce ran on a second server, nonces required). "
                 "other load = CPU other programs used on this shared machine during the run, in cores (of 2).")
        out.section(f"Verification at the resource server: GET /api/items (local validation), same server, {CONNECTIONS} connections")
        out.table(headers, verify_rows)
        out.section("The checks alone, one process, no HTTP (per second on one core)")
        out.table(["check", "per second", "µs each"], micro(bench))
        out.line()
        out.line(f"errors over all runs: {errors}" + "".join(f"; {name}: first {bad}" for name, bad in first_bad))
        return benchlib.finish(out, started)
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
