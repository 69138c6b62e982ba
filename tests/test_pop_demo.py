"""The example app as `./dev run` starts it (softhsm/run-example.sh: dev token, keys, registry,
Redis, gunicorn), and the demo client getting and using a DPoP token, a symmetric PoP token and an
asymmetric PoP token against /api/items, every key in the dev token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import support

ROOT = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask", "--app", "example_app", "oauth-hsm"]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    dev = tmp_path_factory.mktemp("dev")
    port, redis_port = support.free_port(), support.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTH_HSM_")}
    env.update(
        {
            "DEV_DIR": str(dev),
            "SOFTHSM2_CONF": str(dev / "softhsm" / "softhsm2.conf"),
            "EXAMPLE_PORT": str(port),
            "DEV_REDIS_PORT": str(redis_port),
            "VENV": str(Path(sys.executable).parent.parent),
        }
    )
    log_path = support.log_file("example-")
    with open(log_path, "wb") as log:  # the child has its own copy of the descriptor
        proc = subprocess.Popen(
            ["bash", "softhsm/run-example.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, Path(log_path).read_text()[-3000:]
            try:
                if requests.get(base + "/oauth2/jwks", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        settings = subprocess.run(
            ["bash", "-c", "source softhsm/env.sh && env | grep ^OAUTH_HSM_"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        yield base, {**env, **dict(line.split("=", 1) for line in settings.splitlines())}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # gunicorn (run-example.sh execs it) and its workers
        proc.wait(timeout=30)
        pidfile = dev / "redis" / "redis.pid"  # the Redis the script started, daemonised
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


@pytest.mark.parametrize(
    "binding,token_type", [("bearer", "Bearer"), ("dpop", "DPoP"), ("pop-symmetric", "pop"), ("pop-asymmetric", "pop")]
)
def test_demo_client_gets_and_uses_a_bound_token(example, binding, token_type):
    base, env = example
    result = subprocess.run(
        [*FLASK, "demo-client", "--binding", binding, "--api", base + "/api/items"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'"token_type": "{token_type}"' in result.stdout
    assert f"GET {base}/api/items -> 200" in result.stdout and '"client_id":"demo-client"' in result.stdout
