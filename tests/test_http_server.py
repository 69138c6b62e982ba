"""Through a real HTTP server: gunicorn with several workers, an independent OAuth client library
(Authlib) obtaining tokens with private_key_jwt, an independent JWT library (PyJWT) validating them
as RFC 9068 with keys from the JWKS endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import jwt as pyjwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import ECKey, RSAKey

import support
from as_helpers import RS1


def start_gunicorn(
    settings: dict,
    *,
    workers: int = 3,
    worker_class: str = "gthread",
    preload: bool = True,
    port: int | None = None,
    app: str = "example_app:app",
):
    """gunicorn serving ``app`` (example_app) with ``settings`` in its environment; its log goes to a
    file (a pipe nobody reads would fill up under load and block the workers)."""
    port = port or support.free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--threads",
        "4",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "2",
        "--timeout",
        "30",
    ]
    if preload:
        args.append("--preload")
    return _start_server("gunicorn", [*args, app], settings, port)


def start_granian(
    settings: dict, *, workers: int = 2, blocking_threads: int = 2, port: int | None = None, app: str = "example_app:app"
):
    """granian serving ``app`` as docs/operations.md recommends (WSGI interface, no access log)."""
    port = port or support.free_port()
    args = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--workers",
        str(workers),
        "--blocking-threads",
        str(blocking_threads),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--workers-kill-timeout",
        "5",
    ]
    return _start_server("granian", [*args, app], settings, port)


def _start_server(name: str, argv: list[str], settings: dict, port: int):
    env = {**os.environ, **settings}
    log_path = support.log_file(f"{name}-")  # under the session's temporary directory
    with open(log_path, "wb") as log:  # the child has its own copy of the descriptor
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = str(log_path)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: " + log_path.read_text()[-2000:])
        try:
            if requests.get(base + "/oauth2/jwks", timeout=1).status_code == 200:
                return proc, base
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{name} did not answer: " + log_path.read_text()[-2000:])


def concurrent_posts(url: str, data: dict, count: int = 50) -> list[int]:
    """``count`` POSTs of the same body released at once (a barrier); their status codes."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    barrier = Barrier(count)

    def attempt(_: int) -> int:
        barrier.wait(timeout=30)
        return requests.post(url, data=data, timeout=30).status_code

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(attempt, range(count)))


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    os.unlink(proc.log_path)


def start_server(kind: str, settings: dict):
    """The product served the two documented ways: gunicorn (gthread, preloaded) or granian."""
    return start_granian(settings) if kind == "granian" else start_gunicorn(settings)


@pytest.fixture(scope="module", params=["gunicorn", "granian"])
def server(as_env, request):
    proc, base = start_server(request.param, as_env.settings)
    yield base
    stop(proc)


def pem(key) -> bytes:
    return key.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's private_key_jwt with a 60 s assertion: its default exp is one hour, more than
    our OAUTH_HSM_ASSERTION_MAX_LIFETIME (300 s) accepts (docs/quickstart.md)."""

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            header=self.headers,
            alg=self.alg,
            expires_in=60,
        )


@pytest.mark.parametrize("client_id,alg", [("c-es256", "ES256"), ("c-ps256", "PS256")])
def test_authlib_client_gets_tokens_pyjwt_validates_them(as_env, server, client_id, alg):
    key = as_env.keys[client_id]
    key_obj = (ECKey if alg == "ES256" else RSAKey).import_key(pem(key))
    session = OAuth2Session(
        client_id,
        key_obj,
        token_endpoint_auth_method=ShortLivedPrivateKeyJWT(as_env.issuer, alg=alg, headers={"kid": key.kid}),
        scope="read",
    )
    jwks = pyjwt.PyJWKClient(server + "/oauth2/jwks")
    for _ in range(6):  # several requests, so more than one worker answers
        token = session.fetch_token(server + "/oauth2/token", grant_type="client_credentials", resource=RS1)
        access_token = token["access_token"]
        header = pyjwt.get_unverified_header(access_token)
        assert header["typ"] == "at+jwt"
        claims = pyjwt.decode(
            access_token,
            jwks.get_signing_key(header["kid"]).key,
            algorithms=["ES256"],
            audience=RS1,
            issuer=as_env.issuer,
            options={"require": ["exp", "iat", "jti", "sub", "client_id", "iss", "aud"]},
        )
        assert claims["client_id"] == client_id and claims["scope"] == "read"


def test_errors_over_http_are_json(server):
    r = requests.post(server + "/oauth2/token", data={"grant_type": "client_credentials"}, timeout=5)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = requests.post(
        server + "/oauth2/token", data="x" * 100000, headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=5
    )
    assert r.status_code == 413 and r.json()["error"] == "invalid_request"
    meta = requests.get(server + "/.well-known/oauth-authorization-server", timeout=5).json()
    assert meta["issuer"] == "https://as.example.test"
