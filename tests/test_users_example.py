"""example_app as a host with users: the login page (hashed password, CSRF, no open redirect),
logout, and the hooks it gives flask-oauth-hsm."""

from __future__ import annotations

import re

import pytest

from user_host import forms_of


@pytest.fixture()
def example(as_env, monkeypatch):
    monkeypatch.setenv("EXAMPLE_DEMO_USER", "grace")
    monkeypatch.setenv("EXAMPLE_DEMO_PASSWORD", "grace-password-1906")
    from example_app import create_app

    app = create_app({**as_env.settings, "SECRET_KEY": "example-test"})
    return app


def login_form(client, next_url="/"):
    page = client.get("/login", query_string={"next": next_url}).get_data(as_text=True)
    form = forms_of(page)[0]
    fields = {f["name"]: f.get("value") or "" for f in form["fields"] if f.get("name")}
    assert {"username", "password", "csrf_token"} <= set(fields)
    return form["action"].replace("&amp;", "&"), fields


def test_the_password_is_kept_hashed(example):
    user = example.extensions["example_users"].users["grace"]
    assert "grace-password-1906" not in user.password_hash and user.password_hash.startswith(("scrypt:", "pbkdf2:"))


def test_sign_in_sign_out(example):
    client = example.test_client()
    action, fields = login_form(client, "/oauth2/consent?id=x")
    r = client.post(action, data={**fields, "username": "grace", "password": "grace-password-1906"})
    assert r.status_code == 302 and r.headers["Location"] == "/oauth2/consent?id=x"
    with client.session_transaction() as session:
        assert session["auth_time"] > 0
    logout = forms_of(client.get("/logout").get_data(as_text=True))[0]
    token = next(f["value"] for f in logout["fields"] if f["name"] == "csrf_token")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    with client.session_transaction() as session:
        assert "_user_id" not in session


@pytest.mark.parametrize("username,password", [("grace", "wrong"), ("nobody", "grace-password-1906"), ("", "")])
def test_wrong_credentials(example, username, password):
    client = example.test_client()
    action, fields = login_form(client)
    r = client.post(action, data={**fields, "username": username, "password": password})
    assert r.status_code == 401 and "Wrong user name or password" in r.get_data(as_text=True)


def test_login_needs_its_csrf_token(example):
    client = example.test_client()
    action, _fields = login_form(client)
    r = client.post(action, data={"username": "grace", "password": "grace-password-1906"})
    assert r.status_code == 400


@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"])
def test_no_open_redirect_after_sign_in(example, next_url):
    client = example.test_client()
    action, fields = login_form(client, next_url)
    r = client.post(action, data={**fields, "username": "grace", "password": "grace-password-1906"})
    assert r.status_code == 302 and r.headers["Location"] == "/"


def test_the_hooks(example):
    ctx = example.extensions["oauth_hsm"]
    assert {"current_user", "login_url", "user_claims"} <= set(ctx.hooks) and "users" in ctx.features
    directory = example.extensions["example_users"]
    subject = directory.users["grace"].subject
    assert re.fullmatch(r"user-[0-9a-f]{16}", subject) and ctx.hooks["user_claims"](subject)["email"] == "grace@example.com"
    assert ctx.hooks["login_url"]("/oauth2/consent?id=1") == "/login?next=%2Foauth2%2Fconsent%3Fid%3D1"
