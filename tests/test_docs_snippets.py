"""Every ```python and ```sh block of README.md and docs/*.md runs, against a really running server.

The fixture brings up what `./dev run` brings up, in a temporary DEV_DIR: a redis-server, the dev
token with its keys (softhsm/setup-dev-token.sh), the demo registry (softhsm/write-demo-registry.py)
plus the client and resource server the docs use, and gunicorn serving example_app exactly as
softhsm/run-example.sh does — all on free loopback ports. The blocks then run as a user would run
them: Python in a fresh interpreter, shell with `bash -euo pipefail`, in the environment
softhsm/env.sh gives (with the temporary DEV_DIR and ports).

Conventions (docs/CONTRIBUTING.md says the same):

- A block runs as written, with three substitutions that stand for "your server" and "your
  checkout": ``https://auth.example.com`` and ``http://127.0.0.1:5000`` become the running
  server's URL; ``.venv/bin/`` becomes the bin directory of the interpreter running the tests.
- A block that needs something around it has ``<!-- snippet: NAME -->`` on the line before its
  fence; NAME is one of SETUPS below (files in its directory, environment, code run before or
  after it). Blocks of one page with the same NAME run together, in page order, in one directory.
- ``<!-- snippet: no-run: REASON -->`` skips a block; keep those rare (a command that is this test
  suite, a foreground server, a benchmark of minutes, a service we do not run here).
- Other fences (json, http, text) are not run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import support

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGS = {"python", "sh"}
BOUND = 120  # seconds for one group of blocks

INVOICES = "https://api.example.com/invoices"  # the resource the docs' examples ask for
INVOICES_RS_SECRET = "docs-invoices-rs-secret-0123456789"


# --- the blocks ----------------------------------------------------------------------------------


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    code: str
    marker: str | None  # the text after "snippet:", or None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = re.match(r"^<!-- snippet: (.+?) -->$", lines[start - 1]) if start else None
        if lang in RUN_LANGS:
            blocks.append(
                Block(
                    path, start + 1, lang, "\n".join(lines[start + 1 : end]) + "\n", marker.group(1).strip() if marker else None
                )
            )
        i = end + 1
    return blocks


ALL_BLOCKS = [b for path in DOCS for b in read_blocks(path)]


@dataclass
class Group:
    """Blocks that run together: one page, one setup, page order."""

    setup: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def id(self) -> str:
        first = self.blocks[0]
        return f"{first.where}" + (f"[{self.setup}]" if not self.setup.startswith("default") else "")


def groups() -> list[Group]:
    out: dict[tuple, Group] = {}
    for b in ALL_BLOCKS:
        if b.marker and b.marker.startswith("no-run"):
            continue
        setup = b.marker or f"default-{b.lang}"
        key = (b.path, setup) if b.marker else (b.path, b.line)
        out.setdefault(key, Group(setup)).blocks.append(b)
    return list(out.values())


# --- setups --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    lang: str
    cwd: str = "scratch"  # or "root": the checkout (shell blocks that use softhsm/env.sh, .venv/bin)
    files: tuple[str, ...] = ()  # prepared files copied into the scratch directory
    before: str = ""  # code run before the blocks (same language)
    after: str = ""  # code run after them: the check that the block did what the page says
    env: tuple[tuple[str, str | None], ...] = ()  # overrides; None removes a variable
    token: str | None = None  # a fresh token store with this token (PIN $PIN, SO PIN $SO_PIN)


# Helpers the Python setups import (written into each scratch directory as docs_helpers.py).
HELPERS = '''
import json, os, secrets, time, urllib.parse, urllib.request
from types import SimpleNamespace

from joserfc import jwt
from joserfc.jwk import ECKey

ISSUER = os.environ["OAUTH_HSM_ISSUER"]
KEY = ECKey.import_key(open("billing-batch.pem").read())


def assertion(aud=ISSUER):
    now = int(time.time())
    claims = {"iss": "billing-batch", "sub": "billing-batch", "aud": aud, "iat": now, "exp": now + 60,
              "jti": secrets.token_urlsafe(16)}
    return jwt.encode({"alg": "ES256", "kid": KEY.thumbprint()}, claims, KEY)


def token_form(scope="invoices:read", resource="https://api.example.com/invoices"):
    return {"grant_type": "client_credentials", "scope": scope, "resource": resource,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion()}


def live_token():
    body = urllib.parse.urlencode(token_form()).encode()
    with urllib.request.urlopen(ISSUER + "/oauth2/token", body, timeout=10) as resp:
        return json.loads(resp.read())["access_token"]


def introspect(token):
    import base64
    credentials = base64.b64encode(b"invoices-api:" + os.environ["INVOICES_RS_SECRET"].encode()).decode()
    req = urllib.request.Request(ISSUER + "/oauth2/introspect", urllib.parse.urlencode({"token": token}).encode(),
                                 headers={"Authorization": "Basic " + credentials})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


class RegistryDB:
    """Stands for the host's database: rows whose registry_entry is a registry-shaped dict."""

    def __init__(self, path):
        self.doc = json.load(open(path))

    def get_client(self, client_id):
        entry = next((c for c in self.doc["clients"] if c["client_id"] == client_id), None)
        return entry and SimpleNamespace(registry_entry=entry)

    def get_resource_server(self, client_id=None, resource=None):
        entry = next((r for r in self.doc["resource_servers"]
                      if (client_id and r["client_id"] == client_id) or (resource and r["resource"] == resource)), None)
        return entry and SimpleNamespace(registry_entry=entry)
