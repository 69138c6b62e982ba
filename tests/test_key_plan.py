"""``flask oauth-hsm keys provision PLAN``: a JSON key plan made idempotently in the token
(flask_oauth_hsm/keys/plan.py). Runs in this process against the main test token, with labels of
each test's own."""

from __future__ import annotations

import contextvars
import json
import uuid
from typing import Any

import pytest

from flask_oauth_hsm.cli import cli as oauth_hsm_cli
from flask_oauth_hsm.errors import ConfigError
from flask_oauth_hsm.extension import KEY_ADMIN
from flask_oauth_hsm.keys.plan import PlannedKey, parse_plan


def provision(settings: dict[str, Any], plan_path: Any) -> Any:
    from as_app import build_as_app

    def invoke() -> Any:
        KEY_ADMIN.set(True)  # as the keys group sets it, in a copied context the test never sees
        return build_as_app(settings).test_cli_runner().invoke(oauth_hsm_cli, ["keys", "provision", str(plan_path)])

    return contextvars.copy_context().run(invoke)


def write_plan(tmp_path, keys: list[dict[str, Any]]) -> Any:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


@pytest.fixture()
def label():
    prefix = "plan-" + uuid.uuid4().hex[:8]
    return lambda name: f"{prefix}-{name}"


def test_provision_makes_what_is_missing_and_keeps_what_is_there(as_env, hsm, tmp_path, label):
    keys = [
        {"label": label("es"), "alg": "ES256", "use": "sig"},
        {"label": label("rsa"), "alg": "RSA-OAEP-256", "use": "enc", "rsa_bits": 3072},
        {"label": label("ecdh"), "alg": "ECDH-ES", "use": "enc", "crv": "P-384"},
        {"label": label("mac"), "secret": "hmac"},
    ]
    hsm.generate_key("ES256", "sig", label("es"))  # already there: kept
    kid_before = hsm.key(label("es")).kid
    first = provision(as_env.settings, write_plan(tmp_path, keys))
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [
        f"{label('es')}: exists",
        f"{label('rsa')}: generated RSA-OAEP-256 (RSA 3072) kid={hsm.key(label('rsa')).kid}",
        f"{label('ecdh')}: generated ECDH-ES (EC P-384) kid={hsm.key(label('ecdh')).kid}",
        f"{label('mac')}: generated hmac secret key",
    ]
    assert hsm.key(label("es")).kid == kid_before
    again = provision(as_env.settings, write_plan(tmp_path, keys))
    assert again.exit_code == 0 and again.output.splitlines() == [f"{k['label']}: exists" for k in keys]


@pytest.mark.parametrize(
    ("there", "planned", "message"),
    [
        ({"alg": "ES256", "use": "sig"}, {"alg": "PS256", "use": "sig"}, "is ES256 (sig) in the token; the plan says PS256"),
        ({"alg": "PS256", "use": "sig"}, {"alg": "PS256", "use": "sig", "rsa_bits": 4096}, "is RSA 2048 in the token"),
        ({"alg": "ECDH-ES", "use": "enc"}, {"alg": "ECDH-ES", "use": "enc", "crv": "P-521"}, "is on P-256 in the token"),
        ({"alg": "ES256", "use": "sig"}, {"secret": "aes"}, "is a key pair (ES256) in the token; the plan wants a aes"),
        ({"secret": "hmac"}, {"secret": "aes"}, "is a hmac secret key in the token; the plan says aes"),
        ({"secret": "hmac"}, {"alg": "ES256", "use": "sig"}, "is a hmac secret key in the token; the plan wants a ES256"),
    ],
)
def test_a_label_there_as_something_else_refuses_the_whole_plan(as_env, hsm, tmp_path, label, there, planned, message):
    if "secret" in there:
        hsm.generate_secret_key(there["secret"], label("taken"))
    else:
        hsm.generate_key(there["alg"], there["use"], label("taken"))
    plan = write_plan(tmp_path, [{"label": label("new"), "alg": "ES256", "use": "sig"}, {"label": label("taken"), **planned}])
    result = provision(as_env.settings, plan)
    assert result.exit_code != 0
    assert "the token does not match the key plan (nothing was generated)" in result.output and message in result.output
    assert label("new") not in {k.label for k in hsm.list_keys()}  # checked before anything is made


