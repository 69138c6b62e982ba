"""Shared plumbing for the benchmark scripts in bench/ (not a test module, never imported by tests).

Each script calls :func:`Workspace.create` first: it makes a throwaway directory, writes a SoftHSM2
config there and sets ``SOFTHSM2_CONF`` *before* anything loads the PKCS#11 module (exactly like
tests/conftest.py), initialises a fresh token, and later starts a private redis-server on a free
loopback port. :meth:`Workspace.close` stops everything this process started and removes the
directory. Nothing here touches a developer's token store or Redis.

Everything talks to 127.0.0.1 only, and every loop is bounded in time.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(ROOT / "tests"))  # support.py, as_helpers.py (client-side helpers)
sys.path.insert(0, str(ROOT))

import support  # noqa: E402  (only writes files / runs softhsm2-util; never loads PKCS#11)

TOKEN_LABEL = "bench-main"
PIN = support.USER_PIN
ISSUER = "https://as.example.test"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- machine facts ---------------------------------------------------------------------------------


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def _dpkg_version(pkg: str) -> str:
    return _version(["dpkg-query", "-W", "-f", "${Version}", pkg])


def machine_facts() -> list[tuple[str, str]]:
    from importlib.metadata import PackageNotFoundError, version

    def pv(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    return [
        ("cores (os.cpu_count / sched_getaffinity)", f"{os.cpu_count()} / {len(os.sched_getaffinity(0))}"),
        ("cpu", cpu),
        ("memory", mem),
        ("kernel", platform.release()),
        ("os", _version(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"])),
        ("python", platform.python_version()),
        ("softhsm2", _dpkg_version("softhsm2")),
        ("redis-server", _version(["redis-server", "--version"]).split(" sha=")[0]),
        ("wrk", _version(["sh", "-c", "wrk -v 2>&1 | head -1"]).split(" Copyright")[0]),
        ("python-pkcs11", pv("python-pkcs11")),
        ("cryptography", pv("cryptography")),
        ("flask / werkzeug", f"{pv('flask')} / {pv('werkzeug')}"),
        ("gunicorn", pv("gunicorn")),
        ("gevent", pv("gevent")),
        ("redis-py / hiredis", f"{pv('redis')} / {pv('hiredis')}"),
        ("flask-oauth-hsm code", code_state()),
    ]


def code_state() -> str:
    """The commit measured, and whether the package had uncommitted changes at the time."""
    head = _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "flask_oauth_hsm", "example_app"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return head
    dirty = [line[3:] for line in out.splitlines() if line.strip()]
    return f"{head}" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean)")


def print_facts(out) -> None:
    out.section("Machine")
    out.table(["fact", "value"], [list(f) for f in machine_facts()])


# --- output: print and keep a copy under bench/results/ --------------------------------------------


class Report:
    """Prints to stdout and collects the same text into bench/results/<name>.txt."""

    def __init__(self, name: str):
        self.name = name
        self.lines: list[str] = []

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def section(self, title: str) -> None:
        self.line()
        self.line(f"## {title}")
        self.line()

    def table(self, headers: list[str], rows: list[list]) -> None:
        cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + " |"  # noqa: E731
        self.line(fmt(cells[0]))
        self.line("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in cells[1:]:
            self.line(fmt(r))

    def save(self) -> Path:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.txt"
        path.write_text("\n".join(self.lines) + "\n")
        return path


def finish(out: Report, started: float) -> int:
    """The common end of a bench script: total run time, results saved, where to."""
    out.line(f"total run time {time.monotonic() - started:.0f} s")
    path = out.save()
    print(f"(saved to {path.relative_to(ROOT)})")
    return 0


# --- the throwaway token store, keys and Redis -----------------------------------------------------


@dataclass
class Workspace:
    base: Path
    redis: support.RedisServer | None = None
    procs: list = field(default_factory=list)

    @classmethod
    def create(cls, name: str) -> Workspace:
        base = Path(tempfile.mkdtemp(prefix=f"oauth-hsm-bench-{name}-"))
        # Before the PKCS#11 module is ever loaded in this process or any child (spawned workers
        # and gunicorn inherit the environment).
        os.environ["SOFTHSM2_CONF"] = str(support.write_softhsm_conf(base / "softhsm"))
        support.init_token(TOKEN_LABEL)
        return cls(base)

    def generate_keys(self, keys: dict[str, tuple[str, str]]) -> None:
        """Generate key pairs in the token through our HSM layer (label -> (alg, use)).

        Done in a child process, so this process never initialises the PKCS#11 module: the
        measuring processes (spawned) and gunicorn start from a clean module state."""
        code = (
            "import json, sys\n"
            "from flask_oauth_hsm.hsm import HSM, HSMConfig\n"
            "cfg = json.loads(sys.argv[1])\n"
            "hsm = HSM(HSMConfig(module=cfg['module'], token_label=cfg['token'], pin=cfg['pin']))\n"
            "for label, (alg, use) in cfg['keys'].items():\n"
            "    hsm.generate_key(alg, use, label)\n"
            "hsm.close()\n"
        )
        arg = json.dumps({"module": support.SOFTHSM_MODULE, "token": TOKEN_LABEL, "pin": PIN, "keys": keys})
        subprocess.run([sys.executable, "-c", code, arg], check=True, cwd=ROOT, timeout=120)

    def start_redis(self) -> support.RedisServer:
        self.redis = support.RedisServer(self.base / "redis")
        self.redis.start()
        return self.redis

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def public_jwk_of(key_label: str) -> dict:
    """Public JWK of a token key (read in a child process, like generate_keys)."""
    code = (
        "import json, sys\n"
        "from flask_oauth_hsm.hsm import HSM, HSMConfig\n"
        "cfg = json.loads(sys.argv[1])\n"
        "hsm = HSM(HSMConfig(module=cfg['module'], token_label=cfg['token'], pin=cfg['pin']))\n"
        "print(json.dumps(hsm.key(cfg['label']).public_jwk()))\n"
        "hsm.close()\n"
    )
    arg = json.dumps({"module": support.SOFTHSM_MODULE, "token": TOKEN_LABEL, "pin": PIN, "label": key_label})
    out = subprocess.run([sys.executable, "-c", code, arg], check=True, cwd=ROOT, timeout=60, capture_output=True, text=True)
    return json.loads(out.stdout)


def as_settings(redis_url: str, registry_path: str, **overrides) -> dict:
    """The environment for gunicorn: the same OAUTH_HSM_* variables as tests/conftest.py
    ``as_settings`` (issuer, module, token label, PIN, signing key, Redis, registry)."""
    settings = {
        "OAUTH_HSM_ISSUER": ISSUER,
        "OAUTH_HSM_PKCS11_MODULE": support.SOFTHSM_MODULE,
        "OAUTH_HSM_TOKEN_LABEL": TOKEN_LABEL,
        "OAUTH_HSM_PIN": PIN,
        "OAUTH_HSM_SIGNING_KEY": "sig-es256",
        "OAUTH_HSM_PUBLISHED_KEYS": "sig-ps256",
        "OAUTH_HSM_REDIS_URL": redis_url,
        "OAUTH_HSM_REGISTRY": registry_path,
        "OAUTH_HSM_RATE_LIMITS": "off",  # benchmarks measure the endpoint, not the limiter (100–200/s by default)
    }
    settings.update(overrides)
    return settings


# --- gunicorn ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    worker_class: str
    workers: int = 2
    threads: int = 1
    preload: bool = True
    extra: tuple[str, ...] = ()  # more gunicorn arguments
    note: str = ""

    def args(self) -> list[str]:
        args = ["--workers", str(self.workers), "--worker-class", self.worker_class]
        if self.worker_class == "gthread":
            args += ["--threads", str(self.threads)]
        if self.preload:
            args.append("--preload")
        return [*args, *self.extra]

    def describe(self) -> str:
        what = {"sync": "sync", "gthread": f"gthread ×{self.threads} threads", "gevent": "gevent (1000 conns)"}
        return f"{self.workers} workers, {what[self.worker_class]}{', --preload' if self.preload else ''}" + (
            f", {self.note}" if self.note else ""
        )


def available_worker_configs() -> list[WorkerConfig]:
    configs = [WorkerConfig("sync-2", "sync"), WorkerConfig("gthread-2x8", "gthread", threads=8)]
    try:
        import gevent  # noqa: F401

        # No --preload for gevent: the app (and its locks) must be created after monkey-patching.
        configs.append(WorkerConfig("gevent-2", "gevent", preload=False))
    except ImportError:
        pass
    return configs


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    config: WorkerConfig
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        stop_process(self.proc)


def start_gunicorn(
    ws: Workspace, app: str, settings: dict, config: WorkerConfig, *, ready_path: str, extra_args: list[str] = ()
) -> Server:
    port = support.free_port()
    env = {**os.environ, **settings}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log_path = ws.base / f"gunicorn-{port}.log"
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        *config.args(),
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "2",
        "--timeout",
        "30",
        "--keep-alive",
        "5",
        "--backlog",
        "2048",
        *extra_args,
        app,
    ]
    with open(log_path, "wb") as log:  # the child has its own copy of the descriptor
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ws.procs.append(proc)
    server = Server(proc, port, config, log_path)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited: " + log_path.read_text()[-2000:])
        try:
            status, _, _ = http_request(server.base, "GET", ready_path, timeout=1)
            if status == 200 and len(children(proc.pid)) >= config.workers:
                # every worker answers (each initialises its own PKCS#11 state lazily)
                for _ in range(4 * config.workers):
                    http_request(server.base, "GET", ready_path, timeout=5)
                return server
        except OSError:
            pass
        time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError("gunicorn did not answer: " + log_path.read_text()[-2000:])


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def http_request(
    base: str, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None, timeout: float = 10
) -> tuple[int, dict, bytes]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


# --- CPU accounting from /proc ----------------------------------------------------------------------


def children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            out.extend(int(c) for c in text)
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def system_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class SystemMeter:
    """Whole-machine busy CPU over a window: with our own processes' CPU subtracted, what other
    work (other users of this shared machine) took from the 2 cores while we measured."""

    def start(self) -> None:
        self.t0, self.b0 = time.monotonic(), system_busy_seconds()

    def stop(self) -> tuple[float, float]:
        """(window seconds, busy CPU seconds)."""
        return time.monotonic() - self.t0, system_busy_seconds() - self.b0


def wait_quiet(max_wait: float = 20.0, threshold_cores: float = 0.3, window: float = 1.0) -> float:
    """Wait (at most ``max_wait`` s) until the machine is nearly idle over ``window`` seconds, so
    a measurement does not start while something else (a test suite) is running. Returns the
    busy cores seen in the last window."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = system_busy_seconds()
        time.sleep(window)
        busy = (system_busy_seconds() - b0) / window
        if busy <= threshold_cores or time.monotonic() >= deadline:
            return busy


