"""A wrong PIN stops the whole server after at most one login attempt per process.

Every documented way of serving runs example_app with a wrong PIN against a real SoftHSM token,
through OpenSC's pkcs11-spy, which wraps the real module and logs every PKCS#11 call: the
``C_Login`` entries in its log are the login attempts the token saw. A real HSM locks its PIN
after a handful of failures, so a server that boots a new worker after each failed one (what
gunicorn does with a worker exiting with status 1) would lock it within seconds.

The token store is this module's own (a temporary directory), and so is each server's log.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import support

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "pin-storm"
WRONG_PIN = "0000-wrong"
WORKERS = 2
BOUND = 60  # seconds a server gets to stop by itself; it takes one or two

PIN_LINE = f"flask-oauth-hsm: OAUTH_HSM_PIN: the user PIN is incorrect for token '{TOKEN}'"


def spy_module() -> str:
    """pkcs11-spy.so from Debian's opensc-pkcs11 (./dev test installs it)."""
    found = sorted(glob.glob("/usr/lib/*/pkcs11/pkcs11-spy.so") + glob.glob("/usr/lib/*/pkcs11-spy.so"))
    if not found:
        pytest.fail("pkcs11-spy.so not found: apt-get install opensc-pkcs11 (./dev test does)")
    return found[0]


@dataclass
class PinEnv:
    env: dict
    tmp: Path


@pytest.fixture(scope="module")
def pin_env(tmp_path_factory) -> PinEnv:
    """A token store of our own with one token and its signing key; settings for example_app."""
    tmp = tmp_path_factory.mktemp("pin-storm")
    conf = support.write_softhsm_conf(tmp / "softhsm")
    registry = tmp / "registry.json"
    registry.write_text('{"clients": [], "resource_servers": []}')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OAUTH_HSM_", "PKCS11SPY"))}
    env.update(
        {
            "SOFTHSM2_CONF": str(conf),
            "OAUTH_HSM_PKCS11_MODULE": support.SOFTHSM_MODULE,
            "OAUTH_HSM_TOKEN_LABEL": TOKEN,
            "OAUTH_HSM_PIN": support.USER_PIN,
            "OAUTH_HSM_ISSUER": "http://127.0.0.1:5000",
            "OAUTH_HSM_SIGNING_KEY": "sig",
            "OAUTH_HSM_REDIS_URL": f"redis://127.0.0.1:{support.free_port()}/0",  # never reached
            "OAUTH_HSM_REGISTRY": str(registry),
        }
    )
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", support.USER_PIN, "--so-pin", support.SO_PIN],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "example_app",
            "oauth-hsm",
            "keys",
            "generate",
            "--alg",
            "ES256",
            "--use",
            "sig",
            "--label",
            "sig",
        ],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=BOUND,
    )
    return PinEnv(env, tmp)


@dataclass
class Run:
    returncode: int
    output: str
    logins: int


def run_spied(pin_env: PinEnv, argv: list[str], name: str, pin: str = WRONG_PIN) -> Run:
    """Run ``argv`` (a server, or a CLI command) with the module wrapped by pkcs11-spy; the server
    must end by itself within BOUND seconds. Returns its status, its output and the logins."""
    spy_log = pin_env.tmp / f"{name}.spy.log"
    out_path = pin_env.tmp / f"{name}.out.log"
    env = {
        **pin_env.env,
        "OAUTH_HSM_PKCS11_MODULE": spy_module(),
        "PKCS11SPY": support.SOFTHSM_MODULE,
        "PKCS11SPY_OUTPUT": str(spy_log),
        "OAUTH_HSM_PIN": pin,
    }
    with open(out_path, "w") as out:
        # A session of its own: if the server does not stop, we kill it and every worker it made.
        proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            returncode = proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker the server left behind, if any
    output = out_path.read_text()
    logins = len(re.findall(r"^\d+: C_Login$", spy_log.read_text(), re.M)) if spy_log.exists() else 0
    assert returncode is not None, f"{name}: still running after {BOUND} s ({logins} logins)\n{output[-3000:]}"
    print(f"{name}: exit status {returncode}, {logins} C_Login")  # shown with pytest -s
    return Run(returncode, output, logins)


