"""The authorization code flow over real HTTP (gunicorn serving example_app): an independent
client library (Authlib's OAuth2Session, S256 PKCE, private_key_jwt, refresh) and the
``demo-client --flow code`` command, each with a person signing in and approving through the
example's login and consent pages (requests, parsing the HTML forms like a browser would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc.jwk import ECKey

import support
from as_helpers import ClientKey
from test_http_server import ShortLivedPrivateKeyJWT, pem, start_gunicorn, stop
from user_host import forms_of

USER, PASSWORD = "frank", "frank-password-7781"
APP_REDIRECT = "https://app.example.test/callback"
CLI_REDIRECT_PORT = support.free_port()
CLI_REDIRECT = f"http://127.0.0.1:{CLI_REDIRECT_PORT}/callback"


def serve_example(hsm, redis_server, tmp_path_factory, name: str, clients):
    """gunicorn serving example_app on a free port with ``clients(issuer, api)`` and the demo-rs
    resource server at ``<issuer>/api``; returns (process, issuer, api, settings)."""
    port = support.free_port()
    issuer = f"http://127.0.0.1:{port}"
    api = issuer + "/api"
    registry = tmp_path_factory.mktemp(name) / "registry.json"
    registry.write_text(
        json.dumps(
            {
                "clients": clients(issuer, api),
                "resource_servers": [
                    {
                        "resource": api,
                        "client_id": "demo-rs",
                        "token_endpoint_auth_method": "private_key_jwt",
                        "jwks": {"keys": [hsm.key("rs2-sig").public_jwk()]},
                        "scope": "read",
                    }
                ],
            }
        )
    )
    from conftest import as_settings

    settings = as_settings(
        redis_server.url, str(registry), OAUTH_HSM_ISSUER=issuer, OAUTH_HSM_REDIS_PREFIX=f"{name}:", OAUTH_HSM_REDIS_TIMEOUT="2"
    )  # about flows, not timeouts (busy machines)
    settings.update(
        {
            "OAUTH_HSM_RS_ISSUER": issuer,
            "OAUTH_HSM_RS_RESOURCE": api,
            "EXAMPLE_SECRET_KEY": f"{name}-key",
            "EXAMPLE_DEMO_USER": USER,
            "EXAMPLE_DEMO_PASSWORD": PASSWORD,
        }
    )
    proc, _ = start_gunicorn(settings, workers=2, port=port)
    return proc, issuer, api, settings


@pytest.fixture(scope="module")
def server(hsm, redis_server, tmp_path_factory):
    key = ClientKey.new("ES256")

    def clients(issuer, api):
        return [
            {
                "client_id": "authlib-web",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [key.public_jwk]},
                "grant_types": ["authorization_code", "refresh_token"],
                "redirect_uris": [APP_REDIRECT],
                "scope": "openid email read",
                "resources": [api],
            },
            {
                "client_id": "authlib-native",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "redirect_uris": [APP_REDIRECT],
                "scope": "openid read",
                "resources": [api],
            },
            {
                "client_id": "demo-client",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [hsm.key("sig-eddsa").public_jwk()]},
                "grant_types": ["authorization_code", "refresh_token"],
                "redirect_uris": [CLI_REDIRECT],
                "scope": "openid profile email read",
                "resources": [api],
            },
        ]

    proc, issuer, api, settings = serve_example(hsm, redis_server, tmp_path_factory, "http-users", clients)
    base = issuer
    yield {"base": base, "issuer": issuer, "api": api, "key": key, "settings": settings}
    stop(proc)


def approve_in_browser(session: requests.Session, url: str, stop_at: str) -> str:
    """Follow redirects like a browser, sign in, press Approve; returns the URL that leaves for the client."""
    response = session.get(url, allow_redirects=False, timeout=10)
    for _ in range(10):
        if response.status_code in (302, 303):
            target = urljoin(response.url, response.headers["Location"])
            if target.startswith(stop_at):
                return target
            response = session.get(target, allow_redirects=False, timeout=10)
            continue
        assert response.status_code == 200, (response.status_code, response.text[:500])
        form = forms_of(response.text)[0]
        fields = {f["name"]: f.get("value") or "" for f in form["fields"] if f.get("name") and f.get("type") != "checkbox"}
        if "password" in fields:
            fields.update(username=USER, password=PASSWORD)
        else:
            assert any(b.get("value") == "approve" for b in form["buttons"]), response.text[:500]
            fields["decision"] = "approve"
        action = urljoin(response.url, form["action"].replace("&amp;", "&"))
        response = session.post(action, data=fields, allow_redirects=False, timeout=10)
    raise AssertionError("too many steps")


def test_authlib_code_flow_with_pkce_and_refresh(server):
    key = server["key"]
    token_url = server["issuer"] + "/oauth2/token"
    auth = ShortLivedPrivateKeyJWT(server["issuer"], alg="ES256", headers={"kid": key.kid})
    client = OAuth2Session(
        "authlib-web",
        ECKey.import_key(pem(key)),
        scope="openid email read",
        redirect_uri=APP_REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method=auth,
    )
    verifier = "v" * 20 + os.urandom(24).hex()
    url, state = client.create_authorization_url(server["issuer"] + "/oauth2/authorize", code_verifier=verifier, nonce="n-1")
    assert "code_challenge=" in url and "code_challenge_method=S256" in url
    back = approve_in_browser(requests.Session(), url, APP_REDIRECT)
    params = parse_qs(urlsplit(back).query)
    assert params["state"] == [state] and params["iss"] == [server["issuer"]]
    token = client.fetch_token(token_url, authorization_response=back, code_verifier=verifier)
    assert token["token_type"].lower() == "bearer" and token["refresh_token"] and token["id_token"]
    api = requests.get(server["api"] + "/items", headers={"Authorization": "Bearer " + token["access_token"]}, timeout=10)
    assert api.status_code == 200, api.text
    refreshed = client.refresh_token(token_url, refresh_token=token["refresh_token"])
    assert refreshed["refresh_token"] != token["refresh_token"] and refreshed["access_token"] != token["access_token"]
    api = requests.get(server["api"] + "/items", headers={"Authorization": "Bearer " + refreshed["access_token"]}, timeout=10)
    assert api.status_code == 200
    info = requests.get(
        server["issuer"] + "/oauth2/userinfo", headers={"Authorization": "Bearer " + refreshed["access_token"]}, timeout=10
    ).json()
    assert info == {"sub": info["sub"], "email": f"{USER}@example.com", "email_verified": False}


def test_authlib_public_client(server):
    client = OAuth2Session(
        "authlib-native",
        scope="openid read",
        redirect_uri=APP_REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = os.urandom(40).hex()
    url, _ = client.create_authorization_url(server["issuer"] + "/oauth2/authorize", code_verifier=verifier)
    back = approve_in_browser(requests.Session(), url, APP_REDIRECT)
    token = client.fetch_token(server["issuer"] + "/oauth2/token", authorization_response=back, code_verifier=verifier)
    again = client.refresh_token(server["issuer"] + "/oauth2/token", refresh_token=token["refresh_token"])
    assert again["access_token"]


def test_code_reuse_over_http_twenty_at_once(server):
    """20 concurrent redemptions through gunicorn's workers: one 200, nineteen invalid_grant."""
    from test_http_server import concurrent_posts

    client = OAuth2Session("authlib-native", scope="read", redirect_uri=APP_REDIRECT, code_challenge_method="S256")
    verifier = os.urandom(40).hex()
    url, _ = client.create_authorization_url(server["issuer"] + "/oauth2/authorize", code_verifier=verifier)
    code = parse_qs(urlsplit(approve_in_browser(requests.Session(), url, APP_REDIRECT)).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": APP_REDIRECT,
        "code_verifier": verifier,
        "client_id": "authlib-native",
    }
    statuses = concurrent_posts(server["issuer"] + "/oauth2/token", form, 20)
    assert sorted(statuses) == [200] + [400] * 19


def test_demo_client_command_runs_the_code_flow(server, tmp_path):
    env = {**os.environ, **server["settings"], "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "example_app",
            "oauth-hsm",
            "demo-client",
            "--flow",
            "code",
            "--key-label",
            "sig-eddsa",
            "--redirect-uri",
            CLI_REDIRECT,
            "--timeout",
            "60",
            "--resource",
            server["api"],
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.strip().startswith(server["issuer"] + "/oauth2/authorize?"):
                url = line.strip()
        assert url, "the command printed no authorization URL"
        back = approve_in_browser(requests.Session(), url, CLI_REDIRECT)
        for _ in range(50):  # the command's listener answers the browser's redirect
            try:
                assert requests.get(back, timeout=5).status_code == 200
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "code redeemed with PKCE -> 200" in output and "refreshed once -> 200" in output
    assert '"typ": "at+jwt"' in output and "ID token header" in output
