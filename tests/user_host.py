"""A host app with users, as a user of the extension would write it, for the user-flow tests.

The host owns its users: a login form (username, password), a session, a logout; it tells the
extension who is signed in (``@oauth.current_user``), where its login page is (``@oauth.login_url``)
and a user's claims by subject (``@oauth.user_claims``). :class:`Browser` drives it through the
Flask test client like a person would: follow redirects, fill the login form, press a consent
button. No import-time side effects (child processes import this too).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

USERS: dict[str, dict[str, Any]] = {
    "alice": {
        "password": "alice-password-1",
        "subject": "user-1001",
        "claims": {
            "email": "alice@example.test",
            "email_verified": True,
            "given_name": "Alice",
            "name": "Alice Liddell",
            "birthdate": "1990-05-04",
            "username": "alice",
        },
    },
    "bob": {
        "password": "bob-password-2",
        "subject": "user-1002",
        "claims": {"email": "bob@example.test", "given_name": "Bob", "name": "Bob Builder", "username": "bob"},
    },
}
BY_SUBJECT = {u["subject"]: u for u in USERS.values()}


def build_user_app(
    settings: dict[str, Any],
    *,
    first_party: tuple[str, ...] = (),
    acr: str | None = "urn:example:pwd",
    with_user_claims: bool = True,
    configure: Any = None,
):
    from flask import Flask, redirect, request, session, url_for

    from flask_oauth_hsm import OAuthHSM, ResourceProtector, User, clock

    app = Flask("user_host")
    app.config.update(settings)
    app.config["TESTING"] = True
    app.secret_key = "user-host-test-secret"
    oauth = OAuthHSM()

    @oauth.current_user
    def current_user():
        subject = session.get("sub")
        if subject is None:
            return None
        return User(subject, session["auth_time"], acr=acr, amr=("pwd",), claims=BY_SUBJECT[subject]["claims"])

    @oauth.login_url
    def login_url(next_url):
        return url_for("login", next=next_url)

    @oauth.skip_consent
    def skip_consent(client_id, user):
        return client_id in first_party

    if with_user_claims:

        @oauth.user_claims
        def user_claims(subject):
            user = BY_SUBJECT.get(subject)
            return user["claims"] if user else None

    if configure is not None:  # more hooks before init_app (tests/ciba_helpers.py)
        configure(app, oauth)
    oauth.init_app(app)

    @app.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "POST":
            user = USERS.get(request.form.get("username", ""))
            if user is not None and secrets.compare_digest(user["password"], request.form.get("password", "")):
                # The package's clock, so tests that move it (fake_clock) move the host's too.
                session["sub"], session["auth_time"] = user["subject"], int(clock.now())
                return redirect(request.args.get("next") or "/")
        return (
            '<form method="post"><input name="username"><input type="password" name="password">'
            '<button type="submit">Sign in</button></form>'
        )

    @app.post("/logout")
    def logout():
        session.clear()
        return "signed out"

    if settings.get("OAUTH_HSM_RS_RESOURCE"):
        from flask import g, jsonify

        api = ResourceProtector(app)

        @app.get("/api/items")
        @api.require_token(scope="read")
        def items():
            return jsonify(items=["a"], sub=g.oauth_token["sub"])

    return app


# --- a person with a browser ------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _Forms(HTMLParser):
    """The forms of a page: action and fields (inputs, and buttons with a name)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action") or "", "fields": [], "buttons": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["fields"].append(a)
        elif tag == "button" and self.forms:
            self.forms[-1]["buttons"].append(a)


def forms_of(html: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


@dataclass
class Answer:
    """Where the authorization ended: at the client's redirect URI (with its parameters), or on a page."""

    status: int
    location: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    page: str = ""

    @property
    def code(self) -> str | None:
        return self.params.get("code")


@dataclass
class Browser:
    """A person at the host, through the Flask test client (which keeps cookies)."""

    app: Any
    client: Any = None
    last_page: str = ""

    def __post_init__(self) -> None:
        self.client = self.app.test_client()

    def sign_in(self, username: str = "alice") -> None:
        r = self.client.post("/login", data={"username": username, "password": USERS[username]["password"]})
        assert r.status_code == 302, r.status_code

    def sign_out(self) -> None:
        self.client.post("/logout")

    def authorize(
        self,
        params: dict[str, Any],
        *,
        username: str | None = "alice",
        decision: str | None = "approve",
        uncheck: tuple[str, ...] = (),
        method: str = "GET",
    ) -> Answer:
        """Start at /authorize and do what a person does: sign in when sent to the login page,
        press ``decision`` on the consent page. Stops at the client (a redirect off the host) or a page."""
        if method == "GET":
            r = self.client.get("/oauth2/authorize?" + urlencode(params, doseq=True))
        else:
            r = self.client.post("/oauth2/authorize", data=params)
        for _ in range(10):
            if r.status_code in (302, 303):
                location = r.headers["Location"]
                parts = urlsplit(location)
                if parts.netloc or (parts.scheme and parts.scheme not in ("http", "https")):
                    return Answer(r.status_code, location, {k: v[0] for k, v in parse_qs(parts.query).items()})
                if parts.path == "/login" and username is not None:
                    r = self.client.post(location, data={"username": username, "password": USERS[username]["password"]})
                    continue
                r = self.client.get(location)
                continue
            page = r.get_data(as_text=True)
            self.last_page = page
            if r.status_code == 200 and 'value="approve"' in page and decision is not None:
                r = self.submit_consent(page, decision, uncheck)
                continue
            return Answer(r.status_code, page=page)
        raise AssertionError("too many redirects")

    def submit_consent(self, page: str, decision: str, uncheck: tuple[str, ...] = (), **override: Any):
        form = next(f for f in forms_of(page) if any(b.get("value") == "approve" for b in f["buttons"]))
        data: list[tuple[str, str]] = []
        for f in form["fields"]:
            if f.get("type") == "checkbox":
                if "checked" in f and f"{f['name']}={f['value']}" not in uncheck:
                    data.append((f["name"], f["value"]))
            elif f.get("name"):
                data.append((f["name"], f.get("value") or ""))
        data.append(("decision", decision))
        for name, value in override.items():
            data = [(n, v) for n, v in data if n != name] + ([(name, value)] if value is not None else [])
        from werkzeug.datastructures import MultiDict

        return self.client.post(form["action"].replace("&amp;", "&"), data=MultiDict(data))


def consent_form(page: str) -> dict[str, Any]:
    return next(f for f in forms_of(page) if any(b.get("value") == "approve" for b in f["buttons"]))


def checkbox_names(page: str) -> list[str]:
    return [f"{f['name']}={f['value']}" for f in consent_form(page)["fields"] if f.get("type") == "checkbox"]


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