def gunicorn(worker_class: str, *, preload: bool) -> list[str]:
    import gunicorn.config

    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--worker-class",
        worker_class,
        "--bind",
        f"127.0.0.1:{support.free_port()}",
    ]
    if worker_class == "gthread":
        args += ["--threads", "8"]
    if any(s.name == "control_socket_disable" for s in gunicorn.config.KNOWN_SETTINGS):
        args.append("--no-control-socket")  # gunicorn ≥ 25.1 shares one control socket path otherwise
    if preload:
        args.append("--preload")
    return [*args, "example_app:app"]


def test_the_spy_counts_real_logins(pin_env):
    """With the right PIN a CLI command logs in exactly once: the count below is real."""
    run = run_spied(
        pin_env,
        [sys.executable, "-m", "flask", "--app", "example_app", "oauth-hsm", "keys", "list"],
        "control",
        pin=support.USER_PIN,
    )
    assert run.returncode == 0, run.output
    assert run.logins == 1


def assert_one_line(run: Run) -> None:
    """Our message is one line; no traceback comes from our package."""
    assert PIN_LINE in run.output.splitlines()
    assert "flask_oauth_hsm/" not in run.output


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent"])
def test_gunicorn_halts_after_one_login_per_worker(pin_env, worker_class):
    """Without --preload (how ./dev run serves) each worker loads the app and fails once; the
    worker's status 4 halts the arbiter ("App failed to load.") instead of booting another."""
    run = run_spied(pin_env, gunicorn(worker_class, preload=False), f"gunicorn-{worker_class}")
    booted = run.output.count("Booting worker with pid")
    # 4; or 1 when the second worker's exit reaches the arbiter while it is already halting (it
    # raises HaltServer again, with a traceback: benoitc/gunicorn#2186). Either way, it stopped.
    assert run.returncode in (4, 1), run.output
    assert "App failed to load." in run.output
    assert booted == WORKERS, run.output  # no replacement worker was ever booted
    assert 1 <= run.logins <= booted
    assert_one_line(run)


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent"])
def test_gunicorn_preload_stops_before_any_worker(pin_env, worker_class):
    run = run_spied(pin_env, gunicorn(worker_class, preload=True), f"gunicorn-{worker_class}-preload")
    assert run.returncode == 4, run.output
    assert "Booting worker" not in run.output
    assert run.logins == 1
    assert_one_line(run)
    assert "Traceback" not in run.output


@pytest.mark.parametrize("options", [[], ["--debug"], ["--reload", "--no-debugger"]], ids=["plain", "debug", "reload"])
def test_flask_run_stops(pin_env, options):
    """flask run loads the app before it starts the reloader, so the error stops it in the parent:
    no reloader child is started (a child exiting with 3 would be restarted, 4 ends it)."""
    argv = [sys.executable, "-m", "flask", "--app", "example_app", "run", "--port", str(support.free_port()), *options]
    run = run_spied(pin_env, argv, "flask-run-" + "-".join(o.strip("-") for o in options))
    assert run.returncode == 4, run.output
    assert run.logins == 1
    assert_one_line(run)
    assert "Traceback" not in run.output


@pytest.mark.parametrize("respawn", [False, True], ids=["default", "respawn-failed-workers"])
def test_granian_stops(pin_env, respawn):
    """granian stops when a worker exits; with --respawn-failed-workers it would respawn failing
    workers for ever (they fail in turn, which its crash-loop check misses), so the failing worker
    asks the main process to shut down."""
    argv = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--workers",
        str(WORKERS),
        "--port",
        str(support.free_port()),
        "--no-ws",
    ]
    if respawn:
        argv.append("--respawn-failed-workers")
    run = run_spied(pin_env, [*argv, "example_app:app"], "granian-respawn" if respawn else "granian")
    spawned = run.output.count("Spawning worker-")
    # granian reports the shutdown it was asked for as success (0), a worker's death as 1.
    assert run.returncode in (0, 1), run.output
    assert "Shutting down granian" in run.output
    assert WORKERS <= spawned <= 2 * WORKERS, run.output
    assert 1 <= run.logins <= spawned
    assert_one_line(run)


