"""Redis faults on a real redis-server of this module's own: fail closed, recover without restart."""

from __future__ import annotations

import json

import pytest

import support
from as_helpers import assertion_form, claims_for
from conftest import as_settings, wait_for_next_second


@pytest.fixture()
def own_redis(tmp_path):
    server = support.RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def app_on_own_redis(as_env, own_redis):
    from example_app import create_app

    settings = as_settings(own_redis.url, as_env.settings["OAUTH_HSM_REGISTRY"], OAUTH_HSM_RETRY_AFTER="7")
    app = create_app(settings)
    wait_for_next_second()
    return app, own_redis


def _assertion(as_env, **claims):
    return assertion_form(as_env.keys["c-es256"].jws(claims_for("c-es256", as_env.issuer, **claims)))


def test_redis_down_gives_503_and_no_token(as_env, app_on_own_redis):
    app, redis_server = app_on_own_redis
    client = app.test_client()
    assert client.post("/oauth2/token", data=_assertion(as_env)).status_code == 200
    redis_server.stop()
    response = client.post("/oauth2/token", data=_assertion(as_env))
    assert response.status_code == 503
    assert response.get_json() == {"error": "temporarily_unavailable", "error_description": "the service is temporarily unavailable"}
    assert response.headers["Retry-After"] == "7" and response.headers["Cache-Control"] == "no-store"
    assert "access_token" not in response.get_data(as_text=True)
    redis_server.start()  # same port, no restart of the app
    # The restarted Redis has no epoch: the first check starts one, and assertions issued in
    # that same second are refused (fail closed). Fresh ones succeed from the next second on.
    statuses = []
    for _ in range(3):
        statuses.append(client.post("/oauth2/token", data=_assertion(as_env)).status_code)
        if statuses[-1] == 200:
            break
        wait_for_next_second()
    assert statuses[-1] == 200 and set(statuses[:-1]) <= {401}, statuses


def test_flushed_redis_does_not_reopen_the_replay_window(as_env, app_on_own_redis):
    app, redis_server = app_on_own_redis
    client = app.test_client()
    form = _assertion(as_env)
    assert client.post("/oauth2/token", data=form).status_code == 200
    redis_server.restart()  # no persistence: every jti is forgotten, and so is the epoch
    replay = client.post("/oauth2/token", data=form)
    assert replay.status_code == 401 and replay.get_json()["error"] == "invalid_client"
    wait_for_next_second()
    fresh = client.post("/oauth2/token", data=_assertion(as_env))  # issued after the reset
    assert fresh.status_code == 200, json.dumps(fresh.get_json())


def test_flushall_is_the_same_as_a_restart(as_env, app_on_own_redis):
    app, _ = app_on_own_redis
    client = app.test_client()
    form = _assertion(as_env)
    assert client.post("/oauth2/token", data=form).status_code == 200
    app.extensions["oauth_hsm"].store.client.flushall()
    assert client.post("/oauth2/token", data=form).status_code == 401