def test_an_unreadable_plan_is_a_clear_error(as_env, tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("{not json")
    result = provision(as_env.settings, path)
    assert result.exit_code != 0 and "Error: the key plan is not JSON" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", 'must be a JSON object {"keys": [...]}'),
        ('{"keys": {}}', 'must be a JSON object {"keys": [...]}'),
        ('{"keys": [], "extra": 1}', 'must be a JSON object {"keys": [...]}'),
        ('{"keys": [1]}', "keys[0] must be an object"),
        ('{"keys": [{"alg": "ES256", "use": "sig"}]}', "keys[0]: label must be a string of 1 to 64 characters"),
        ('{"keys": [{"label": "", "alg": "ES256", "use": "sig"}]}', "label must be a string"),
        ('{"keys": [{"label": "' + "x" * 65 + '", "secret": "aes"}]}', "label must be a string"),
        ('{"keys": [{"label": "k", "alg": "HS256", "use": "sig"}]}', "'k': alg must be one of"),
        ('{"keys": [{"label": "k", "alg": ["ES256"], "use": "sig"}]}', "'k': alg must be one of"),
        ('{"keys": [{"label": "k", "alg": "ES256", "use": "enc"}]}', "'k': ES256 keys have use 'sig'"),
        ('{"keys": [{"label": "k", "alg": "ES256"}]}', "'k': ES256 keys have use 'sig'"),
        ('{"keys": [{"label": "k", "alg": "ES256", "use": "sig", "rsa_bits": 4096}]}', "rsa_bits is an integer"),
        ('{"keys": [{"label": "k", "alg": "PS256", "use": "sig", "rsa_bits": 1024}]}', "rsa_bits is an integer"),
        ('{"keys": [{"label": "k", "alg": "PS256", "use": "sig", "rsa_bits": true}]}', "rsa_bits is an integer"),
        ('{"keys": [{"label": "k", "alg": "ES384", "use": "sig", "crv": "P-384"}]}', "crv is one of"),
        ('{"keys": [{"label": "k", "alg": "ECDH-ES", "use": "enc", "crv": "secp256k1"}]}', "crv is one of"),
        ('{"keys": [{"label": "k", "alg": "ES256", "use": "sig", "state": "next"}]}', "'k': unknown field(s) state"),
        ('{"keys": [{"label": "k", "secret": "des"}]}', "'k': secret must be one of aes, hmac"),
        ('{"keys": [{"label": "k", "secret": "aes", "alg": "ES256"}]}', "'k': unknown field(s) alg (a secret key has"),
        ('{"keys": [{"label": "k", "secret": "aes"}, {"label": "k", "secret": "hmac"}]}', "label 'k' is planned twice"),
    ],
)
def test_plan_errors_name_the_entry(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_plan(text)
    assert message in str(caught.value)


def test_the_dev_plan_parses_to_what_the_dev_settings_name():
    """softhsm/dev-keys.json is what softhsm/setup-dev-token.sh provisions; softhsm/env.sh names its labels."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    plan = {key.label: key for key in parse_plan((root / "softhsm" / "dev-keys.json").read_text())}
    assert plan["as-sig-es256"] == PlannedKey("as-sig-es256", alg="ES256", use="sig")
    assert plan["as-pop-wrap"] == PlannedKey("as-pop-wrap", secret="aes")
    env_sh = (root / "softhsm" / "env.sh").read_text()
    for name in ("as-sig-es256", "as-sig-ps256", "as-enc-rsa", "as-dpop-nonce", "as-pop-wrap", "as-pairwise"):
        assert name in env_sh and name in plan