class QuietGate:
    """wait_quiet before each measurement, within a total waiting budget for the whole script
    (so the script's run time stays bounded on a busy machine)."""

    def __init__(self, budget: float = 40.0, per_wait: float = 10.0):
        self.left = budget
        self.per_wait = per_wait

    def wait(self) -> float:
        t0 = time.monotonic()
        busy = wait_quiet(max_wait=max(0.0, min(self.per_wait, self.left)))
        self.left -= time.monotonic() - t0
        return busy


class CpuMeter:
    """CPU seconds used by a set of processes between start() and stop()."""

    def __init__(self, pids_fn):
        self.pids_fn = pids_fn
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = {p: c for p in self.pids_fn() if (c := cpu_seconds(p)) is not None}

    def stop(self) -> float:
        total = 0.0
        for p in self.pids_fn():
            c = cpu_seconds(p)
            if c is not None:
                total += c - self.before.get(p, 0.0)
        return total


# --- wrk: one pre-built body per request ------------------------------------------------------------


WRK_LUA = BENCH_DIR / "wrk_bodies.lua"


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non200: int
    socket_errors: int
    exhausted: int
    wrk_cpu: float  # CPU seconds wrk itself used
    server_cpu: float  # CPU seconds of gunicorn master + workers
    redis_cpu: float
    first_bad: str = ""
    foreign: float = 0.0  # CPU cores other programs used during the run (set by the caller)
    conns: str = ""  # keep-alive connections held by each worker mid-run, e.g. "12+4"
    cpu_split: str = ""  # each worker's share of the workers' CPU, e.g. "55/45"

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non200 + self.socket_errors  # an exhausted-bodies request is a 404: in non200

    def cpu_ms(self, seconds: float) -> float:
        return 1000 * seconds / self.requests if self.requests else 0.0


