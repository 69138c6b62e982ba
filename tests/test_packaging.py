"""The built wheel installs cleanly into a fresh virtualenv and works there.

Built from a copy of the source (building in place would leave build/ and *.egg-info in the
checkout), installed with its ``server`` extra, then imported and its CLI run — outside the
repository, so nothing is imported from the checkout. pip's own cache is used as usual, so a
second run installs from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOUND = 600  # seconds for each pip step (a cold cache downloads the dependencies)
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", ".dev", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "results"
)


def run(args, cwd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=BOUND, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORED)
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp / "dist"), str(src)], tmp)
    (path,) = (tmp / "dist").glob("flask_oauth_hsm-*.whl")
    return path, built.stdout + built.stderr


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", str(env_dir)], env_dir.parent)
    run([str(env_dir / "bin" / "python"), "-m", "pip", "install", f"{wheel[0]}[server]"], env_dir.parent)
    return env_dir


def test_the_build_prints_no_deprecation_warning(wheel):
    _, log = wheel
    assert "deprecated" not in log.lower(), log


def test_the_wheel_holds_the_package_and_its_metadata(wheel):
    path, _ = wheel
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "flask_oauth_hsm/serving.py" in names and "flask_oauth_hsm/jose/jws.py" in names
    assert "flask_oauth_hsm/endpoints/token.py" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/"))]
    assert "License-Expression: LicenseRef-Proprietary" in metadata
    for extra in ("server", "test", "bench"):
        assert f"Provides-Extra: {extra}" in metadata
    entry_points = [n for n in names if n.endswith("entry_points.txt")]
    assert entry_points


def test_installs_cleanly_imports_and_runs_the_cli(venv, tmp_path):
    python, flask = str(venv / "bin" / "python"), str(venv / "bin" / "flask")
    assert "No broken requirements" in run([python, "-m", "pip", "check"], tmp_path).stdout
    imported = run(
        [
            python,
            "-c",
            "import flask_oauth_hsm, flask_oauth_hsm.serving as s; print(flask_oauth_hsm.__file__, s.CONFIG_ERROR_EXIT_STATUS)",
        ],
        tmp_path,
    ).stdout
    assert str(venv) in imported and imported.split()[-1] == "4"  # the installed copy, not the checkout
    help_text = run([flask, "oauth-hsm", "--help"], tmp_path).stdout
    for command in ("keys", "registry", "client", "demo-client"):
        assert command in help_text
    keygen_help = run([flask, "oauth-hsm", "client", "keygen", "--help"], tmp_path).stdout
    assert "--alg" in keygen_help
    assert run([str(venv / "bin" / "gunicorn"), "--version"], tmp_path).stdout.startswith("gunicorn")
