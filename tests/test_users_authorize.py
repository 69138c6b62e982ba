"""The authorization endpoint: what is an error page, what goes back to the client, PKCE, resources,
prompt, the pending request's browser binding, the consent page and its CSRF token, metadata."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

from scenarios import RS1, RS4, WEB_REDIRECT
from user_host import Browser, checkbox_names, consent_form, pkce_pair, text_of
from users_helpers import Flow, auth_params

VERIFIER, CHALLENGE = pkce_pair()


def start(env, **params):
    """GET /authorize as a signed-in browser; the raw response."""
    browser = Browser(env.app)
    browser.sign_in()
    return browser.client.get("/oauth2/authorize?" + urlencode(params, doseq=True)), browser


def expect_page(response, status=400):
    assert response.status_code == status, (response.status_code, response.headers.get("Location"))
    assert response.mimetype == "text/html" and "Location" not in response.headers
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_data(as_text=True)


def expect_redirect_error(env, response, error, state="s-1", to=WEB_REDIRECT):
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    location = response.headers["Location"]
    assert location.startswith(to + "?"), location
    assert f"error={error}" in location and f"state={state}" in location
    assert "iss=" + re.escape(env.issuer).replace("\\", "").replace(":", "%3A").replace("/", "%2F") in location


# --- the client and its redirect URI: an error page, never a redirect --------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        WEB_REDIRECT + "/",  # trailing slash
        "https://web.example.test:443/cb",  # explicit port
        "https://web.example.test:8443/cb",  # another port
        WEB_REDIRECT + "/extra",  # path suffix
        WEB_REDIRECT + "?x=1",  # query added
        "https://web.example.test@evil.example/cb",  # userinfo trick
        "https://good@evil.example/cb",
        "HTTPS://web.example.test/cb",  # case
        "https://evil.example/cb",
        "https://web.example.test/cb#frag",
        "http://web.example.test/cb",
    ],
)
def test_near_miss_redirect_uris_get_an_error_page(user_env, redirect_uri):
    r, _ = start(user_env, **auth_params("web", challenge=CHALLENGE, redirect_uri=redirect_uri, state="s-1"))
    assert "not registered" in expect_page(r)


def test_loopback_port_is_compared_exactly(user_env):
    r, _ = start(user_env, **auth_params("native", challenge=CHALLENGE, redirect_uri="http://127.0.0.1:9999/callback"))
    expect_page(r)
    r, _ = start(user_env, **auth_params("native", challenge=CHALLENGE, redirect_uri="http://localhost:8765/callback"))
    expect_page(r)


@pytest.mark.parametrize(
    "params",
    [
        {"client_id": "nobody"},
        {"client_id": None},
        {"client_id": "machine"},  # a client without the authorization_code grant
        {"client_id": "rs-1"},  # a resource server is not a client
    ],
)
def test_unknown_or_unfit_clients_get_an_error_page(user_env, params):
    base = auth_params("web", challenge=CHALLENGE)
    base.update(params)
    r, _ = start(user_env, **{k: v for k, v in base.items() if v is not None})
    expect_page(r)


def test_several_registered_redirect_uris_need_one_named(user_env):
    params = auth_params("web", challenge=CHALLENGE)
    del params["redirect_uri"]
    r, _ = start(user_env, **params)
    assert "names no redirect URI" in expect_page(r)


def test_the_only_redirect_uri_may_be_left_out(user_env):
    flow = Flow(user_env, "oidc-only")
    answer = flow.authorize(scope="openid", redirect_uri=None)
    assert answer.location.startswith("https://login.example.test/cb?") and answer.code
    r = flow.redeem(answer.code, redirect_uri=None)
    assert r.status_code == 200, r.get_json()


def test_repeated_or_malformed_parameters_get_an_error_page(user_env):
    browser = Browser(user_env.app)
    r = browser.client.get("/oauth2/authorize?client_id=web&client_id=web")
    expect_page(r)
    r = browser.client.get("/oauth2/authorize?client_id=%ff")
    expect_page(r)
    r = browser.client.get("/oauth2/authorize?" + "a=" + "x" * 20000)
    expect_page(r, 413)


# --- errors that go back to the client, with state and iss (RFC 9207) --------------------------------


@pytest.mark.parametrize(
    "change,error",
    [
        ({"response_type": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"code_challenge": "x" * 43 + "="}, "invalid_request"),
        ({"scope": "read admin"}, "invalid_scope"),
        ({"scope": "read  write"}, "invalid_scope"),
        ({"resource": "https://rs2.example.test"}, "invalid_target"),
        ({"resource": "not a uri"}, "invalid_target"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"prompt": "sometimes"}, "invalid_request"),
        ({"max_age": "-1"}, "invalid_request"),
        ({"max_age": "²"}, "invalid_request"),
        ({"claims": "{not json"}, "invalid_request"),
        ({"claims": '["a"]'}, "invalid_request"),
        ({"claims": '{"introspection": {"email": 1}}'}, "invalid_request"),
        ({"nonce": "\u00e9"}, "invalid_request"),
        ({"request": "eyJhbGciOiJub25lIn0.e30."}, "invalid_request_object"),
        ({"request_uri": "urn:ietf:params:oauth:request_uri:abc"}, "invalid_request_uri"),
    ],
)
def test_request_errors_are_redirected_with_state_and_iss(user_env, change, error):
    params = auth_params("web", challenge=CHALLENGE, state="s-1")
    params.update(change)
    r, _ = start(user_env, **{k: v for k, v in params.items() if v is not None})
    expect_redirect_error(user_env, r, error)


def test_a_bad_state_is_not_echoed(user_env):
    r, _ = start(user_env, **auth_params("web", challenge=CHALLENGE, state="\u00e9t\u00e9"))
    assert r.status_code == 303 and "error=invalid_request" in r.headers["Location"] and "state=" not in r.headers["Location"]


def test_post_to_the_authorization_endpoint(user_env):
    flow = Flow(user_env)
    flow.params = auth_params("web", challenge=flow.challenge)
    answer = flow.browser.authorize(flow.params, method="POST")
    assert answer.code and flow.redeem(answer.code).status_code == 200


# --- login and consent ---------------------------------------------------------------------------------


def test_nobody_signed_in_goes_to_the_login_page_and_back(user_env):
    browser = Browser(user_env.app)
    r = browser.client.get("/oauth2/authorize?" + urlencode(auth_params("web", challenge=CHALLENGE)))
    assert r.status_code == 303 and r.headers["Location"].startswith("/login?next=")
    assert "oauth_hsm_browser=" in r.headers["Set-Cookie"] and "HttpOnly" in r.headers["Set-Cookie"]
    assert "SameSite=Lax" in r.headers["Set-Cookie"] and "Secure" in r.headers["Set-Cookie"]


def test_consent_page_shows_client_scopes_resources_and_claims(user_env):
    flow = Flow(user_env)
    answer = flow.authorize(
        decision=None, scope="openid email read", resource=[RS1, RS4], claims='{"introspection": {"email": null}}'
    )
    assert answer.status == 200
    page = answer.page
    text = text_of(page)
    assert "Web Shop" in text and "Alice Liddell" in text and RS1 in text and RS4 in text
    assert "alice@example.test" in text
    assert checkbox_names(page) == [f"claims:rs-4={c}" for c in ("birthdate", "email", "given_name", "username")]
    checked = [f["value"] for f in consent_form(page)["fields"] if f.get("type") == "checkbox" and "checked" in f]
    assert checked == ["email"]
    assert re.search(r'<button type="submit" name="decision" value="approve">Approve</button>', page)
    assert '<html lang="en">' in page and "<label for=" in page and "<legend>" in page


def test_denied_consent_goes_back_as_access_denied(user_env):
    flow = Flow(user_env)
    answer = flow.authorize(decision="deny")
    assert answer.params["error"] == "access_denied" and answer.params["state"] == flow.params["state"]
    assert answer.params["iss"] == user_env.issuer and "code" not in answer.params


@pytest.mark.parametrize("csrf", [None, "", "0" * 64, "wrong"])
def test_consent_without_the_right_csrf_token_is_refused(user_env, csrf):
    flow = Flow(user_env)
    answer = flow.authorize(decision=None)
    r = flow.browser.submit_consent(answer.page, "approve", csrf_token=csrf)
    expect_page(r)
    # the request is still pending: the real form still works
    r = flow.browser.submit_consent(answer.page, "approve")
    assert r.status_code == 303 and "code=" in r.headers["Location"]


def test_consent_form_of_another_user_is_refused(user_env):
    flow = Flow(user_env)
    answer = flow.authorize(decision=None)
    flow.browser.sign_out()
    flow.browser.sign_in("bob")
    expect_page(flow.browser.submit_consent(answer.page, "approve"))


def test_a_pending_request_is_bound_to_its_browser(user_env):
    flow = Flow(user_env)
    answer = flow.authorize(decision=None)
    action = consent_form(answer.page)["action"].replace("&amp;", "&")
    other = Browser(user_env.app)
    other.sign_in()
    expect_page(other.client.get(action))
    expect_page(other.submit_consent(answer.page, "approve"))


def test_a_decision_is_answered_once(user_env):
    flow = Flow(user_env)
    answer = flow.authorize(decision=None)
    first = flow.browser.submit_consent(answer.page, "approve")
    assert first.status_code == 303 and "code=" in first.headers["Location"]
    expect_page(flow.browser.submit_consent(answer.page, "approve"))


def test_remembered_consent_skips_the_page(make_user_as):
    env = make_user_as()
    flow = Flow(env, username="bob")
    assert flow.authorize(decision=None, scope="read").status == 200  # asked the first time
    assert flow.browser.submit_consent(flow.browser.last_page, "approve").status_code == 303
    again = Flow(env, username="bob")
    again.browser = flow.browser
    assert again.authorize(decision=None, scope="read").code  # remembered
    assert again.authorize(decision=None, scope="read write").status == 200  # more than approved: asked again
    assert again.authorize(decision=None, scope="read", prompt="consent").status == 200  # forced


def test_consent_lifetime_zero_always_asks(make_user_as):
    env = make_user_as(OAUTH_HSM_CONSENT_LIFETIME="0")
    flow = Flow(env)
    flow.code(scope="read")
    assert flow.authorize(decision=None, scope="read").status == 200


def test_first_party_clients_skip_consent(make_user_as):
    env = make_user_as(host={"first_party": ("web",)})
    flow = Flow(env)
    answer = flow.authorize(decision=None, scope="openid read", claims='{"introspection": {"email": null}}')
    assert answer.code


def test_prompt_none(user_env):
    flow = Flow(user_env)
    flow.browser = Browser(user_env.app)  # nobody signed in
    answer = flow.authorize(prompt="none", decision=None)
    assert answer.params["error"] == "login_required"
    flow.browser.sign_in("bob")
    answer = flow.browser.authorize(
        auth_params("web", challenge=flow.challenge, scope="openid profile", prompt="none"), decision=None
    )
    assert answer.params["error"] == "consent_required"


def test_prompt_login_and_max_age_need_a_fresh_sign_in(user_env, fake_clock):
    flow = Flow(user_env)
    flow.browser.sign_in()
    fake_clock.advance(120)
    r = flow.browser.client.get("/oauth2/authorize?" + urlencode(auth_params("web", challenge=flow.challenge, max_age="60")))
    assert r.status_code == 303 and r.headers["Location"].startswith("/login?next=")
    # back from the login page without signing in again: login_required, not a loop
    from urllib.parse import unquote

    r = flow.browser.client.get(unquote(r.headers["Location"].split("next=")[1]))
    assert r.status_code == 303 and "error=login_required" in r.headers["Location"]


def test_expired_pending_request(user_env, fake_clock):
    flow = Flow(user_env)
    answer = flow.authorize(decision=None)
    fake_clock.advance(user_env.state.settings.authorization_request_lifetime + 1)
    assert "expired" in expect_page(flow.browser.submit_consent(answer.page, "approve"))


def test_consent_page_can_be_overridden_by_the_host(make_user_as, tmp_path):
    env = make_user_as()
    (tmp_path / "oauth_hsm").mkdir()
    (tmp_path / "oauth_hsm" / "consent.html").write_text(
        '<form method="post" action="{{ consent.action }}">'
        '<input type="hidden" name="csrf_token" value="{{ consent.csrf_token }}">'
        'Custom page for {{ consent.client_name }}<button name="decision" value="approve">Approve</button></form>'
    )
    env.app.template_folder = str(tmp_path)
    env.app.jinja_env.cache.clear() if env.app.jinja_env.cache else None
    flow = Flow(env)
    answer = flow.authorize(decision=None)
    assert "Custom page for Web Shop" in answer.page
    r = flow.browser.submit_consent(answer.page, "approve")
    assert r.status_code == 303 and "code=" in r.headers["Location"]


def test_consent_csp_allows_the_redirect_to_the_client(user_env):
    flow = Flow(user_env)
    flow.params = auth_params("web", challenge=flow.challenge)
    flow.browser.sign_in()
    r = flow.browser.client.get("/oauth2/authorize?" + urlencode(flow.params))
    assert r.status_code == 200
    assert "form-action 'self' https://web.example.test;" in r.headers["Content-Security-Policy"]


# --- metadata -------------------------------------------------------------------------------------------


def test_metadata_advertises_what_is_enforced(user_env):
    doc = user_env.client().get("/.well-known/oauth-authorization-server").get_json()
    assert doc["authorization_endpoint"] == user_env.issuer + "/oauth2/authorize"
    assert doc["response_types_supported"] == ["code"] and doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["grant_types_supported"] == ["authorization_code", "client_credentials", "refresh_token"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["request_parameter_supported"] is True and doc["request_uri_parameter_supported"] is False
    assert doc["userinfo_endpoint"] == user_env.issuer + "/oauth2/userinfo"
    oidc = user_env.client().get("/.well-known/openid-configuration")
    assert oidc.status_code == 200 and oidc.get_json() == doc
    assert doc["subject_types_supported"] == ["public"] and "ES256" in doc["id_token_signing_alg_values_supported"]
    assert "none" in doc["token_endpoint_auth_methods_supported"]


def test_without_users_there_is_no_authorization_endpoint(as_env):
    doc = as_env.client().get("/.well-known/oauth-authorization-server").get_json()
    assert "authorization_endpoint" not in doc and doc["response_types_supported"] == []
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert as_env.client().get("/oauth2/authorize").status_code == 404
    assert as_env.client().get("/.well-known/openid-configuration").status_code == 404


def test_max_age_zero_accepts_a_sign_in_of_this_second(user_env):
    flow = Flow(user_env)
    flow.browser = Browser(user_env.app)  # nobody signed in: the flow signs in, then max_age=0 holds
    assert flow.authorize(max_age="0").code


def test_prompt_login_needs_a_sign_in_after_the_request(user_env, fake_clock):
    flow = Flow(user_env)
    flow.browser.sign_in()
    fake_clock.advance(5)
    answer = flow.authorize(prompt="login")  # sends the user to the login page; signing in again satisfies it
    assert answer.code