def write_bodies(path: Path, bodies: list[str]) -> None:
    with open(path, "w") as fh:
        for b in bodies:
            if "\n" in b:
                raise ValueError("a body must be one line")
            fh.write(b + "\n")


def run_wrk(
    server: Server,
    path: str,
    bodies_file: Path,
    *,
    duration: float,
    connections: int = 16,
    threads: int = 1,
    cycle: bool = False,
    headers: dict | None = None,
    redis_pid: int | None = None,
    timeout_s: int = 5,
    expect: str | None = None,
    whole_requests: bool = False,
) -> LoadResult:
    """POST the lines of ``bodies_file`` to ``path``, each exactly once (unless ``cycle``), for
    ``duration`` seconds over ``connections`` keep-alive connections. With ``expect``, a 200
    answer whose body lacks that string counts as non-200. ``whole_requests``: each line is a
    whole request (method, path, body, headers), ``path`` is then unused (wrk_bodies.lua)."""
    header_args = []
    for k, v in (headers or {}).items():
        header_args += ["-H", f"{k}: {v}"]
    args = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        f"{timeout_s}s",
        *header_args,
        "-s",
        str(WRK_LUA),
        server.base + path,
        "--",
        str(bodies_file),
        str(threads),
        "1" if cycle else "0",
        "requests" if whole_requests else "bodies",
        *([expect] if expect else []),
    ]
    server_meter = CpuMeter(server.pids)
    redis_meter = CpuMeter(lambda: [redis_pid] if redis_pid else [])
    workers = children(server.proc.pid)
    worker_cpu0 = {p: cpu_seconds(p) or 0.0 for p in workers}
    server_meter.start()
    redis_meter.start()
    conns: dict[int, int] = {}
    import threading

    def count_connections():  # mid-run: which worker holds how many client connections
        time.sleep(duration / 2)
        conns.update(connections_per_pid(server.port))

    counter = threading.Thread(target=count_connections, daemon=True)
    counter.start()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + duration + 60  # wrk reads the bodies file first
    # Read the pipes while waiting (wrk's output is small); reap with wait4 for wrk's own rusage.
    import threading

    captured = {}
    readers = [
        threading.Thread(target=lambda n, f: captured.__setitem__(n, f.read()), args=(n, f), daemon=True)
        for n, f in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for t in readers:
        t.start()
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    server_cpu = server_meter.stop()
    redis_cpu = redis_meter.stop()
    worker_cpu = {p: (cpu_seconds(p) or 0.0) - worker_cpu0[p] for p in workers}
    counter.join(timeout=5)
    for t in readers:
        t.join(timeout=5)
    stdout, stderr = captured.get("out", ""), captured.get("err", "")
    m = re.search(r"^BENCH (\{.*\})$", stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk failed (rc {proc.returncode}): {stdout[-1500:]} {stderr[-1500:]}")
    data = json.loads(m.group(1))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        non200=data["non200"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        exhausted=data["exhausted"],
        wrk_cpu=rusage.ru_utime + rusage.ru_stime,
        server_cpu=server_cpu,
        redis_cpu=redis_cpu,
        first_bad=data.get("first_bad", ""),
        conns="+".join(str(conns.get(p, 0)) for p in workers) if conns else "?",
        cpu_split="/".join(f"{100 * c / total:.0f}" for c in worker_cpu.values())
        if (total := sum(worker_cpu.values())) > 0
        else "?",
    )


def run_wrk_measured(server: Server, path: str, bodies_file: Path, **kwargs) -> LoadResult:
    """:func:`run_wrk`, and the CPU other programs used meanwhile (``result.foreign``, in cores)."""
    system = SystemMeter()
    system.start()
    result = run_wrk(server, path, bodies_file, **kwargs)
    window, busy = system.stop()
    result.foreign = max(0.0, busy - result.server_cpu - result.wrk_cpu - result.redis_cpu) / window
    return result


def errors_line(results: list[LoadResult]) -> str:
    """The closing line of a script: every error over all runs, and the first bad answer."""
    bad = next((r.first_bad for r in results if r.first_bad), "")
    return f"errors over all runs: {sum(r.errors for r in results)}" + (f" (first: {bad})" if bad else "")


def connections_per_pid(port: int) -> dict[int, int]:
    """Established TCP connections on the server's port, by owning process (ss -tnp)."""
    try:
        out = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    counts: dict[int, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[int(pid)] = counts.get(int(pid), 0) + 1
    return counts


# --- client assertions ------------------------------------------------------------------------------


def presign_forms(key, client_id: str, aud: str, count: int, extra: dict, lifetime: int = 240) -> list[str]:
    """``count`` urlencoded form bodies, each with its own freshly signed client assertion
    (unique jti, exp ``lifetime`` s ahead: at most OAUTH_HSM_ASSERTION_MAX_LIFETIME = 300)."""
    import secrets

    now = int(time.time())
    head = {"alg": key.alg, "kid": key.kid}
    from as_helpers import b64, b64json

    head_b64 = b64json(head)
    out = []
    for _ in range(count):
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": aud,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        signing_input = f"{head_b64}.{b64json(claims)}"
        assertion = f"{signing_input}.{b64(key.sign_raw(signing_input.encode()))}"
        out.append(urlencode({"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion, **extra}))
    return out


def wait_for_epoch(redis_url: str, prefix: str = "oauth-hsm:") -> None:
    """Our replay store refuses assertions issued (iat, whole seconds) before its epoch began
    (flask_oauth_hsm/store.py): wait until the current second is after the epoch's."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 5
        epoch_ms = None
        while epoch_ms is None and time.monotonic() < deadline:
            epoch_ms = client.get(prefix + "epoch")
            if epoch_ms is None:
                time.sleep(0.05)
        if epoch_ms is None:
            raise RuntimeError("the server never started a replay epoch in Redis")
        target = int(int(epoch_ms) / 1000) + 1
        while time.time() < target:
            time.sleep(min(0.05, target - time.time() + 0.001))
    finally:
        client.close()


# --- raw and layered signing loops (run in spawned processes) ----------------------------------------


def realistic_claims() -> bytes:
    """An RFC 9068 access-token claims set shaped like flask_oauth_hsm.access_tokens.issue makes."""
    import secrets

    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "exp": now + 300,
        "aud": "https://rs1.example.test",
        "sub": "c-es256",
        "client_id": "c-es256",
        "iat": now,
        "jti": secrets.token_urlsafe(18),
        "scope": "read write",
    }
    return json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()


def _raw_op(key, alg: str):
    """python-pkcs11 ``key.sign`` with the mechanism our layer uses for ``alg``."""
    import hashlib

    from pkcs11 import MGF, Mechanism

    if alg == "ES256":  # CKM_ECDSA over the SHA-256 digest of the signing input
        data = hashlib.sha256(realistic_claims()).digest()
        mech, param = Mechanism.ECDSA, None
    else:  # PS256: CKM_SHA256_RSA_PKCS_PSS with (SHA256, MGF1-SHA256, 32)
        data = realistic_claims()
        mech, param = Mechanism.SHA256_RSA_PKCS_PSS, (Mechanism.SHA256, MGF.SHA256, 32)
    return lambda: key.sign(data, mechanism=mech, mechanism_param=param)


def _ours_op(signer):
    from flask_oauth_hsm.jose import jws

    payload, header = realistic_claims(), {"typ": "at+jwt"}
    return lambda: jws.sign(payload, signer, header)


def sign_worker(mode: str, alg: str, label: str, duration: float, barrier, results) -> None:
    """One measuring process: set up, wait at the barrier, sign for ``duration`` seconds.

    modes:
      raw-null     python-pkcs11 as shipped: pkcs11.lib() -> C_Initialize(NULL) (no locking), one
                   session logged in with token.open(user_pin=...)
      raw-locking  the same after C_Finalize + C_Initialize(CKF_OS_LOCKING_OK), exactly what our
                   HSM class does (flask_oauth_hsm.hsm._Cryptoki.reinitialize)
      ours         flask_oauth_hsm.jose.jws.sign(payload, hsm.key(label), {"typ": "at+jwt"})
                   (our HSM class: OS locking, session pool, stale-handle recovery)
      interleaved  both in one process on the same initialisation (our HSM class, plus one raw
                   python-pkcs11 session of the same logged-in module), alternating 0.1 s slices,
                   so both see the same machine load
    Puts (count, seconds, cpu_seconds, count_raw, seconds_raw, error) on ``results``.
    """
    try:
        import pkcs11
        from pkcs11 import ObjectClass

        from flask_oauth_hsm.hsm import HSM, HSMConfig, _Cryptoki

        module = support.SOFTHSM_MODULE
        raw = ours = None
        if mode in ("raw-null", "raw-locking"):
            lib = pkcs11.lib(module)  # C_Initialize(NULL)
            if mode == "raw-locking":
                _Cryptoki(module).reinitialize(os_locking=True)
            # SoftHSM reads its file store at C_Initialize; a process starting while another one
            # holds a token lock file may see no token. Initialise again (same flags) and retry,
            # as our HSM class does at start-up.
            for delay in (0.05, 0.1, 0.2, 0.4, 0.8, None):
                try:
                    session = lib.get_token(token_label=TOKEN_LABEL).open(user_pin=PIN)
                    break
                except pkcs11.PKCS11Error:
                    if delay is None:
                        raise
                    time.sleep(delay)
                    _Cryptoki(module).reinitialize(os_locking=(mode == "raw-locking"))
            raw = _raw_op(session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label), alg)
        else:
            hsm = HSM(HSMConfig(module=module, token_label=TOKEN_LABEL, pin=PIN))
            signer = hsm.key(label)
            ours = _ours_op(signer)
            ours()  # initialises and logs in (the anchor session)
            if mode == "interleaved":
                # the process is logged in already: a plain session shares the login
                session = hsm._module.lib.get_token(token_label=TOKEN_LABEL).open()
                raw = _raw_op(session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label), alg)

        for _ in range(20):  # warm up: sessions, key handles, code paths
            for op in (raw, ours):
                if op:
                    op()
        barrier.wait(timeout=60)
        counts = {"raw": 0, "ours": 0}
        spent = {"raw": 0.0, "ours": 0.0}
        cpu0 = time.process_time()
        start = time.perf_counter()
        end = start + duration
        now = start
        slots = [(name, op) for name, op in (("raw", raw), ("ours", ours)) if op]
        turn = 0
        while now < end:
            name, op = slots[turn % len(slots)]
            turn += 1
            slice_end = min(end, now + 0.1) if len(slots) > 1 else end
            t0, n = now, 0
            while now < slice_end:
                op()
                n += 1
                now = time.perf_counter()
            counts[name] += n
            spent[name] += now - t0
        cpu = time.process_time() - cpu0
        main = "raw" if ours is None else "ours"
        results.put((counts[main], spent[main], cpu, counts["raw"], spent["raw"], None))
    except Exception as exc:  # reported by the parent
        results.put((0, 0.0, 0.0, 0, 0.0, f"{type(exc).__name__}: {exc}"))
        with contextlib.suppress(Exception):
            barrier.abort()


@dataclass
class SignRate:
    rate: float  # signatures per second, summed over the processes ("ours" in interleaved mode)
    foreign_cores: float  # average CPU other programs used during the window (shared machine)
    raw_rate: float = 0.0  # interleaved mode: the raw loop's rate in the same processes


def measure_signing(mode: str, alg: str, label: str, processes: int, duration: float) -> SignRate:
    """Signatures per second summed over ``processes`` concurrent spawned processes."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh interpreters: no PKCS#11 state inherited
    barrier = ctx.Barrier(processes + 1)  # the parent too: it starts the machine-load meter
    results = ctx.Queue()
    procs = [ctx.Process(target=sign_worker, args=(mode, alg, label, duration, barrier, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    out = []
    meter = SystemMeter()
    try:
        with contextlib.suppress(Exception):  # a worker failed: its error is in the queue
            barrier.wait(timeout=90)
        meter.start()
        for _ in procs:
            out.append(results.get(timeout=duration + 90))
        window, busy = meter.stop()
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [r[5] for r in out if r[5]]
    if errors:
        raise RuntimeError(f"{mode} {alg}: {errors[0]}")
    ours_cpu = sum(r[2] for r in out)
    rate = sum(r[0] / r[1] for r in out)
    raw_rate = sum(r[3] / r[4] for r in out if r[4]) if mode == "interleaved" else 0.0
    return SignRate(rate, max(0.0, busy - ours_cpu) / window, raw_rate)
