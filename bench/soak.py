"""Soak: ~60 s of mixed traffic against gunicorn — tokens, introspection, revocation, hostile input.

Reports unexpected answers (must be 0), throughput, p50/p99 latency per kind of request, and the
gunicorn workers' memory (RSS) after warm-up and at the end. Every request has an expected
answer; anything else is counted and a sample kept. Its own SoftHSM token store, Redis and
registry, removed at the end; load only on 127.0.0.1; every loop stops by itself.

    .venv/bin/python bench/soak.py [--seconds 60] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402  (sets up sys.path for tests/ helpers)

RS1 = "https://rs1.example.test"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_ACCEPT = "application/token-introspection+jwt"


def build_registry(client_key, rs_key) -> dict:
    return {
        "clients": [
            {
                "client_id": "soak-client",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [client_key.public_jwk]},
                "scope": "read write",
                "resources": [RS1],
            }
        ],
        "resource_servers": [
            {
                "resource": RS1,
                "client_id": "soak-rs",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [rs_key.public_jwk]},
                "scope": "read write",
            }
        ],
    }


# --- one load process ---------------------------------------------------------------------------------


class Client:
    """A keep-alive HTTP client that records (kind, status, expected, latency) per request."""

    def __init__(self, port: int, keys: dict, deadline: float):
        from cryptography.hazmat.primitives import serialization

        from as_helpers import ClientKey

        self.port, self.deadline = port, deadline
        self.keys = {
            who: ClientKey(alg, serialization.load_pem_private_key(pem, None), kid) for who, (alg, pem, kid) in keys.items()
        }
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.samples: list[tuple[str, float]] = []
        self.unexpected: list[str] = []
        self.counts: dict[str, int] = {}
        self.tokens: list[str] = []

    def request(self, kind: str, method: str, path: str, body: bytes | None, expect: set[int], headers=None) -> tuple[int, bytes]:
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        start = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            resp = self.conn.getresponse()
            data = resp.read()
            status = resp.status
            if resp.getheader("Connection", "").lower() == "close":
                self.conn.close()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            status, data = -1, repr(exc).encode()
        self.samples.append((kind, time.perf_counter() - start))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if status not in expect or (status >= 400 and not data.startswith(b"{")):
            self.unexpected.append(f"{kind}: {status} {data[:120]!r}")
        return status, data

    def assertion(self, who: str, aud: str) -> str:
        from as_helpers import claims_for

        return self.keys[who].jws(claims_for(who, aud, jti=secrets.token_urlsafe(16)))

    # -- the traffic mix ------------------------------------------------------------------------

    def get_token(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion("soak-client", benchlib.ISSUER),
            "scope": "read",
        }
        status, data = self.request("token", "POST", "/oauth2/token", urlencode(form).encode(), {200})
        if status == 200:
            self.tokens.append(json.loads(data)["access_token"])
            del self.tokens[:-50]

    def introspect(self, token: str, expect_active: bool | None, jwt_response: bool = False) -> None:
        form = {
            "token": token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion("soak-rs", benchlib.ISSUER),
        }
        headers = {"Accept": JWT_ACCEPT} if jwt_response else None
        status, data = self.request(
            "introspect-jwt" if jwt_response else "introspect",
            "POST",
            "/oauth2/introspect",
            urlencode(form).encode(),
            {200},
            headers,
        )
        if status == 200 and expect_active is not None and not jwt_response:
            active = json.loads(data).get("active")
            if active is not expect_active:
                self.unexpected.append(f"introspect: active={active}, expected {expect_active}")

    def revoke_and_check(self) -> None:
        if not self.tokens:
            return
        token = self.tokens.pop()
        form = {
            "token": token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion("soak-client", benchlib.ISSUER),
        }
        status, _ = self.request("revoke", "POST", "/oauth2/revoke", urlencode(form).encode(), {200})
        if status == 200:  # (chaos.py: a 503 revoked nothing, and the token is still active)
            self.introspect(token, expect_active=False)

    def hostile(self) -> None:
        choice = random.randrange(6)
        if choice == 0:  # a replayed assertion
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion("soak-client", benchlib.ISSUER),
            }
            body = urlencode(form).encode()
            self.request("token", "POST", "/oauth2/token", body, {200})
            self.request("hostile-replay", "POST", "/oauth2/token", body, {401})
        elif choice == 1:
            self.request("hostile-garbage", "POST", "/oauth2/token", os.urandom(random.randrange(1, 4000)), {400, 401, 413})
        elif choice == 2:
            self.request("hostile-oversized", "POST", "/oauth2/introspect", b"token=" + b"x" * 40000, {413})
        elif choice == 3:
            self.request("hostile-method", "DELETE", "/oauth2/token", None, {405})
        elif choice == 4:
            self.introspect("eyJhbGciOiJub25lIn0." + secrets.token_urlsafe(40) + ".", expect_active=False)
        else:
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.keys["soak-rs"].jws({"iss": "soak-client", "sub": "soak-client"}),
            }
            self.request("hostile-forged", "POST", "/oauth2/token", urlencode(form).encode(), {401})

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            roll = random.random()
            if roll < 0.5 or not self.tokens:
                self.get_token()
            elif roll < 0.7:
                self.introspect(random.choice(self.tokens), expect_active=None)
            elif roll < 0.8:
                self.introspect(random.choice(self.tokens), expect_active=None, jwt_response=True)
            elif roll < 0.9:
                self.revoke_and_check()
            else:
                self.hostile()


def client_process(port: int, keys: dict, deadline: float, queue) -> None:
    client = Client(port, keys, deadline)
    client.run()
    queue.put((client.samples, client.unexpected, client.counts))


# --- the run ------------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    from as_helpers import ClientKey

    out = benchlib.Report("soak")
    benchlib.print_facts(out)
    ws = benchlib.Workspace.create("soak")
    try:
        ws.generate_keys({"sig-es256": ("ES256", "sig"), "sig-ps256": ("PS256", "sig")})
        redis = ws.start_redis()
        keys = {"soak-client": ClientKey.new("ES256"), "soak-rs": ClientKey.new("ES256")}
        registry = ws.base / "registry.json"
        registry.write_text(json.dumps(build_registry(keys["soak-client"], keys["soak-rs"])))
        config = benchlib.WorkerConfig("sync-2", "sync")
        server = benchlib.start_gunicorn(
            ws, "example_app:app", benchlib.as_settings(redis.url, str(registry)), config, ready_path="/oauth2/ready"
        )
        benchlib.wait_for_epoch(redis.url)
        workers = server.pids()[1:]
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        from cryptography.hazmat.primitives import serialization

        portable = {
            who: (
                k.alg,
                k.private.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
                k.kid,
            )
            for who, k in keys.items()
        }
        warmup = time.monotonic() + 5
        deadline = time.monotonic() + args.seconds
        procs = [ctx.Process(target=client_process, args=(server.port, portable, deadline, queue)) for _ in range(args.clients)]
        for p in procs:
            p.start()
        time.sleep(max(0.0, warmup - time.monotonic()))
        rss_start = {pid: rss_kib(pid) for pid in workers}
        results = [queue.get(timeout=args.seconds + 60) for _ in procs]
        rss_end = {pid: rss_kib(pid) for pid in workers}
        for p in procs:
            p.join(timeout=30)
        server.stop()
        report(out, args, config, results, rss_start, rss_end)
    finally:
        ws.close()
    print(f"results: {out.save()}")
    return 0


def report(out, args, config, results, rss_start: dict, rss_end: dict) -> None:
    samples = [s for r in results for s in r[0]]
    unexpected = [u for r in results for u in r[1]]
    kinds = sorted({k for k, _ in samples})
    out.section(f"Soak: {args.seconds:.0f} s, {args.clients} client processes (keep-alive), gunicorn {config.describe()}")
    rows = []
    for kind in kinds:
        lat = [t for k, t in samples if k == kind]
        rows.append(
            [
                kind,
                f"{len(lat):,}",
                f"{len(lat) / args.seconds:,.0f}",
                f"{percentile(lat, 0.5):.1f}",
                f"{percentile(lat, 0.99):.1f}",
            ]
        )
    lat = [t for _, t in samples]
    rows.append(
        ["all", f"{len(lat):,}", f"{len(lat) / args.seconds:,.0f}", f"{percentile(lat, 0.5):.1f}", f"{percentile(lat, 0.99):.1f}"]
    )
    out.table(["request", "count", "per s", "p50 ms", "p99 ms"], rows)
    out.line()
    out.line(f"unexpected answers: {len(unexpected)} (must be 0)")
    for sample in unexpected[:10]:
        out.line(f"  {sample}")
    out.line()
    out.table(
        ["worker pid", "RSS after 5 s warm-up (KiB)", "RSS at the end (KiB)", "growth (KiB)"],
        [[str(pid), f"{rss_start[pid]:,}", f"{rss_end[pid]:,}", f"{rss_end[pid] - rss_start[pid]:+,}"] for pid in rss_start],
    )


if __name__ == "__main__":
    raise SystemExit(main())
