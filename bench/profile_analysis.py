"""Record gunicorn workers with py-spy and say where a request's time goes (bench/token_endpoint.py
--profile). py-spy samples from outside the process (no instrumentation inside the app), 100 Hz.

Each sample of a worker thread that is inside gunicorn's ``handle`` (one connection's request:
HTTP parsing, the WSGI app, writing the response) is put in one category: the stack is walked
from the innermost frame outwards and the first frame matching a rule below names the category
(so ``json.dumps`` called from our JOSE code counts as JSON, base64 from our JOSE code as JOSE).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (category, path substring, function regex or None); first match from the innermost frame wins
RULES = [
    ("HSM sign: C_Sign + session pool (hsm.py, python-pkcs11)", "flask_oauth_hsm/hsm.py", None),
    ("HSM sign: C_Sign + session pool (hsm.py, python-pkcs11)", "/pkcs11/", None),
    ("ECDSA P-256 verify of the client assertion (cryptography)", "flask_oauth_hsm/jose/jws.py", r"(^|\.)verify_signature$"),
    ("Redis: use_once EVALSHA round trip + redis-py", "/redis/", None),
    ("Redis: use_once EVALSHA round trip + redis-py", "flask_oauth_hsm/store.py", None),
    ("JSON encode/decode (stdlib json)", "/json/", None),
    ("form parsing (read_form, parse_qsl)", "/urllib/parse.py", None),
    ("form parsing (read_form, parse_qsl)", "flask_oauth_hsm/http.py", r"(^|\.)read_form$"),
    ("security events (events.emit, logging)", "flask_oauth_hsm/events.py", None),
    ("security events (events.emit, logging)", "/logging/", None),
    ("JOSE: compact split, base64url, header checks, JWS signing input", "flask_oauth_hsm/jose/", None),
    ("endpoint logic (client_auth, token, access_tokens, registry, http)", "flask_oauth_hsm/", None),
    ("Werkzeug: request/response objects, headers, routing", "/werkzeug/", None),
    ("Flask: contexts, dispatch, signals, response building", "/flask/", None),
    ("Flask: contexts, dispatch, signals, response building", "/blinker/", None),
    ("gunicorn: HTTP parsing, WSGI environ, socket writes", "/gunicorn/", None),
]
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return exe


def start_py_spy(pid: int, out_path: Path, duration: float, *, idle: bool) -> subprocess.Popen:
    args = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--rate",
        "100",
        "--duration",
        str(int(duration)),
        "--format",
        "raw",
        "--full-filenames",
        "--output",
        str(out_path),
    ]
    if idle:
        args.append("--idle")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_py_spy(proc: subprocess.Popen, timeout: float = 60) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError("py-spy failed: " + proc.stderr.read().decode()[-1000:])


def parse(path: Path) -> list[tuple[str, list[tuple[str, str]], int]]:
    """[(process, [(func, file), ... outermost first], count)]"""
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        # with --subprocesses a worker's stack starts "process <master>:...;process <worker>:..."
        procs = [p for p in parts if p.startswith("process ")]
        process = procs[-1] if procs else ""
        frames = []
        for raw in parts[len(procs) :]:
            m = _FRAME.match(raw)
            frames.append((m.group("func"), m.group("file")) if m else (raw, ""))
        samples.append((process, frames, int(count)))
    return samples


def category(frames: list[tuple[str, str]]) -> str:
    for func, file in reversed(frames):
        for name, path_part, func_re in RULES:
            if path_part in file and (func_re is None or re.search(func_re, func)):
                return name
    return "other (stdlib called from the frames above, interpreter)"


def short(func: str, file: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{func} ({file})"


def in_request(frames) -> bool:
    # sync: SyncWorker.handle, gthread: ThreadWorker.handle, gevent: GeventWorker.handle
    return any(func.rsplit(".", 1)[-1] == "handle" and "/gunicorn/workers/" in file for func, file in frames)


def report(
    out,
    path: Path,
    *,
    master_pid: int,
    server_cpu_ms: float,
    idle: bool,
    workers_n: int = 2,
    spy_seconds: float = 0.0,
    requests: int = 0,
    threaded: bool = False,
) -> None:
    samples = parse(path)
    workers = [(p, f, c) for p, f, c in samples if p and not p.startswith(f"process {master_pid}:")]
    total = sum(c for _, _, c in workers)
    req = [(f, c) for _, f, c in workers if in_request(f)]
    req_total = sum(c for _, c in req)
    if not req_total:
        out.line("no request samples recorded")
        return
    out.line(
        f"{total} worker samples, {req_total} inside gunicorn's per-connection handle() "
        f"({req_total / total:.0%}); the rest is the worker waiting for / accepting connections"
        + (" (idle included)" if idle else "")
    )
    if threaded:
        per_req = None
        unit = ""
        out.line(
            "Threaded worker: here py-spy keeps samples of threads that are not running (its idle detection "
            "does not drop them: even pool threads waiting for work are kept), so these shares are where the "
            "handler threads spend their time - running, blocked on a socket (Redis reply, client write) or "
            "waiting to take the GIL back - not CPU."
        )
    elif idle and requests and spy_seconds:
        # idle included: every worker is sampled all the time, so samples measure wall time
        per_req = req_total * (workers_n * spy_seconds / total) * 1000 / requests
        unit = "ms of worker wall time per request"
        out.line(f"time inside handle() per request ≈ {per_req:.3f} ms (sync worker: one request at a time)")
    else:
        per_req = server_cpu_ms
        unit = "ms CPU per request (share × measured server CPU/request)"
    cats = Counter()
    for frames, c in req:
        cats[category(frames)] += c
    out.line()
    if per_req is None:
        out.table(
            ["category (request path)", "share of handler-thread samples"],
            [[name, f"{c / req_total:.1%}"] for name, c in cats.most_common()],
        )
    else:
        out.table(
            ["category (request path)", "share", f"≈ {unit}"],
            [[name, f"{c / req_total:.1%}", f"{per_req * c / req_total:.3f}"] for name, c in cats.most_common()],
        )

    self_time = Counter()
    inclusive = Counter()
    for frames, c in req:
        if frames:
            self_time[short(*frames[-1])] += c
        seen = set()
        for func, file in frames:
            if "flask_oauth_hsm/" in file or "/redis/" in file or "/werkzeug/" in file or "/flask/" in file:
                key = short(func, file)
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += c
    out.line()
    out.line(
        "Top functions by self time (innermost Python frame; C calls such as C_Sign, ECDSA verify or "
        "socket reads are charged to the Python line that made them):"
    )
    out.line()
    out.table(["function (file)", "self share"], [[k, f"{c / req_total:.1%}"] for k, c in self_time.most_common(20)])
    out.line()
    out.line("Top functions by inclusive time (our package, redis-py, Flask, Werkzeug):")
    out.line()
    out.table(["function (file)", "inclusive share"], [[k, f"{c / req_total:.1%}"] for k, c in inclusive.most_common(28)])
