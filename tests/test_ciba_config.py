"""CIBA and pairwise configuration: registry rules, start-up checks, hooks, metadata exactly as enforced."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from ciba_helpers import CIBA, PAIRWISE_KEY, ciba_scenario, configure_device, ensure_pairwise_key
from flask_oauth_hsm.clients.schema import build_client
from flask_oauth_hsm.errors import ConfigError, KeyNotFound
from pop_helpers import WRAP_KEY, ensure_secret_keys

KEY = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    "use": "sig",
}
BASE = {"client_id": "x", "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [KEY]}, "scope": "openid"}


@pytest.mark.parametrize(
    "extra,field,message",
    [
        ({"grant_types": [CIBA]}, "backchannel_token_delivery_mode", "needs backchannel_token_delivery_mode poll"),
        ({"grant_types": [CIBA], "backchannel_token_delivery_mode": "push"}, "backchannel_token_delivery_mode", "Must be one of"),
        ({"backchannel_token_delivery_mode": "poll"}, "backchannel_token_delivery_mode", "only for clients with the"),
        (
            {
                "grant_types": [CIBA],
                "backchannel_token_delivery_mode": "poll",
                "token_endpoint_auth_method": "none",
                "jwks": None,
            },
            "grant_types",
            "not a public client",
        ),
        ({"subject_type": "pairwise"}, "sector_identifier_uri", "needs sector_identifier_uri"),
        (
            {
                "subject_type": "pairwise",
                "grant_types": ["authorization_code"],
                "redirect_uris": ["https://a.example.test/cb", "https://b.example.test/cb"],
            },
            "sector_identifier_uri",
            "exactly one host",
        ),
        ({"subject_type": "pairwise", "sector_identifier_uri": "http://a.example.test/s.json"}, "sector_identifier_uri", "https"),
        ({"sector_identifier_uri": "https://a.example.test/s.json"}, "sector_identifier_uri", "only for subject_type pairwise"),
        ({"subject_type": "secret"}, "subject_type", "Must be one of"),
        (
            {
                "grant_types": [CIBA, "refresh_token"],
                "backchannel_token_delivery_mode": "poll",
                "backchannel_authentication_request_signing_alg": "none",
            },
            "backchannel_authentication_request_signing_alg",
            "Must be one of",
        ),
    ],
)
def test_registry_rules(extra, field, message):
    with pytest.raises(ValidationError) as info:
        build_client({**BASE, **extra})
    assert field in info.value.messages and message in str(info.value.messages[field]), info.value.messages


def test_registry_accepts():
    ciba = build_client({**BASE, "grant_types": [CIBA, "refresh_token"], "backchannel_token_delivery_mode": "poll"})
    assert ciba.backchannel_token_delivery_mode == "poll" and ciba.subject_type == "public"
    pw = build_client(
        {
            **BASE,
            "subject_type": "pairwise",
            "grant_types": ["authorization_code"],
            "redirect_uris": ["https://app.example.test/cb", "https://app.example.test/cb2"],
        }
    )
    assert pw.sector_identifier == "app.example.test"
    pw = build_client({**BASE, "subject_type": "pairwise", "sector_identifier_uri": "https://sector.example.test/x.json"})
    assert pw.sector_identifier == "sector.example.test"


def test_pairwise_client_needs_the_key(make_ciba_as):
    with pytest.raises(ConfigError, match=r"'ciba-pw-a' has subject_type pairwise, but OAUTH_HSM_PAIRWISE_KEY is not set"):
        make_ciba_as(OAUTH_HSM_PAIRWISE_KEY="")


def test_pairwise_key_must_exist_and_be_hmac(make_ciba_as, hsm):
    with pytest.raises(KeyNotFound, match=r"^OAUTH_HSM_PAIRWISE_KEY: no secret key labelled 'nope' .*--kind hmac"):
        make_ciba_as(OAUTH_HSM_PAIRWISE_KEY="nope")
    ensure_secret_keys(hsm)
    with pytest.raises(ConfigError, match=r"^OAUTH_HSM_PAIRWISE_KEY: secret key .* is an aes key, not hmac"):
        make_ciba_as(OAUTH_HSM_PAIRWISE_KEY=WRAP_KEY)


@pytest.mark.parametrize(
    "name,value",
    [
        ("OAUTH_HSM_CIBA_PROFILE", "fapi"),
        ("OAUTH_HSM_CIBA_REQUEST_LIFETIME", "5"),
        ("OAUTH_HSM_CIBA_INTERVAL", "0"),
        ("OAUTH_HSM_CIBA_INTERVAL", "61"),
    ],
)
def test_bad_settings(make_ciba_as, name, value):
    with pytest.raises(ConfigError, match=f"^{name}: "):
        make_ciba_as(**{name: value})


class _Recorder:
    """Stands in for OAuthHSM: collects the hooks configure_device registers."""

    def __init__(self):
        self.fns = {}

    def __getattr__(self, name):
        return lambda fn: self.fns.setdefault(name, fn)


def _host_with(hooks: tuple[str, ...]):
    """A host registering only some of the CIBA hooks."""

    def configure(app, oauth):
        recorder = _Recorder()
        configure_device(app, recorder)
        for name in hooks:
            getattr(oauth, name)(recorder.fns[name])

    return configure


@pytest.mark.parametrize("hooks,missing", [(("ciba_user",), "ciba_notify"), (("ciba_notify",), "ciba_user")])
def test_ciba_needs_both_hooks(make_user_as, hsm, hooks, missing):
    ensure_pairwise_key(hsm)  # the scenario has pairwise clients: without the key, that error comes first
    with pytest.raises(ConfigError, match=f"ciba needs @oauth.{missing}"):
        make_user_as(ciba_scenario(), host={"configure": _host_with(hooks)}, OAUTH_HSM_PAIRWISE_KEY=PAIRWISE_KEY)


def test_ciba_needs_users(make_as, hsm):
    from flask import Flask

    from flask_oauth_hsm import OAuthHSM

    env = make_as()
    app, oauth = Flask("no-users"), OAuthHSM()
    app.config.update(env.settings)
    oauth.ciba_user(lambda kind, value: None)
    oauth.ciba_notify(lambda request: None)
    with pytest.raises(ConfigError, match=r"ciba needs @oauth.current_user"):
        oauth.init_app(app)


def test_metadata_is_exactly_what_is_served(ciba_env, as_env):
    doc = ciba_env.client().get("/.well-known/oauth-authorization-server").get_json()
    assert doc["backchannel_authentication_endpoint"] == ciba_env.issuer + "/oauth2/bc-authorize"
    assert doc["backchannel_token_delivery_modes_supported"] == ["poll"]
    assert doc["backchannel_user_code_parameter_supported"] is False
    assert doc["backchannel_authentication_request_signing_alg_values_supported"] == ["ES256", "PS256", "EdDSA"]
    assert CIBA in doc["grant_types_supported"]
    plain = as_env.client().get("/.well-known/oauth-authorization-server").get_json()
    assert not any(k.startswith("backchannel") for k in plain) and CIBA not in plain["grant_types_supported"]
    assert as_env.client().post("/oauth2/bc-authorize").status_code == 404


def test_a_registry_with_ciba_clients_serves_without_the_hooks(make_user_as, hsm):
    """A registry shared by hosts with and without a device: CIBA is simply off where the hooks are missing."""
    ensure_pairwise_key(hsm)
    env = make_user_as(ciba_scenario(), OAUTH_HSM_PAIRWISE_KEY=PAIRWISE_KEY)
    assert env.client().post("/oauth2/bc-authorize").status_code == 404
