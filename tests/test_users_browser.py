"""End to end in a real browser: Debian's Chromium (headless, driven by selenium through
chromium-driver) against example_app under gunicorn. A person opens the demo client, signs in on
the example's login page, approves on the consent page; the demo client redeems the code with
PKCE, refreshes once and calls /api/items. Then once more, denying consent."""

from __future__ import annotations

import json
import shutil

import pytest

import support
from test_http_server import start_gunicorn, stop

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
USER, PASSWORD = "erin", "erin-password-0451"
pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("chromedriver") is None,
    reason="./dev test installs chromium and chromium-driver",
)


@pytest.fixture(scope="module")
def example(hsm, redis_server, tmp_path_factory):
    """example_app under gunicorn, as `./dev run` serves it, with the demo client's key in the test token."""
    port = support.free_port()
    issuer = f"http://127.0.0.1:{port}"
    api = issuer + "/api"
    registry = tmp_path_factory.mktemp("browser") / "registry.json"
    demo_key = hsm.key("sig-eddsa").public_jwk()
    rs_key = hsm.key("rs2-sig").public_jwk()
    registry.write_text(
        json.dumps(
            {
                "clients": [
                    {
                        "client_id": "demo-client",
                        "client_name": "Demo client",
                        "token_endpoint_auth_method": "private_key_jwt",
                        "jwks": {"keys": [demo_key]},
                        "grant_types": ["authorization_code", "refresh_token"],
                        "redirect_uris": [issuer + "/demo/callback"],
                        "scope": "openid profile email read",
                        "resources": [api],
                    }
                ],
                "resource_servers": [
                    {
                        "resource": api,
                        "client_id": "demo-rs",
                        "token_endpoint_auth_method": "private_key_jwt",
                        "jwks": {"keys": [rs_key]},
                        "scope": "read",
                    }
                ],
            }
        )
    )
    from conftest import as_settings

    settings = as_settings(
        redis_server.url,
        str(registry),
        OAUTH_HSM_ISSUER=issuer,
        OAUTH_HSM_CONSENT_LIFETIME="0",
        OAUTH_HSM_REDIS_PREFIX="browser-test:",
        OAUTH_HSM_REDIS_TIMEOUT="2",
    )
    settings.update(
        {
            "OAUTH_HSM_RS_ISSUER": issuer,
            "OAUTH_HSM_RS_RESOURCE": api,
            "OAUTH_HSM_RS_MODE": "local",
            "EXAMPLE_SECRET_KEY": "browser-test-session-key",
            "EXAMPLE_DEMO_USER": USER,
            "EXAMPLE_DEMO_PASSWORD": PASSWORD,
            "EXAMPLE_DEMO_CLIENT_KEY": "sig-eddsa",
        }
    )
    proc, base = start_gunicorn(settings, workers=2, port=port)
    yield base
    stop(proc)


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options)
    driver.set_page_load_timeout(60)
    driver.implicitly_wait(10)
    yield driver
    driver.quit()


def sign_in(driver) -> None:
    from selenium.webdriver.common.by import By

    assert "/login" in driver.current_url, driver.current_url
    driver.find_element(By.NAME, "username").send_keys(USER)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def press(driver, label: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[normalize-space()='{label}']").click()


def arrive(driver, url_prefix: str) -> None:
    """Wait until the browser has followed the redirects to ``url_prefix`` (a click returns before
    the navigation it starts has finished; bounded, not a timing assertion)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(
        lambda d: d.current_url.startswith(url_prefix) and d.execute_script("return document.readyState") == "complete"
    )


def test_sign_in_approve_redeem_refresh_and_call_the_api(example, browser):
    from selenium.webdriver.common.by import By

    browser.get(example + "/demo/start")
    sign_in(browser)
    arrive(browser, example + "/oauth2/consent?")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Allow Demo client access?"
    assert "Erin" in browser.find_element(By.TAG_NAME, "main").text  # the signed-in user's name
    press(browser, "Approve")
    arrive(browser, example + "/demo/callback?")
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Code redeemed (PKCE) — HTTP 200" in page, page
    assert "nonce matches: True" in page
    assert "Refreshed once — HTTP 200" in page
    assert "GET /api/items with the refreshed access token — HTTP 200" in page
    assert '"hsm"' in page and '"demo-client"' in page


def test_denied_consent(example, browser):
    from selenium.webdriver.common.by import By

    browser.get(example + "/demo/start")
    sign_in(browser)
    arrive(browser, example + "/oauth2/consent?")
    press(browser, "Deny")
    arrive(browser, example + "/demo/callback?")
    assert "error=access_denied" in browser.current_url
    assert "access_denied" in browser.find_element(By.ID, "error").text
