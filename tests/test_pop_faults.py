"""Redis faults on the proof-of-possession paths, on a redis-server of this module's own: DPoP
replay state, nonce records and symmetric PoP keys fail closed (503 with Retry-After, nothing
issued, nothing let through), and a Redis flush does not reopen the DPoP replay window."""

from __future__ import annotations

import pytest

from as_helpers import ClientKey
from pop_helpers import POP_SETTINGS, RSP, ath, dpop_proof, pop_world, post_token, rs_settings, token_form

__all__ = ["pop_world"]  # fixtures


@pytest.fixture()
def env(make_as, pop_world, own_redis):
    return make_as(
        pop_world.scenario,
        redis_url=own_redis.url,
        protect_api=True,
        OAUTH_HSM_RETRY_AFTER="7",
        OAUTH_HSM_DPOP_NONCE="optional",
        **POP_SETTINGS,
        **rs_settings(RSP),
    )


def unavailable(response):
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] in ("5", "7") and "access_token" not in response.get_data(as_text=True)


@pytest.mark.parametrize("kind", ["dpop", "symmetric"])
def test_redis_down_issues_nothing(env, own_redis, kind):
    headers = {"DPoP": dpop_proof(ClientKey.new())} if kind == "dpop" else {}
    extra = {"token_type": "pop"} if kind == "symmetric" else {}
    assert post_token(env, token_form(env, "p-both", resource=RSP, **extra), headers).status_code == 200
    own_redis.stop()
    headers = {"DPoP": dpop_proof(ClientKey.new())} if kind == "dpop" else {}
    unavailable(post_token(env, token_form(env, "p-both", resource=RSP, **extra), headers))


def test_resource_server_fails_closed_without_its_replay_state(env, own_redis):
    key = ClientKey.new()
    token = post_token(env, token_form(env, "d-plain", resource=RSP), {"DPoP": dpop_proof(key)}).get_json()["access_token"]
    own_redis.stop()
    response = env.client().get(
        "/api/items",
        headers={"Authorization": f"DPoP {token}", "DPoP": dpop_proof(key, "GET", RSP + "/api/items", ath=ath(token))},
    )
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_a_flush_does_not_reopen_the_dpop_replay_window(env):
    """The reset rule (docs/security.md): after a flush, a proof dated before the new epoch may have
    been used already, so it is refused; a fresh one is served at once."""
    import time

    old = dpop_proof(ClientKey.new(), iat=int(time.time()) - 20)
    env.state.store.client.flushall()
    response = post_token(env, token_form(env, "d-plain"), {"DPoP": old})
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_dpop_proof"
    assert post_token(env, token_form(env, "d-plain"), {"DPoP": dpop_proof(ClientKey.new())}).status_code == 200