'''

# yourapp.py: the README's minimal host app (settings from the environment).
YOURAPP = """from flask import Flask
from flask_oauth_hsm import OAuthHSM

app = Flask(__name__)
OAuthHSM(app)
"""

SETUPS: dict[str, Setup] = {
    "default-python": Setup("python"),
    "default-sh": Setup("sh", cwd="root"),
    # configuration.md: the lookup excerpt from settings.py
    "app-config": Setup(
        "python",
        before='import os\nfrom flask import Flask\napp = Flask("docs")\nname = "OAUTH_HSM_ISSUER"\n',
        after='assert value == os.environ["OAUTH_HSM_ISSUER"]\n',
    ),
    # quickstart.md: an application factory is only useful once called
    "factory": Setup("python", after='app = create_app()\nassert "oauth_hsm" in app.extensions\n'),
    # quickstart.md: loader callbacks over "your database"; then a real token request through them
    "loaders": Setup(
        "python",
        files=("billing-batch.pem",),
        before="from flask import Flask\nfrom docs_helpers import RegistryDB, token_form\n"
        'import os\napp = Flask("docs")\ndb = RegistryDB(os.environ["DOCS_REGISTRY"])\n',
        after='resp = app.test_client().post("/oauth2/token", data=token_form())\n'
        "assert resp.status_code == 200, resp.get_json()\n",
        env=(("OAUTH_HSM_REGISTRY", None),),
    ),
    # quickstart.md: Authlib as the client; the revoked token must then be inactive
    "authlib": Setup(
        "python",
        files=("billing-batch.pem",),
        after="from docs_helpers import introspect, live_token\n"
        'assert introspect(live_token())["active"] is True\n'
        'assert introspect(token["access_token"]) == {"active": False}\n',
    ),
    # introspection.md: the resource-server helper in an app of its own, then real requests
    "rs-app": Setup(
        "python",
        files=("billing-batch.pem",),
        after="from docs_helpers import live_token\nc = app.test_client()\n"
        'assert c.get("/invoices").status_code == 401\n'
        'resp = c.get("/invoices", headers={"Authorization": "Bearer " + live_token()})\n'
        "assert resp.status_code == 200, resp.data\n"
        'assert resp.get_json() == {"client": "billing-batch"}\n',
        env=tuple(
            (k, None)
            for k in (
                "OAUTH_HSM_RS_ISSUER",
                "OAUTH_HSM_RS_RESOURCE",
                "OAUTH_HSM_RS_MODE",
                "OAUTH_HSM_RS_CLIENT_ID",
                "OAUTH_HSM_RS_SIGNING_KEY",
                "OAUTH_HSM_RS_DECRYPTION_KEY",
            )
        ),
    ),
    # operations.md: the signal receivers fire on a real token request
    "events": Setup(
        "python",
        files=("billing-batch.pem",),
        after="from flask import Flask\nfrom flask_oauth_hsm import OAuthHSM\n"
        "from docs_helpers import token_form\n"
        'app = Flask("docs")\nOAuthHSM(app)\n'
        'assert app.test_client().post("/oauth2/token", data=token_form()).status_code == 200\n'
        'assert audit_queue.get_nowait()[:2] == ("token_issued", "billing-batch")\n',
    ),
    # ciba.md: a host with the CIBA hooks, in process; billing-batch registered for CIBA in a copy of the registry
    "ciba": Setup(
        "python",
        files=("billing-batch.pem", "registry.json"),
        before='import json\ndoc = json.load(open("registry.json"))\n'
        'entry = next(c for c in doc["clients"] if c["client_id"] == "billing-batch")\n'
        'entry.update(grant_types=["client_credentials", "urn:openid:params:grant-type:ciba"], '
        'backchannel_token_delivery_mode="poll", scope="openid invoices:read")\n'
        'json.dump(doc, open("registry.json", "w"))\n',
        after='assert tokens["token_type"] == "Bearer" and "id_token" in tokens, tokens\n'
        'assert asked[-1].binding_message == "W-4711"\n',
        env=(("OAUTH_HSM_REGISTRY", "registry.json"), ("OAUTH_HSM_CIBA_INTERVAL", "1")),
    ),
    # the user's own app module and registry, with the running server's settings
    "yourapp": Setup("sh", files=("yourapp.py", "registry.json"), env=(("SECRET", "correct horse battery staple"),)),
    # the user's own app module over a token store of their own that the block itself initialises
    "yourapp-token": Setup(
        "sh",
        files=("yourapp.py", "empty-registry.json"),
        token="",
        env=(
            ("OAUTH_HSM_TOKEN_LABEL", "oauth-prod"),
            ("OAUTH_HSM_PIN", "@PIN"),
            ("OAUTH_HSM_SIGNING_KEY", "as-sig-1"),
            ("OAUTH_HSM_PUBLISHED_KEYS", None),
            ("OAUTH_HSM_ENCRYPTION_KEYS", None),
            ("OAUTH_HSM_REGISTRY", "empty-registry.json"),
        ),
    ),
    # a token holding a retired key, as-sig-0, at the last step of a rotation
    "retired-key": Setup(
        "sh",
        files=("yourapp.py", "empty-registry.json"),
        token="oauth-prod",
        before="flask --app yourapp oauth-hsm keys generate --alg ES256 --use sig --label as-sig-0 >/dev/null\n",
        after='! flask --app yourapp oauth-hsm keys list | grep -q "^as-sig-0 "\n',
        env=(
            ("OAUTH_HSM_TOKEN_LABEL", "oauth-prod"),
            ("OAUTH_HSM_PIN", "@PIN"),
            ("OAUTH_HSM_SIGNING_KEY", "as-sig-1"),
            ("OAUTH_HSM_PUBLISHED_KEYS", None),
            ("OAUTH_HSM_ENCRYPTION_KEYS", None),
            ("OAUTH_HSM_REGISTRY", "empty-registry.json"),
        ),
    ),
    # par-and-jar.md: shop-web pushes an encrypted request object; its request_uri then starts the
    # flow (a redirect to the login page, not an error at the client)
    "par": Setup(
        "python",
        files=("shop-web.pem",),
        after="import urllib.error\n"
        "class Stop(urllib.request.HTTPRedirectHandler):\n"
        "    def redirect_request(self, *args, **kwargs): return None\n"
        "try:\n    urllib.request.build_opener(Stop).open(authorization_url)\n"
        'except urllib.error.HTTPError as exc:\n    location = exc.headers["Location"]\n'
        'assert "login" in location and not location.startswith("https://shop.example.com"), location\n',
    ),
    # registry.md / quickstart.md: making a client's key pair, with no server settings at all
    "client-keys": Setup(
        "sh",
        env=(("@no-settings", ""),),
        after='test "$(stat -c %a billing-batch.pem)" = 600\n'
        'python -c \'import json,sys; k=json.load(open("billing-batch.jwks.json"))["keys"][0]; '
        'assert (k["alg"], k["use"]) == ("ES256", "sig")\'\n',
    ),
    # ... and for a client whose key is in a PKCS#11 token of its own
    "client-token": Setup(
        "sh",
        token="client-token",
        env=(("@no-settings", ""),),
        after='python -c \'import json; k=json.load(open("client-sig.jwks.json"))["keys"][0]; '
        'assert (k["kty"], k["alg"]) == ("EC", "ES256")\'\n',
    ),
}


# --- the running server ----------------------------------------------------------------------------


@dataclass
class Live:
    url: str
    env: dict
    files: Path  # prepared files the setups copy


def _dev_env(base: dict) -> dict:
    out = subprocess.run(
        ["bash", "-c", "source softhsm/env.sh && env -0"], cwd=ROOT, env=base, capture_output=True, check=True, timeout=30
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def _run(args, env, **kwargs) -> str:
    result = subprocess.run(args, cwd=kwargs.pop("cwd", ROOT), env=env, capture_output=True, text=True, timeout=BOUND, **kwargs)
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


def _wait_ready(url: str, proc, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "gunicorn exited:\n" + log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url + "/oauth2/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the server did not become ready:\n" + log.read_text()[-3000:])


def _register_docs_entries(registry_path: Path, jwks: dict, env: dict, shop_jwks: dict | None = None) -> None:
    """The docs' billing-batch client (software key), the invoices resource server, and
    par-and-jar.md's shop-web (PAR and encrypted request objects required)."""
    secret_hash = _run(
        [str(BIN / "flask"), "oauth-hsm", "registry", "hash-secret", "--stdin"], env, input=INVOICES_RS_SECRET + "\n"
    ).split()[-1]
    doc = json.loads(registry_path.read_text())
    doc["clients"].append(
        {
            "client_id": "billing-batch",
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks": jwks,
            "scope": "invoices:read",
            "resources": [INVOICES],
        }
    )
    doc["resource_servers"].append(
        {
            "resource": INVOICES,
            "client_id": "invoices-api",
            "token_endpoint_auth_method": "client_secret_basic",
            "client_secret_hash": secret_hash,
            "scope": "invoices:read",
        }
    )
    if shop_jwks is not None:
        doc["clients"].append(
            {
                "client_id": "shop-web",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": shop_jwks,
                "grant_types": ["authorization_code"],
                "redirect_uris": ["https://shop.example.com/callback"],
                "scope": "openid invoices:read",
                "resources": [INVOICES],
                "require_pushed_authorization_requests": True,
                "request_object_signing_alg": "ES256",
                "request_object_encryption_alg": "RSA-OAEP-256",
                "request_object_encryption_enc": "A256GCM",
                "request_object_typ_required": True,
            }
        )
    registry_path.write_text(json.dumps(doc, indent=2))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    redis = support.RedisServer(tmp / "redis")
    redis.start()
    port = support.free_port()
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OAUTH_HSM_", "EXAMPLE_", "DEV_", "SOFTHSM", "_OAUTH_HSM_", "FLASK_"))
    }
    base.update(
        {
            "DEV_DIR": str(tmp / "dev"),
            "EXAMPLE_PORT": str(port),
            "DEV_REDIS_PORT": str(redis.port),
            "FLASK": str(BIN / "flask"),
            "PATH": f"{BIN}:{base.get('PATH', '/usr/bin:/bin')}",
        }
    )
    env = _dev_env(base)
    _run(["bash", "softhsm/setup-dev-token.sh"], env)
    files = tmp / "files"
    files.mkdir()
    # The client's key pair exactly as docs/registry.md makes it.
    jwks = json.loads(
        _run(
            [str(BIN / "flask"), "oauth-hsm", "client", "keygen", "--alg", "ES256", "--out", str(files / "billing-batch.pem")],
            env,
        )
    )
    registry = Path(env["OAUTH_HSM_REGISTRY"])
    registry.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [sys.executable, "softhsm/write-demo-registry.py", str(registry)],
        {**env, "OAUTH_HSM_REGISTRY": str(ROOT / "softhsm" / "empty-registry.json")},
    )
    shop_jwks = json.loads(
        _run([str(BIN / "flask"), "oauth-hsm", "client", "keygen", "--alg", "ES256", "--out", str(files / "shop-web.pem")], env)
    )
    _register_docs_entries(registry, jwks, env, shop_jwks)
    shutil.copy(registry, files / "registry.json")
    shutil.copy(ROOT / "softhsm" / "empty-registry.json", files / "empty-registry.json")
    (files / "yourapp.py").write_text(YOURAPP)
    (files / "docs_helpers.py").write_text(HELPERS)

    log = tmp / "gunicorn.log"
    with open(log, "w") as out:  # run-example.sh's command line
        proc = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "--workers",
                "2",
                "--worker-class",
                "gthread",
                "--threads",
                "8",
                "--bind",
                f"127.0.0.1:{port}",
                "--access-logfile",
                "-",
                *_no_control_socket(),
                "example_app:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(env["OAUTH_HSM_ISSUER"], proc, log)
        time.sleep(1.001 - time.time() % 1)  # the epoch's own second accepts no assertion
        yield Live(
            env["OAUTH_HSM_ISSUER"], {**env, "DOCS_REGISTRY": str(registry), "INVOICES_RS_SECRET": INVOICES_RS_SECRET}, files
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        redis.stop()


def _no_control_socket() -> list[str]:
    import gunicorn.config

    known = {s.name for s in gunicorn.config.KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket_disable" in known else []  # gunicorn ≥ 25.1


# --- running a group -------------------------------------------------------------------------------


def substitute(code: str, live: Live) -> str:
    for placeholder in ("https://auth.example.com", "http://127.0.0.1:5000"):
        code = code.replace(placeholder, live.url)
    return code.replace(".venv/bin/", f"{BIN}/")


def group_env(setup: Setup, live: Live, scratch: Path) -> dict:
    env = dict(live.env)
    if ("@no-settings", "") in setup.env:  # a client of someone else's AS: none of our settings
        env = {k: v for k, v in env.items() if not k.startswith(("OAUTH_HSM_", "EXAMPLE_", "DEV_"))}
    if setup.token is not None:
        conf = support.write_softhsm_conf(scratch / "softhsm")
        env.update(
            {"SOFTHSM2_CONF": str(conf), "PIN": "2468-docs", "SO_PIN": "1357-docs-so", "PKCS11_MODULE": support.SOFTHSM_MODULE}
        )
        if setup.token:
            _run(
                [
                    "softhsm2-util",
                    "--init-token",
                    "--free",
                    "--label",
                    setup.token,
                    "--pin",
                    env["PIN"],
                    "--so-pin",
                    env["SO_PIN"],
                ],
                env,
            )
    for name, value in setup.env:
        if name.startswith("@"):
            continue
        if value is None:
            env.pop(name, None)
        elif value.startswith("@"):
            env[name] = env[value[1:]]
        else:
            env[name] = value
    return env


@pytest.mark.parametrize("group", groups(), ids=lambda g: g.id)
def test_docs_snippet(group: Group, live: Live, tmp_path: Path):
    setup = SETUPS[group.setup]
    assert all(b.lang == setup.lang for b in group.blocks), f"setup {group.setup} is for {setup.lang} blocks"
    scratch = tmp_path / "work"
    scratch.mkdir()
    for name in (*setup.files, "docs_helpers.py") if setup.lang == "python" else setup.files:
        shutil.copy(live.files / name, scratch / name)
    env = group_env(setup, live, scratch)
    code = setup.before + "".join(substitute(b.code, live) for b in group.blocks) + setup.after
    if setup.lang == "python":
        (scratch / "snippet.py").write_text(code)
        args = [sys.executable, "snippet.py"]
    else:
        (scratch / "snippet.sh").write_text(code)
        args = ["bash", "-euo", "pipefail", str(scratch / "snippet.sh")]
    cwd = ROOT if setup.cwd == "root" else scratch
    where = ", ".join(b.where for b in group.blocks)
    returncode, stdout, stderr = run_bounded(args, cwd, env)
    assert returncode == 0, f"{where}:\n--- code\n{code}\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}"


def run_bounded(args, cwd, env) -> tuple[int | None, str, str]:
    """Run in a session of its own: whatever a block starts is killed with it after BOUND seconds."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return None, stdout, stderr + f"\n(killed after {BOUND} s)"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind in its session
    return proc.returncode, stdout, stderr


def test_the_registry_example_is_valid(live: Live, tmp_path: Path):
    """docs/registry.md says its complete example passes `registry validate`: it does."""
    text = (ROOT / "docs" / "registry.md").read_text()
    example = text.split("## Complete example", 1)[1]
    doc = re.search(r"^```json\n(.*?)^```", example, re.M | re.S).group(1)
    (tmp_path / "registry.json").write_text(doc)
    (tmp_path / "yourapp.py").write_text(YOURAPP)
    returncode, stdout, stderr = run_bounded(
        [str(BIN / "flask"), "--app", "yourapp", "oauth-hsm", "registry", "validate", "registry.json"], tmp_path, live.env
    )
    assert returncode == 0, stdout + stderr
    assert stdout.strip() == "registry.json: valid"


# --- the conventions themselves ------------------------------------------------------------------------


def test_every_marker_names_a_setup_or_gives_a_reason():
    for b in ALL_BLOCKS:
        if b.marker is None:
            continue
        if b.marker.startswith("no-run"):
            assert re.match(r"no-run: \S", b.marker), f"{b.where}: no-run needs a reason"
        else:
            assert b.marker in SETUPS, f"{b.where}: unknown setup {b.marker!r}"
            assert SETUPS[b.marker].lang == b.lang, f"{b.where}: setup {b.marker} is for {SETUPS[b.marker].lang}"


def test_markers_are_only_before_blocks_we_run():
    """A marker before a json/http block, or separated from its block, would silently do nothing."""
    for path in DOCS:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("<!-- snippet:"):
                fence = re.match(r"^```(\w*)", lines[i + 1]) if i + 1 < len(lines) else None
                where = f"{path.name}:{i + 1}"
                assert fence and fence.group(1) in RUN_LANGS, f"{where}: marker not right before a python/sh block"
