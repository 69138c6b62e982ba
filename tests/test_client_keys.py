"""``flask oauth-hsm client keygen`` / ``client jwks``: key pairs for clients outside our HSM.

Run as a user would (a subprocess, no app, no settings). The thumbprints are checked with an
independent implementation (jwcrypto); the JWKS goes through ``registry validate``; the keys
are registered and used against a running server in tests/test_docs_snippets.py (the
quickstart's Authlib client).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk as jwcrypto_jwk

CLI = [sys.executable, "-m", "flask", "oauth-hsm", "client"]


def cli(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OAUTH_HSM_", "FLASK_"))}
    result = subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("alg,kty", [("ES256", "EC"), ("PS256", "RSA"), ("EdDSA", "OKP")])
def test_keygen_writes_a_private_file_and_prints_the_public_jwks(tmp_path, alg, kty):
    result = cli("keygen", "--alg", alg, "--out", "client.pem", cwd=tmp_path)
    path = tmp_path / "client.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(path.read_bytes(), None)
    (key,) = json.loads(result.stdout)["keys"]
    assert (key["kty"], key["alg"], key["use"]) == (kty, alg, "sig")
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)  # public members only
    independent = jwcrypto_jwk.JWK.from_pem(path.read_bytes())
    assert key["kid"] == independent.thumbprint()  # RFC 7638 SHA-256, computed by jwcrypto
    assert (
        json.loads(independent.export_public()).items()
        >= {k: v for k, v in key.items() if k not in ("kid", "alg", "use")}.items()
    )
    assert "private key written (mode 0600)" in result.stderr
    assert private.public_key() is not None


def test_mode_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        cli("keygen", "--out", "k.pem", cwd=tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


def test_keygen_never_overwrites(tmp_path):
    (tmp_path / "k.pem").write_text("precious")
    result = cli("keygen", "--out", "k.pem", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "k.pem already exists: not overwriting a key" in result.stderr
    assert result.stdout == ""
    assert (tmp_path / "k.pem").read_text() == "precious"


def test_keygen_does_not_follow_a_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    (tmp_path / "k.pem").symlink_to(target)  # dangling: O_EXCL must still refuse it
    result = cli("keygen", "--out", "k.pem", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "already exists" in result.stderr
    assert not target.exists()


def test_rsa_bits_range_and_scope(tmp_path):
    low = cli("keygen", "--alg", "PS256", "--rsa-bits", "1024", "--out", "k.pem", cwd=tmp_path, check=False)
    assert low.returncode == 2 and "1024 is not in the range 2048<=x<=8192" in low.stderr
    wrong = cli("keygen", "--alg", "ES256", "--rsa-bits", "3072", "--out", "k.pem", cwd=tmp_path, check=False)
    assert wrong.returncode == 1 and "--rsa-bits applies to PS256 only" in wrong.stderr
    assert not (tmp_path / "k.pem").exists()
    cli("keygen", "--alg", "PS256", "--rsa-bits", "3072", "--out", "k.pem", cwd=tmp_path)
    assert serialization.load_pem_private_key((tmp_path / "k.pem").read_bytes(), None).key_size == 3072
    assert "2048<=x<=8192" in cli("keygen", "--help", cwd=tmp_path).stdout


def test_jwks_of_an_exported_public_key_matches_keygen(tmp_path):
    """The path for clients whose key lives in their own token: export the public key (PEM or
    DER, e.g. pkcs11-tool --read-object --type pubkey), then `client jwks`."""
    printed = json.loads(cli("keygen", "--alg", "EdDSA", "--out", "k.pem", cwd=tmp_path).stdout)
    public = serialization.load_pem_private_key((tmp_path / "k.pem").read_bytes(), None).public_key()
    (tmp_path / "pub.der").write_bytes(
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert json.loads(cli("jwks", "--alg", "EdDSA", "pub.der", cwd=tmp_path).stdout) == printed
    mismatch = cli("jwks", "--alg", "ES256", "pub.der", cwd=tmp_path, check=False)
    assert mismatch.returncode == 1 and "cannot be used with ES256" in mismatch.stderr
    (tmp_path / "junk").write_text("not a key")
    junk = cli("jwks", "junk", cwd=tmp_path, check=False)
    assert junk.returncode == 1 and "not an unencrypted PEM or DER" in junk.stderr


def test_the_printed_jwks_is_what_the_registry_accepts(tmp_path):
    """The registry's "jwks" member is loaded by JWKSet (weak keys, private members, duplicate
    kids refused); a real registration and token request is in tests/test_docs_snippets.py."""
    from flask_oauth_hsm.jose.jwk import JWKSet

    for alg in ("ES256", "PS256", "EdDSA"):
        jwks = json.loads(cli("keygen", "--alg", alg, "--out", f"{alg}.pem", cwd=tmp_path).stdout)
        key = JWKSet.from_dict(jwks).select(alg, "sig", jwks["keys"][0]["kid"])
        assert key.allows(alg, "sig")


def test_keys_generate_help_explains_use_and_shows_the_rsa_range(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OAUTH_HSM_", "FLASK_"))}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "oauth-hsm", "keys", "generate", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "sig: signs (JWS); enc: decrypts (JWE); must match --alg" in text
    assert "2048<=x<=8192" in text
