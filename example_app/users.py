"""The example host's users: one demo user, a login page, logout — with Flask-Login.

The user name and password come from ``EXAMPLE_DEMO_USER`` / ``EXAMPLE_DEMO_PASSWORD`` (``./dev run``
sets and prints dev defaults); the password is kept only as a hash. The hooks at the end are all
flask-oauth-hsm needs to know about users (docs/users.md).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Flask, abort, redirect, render_template, request, session
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.security import check_password_hash, generate_password_hash

from flask_oauth_hsm import OAuthHSM, User

bp = Blueprint("users", __name__)


@dataclass
class DemoUser(UserMixin):
    username: str
    password_hash: str = field(repr=False)

    @property
    def subject(self) -> str:
        # A stable identifier that is not the user name (names are personal data and change).
        return "user-" + hashlib.sha256(self.username.encode()).hexdigest()[:16]

    def get_id(self) -> str:
        return self.subject

    @property
    def claims(self) -> dict[str, Any]:
        return {
            "name": self.username.title(),
            "preferred_username": self.username,
            "username": self.username,
            "email": f"{self.username}@example.com",
            "email_verified": False,
        }


class Directory:
    """The host's user database: here, the one demo user from the environment."""

    def __init__(self, username: str | None, password: str | None):
        self.users: dict[str, DemoUser] = {}
        if username and password:
            self.users[username] = DemoUser(username, generate_password_hash(password))

    def check(self, username: str, password: str) -> DemoUser | None:
        user = self.users.get(username)
        if user is None:
            check_password_hash(_DUMMY_HASH, password)  # same work for unknown names
            return None
        return user if check_password_hash(user.password_hash, password) else None

    def by_subject(self, subject: str) -> DemoUser | None:
        return next((u for u in self.users.values() if u.subject == subject), None)


_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


def install(app: Flask, oauth: OAuthHSM) -> Directory:
    """Flask-Login, the login page, and the flask-oauth-hsm hooks. Call before ``oauth.init_app``."""
    directory = Directory(os.environ.get("EXAMPLE_DEMO_USER"), os.environ.get("EXAMPLE_DEMO_PASSWORD"))
    app.extensions["example_users"] = directory
    login_manager = LoginManager(app)
    login_manager.login_view = "users.login"
    login_manager.user_loader(directory.by_subject)

    @oauth.current_user
    def signed_in_user() -> User | None:
        if not current_user.is_authenticated:
            return None
        return User(current_user.subject, session.get("auth_time", 0), amr=("pwd",), claims=current_user.claims)

    @oauth.login_url
    def login_page(next_url: str) -> str:
        return "/login?" + urlencode({"next": next_url})

    @oauth.user_claims
    def claims_of(subject: str) -> dict[str, Any] | None:
        user = directory.by_subject(subject)
        return user.claims if user else None

    app.register_blueprint(bp)
    return directory


def _safe_next(value: str | None) -> str:
    """Only paths of this site: never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or urlsplit(value).netloc:
        return "/"
    return value


def _csrf() -> str:
    token = session.get("login_csrf")
    if token is None:
        token = session["login_csrf"] = secrets.token_urlsafe(24)
    return token


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    directory: Directory = bp_directory()
    error = None
    if request.method == "POST":
        if not hmac.compare_digest(request.form.get("csrf_token", ""), _csrf()):
            abort(400)
        user = directory.check(request.form.get("username", ""), request.form.get("password", ""))
        if user is not None:
            session.pop("login_csrf", None)  # a fresh token for the next form (the session is a signed cookie)
            login_user(user)
            session["auth_time"] = int(time.time())
            return redirect(_safe_next(request.args.get("next")))
        error = "Wrong user name or password."
    return render_template(
        "login.html", error=error, csrf_token=_csrf(), no_users=not directory.users, next=_safe_next(request.args.get("next"))
    ), 401 if error else 200


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Any:
    if request.method == "POST":
        if not hmac.compare_digest(request.form.get("csrf_token", ""), _csrf()):
            abort(400)
        logout_user()
        session.clear()
        return redirect("/")
    return render_template("logout.html", csrf_token=_csrf())


def bp_directory() -> Directory:
    from flask import current_app

    directory: Directory = current_app.extensions["example_users"]
    return directory
