"""Refresh tokens across a rotation of the AS encryption key (key-set mode, docs/hsm-and-keys.md):
a token sealed to the retired key still refreshes during the overlap — which counts one refresh-token
idle lifetime — and the token that replaces it is sealed to the new active key."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import ASEnv, as_settings
from flask_oauth_hsm.jose import jwe
from scenarios import user_scenario
from test_key_rotation import KeySetEnv
from user_host import build_user_app
from users_helpers import Flow


@pytest.fixture()
def users_key_set(hsm, redis_server, tmp_path) -> tuple[KeySetEnv, ASEnv, str]:
    name = "ks-users-" + uuid.uuid4().hex[:8]
    scenario = user_scenario()
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps(scenario.registry))
    settings = as_settings(
        redis_server.url,
        str(registry),
        OAUTH_HSM_KEY_SET=name,
        OAUTH_HSM_SIGNING_KEY="",
        OAUTH_HSM_PUBLISHED_KEYS="",
        OAUTH_HSM_ENCRYPTION_KEYS="",
        OAUTH_HSM_REDIS_PREFIX=f"{name}:",
        OAUTH_HSM_CONSENT_LIFETIME="0",
    )
    ks = KeySetEnv(hsm, scenario, settings, name)
    old_enc = ks.generate("enc", "active")
    ks.generate("sig", "active")
    return ks, ASEnv(build_user_app(settings), scenario.keys, None, settings), old_enc


def sealed_to(token: str) -> str:
    return str(jwe.protected_header(token)["kid"])


def test_a_refresh_token_outlives_the_rotation_of_its_key(users_key_set, fake_clock):
    ks, env, old_label = users_key_set
    old_enc = ks.kid(old_label)
    flow = Flow(env)
    tokens = flow.tokens()
    assert sealed_to(tokens["refresh_token"]) == old_enc
    new_label = ks.generate("enc", "next")
    fake_clock.advance(ks.timings.publication)
    ks.cli("rotate", "--use", "enc")
    fake_clock.advance(ks.timings.refresh)
    assert ks.timings.overlap("enc") > env.state.settings.refresh_token_idle_lifetime
    fake_clock.advance(env.state.settings.refresh_token_idle_lifetime - ks.timings.publication - 60)  # idle, but valid
    refreshed = flow.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_json()
    assert sealed_to(refreshed.get_json()["refresh_token"]) == ks.kid(new_label)  # resealed to the active key
