"""The CLI and the dev-token script, run as a user would, against a fresh token store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask", "--app", "example_app", "oauth-hsm"]


@pytest.fixture()
def dev_env(tmp_path, redis_server):
    """The dev scripts' environment, pointed at a throwaway .dev directory of this test's own and
    the test Redis (each test starts from nothing, whatever ran before it)."""
    dev = tmp_path / "dev"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTH_HSM_")}
    env.update(
        {
            "DEV_DIR": str(dev),
            "SOFTHSM2_CONF": str(dev / "softhsm" / "softhsm2.conf"),
            "OAUTH_HSM_REDIS_URL": redis_server.url,
            "OAUTH_HSM_PIN": "4321-cli-test",
            "FLASK": str(Path(sys.executable).parent / "flask"),
        }
    )
    return env


def run(args, env, check=True):
    result = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout + result.stderr)
    return result


def test_setup_script_is_idempotent_and_cli_lists_the_keys(dev_env):
    first = run(["bash", "softhsm/setup-dev-token.sh"], dev_env)
    assert "initialising token" in first.stderr and "generated" in first.stderr
    tokens_before = sorted(os.listdir(Path(dev_env["DEV_DIR"]) / "softhsm" / "tokens"))
    second = run(["bash", "softhsm/setup-dev-token.sh"], dev_env)
    assert "initialising" not in second.stderr and "generated" not in second.stderr
    assert sorted(os.listdir(Path(dev_env["DEV_DIR"]) / "softhsm" / "tokens")) == tokens_before
    conf = Path(dev_env["SOFTHSM2_CONF"]).read_text()
    assert f"directories.tokendir = {dev_env['DEV_DIR']}/softhsm/tokens" in conf

    env = {**dev_env, **_dev_settings(dev_env), "OAUTH_HSM_REGISTRY": str(ROOT / "softhsm" / "empty-registry.json")}
    listing = run([*FLASK, "keys", "list"], env).stdout.splitlines()
    assert listing[0].split()[:5] == ["LABEL", "ROLE", "KID", "ALG", "USE"]
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert rows["as-sig-es256"][1] == "signs" and rows["as-sig-es256"][3:] == ["ES256", "sig", "EC", "P-256"]
    assert rows["as-sig-ps256"][1] == "published"
    assert rows["as-enc-rsa"][1] == "decrypts" and rows["as-enc-rsa"][3:] == ["RSA-OAEP-256", "enc", "RSA", "2048"]
    assert rows["demo-rs-enc"][1] == "-" and rows["demo-rs-enc"][3] == "ECDH-ES+A256KW"


def _dev_settings(dev_env) -> dict:
    out = run(["bash", "-c", "source softhsm/env.sh && env | grep ^OAUTH_HSM_"], dev_env).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_generate_list_jwks_and_destroy(dev_env):
    run(["bash", "softhsm/setup-dev-token.sh"], dev_env)
    env = {**dev_env, **_dev_settings(dev_env), "OAUTH_HSM_REGISTRY": str(ROOT / "softhsm" / "empty-registry.json")}
    made = run([*FLASK, "keys", "generate", "--alg", "EdDSA", "--use", "sig", "--label", "cli-eddsa"], env)
    assert "cli-eddsa: generated EdDSA (OKP Ed25519)" in made.stdout
    again = run([*FLASK, "keys", "generate", "--alg", "EdDSA", "--use", "sig", "--label", "cli-eddsa"], env, check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    refused = run([*FLASK, "keys", "generate", "--alg", "ES256", "--use", "enc", "--label", "x"], env, check=False)
    assert refused.returncode != 0 and "ES256 keys have use 'sig'" in refused.stderr
    jwks = json.loads(run([*FLASK, "keys", "jwks", "cli-eddsa"], env).stdout)
    assert jwks["keys"][0]["crv"] == "Ed25519" and "d" not in jwks["keys"][0]
    kept = run([*FLASK, "keys", "destroy", "--label", "as-sig-es256", "--yes"], env, check=False)
    assert kept.returncode != 0 and "still configured" in kept.stderr
    assert "cli-eddsa: destroyed" in run([*FLASK, "keys", "destroy", "--label", "cli-eddsa", "--yes"], env).stdout
    assert "cli-eddsa" not in run([*FLASK, "keys", "list"], env).stdout


def test_registry_commands(tmp_path, dev_env):
    out = run([*FLASK, "registry", "hash-secret"], dev_env).stdout
    secret = out.split("client_secret:")[1].split()[0]
    digest = out.split("client_secret_hash:")[1].split()[0]
    from flask_oauth_hsm.client_auth import AuthFailure, verify_secret

    verify_secret(secret, digest)
    with pytest.raises(AuthFailure):
        verify_secret(secret + "x", digest)
    run(["bash", "softhsm/setup-dev-token.sh"], dev_env)
    env = {**dev_env, **_dev_settings(dev_env), "OAUTH_HSM_REGISTRY": str(ROOT / "softhsm" / "empty-registry.json")}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"clients": [{"client_id": "x", "token_endpoint_auth_method": "private_key_jwt"}]}))
    result = run([*FLASK, "registry", "validate", str(bad)], env, check=False)
    assert result.returncode != 0 and "clients[0] (x): jwks: private_key_jwt needs jwks" in result.stderr
    # The start-up checks against the keys, too: no configured key can sign ES384 introspection answers.
    unfit = tmp_path / "unfit.json"
    rs_key = json.loads(run([*FLASK, "keys", "jwks", "demo-rs-sig"], env).stdout)
    unfit.write_text(
        json.dumps(
            {
                "resource_servers": [
                    {
                        "resource": "https://rs.example",
                        "client_id": "rs",
                        "token_endpoint_auth_method": "private_key_jwt",
                        "jwks": rs_key,
                        "introspection_signed_response_alg": "ES384",
                    }
                ]
            }
        )
    )
    result = run([*FLASK, "registry", "validate", str(unfit)], env, check=False)
    assert result.returncode != 0 and "no signing key for introspection_signed_response_alg ES384" in result.stderr
    ok = tmp_path / "ok.json"
    ok.write_text('{"clients": [], "resource_servers": []}')
    assert "valid" in run([*FLASK, "registry", "validate", str(ok)], env).stdout
