"""Faults injected into the real components, under load: fail closed, recover without restart."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests

import support
from as_helpers import RS1, assertion_form, claims_for
from conftest import as_settings, local_token_only
from scenarios import pkjwt_client, resource_server
from test_http_server import concurrent_posts, start_granian, start_gunicorn, start_server, stop


def fresh_form(env, client_id="c-es256"):
    return assertion_form(env.keys[client_id].jws(claims_for(client_id, env.issuer)))


def finalize_module_underneath() -> None:
    dll = ctypes.CDLL(support.SOFTHSM_MODULE)
    dll.C_Finalize.argtypes = [ctypes.c_void_p]
    assert dll.C_Finalize(None) == 0


# --- HSM ---------------------------------------------------------------------------------------------


def test_module_failure_gives_503_then_recovers(as_env):
    local_token_only("finalises SoftHSM in this process; test_remote_hsm.py kills the remote server instead")
    client = as_env.client()
    assert client.post("/oauth2/token", data=fresh_form(as_env)).status_code == 200
    finalize_module_underneath()
    r = client.post("/oauth2/token", data=fresh_form(as_env))
    assert r.status_code == 503 and r.get_json()["error"] == "temporarily_unavailable"
    assert r.headers["Retry-After"] and "access_token" not in r.get_data(as_text=True)
    assert "PKCS" not in r.get_data(as_text=True) and "CKR" not in r.get_data(as_text=True)
    assert client.post("/oauth2/token", data=fresh_form(as_env)).status_code == 200
    assert client.get("/oauth2/ready").status_code == 200


_TOKEN_GONE_APP = textwrap.dedent(
    """
    import ctypes, json, os, sys, time
    sys.path.insert(0, {tests!r})
    from as_app import build_as_app
    settings, form, tokendir, module = json.loads(sys.argv[1])
    client = build_as_app(settings).test_client()
    results = {{"before": client.get("/oauth2/ready").get_json()}}
    ctypes.CDLL(module).C_Finalize(None)  # the module re-reads the store on its next initialisation
    os.rename(tokendir, tokendir + ".gone")
    os.mkdir(tokendir)
    try:
        ready = client.get("/oauth2/ready")
        token = client.post("/oauth2/token", data=form)
        results["gone"] = [ready.status_code, ready.get_json()["hsm"], bool(ready.headers.get("Retry-After")),
                           client.get("/oauth2/health").status_code, token.status_code,
                           "access_token" in token.get_data(as_text=True)]
    finally:
        os.rmdir(tokendir)
        os.rename(tokendir + ".gone", tokendir)
    time.sleep(1.1)  # the reconnect back-off
    results["back"] = [client.get("/oauth2/ready").status_code]
    print(json.dumps(results))
    """
)


def test_token_gone_turns_readiness_red_until_it_is_back(as_env, isolated_store, tmp_path, redis_server):
    """The token store pulled away under a running app (in a child process, on a store of its own)."""
    registry = tmp_path / "registry.json"
    registry.write_text(
        json.dumps(
            {
                "clients": [pkjwt_client("c-es256", as_env.keys["c-es256"], resources=[RS1])],
                "resource_servers": [resource_server("rs-1", RS1, [as_env.keys["rs-1"].public_jwk])],
            }
        )
    )
    settings = {
        **as_settings(redis_server.url, str(registry)),
        **isolated_store.settings(),
        "OAUTH_HSM_PUBLISHED_KEYS": "",
        "OAUTH_HSM_ENCRYPTION_KEYS": "",
    }
    code = _TOKEN_GONE_APP.format(tests=os.path.dirname(__file__))
    args = json.dumps([settings, fresh_form(as_env), str(isolated_store.tokendir), support.SOFTHSM_MODULE])
    result = subprocess.run(
        [sys.executable, "-c", code, args], capture_output=True, text=True, timeout=60, env=isolated_store.env()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results["before"] == {"status": "ok", "hsm": "ok", "redis": "ok"}
    assert results["gone"] == [503, "unavailable", True, 200, 503, False]  # alive, not ready, nothing issued
    assert results["back"] == [200]


def _wait_for(condition, timeout: float = 20.0) -> None:
    """Poll a condition (bounded): the server notices a token store change on its next attempt."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


# --- gunicorn and granian: workers, races, Redis killed under load ---------------------------------------------


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_preloaded_workers_each_use_the_token(as_env, worker_class):
    proc, base = start_gunicorn(as_env.settings, workers=3, worker_class=worker_class, preload=True)
    try:
        with requests.Session() as s:
            statuses = [s.post(base + "/oauth2/token", data=fresh_form(as_env), timeout=10).status_code for _ in range(30)]
        assert statuses == [200] * 30
    finally:
        stop(proc)


def test_granian_workers_each_use_the_token(as_env):
    proc, base = start_granian(as_env.settings, workers=3)
    try:
        with requests.Session() as s:
            statuses = [s.post(base + "/oauth2/token", data=fresh_form(as_env), timeout=10).status_code for _ in range(30)]
        assert statuses == [200] * 30
    finally:
        stop(proc)


@pytest.mark.parametrize("kind", ["gunicorn", "granian"])
def test_fifty_concurrent_uses_of_one_assertion_give_one_token(as_env, kind):
    proc, base = start_server(kind, as_env.settings)
    try:
        statuses = concurrent_posts(base + "/oauth2/token", fresh_form(as_env))
        assert sorted(statuses) == [200] + [401] * 49
    finally:
        stop(proc)


@pytest.mark.parametrize("kind", ["gunicorn", "granian"])
def test_redis_killed_under_load(as_env, tmp_path, kind):
    redis_server = support.RedisServer(tmp_path / "redis")
    redis_server.start()
    settings = as_settings(redis_server.url, as_env.settings["OAUTH_HSM_REGISTRY"])
    proc, base = start_server(kind, settings)
    results: list[tuple[float, int, bool, str | None]] = []
    stop_at = time.monotonic() + 8  # bounded: the load stops by itself

    def load():
        with requests.Session() as s:
            while time.monotonic() < stop_at:
                r = s.post(base + "/oauth2/token", data=fresh_form(as_env), timeout=10)
                results.append((time.monotonic(), r.status_code, "access_token" in r.text, r.headers.get("Retry-After")))

    try:
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        redis_server.stop()
        time.sleep(2)
        redis_server.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop(proc)
        redis_server.stop()
    statuses = {status for _, status, _, _ in results}
    assert statuses <= {200, 503}, statuses  # fresh assertions are served at once after the restart
    assert all(has_token == (status == 200) for _, status, has_token, _ in results)
    assert all(retry for _, status, _, retry in results if status == 503)
    assert any(status == 503 for _, status, _, _ in results)
    last_second = [status for at, status, _, _ in results if at > stop_at - 1.5]
    assert last_second and all(status == 200 for status in last_second), last_second[-20:]