_RECONNECT = """
import ctypes, json, sys, time
sys.path.insert(0, {tests!r})
from as_app import build_as_app
settings, module = json.loads(sys.argv[1])
client = build_as_app(settings).test_client()
statuses = [client.get("/oauth2/ready").status_code]                # logged in with the right PIN
import subprocess
subprocess.run(["pkcs11-tool", "--module", {softhsm!r}, "--token-label", {token!r}, "--login", "--pin", {pin!r},
                "--change-pin", "--new-pin", "9999-new"], check=True, capture_output=True)   # an admin changes it
ctypes.CDLL(module).C_Finalize(None)                                  # a reconnect is forced
for _ in range(4):
    statuses.append(client.get("/oauth2/ready").status_code)
    time.sleep(1.2)                                                   # past the reconnect back-off each time
statuses.append(client.get("/oauth2/health").status_code)
print(json.dumps(statuses))
"""


def test_a_pin_refused_at_reconnect_is_never_tried_again(isolated_store, redis_server):
    """After a successful start, the token refuses the PIN at a reconnect (the PIN was changed):
    the process tries it once, answers 503 from then on, and never logs in again — even though
    readiness probes keep coming, each after the reconnect back-off."""
    spy_log = isolated_store.conf.parent / "reconnect.spy.log"
    registry = isolated_store.conf.parent / "registry.json"
    registry.write_text('{"clients": [], "resource_servers": []}')
    settings = {
        **isolated_store.settings(),
        "OAUTH_HSM_PKCS11_MODULE": spy_module(),
        "OAUTH_HSM_ISSUER": "https://as.example.test",
        "OAUTH_HSM_SIGNING_KEY": "sig-es256",
        "OAUTH_HSM_REDIS_URL": redis_server.url,
        "OAUTH_HSM_REGISTRY": str(registry),
        "OAUTH_HSM_RATE_LIMITS": "off",
    }
    code = _RECONNECT.format(
        tests=str(ROOT / "tests"), softhsm=support.SOFTHSM_MODULE, token=support.ISOLATED_TOKEN, pin=support.USER_PIN
    )
    env = isolated_store.env(PKCS11SPY=support.SOFTHSM_MODULE, PKCS11SPY_OUTPUT=str(spy_log))
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps([settings, spy_module()])], env=env, capture_output=True, text=True, timeout=BOUND
    )
    assert result.returncode == 0, result.stderr[-2000:]
    statuses = json.loads(result.stdout.strip().splitlines()[-1])
    assert statuses == [200, 503, 503, 503, 503, 200]  # ready, then never ready again; alive throughout
    logins = len(re.findall(r"^\d+: C_Login$", spy_log.read_text(), re.M))
    assert logins == 2  # the start, and the one refused attempt
    assert "no further login attempts in this process" in result.stderr


@pytest.mark.parametrize(
    ("argv", "env", "respawns"),
    [
        (["/venv/bin/granian", "--interface", "wsgi", "app:app"], {}, False),
        (["/venv/lib/python3.11/site-packages/granian/__main__.py", "app:app"], {}, False),
        (["/venv/bin/granian", "--respawn-failed-workers", "app:app"], {}, True),
        (["/venv/bin/granian", "--respawn-failed-workers", "--no-respawn-failed-workers", "app:app"], {}, False),
        (["/venv/bin/granian", "app:app"], {"GRANIAN_RESPAWN_FAILED_WORKERS": "true"}, True),
        (["/venv/bin/granian", "app:app"], {"GRANIAN_RESPAWN_FAILED_WORKERS": "0"}, False),
        (["/srv/run_embedded.py"], {}, True),  # Granian(...).serve() in a script of its own: cannot tell
    ],
)
def test_a_granian_worker_signals_its_main_process_only_when_granian_would_respawn_it(monkeypatch, argv, env, respawns):
    """Without --respawn-failed-workers granian stops on a worker's exit by itself, and a SIGTERM
    arriving at the same moment can hang granian 2.8's main process (serving.py says how)."""
    from flask_oauth_hsm.serving import _granian_respawns_failed_workers

    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delenv("GRANIAN_RESPAWN_FAILED_WORKERS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _granian_respawns_failed_workers() is respawns
