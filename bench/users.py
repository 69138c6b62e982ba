#!/usr/bin/env python3
"""Issue 11: the token endpoint's user paths under gunicorn — code redemption and refresh —
next to client credentials, same client, same server, same run.

    .venv/bin/python bench/users.py              # about 3 minutes

What one run does, all on 127.0.0.1 (the plumbing is bench/benchlib.py, as for token_endpoint.py):

1. A throwaway SoftHSM2 token with an ES256 signing key, a PS256 key, and two AS encryption keys
   (RSA-OAEP-256, ECDH-ES P-256); a private redis-server; a registry with one private_key_jwt client
   (software ES256 key) registered for client_credentials, authorization_code and refresh_token.
2. example_app under gunicorn (sync 2 workers, gthread 2 workers x 8 threads), then for each:
   - client credentials (the baseline: one assertion check, one replay script, one ES256 signature);
   - **code redemption**: codes pre-created in Redis through ``Store.put`` exactly as the
     authorization endpoint writes them (a ``CodeRecord``), each redeemed once with its PKCE
     verifier: assertion, replay script, code read, atomic consume, ES256 access token, refresh
     token encrypted to the AS (software), grant record created;
   - **refresh**: refresh tokens pre-minted exactly as the server mints them (a JWE to the AS's
     first encryption key, a grant record in Redis), each refreshed once: assertion, replay script,
     **decryption in the HSM**, ES256 access token, the new refresh token, the atomic rotation.
   With gthread, refresh once more with the ECDH-ES key first (ECDH derive in the token instead of
   raw RSA). Every request carries its own pre-signed client assertion (unique jti).
3. Prints requests/s, p50/p99 (wrk's histogram), errors, CPU per request (server, Redis) and the
   load other programs put on the shared machine. One request of each kind is fully checked before
   and after each run (200, a refresh token in the answer).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

KEYS = {
    "sig-es256": ("ES256", "sig"),
    "sig-ps256": ("PS256", "sig"),
    "enc-rsa": ("RSA-OAEP-256", "enc"),
    "enc-ecdh": ("ECDH-ES", "enc"),
}
RS1 = "https://rs1.example.test"
CLIENT_ID = "c-web"
REDIRECT = "https://web.example.test/cb"
CONNECTIONS = 16
VERIFIER = "v" * 43 + secrets.token_urlsafe(16)
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()


def build_registry(client_key, rs_key) -> dict:
    return {
        "clients": [
            {
                "client_id": CLIENT_ID,
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [client_key.public_jwk]},
                "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
                "redirect_uris": [REDIRECT],
                "scope": "read write",
                "resources": [RS1],
            }
        ],
        "resource_servers": [
            {
                "resource": RS1,
                "client_id": "rs-1",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [rs_key.public_jwk]},
                "scope": "read write",
            }
        ],
    }


class Bench:
    def __init__(self) -> None:
        from as_helpers import ClientKey

        self.ws = benchlib.Workspace.create("users")
        self.ws.generate_keys(KEYS)
        self.redis = self.ws.start_redis()
        self.client_key = ClientKey.new("ES256")
        registry = self.ws.base / "registry.json"
        registry.write_text(json.dumps(build_registry(self.client_key, ClientKey.new("ES256"))))
        self.registry = str(registry)
        self.bodies = self.ws.base / "bodies.txt"
        self.enc_jwks = {label: benchlib.public_jwk_of(label) for label in ("enc-rsa", "enc-ecdh")}

    def settings(self, first_enc: str) -> dict:
        other = "enc-ecdh" if first_enc == "enc-rsa" else "enc-rsa"
        return benchlib.as_settings(
            self.redis.url,
            self.registry,
            OAUTH_HSM_ENCRYPTION_KEYS=f"{first_enc},{other}",
            OAUTH_HSM_RATE_LIMITS="off",
            OAUTH_HSM_CODE_LIFETIME="600",
            EXAMPLE_SECRET_KEY="bench-users",
        )

    def store(self):
        import redis

        from flask_oauth_hsm.store import ResetRule, Store

        return Store(redis.Redis.from_url(self.redis.url), "oauth-hsm:", ResetRule(5))

    # -- pre-created codes and refresh tokens, written the way the server writes them ---------------

    def codes(self, count: int) -> list[str]:
        from flask_oauth_hsm.release import Release
        from flask_oauth_hsm.tokens.codes import NAMESPACE, CodeRecord

        store, now = self.store(), time.time()
        record = CodeRecord(
            client_id=CLIENT_ID,
            redirect_uri=REDIRECT,
            redirect_uri_given=True,
            code_challenge=CHALLENGE,
            scope=frozenset({"read"}),
            resources=(RS1,),
            subject="user-1",
            auth_time=int(now),
            acr=None,
            amr=("pwd",),
            nonce=None,
            release=Release(),
            expires_at=now + 600,
        ).encode()
        out = []
        pipe = store.client.pipeline(transaction=False)
        for _ in range(count):
            code = secrets.token_urlsafe(32)
            pipe.set(store.key(NAMESPACE, code), record, ex=600, nx=True)
            out.append(code)
        pipe.execute()
        return out

    def refresh_tokens(self, count: int, first_enc: str) -> list[str]:
        from flask_oauth_hsm.jose import jwe, jwt
        from flask_oauth_hsm.jose.jwk import load_jwk
        from flask_oauth_hsm.release import Release
        from flask_oauth_hsm.tokens.refresh import RT_TYP, RefreshClaims, new_id

        store, key, now = self.store(), load_jwk(self.enc_jwks[first_enc]), int(time.time())
        out = []
        for _ in range(count):
            claims = RefreshClaims(
                grant_id=new_id(),
                token_id=new_id(),
                client_id=CLIENT_ID,
                subject="user-1",
                scope=frozenset({"read"}),
                resources=(RS1,),
                auth_time=now,
                acr=None,
                amr=("pwd",),
                issued_at=now,
                expires_at=now + 86400,
            )
            out.append(jwe.encrypt(jwt.encode_claims(claims.to_json()), key, key.alg, "A256GCM", {"typ": RT_TYP}))
            store.grant_create(claims.grant_id, claims.token_id, Release().encode(), 3600)
        return out

    def forms(self, extras: list[dict]) -> list[str]:
        signed = benchlib.presign_forms(self.client_key, CLIENT_ID, benchlib.ISSUER, len(extras), {})
        return [body + "&" + urlencode(extra) for body, extra in zip(signed, extras, strict=True)]

    def bodies_for(self, path: str, count: int, first_enc: str) -> list[str]:
        if path == "client credentials":
            return self.forms([{"grant_type": "client_credentials", "resource": RS1, "scope": "read"}] * count)
        if path == "code redemption":
            return self.forms(
                [
                    {"grant_type": "authorization_code", "code": c, "redirect_uri": REDIRECT, "code_verifier": VERIFIER}
                    for c in self.codes(count)
                ]
            )
        return self.forms([{"grant_type": "refresh_token", "refresh_token": t} for t in self.refresh_tokens(count, first_enc)])

    def check(self, server, path: str, first_enc: str) -> None:
        status, _, body = benchlib.http_request(
            server.base,
            "POST",
            "/oauth2/token",
            self.bodies_for(path, 1, first_enc)[0],
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        answer = json.loads(body)
        if status != 200 or (path != "client credentials" and "refresh_token" not in answer):
            raise RuntimeError(f"{path}: {status} {body[:300]!r}\n" + server.log_path.read_text()[-3000:])

    def load(self, server, path: str, count: int, duration: float, first_enc: str) -> benchlib.LoadResult:
        benchlib.write_bodies(self.bodies, self.bodies_for(path, count, first_enc))
        system = benchlib.SystemMeter()
        system.start()
        result = benchlib.run_wrk(
            server, "/oauth2/token", self.bodies, duration=duration, connections=CONNECTIONS, redis_pid=self.redis.proc.pid
        )
        window, busy = system.stop()
        result.foreign = max(0.0, busy - result.server_cpu - result.wrk_cpu - result.redis_cpu) / window
        return result


def run(args) -> int:
    out = benchlib.Report("users")
    started = time.monotonic()
    out.line("# bench/users.py — POST /oauth2/token: client credentials, code redemption, refresh (wrk, 16 connections)")
    benchlib.print_facts(out)
    bench = Bench()
    rows, bad = [], []
    try:
        gate = benchlib.QuietGate(budget=8, per_wait=3)
        configs = {c.name: c for c in benchlib.available_worker_configs()}
        plan = [
            (configs["sync-2"], "enc-rsa", ("client credentials", "code redemption", "refresh")),
            (configs["gthread-2x8"], "enc-rsa", ("client credentials", "code redemption", "refresh")),
            (configs["gthread-2x8"], "enc-ecdh", ("refresh",)),
        ]
        fastest = 2500.0
        for config, first_enc, paths in plan:
            server = benchlib.start_gunicorn(
                bench.ws, "example_app:app", bench.settings(first_enc), config, ready_path="/oauth2/jwks"
            )
            try:
                benchlib.wait_for_epoch(bench.redis.url)
                for path in paths:
                    bench.check(server, path, first_enc)
                    count = int(fastest * args.duration * 1.3) + 2000
                    gate.wait()
                    r = bench.load(server, path, count, args.duration, first_enc)
                    bench.check(server, path, first_enc)
                    fastest = max(fastest, r.rate)
                    if r.first_bad:
                        bad.append(r.first_bad)
                    alg = {"enc-rsa": "RSA-OAEP-256", "enc-ecdh": "ECDH-ES"}[first_enc]
                    what = path + (f" (refresh token: {alg})" if path != "client credentials" else "")
                    rows.append(
                        [
                            config.name,
                            what,
                            f"{r.rate:,.0f}",
                            f"{r.p50_ms:.2f}",
                            f"{r.p99_ms:.2f}",
                            f"{r.errors}" + (f" ({r.exhausted} bodies exhausted)" if r.exhausted else ""),
                            f"{r.cpu_ms(r.server_cpu):.3f}",
                            f"{r.cpu_ms(r.redis_cpu):.3f}",
                            f"{r.foreign:.2f}",
                        ]
                    )
            finally:
                server.stop()
        out.section(f"Load: {CONNECTIONS} connections, wrk 1 thread, {args.duration:g} s per run, ES256 access tokens")
        out.table(
            ["gunicorn", "path", "req/s", "p50 ms", "p99 ms", "errors", "server CPU ms/req", "redis CPU ms/req", "other load"],
            rows,
        )
        out.line()
        out.line(
            "errors = non-200 answers + socket errors. CPU ms/req from /proc (utime+stime) over the run. other load "
            "= CPU used by other programs on this shared machine during the run, in cores (of 2): read rows "
            "with other load well above 0 as disturbed."
        )
        for name in ("sync-2", "gthread-2x8"):
            out.line(f"- {name}: gunicorn {configs[name].describe()}")
        if bad:
            out.line(f"first non-200 answer seen: {bad[0]}")
        out.line()
        return benchlib.finish(out, started)
    finally:
        bench.ws.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    return run(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
