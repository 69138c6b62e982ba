"""Redis faults on a real redis-server of this module's own: fail closed, recover without restart,
and the exact replay guarantee across a Redis reset (docs/security.md, "Replay state and Redis
resets"; flask_oauth_hsm/store/single_use.py)."""

from __future__ import annotations

import json
import math

import pytest

from as_helpers import assertion_form, claims_for
from test_http_server import concurrent_posts, start_gunicorn, stop

TOLERANCE = 5  # OAUTH_HSM_RESET_CLOCK_TOLERANCE's default
WINDOW = 300 + 2 * 30  # assertion max lifetime + 2 × clock skew (the defaults)


@pytest.fixture()
def env(make_as, own_redis):
    return make_as(redis_url=own_redis.url, OAUTH_HSM_RETRY_AFTER="7")


def form(env, **claims):
    return assertion_form(env.keys["c-es256"].jws(claims_for("c-es256", env.issuer, **claims)))


def minted(env, clock, ago: float = 0, **claims):
    """An assertion minted ``ago`` seconds before the (fake) now, valid for a minute from now."""
    now = clock()
    return form(env, **{"iat": math.floor(now - ago), "exp": int(now) + 60, **claims})


@pytest.fixture()
def settled(env, fake_clock):
    """The fake clock past the window of the epoch that started with the app."""
    fake_clock.advance(WINDOW + 1)
    return fake_clock


def post(env, data):
    return env.client().post("/oauth2/token", data=data)


def flush(env) -> None:
    env.state.store.client.flushall()


def test_redis_down_gives_503_and_no_token(env, own_redis):
    assert post(env, form(env)).status_code == 200
    own_redis.stop()
    response = post(env, form(env))
    assert response.status_code == 503
    assert response.get_json() == {
        "error": "temporarily_unavailable",
        "error_description": "the service is temporarily unavailable",
    }
    assert response.headers["Retry-After"] == "7" and response.headers["Cache-Control"] == "no-store"
    assert "access_token" not in response.get_data(as_text=True)
    own_redis.start()  # same port, no restart of the app
    # The restarted Redis has no epoch: the first check starts one, and a fresh assertion is
    # served at once (no second of refusals).
    assert post(env, form(env)).status_code == 200


def test_restart_without_persistence_refuses_old_assertions_and_serves_new_ones(env, own_redis, settled):
    old = minted(env, settled, ago=20)  # minted a while ago, used now
    assert post(env, old).status_code == 200
    own_redis.restart()  # every jti is forgotten, and so is the epoch
    settled.advance(0.1)
    replay = post(env, old)
    assert replay.status_code == 401 and replay.get_json()["error"] == "invalid_client"
    assert post(env, minted(env, settled)).status_code == 200


def test_flushall_is_the_same_as_a_restart(env, settled):
    old = minted(env, settled, ago=TOLERANCE + 2)
    assert post(env, old).status_code == 200
    flush(env)
    assert post(env, old).status_code == 401


def test_fresh_assertion_in_the_resets_own_second(env, settled):
    settled.set(math.floor(settled()) + 0.9)  # the reset happens late in a second
    flush(env)
    assert post(env, minted(env, settled)).status_code == 200


@pytest.mark.parametrize("behind", [1, 2, 3, 4, 5])
def test_client_clock_behind_within_the_tolerance_is_served_at_once(env, settled, behind):
    flush(env)
    assert post(env, minted(env, settled, ago=behind)).status_code == 200


def test_the_exact_boundary_of_the_tolerance(env, settled):
    """The guarantee, cell by cell: after a reset at epoch E, an id with iat < ⌊E⌋ − tolerance is
    refused until the window has passed; one with iat ≥ ⌊E⌋ − tolerance is accepted once."""
    used_just_before = minted(env, settled, ago=TOLERANCE)  # minted and used just before the reset
    assert post(env, used_just_before).status_code == 200
    flush(env)
    epoch = env.state.store.ensure_epoch()  # the new epoch starts at the fake now
    assert math.floor(epoch) - TOLERANCE == math.floor(settled() - TOLERANCE)
    assert post(env, used_just_before).status_code == 200  # the documented residual: once more...
    assert post(env, used_just_before).status_code == 401  # ...and once only
    assert post(env, minted(env, settled, ago=TOLERANCE + 1)).status_code == 401
    settled.advance(WINDOW)  # every assertion of the old state has expired
    assert post(env, minted(env, settled, ago=200)).status_code == 200


def test_undated_assertions_wait_for_the_window_after_a_reset(env, settled):
    flush(env)
    assert post(env, minted(env, settled, iat=None)).status_code == 401  # cannot show it is new
    settled.advance(WINDOW)
    assert post(env, minted(env, settled, iat=None)).status_code == 200


def test_fifty_concurrent_uses_right_after_a_reset_give_one_token(env, tmp_path):
    proc, base = start_gunicorn(env.settings, workers=3, worker_class="gthread", preload=True)
    try:
        flush(env)
        statuses = concurrent_posts(base + "/oauth2/token", form(env))
        assert sorted(statuses) == [200] + [401] * 49, json.dumps(statuses)
    finally:
        stop(proc)
