#!/usr/bin/env python3
"""Issue 4: requests/s of POST /oauth2/introspect (RFC 7662 / RFC 9701) under gunicorn.

    .venv/bin/python bench/introspection.py [--duration 8]

Three answers, each measured with 16 keep-alive wrk connections for ``--duration`` seconds, on
every gunicorn worker model (sync 2, gthread 2x8, gevent 2 if installed):

* JSON              rs-1 asks without an Accept header: ``application/json``
* signed JWT        rs-jwt asks with ``Accept: application/token-introspection+jwt``: a JWT signed
                    in the HSM (the AS's ES256 signing key, its registered default)
* signed+encrypted  rs-enc, registered with ``introspection_encrypted_response_alg``
                    ECDH-ES+A256KW / A256GCM: the signed JWT nested in a JWE to its software key

Each resource server authenticates with private_key_jwt: every request carries its own assertion
(unique jti, exp 240 s ahead), signed before the timed phase. The token introspected is a real
access token issued by the same server for that resource server (so the answer is active: our
ES256 signature verified, revocation and epoch read from Redis). One request of each kind is
checked before and after every run (active, signature, decryption with the RS's key); any
non-200 answer under load counts as an error.

Self-contained: throwaway SoftHSM2 token store, keys generated in the token, private
redis-server, registry file written here; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

KEYS = {"sig-es256": ("ES256", "sig"), "sig-ps256": ("PS256", "sig")}
RS1, RS_JWT, RS_ENC = "https://rs1.example.test", "https://rs-jwt.example.test", "https://rs-enc.example.test"
JWT_TYPE = "application/token-introspection+jwt"
CONNECTIONS = 16
VARIANTS = [  # (name, resource server id, resource, Accept header)
    ("JSON", "rs-1", RS1, None),
    ("signed JWT (ES256)", "rs-jwt", RS_JWT, JWT_TYPE),
    ("signed+encrypted JWT (ES256 + ECDH-ES+A256KW/A256GCM)", "rs-enc", RS_ENC, JWT_TYPE),
]


class Bench:
    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric import ec

        from as_helpers import ClientKey, ec_enc_jwk

        self.ws = benchlib.Workspace.create("introspect")
        self.ws.generate_keys(KEYS)
        self.redis = self.ws.start_redis()
        self.client_key = ClientKey.new("ES256")
        self.rs_keys = {rs: ClientKey.new("ES256") for rs in ("rs-1", "rs-jwt", "rs-enc")}
        self.rs_enc_private = ec.generate_private_key(ec.SECP256R1())

        def rs(client_id, resource, **extra):
            keys = [self.rs_keys[client_id].public_jwk]
            if "introspection_encrypted_response_alg" in extra:
                keys.append(ec_enc_jwk(self.rs_enc_private, "rs-enc-enc"))
            return {
                "resource": resource,
                "client_id": client_id,
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": keys},
                "scope": "read write",
                **extra,
            }

        registry = {  # shaped like tests/conftest.py build_registry
            "clients": [
                {
                    "client_id": "c-es256",
                    "token_endpoint_auth_method": "private_key_jwt",
                    "jwks": {"keys": [self.client_key.public_jwk]},
                    "scope": "read write",
                    "resources": [RS1, RS_JWT, RS_ENC],
                }
            ],
            "resource_servers": [
                rs("rs-1", RS1),
                rs("rs-jwt", RS_JWT),
                rs(
                    "rs-enc",
                    RS_ENC,
                    introspection_encrypted_response_alg="ECDH-ES+A256KW",
                    introspection_encrypted_response_enc="A256GCM",
                ),
            ],
        }
        path = self.ws.base / "registry.json"
        path.write_text(json.dumps(registry))
        self.settings = benchlib.as_settings(self.redis.url, str(path))
        self.bodies = self.ws.base / "bodies.txt"

    def access_token(self, server, resource: str) -> str:
        form = benchlib.presign_forms(
            self.client_key,
            "c-es256",
            benchlib.ISSUER,
            1,
            {"grant_type": "client_credentials", "resource": resource, "scope": "read"},
        )[0]
        status, _, body = benchlib.http_request(
            server.base, "POST", "/oauth2/token", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        if status != 200:
            raise RuntimeError(f"token endpoint answered {status}: {body[:300]!r}")
        return json.loads(body)["access_token"]

    def forms(self, rs_id: str, token: str, count: int) -> list[str]:
        return benchlib.presign_forms(self.rs_keys[rs_id], rs_id, benchlib.ISSUER, count, {"token": token})

    def check(self, server, rs_id: str, token: str, accept: str | None) -> None:
        """One answer decoded the way the resource server would: it must say active."""
        from jwcrypto import jwe as jw_jwe, jwk as jw_jwk, jws as jw_jws

        headers = {"Content-Type": "application/x-www-form-urlencoded", **({"Accept": accept} if accept else {})}
        status, resp_headers, body = benchlib.http_request(
            server.base, "POST", "/oauth2/introspect", self.forms(rs_id, token, 1)[0], headers
        )
        if status != 200:
            raise RuntimeError(f"introspection ({rs_id}) answered {status}: {body[:300]!r}")
        if accept is None:
            answer = json.loads(body)
        else:
            text = body.decode()
            if rs_id == "rs-enc":
                outer = jw_jwe.JWE()
                outer.deserialize(text, key=jw_jwk.JWK.from_pyca(self.rs_enc_private))
                text = outer.payload.decode()
            _, _, jwks = benchlib.http_request(server.base, "GET", "/oauth2/jwks")
            signed = jw_jws.JWS()
            signed.deserialize(text)
            signed.verify(jw_jwk.JWKSet.from_json(jwks.decode()))  # raises unless one of our keys signed it
            claims = json.loads(signed.payload)
            if claims.get("aud") != rs_id:
                raise RuntimeError(f"introspection JWT for {claims.get('aud')}, expected {rs_id}")
            answer = claims["token_introspection"]
        if answer.get("active") is not True:
            raise RuntimeError(f"introspection ({rs_id}) says inactive: {answer}")

    def close(self):
        self.ws.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per run (default 8)")
    args = ap.parse_args()
    out = benchlib.Report("introspection")
    started = time.monotonic()
    out.line("# bench/introspection.py — POST /oauth2/introspect under gunicorn, 16 keep-alive connections (wrk)")
    benchlib.print_facts(out)
    bench = Bench()
    try:
        gate = benchlib.QuietGate(budget=12, per_wait=3)
        rows, results = [], {}
        estimate = 3000.0  # req/s guess for the first run's body count; then the highest rate seen
        for config in benchlib.available_worker_configs():
            server = benchlib.start_gunicorn(bench.ws, "example_app:app", bench.settings, config, ready_path="/oauth2/jwks")
            try:
                benchlib.wait_for_epoch(bench.redis.url)
                for name, rs_id, resource, accept in VARIANTS:
                    token = bench.access_token(server, resource)
                    bench.check(server, rs_id, token, accept)
                    count = int(estimate * args.duration * 1.6) + 3000
                    benchlib.write_bodies(bench.bodies, bench.forms(rs_id, token, count))
                    gate.wait()
                    r = benchlib.run_wrk_measured(
                        server,
                        "/oauth2/introspect",
                        bench.bodies,
                        duration=args.duration,
                        connections=CONNECTIONS,
                        headers={"Accept": accept} if accept else None,
                        redis_pid=bench.redis.proc.pid,
                    )
                    bench.check(server, rs_id, token, accept)  # still correct after the run
                    estimate = max(estimate, r.rate)  # bodies never run short
                    results[(config.name, name)] = r
                    rows.append(
                        [
                            config.name,
                            name,
                            f"{r.rate:,.0f}",
                            f"{r.p50_ms:.2f}",
                            f"{r.p99_ms:.2f}",
                            f"×{r.p99_ms / r.p50_ms:.1f}",
                            f"{r.errors}" + (f" ({r.exhausted} bodies exhausted)" if r.exhausted else ""),
                            f"{r.cpu_ms(r.server_cpu):.3f}",
                            f"{r.cpu_ms(r.wrk_cpu):.3f}",
                            r.conns,
                            r.cpu_split,
                            f"{r.foreign:.2f}",
                        ]
                    )
            finally:
                server.stop()

        out.section(f"Introspection: {CONNECTIONS} connections, wrk 1 thread, {args.duration:g} s per run")
        out.table(
            [
                "gunicorn",
                "response",
                "req/s",
                "p50 ms",
                "p99 ms",
                "p99/p50",
                "errors",
                "server CPU ms/req",
                "wrk CPU ms/req",
                "conns per worker",
                "worker CPU split %",
                "other load",
            ],
            rows,
        )
        out.line()
        for config in benchlib.available_worker_configs():
            out.line(f"- {config.name}: gunicorn {config.describe()}")
        out.line(
            "errors = non-200 answers + socket errors. conns per worker: client connections each worker "
            "held mid-run; worker CPU split: each worker's share of the workers' CPU. other load = CPU other "
            "programs used on this shared machine during the run, in cores (of 2)."
        )

        out.section("Cost of the JWT forms (same run)")
        ratio_rows = []
        for config in benchlib.available_worker_configs():
            js, sj, ej = (results[(config.name, v[0])] for v in VARIANTS)
            ratio_rows.append(
                [
                    config.name,
                    f"{sj.rate / js.rate:.1%}",
                    f"{ej.rate / js.rate:.1%}",
                    f"+{sj.cpu_ms(sj.server_cpu) - js.cpu_ms(js.server_cpu):.3f}",
                    f"+{ej.cpu_ms(ej.server_cpu) - js.cpu_ms(js.server_cpu):.3f}",
                ]
            )
        out.table(
            [
                "gunicorn",
                "signed JWT ÷ JSON (req/s)",
                "encrypted JWT ÷ JSON (req/s)",
                "signing: extra server CPU ms/req",
                "sign+encrypt: extra server CPU ms/req",
            ],
            ratio_rows,
        )
        out.line()
        out.line(benchlib.errors_line(list(results.values())))
        return benchlib.finish(out, started)
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
