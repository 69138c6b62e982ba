"""The dev scripts behind `./dev run` and `./dev stop`, and softhsm/env.sh, run as a user runs them.

`./dev run` execs softhsm/run-example.sh and `./dev stop` execs softhsm/stop-dev.sh (after
installing packages and the venv, which ./dev test has just done); the scripts run here with a
temporary DEV_DIR and free ports, so nothing touches the checkout's .dev/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import support

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OAUTH_HSM_", "EXAMPLE_", "DEV_", "SOFTHSM", "_OAUTH_HSM_"))}
    env.update(extra)
    return env


def env_sh(script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"source softhsm/env.sh && {script}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )


def test_env_sh_names_the_settings_it_keeps_never_their_values(tmp_path):
    quiet = env_sh("echo $OAUTH_HSM_PIN", clean_env(DEV_DIR=str(tmp_path)))
    assert quiet.stdout.strip() == "1234-dev" and quiet.stderr == ""
    kept = env_sh(
        "echo $OAUTH_HSM_PIN $OAUTH_HSM_ISSUER",
        clean_env(DEV_DIR=str(tmp_path), OAUTH_HSM_PIN="s3cret-pin", OAUTH_HSM_TOKEN_LABEL="oauth-hsm-dev"),
    )
    assert kept.stdout.split() == ["s3cret-pin", "http://127.0.0.1:5000"]
    assert "keeping OAUTH_HSM_PIN from your environment" in kept.stderr
    assert "s3cret-pin" not in kept.stderr
    assert "TOKEN_LABEL" not in kept.stderr  # the same value as the dev one: nothing to say
    # Said once: the scripts source env.sh again from inside each other.
    nested = env_sh("source softhsm/env.sh", clean_env(DEV_DIR=str(tmp_path), OAUTH_HSM_PIN="s3cret-pin"))
    assert nested.stderr.count("keeping") == 1


def test_the_issuer_follows_the_port(tmp_path):
    out = env_sh(
        "echo $OAUTH_HSM_ISSUER $OAUTH_HSM_REDIS_URL $EXAMPLE_RESOURCE",
        clean_env(DEV_DIR=str(tmp_path), EXAMPLE_PORT="8080", DEV_REDIS_PORT="6391"),
    )
    assert out.stdout.split() == ["http://127.0.0.1:8080", "redis://127.0.0.1:6391/0", "http://127.0.0.1:8080/api"]


def _as_in_a_terminal() -> None:
    """The signal state a terminal gives its foreground job: Ctrl-C neither ignored nor blocked.
    A test process may have inherited either (a CI runner, a background job; bash cannot trap a
    signal that was ignored when it started), and the script would then never see the SIGINT."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_state(pid: int) -> str:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return ""
    return " ".join(line for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


@pytest.fixture
def dev_run(tmp_path):
    """softhsm/run-example.sh in a session of its own; always cleaned up through stop-dev.sh."""
    env = clean_env(
        DEV_DIR=str(tmp_path / "dev"),
        EXAMPLE_PORT=str(support.free_port()),
        DEV_REDIS_PORT=str(support.free_port()),
        VENV=str(Path(sys.executable).parent.parent),
    )
    with open(tmp_path / "run.log", "w") as log:  # the child has its own copy of the descriptor
        proc = subprocess.Popen(
            ["bash", "softhsm/run-example.sh"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_as_in_a_terminal,
        )
    url = f"http://127.0.0.1:{env['EXAMPLE_PORT']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            try:
                with urllib.request.urlopen(url + "/oauth2/ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        yield proc, env, tmp_path
    finally:
        subprocess.run(["bash", "softhsm/stop-dev.sh"], cwd=ROOT, env=env, capture_output=True, timeout=60)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def redis_pid(env) -> int:
    return int((Path(env["DEV_DIR"]) / "redis" / "redis.pid").read_text())


def gone(pid: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_stops_the_server_and_the_redis_it_started(dev_run):
    proc, env, log_dir = dev_run
    redis = redis_pid(env)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        state = _signal_state(proc.pid)
        pytest.fail(f"still running 60 s after Ctrl-C ({state}):\n" + (log_dir / "run.log").read_text()[-3000:])
    assert gone(redis)


def test_dev_stop_stops_a_server_whose_terminal_is_gone(dev_run):
    proc, env, _ = dev_run
    redis, server = redis_pid(env), int((Path(env["DEV_DIR"]) / "server.pid").read_text())
    out = subprocess.run(["./dev", "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "[server] stopped" in out.stderr
    # Redis: stopped by ./dev stop, or by run-example.sh, which exits with the server and stops the
    # Redis it started (whichever comes first); gone either way.
    assert proc.wait(timeout=60) is not None
    assert gone(server) and gone(redis)
    again = subprocess.run(["./dev", "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "[server] not running" in again.stderr and "[redis] not running" in again.stderr
