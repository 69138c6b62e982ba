"""CIBA over real HTTP (gunicorn serving example_app): ``demo-client --flow ciba`` asks for the demo
user by phone number, a person approves on the example's ``/ciba`` device page — with requests
parsing the forms, and in a real browser (Debian's Chromium) — and the command polls, gets the
tokens and calls the protected API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

import support
from test_http_server import start_gunicorn, stop
from user_host import forms_of

USER, PASSWORD, PHONE = "heidi", "heidi-password-2718", "+15550100777"
CIBA = "urn:openid:params:grant-type:ciba"


@pytest.fixture(scope="module")
def server(hsm, redis_server, tmp_path_factory):
    port = support.free_port()
    issuer = f"http://127.0.0.1:{port}"
    api = issuer + "/api"
    registry = tmp_path_factory.mktemp("ciba-example") / "registry.json"
    registry.write_text(
        json.dumps(
            {
                "clients": [
                    {
                        "client_id": "demo-client",
                        "client_name": "Demo client",
                        "token_endpoint_auth_method": "private_key_jwt",
                        "jwks": {"keys": [hsm.key("sig-eddsa").public_jwk()]},
                        "grant_types": [CIBA],
                        "backchannel_token_delivery_mode": "poll",
                        "scope": "openid profile email read",
                        "resources": [api],
                    }
                ],
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

    # A 1 s interval: the command polls as told, and this test need not wait 5 s per poll.
    settings = as_settings(
        redis_server.url,
        str(registry),
        OAUTH_HSM_ISSUER=issuer,
        OAUTH_HSM_REDIS_PREFIX="ciba-example:",
        OAUTH_HSM_REDIS_TIMEOUT="2",
        OAUTH_HSM_CIBA_INTERVAL="1",
    )
    settings.update(
        {
            "OAUTH_HSM_RS_ISSUER": issuer,
            "OAUTH_HSM_RS_RESOURCE": api,
            "OAUTH_HSM_RS_MODE": "local",
            "EXAMPLE_SECRET_KEY": "ciba-example-key",
            "EXAMPLE_DEMO_USER": USER,
            "EXAMPLE_DEMO_PASSWORD": PASSWORD,
            "EXAMPLE_DEMO_PHONE": PHONE,
        }
    )
    proc, base = start_gunicorn(settings, workers=2, port=port)
    yield {"base": base, "issuer": issuer, "api": api, "settings": settings}
    stop(proc)


def start_command(server, *extra: str) -> subprocess.Popen:
    env = {**os.environ, **server["settings"], "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "example_app",
            "oauth-hsm",
            "demo-client",
            "--flow",
            "ciba",
            "--key-label",
            "sig-eddsa",
            "--binding-message",
            "Code 4242",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_request(proc: subprocess.Popen) -> str:
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("auth_req_id: "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError("the command printed no auth_req_id:\n" + "".join(lines))


def signed_in(base: str) -> requests.Session:
    session = requests.Session()
    page = session.get(base + "/login", timeout=10).text
    fields = {f["name"]: f.get("value") or "" for f in forms_of(page)[0]["fields"] if f.get("name")}
    r = session.post(base + "/login?next=/ciba", data={**fields, "username": USER, "password": PASSWORD}, timeout=10)
    assert r.status_code == 200 and r.url.endswith("/ciba"), (r.status_code, r.url)
    return session


def decide_on_device(base: str, decision: str, *, binding_message: str = "Code 4242") -> str:
    """Sign in on the device page and press ``decision`` on the request showing ``binding_message``."""
    session = signed_in(base)
    for _ in range(100):  # the request is stored before the command prints its id
        page = session.get(base + "/ciba", timeout=10).text
        if binding_message in page:
            break
        time.sleep(0.1)
    assert binding_message in page and "Demo client" in page, page[:1000]
    form = forms_of(page)[-1]
    fields = {f["name"]: f.get("value") or "" for f in form["fields"] if f.get("name")}
    r = session.post(base + "/ciba", data={**fields, "decision": decision}, timeout=10)
    assert r.status_code == 200, r.status_code
    return r.text


def test_demo_client_ciba_approved_on_the_device_page(server):
    proc = start_command(server)
    try:
        wait_for_request(proc)
        page = decide_on_device(server["base"], "approve")
        assert "Approved" in page
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "polled -> 200" in output and '"typ": "at+jwt"' in output and "ID token header" in output
    assert f"GET {server['api']}/items -> 200" in output and '"client_id": "demo-client"' in output


def test_demo_client_ciba_denied(server):
    proc = start_command(server, "--login-hint", USER)
    try:
        wait_for_request(proc)
        assert "Denied" in decide_on_device(server["base"], "deny")
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1 and '"error": "access_denied"' in output, output


def test_the_device_page_needs_a_signed_in_user_and_its_csrf_token(server):
    r = requests.get(server["base"] + "/ciba", allow_redirects=False, timeout=10)
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    session = signed_in(server["base"])
    assert session.post(server["base"] + "/ciba", data={"handle": "x", "decision": "approve"}, timeout=10).status_code == 400


def wait_for_main_text(driver, text: str) -> None:
    """Until the page's <main> shows ``text`` (bounded, not a timing assertion). A click returns
    before the navigation it starts has finished, so the <main> found may be the one of the page
    being left, gone by the time its text is read (stale): then look again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: text in d.find_element(By.TAG_NAME, "main").text
    )


@pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("chromedriver") is None,
    reason="./dev test installs chromium and chromium-driver",
)
def test_approve_in_a_real_browser(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from test_users_browser import CHROMIUM, DRIVER

    proc = start_command(server, "--login-hint", f"tel:{PHONE}", "--binding-message", "Browser 77")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.implicitly_wait(10)
        wait_for_request(proc)
        driver.get(server["base"] + "/ciba")
        driver.find_element(By.NAME, "username").send_keys(USER)
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_main_text(driver, "Browser 77")
        driver.find_element(By.XPATH, "//button[normalize-space()='Approve']").click()
        wait_for_main_text(driver, "Approved")
        output, _ = proc.communicate(timeout=60)
    finally:
        driver.quit()
        proc.kill()
    assert proc.returncode == 0 and "polled -> 200" in output, output
