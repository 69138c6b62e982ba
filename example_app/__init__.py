"""A host Flask app embedding flask-oauth-hsm, configured only from environment variables.

``example_app:app`` (WSGI) and ``create_app()``. The ``app`` attribute is built on first access,
so importing the package has no side effects (gunicorn and ``flask --app`` both look it up).

It is the authorization server (``OAuthHSM``), a host with users (a demo user and a login page,
with Flask-Login: ``users.py``), a demo client for the authorization code flow (``/demo/start``,
``demo_pages.py``), and a resource server: ``GET /api/items`` needs an access token for
``OAUTH_HSM_RS_RESOURCE`` with scope ``read`` (``ResourceProtector``).

Environment: the ``OAUTH_HSM_*`` settings; ``EXAMPLE_SECRET_KEY`` (the session key, the same in
every worker); ``EXAMPLE_DEMO_USER`` and ``EXAMPLE_DEMO_PASSWORD`` (the demo user);
``EXAMPLE_DEMO_CLIENT_ID``, ``EXAMPLE_DEMO_CLIENT_KEY`` and ``EXAMPLE_DEMO_SCOPE`` (the demo client).
"""

from __future__ import annotations

import logging
import os
import secrets

from flask import Flask, g, jsonify

from flask_oauth_hsm import OAuthHSM, ResourceProtector
from flask_oauth_hsm.serving import stop_on_config_error

from . import ciba, demo_pages, users


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    oauth, api = OAuthHSM(), ResourceProtector()
    directory = users.install(app, oauth)
    ciba.install(app, oauth, directory)  # CIBA: the authentication device page /ciba (docs/ciba.md)
    # A configuration error (a wrong PIN above all) prints one line and stops the whole server,
    # whichever server runs us: no worker is booted again to retry the PIN (serving.py).
    with stop_on_config_error():
        oauth.init_app(app)
        if _setting(app, "OAUTH_HSM_RS_RESOURCE"):
            api.init_app(app)
    app.secret_key = _secret_key(app)
    app.register_blueprint(demo_pages.bp)

    @app.get("/")
    def index():
        state = app.extensions["oauth_hsm"]
        issuer = state.settings.issuer.rstrip("/")
        return jsonify(
            service="flask-oauth-hsm example",
            issuer=state.settings.issuer,
            token_endpoint=state.urls.token,
            demo=issuer + "/demo/start",
            login=issuer + "/login",
        )

    if "oauth_hsm_rs" in app.extensions:

        @app.get("/api/items")
        @api.require_token(scope="read")
        def items():
            return jsonify(items=["hsm", "redis", "flask"], client_id=g.oauth_token["client_id"], scope=g.oauth_token["scope"])

    return app


def _setting(app: Flask, name: str):
    return app.config.get(name, os.environ.get(name))


def _secret_key(app: Flask) -> str:
    key = app.config.get("SECRET_KEY") or os.environ.get("EXAMPLE_SECRET_KEY")
    if key:
        return str(key)
    if "oauth_hsm" not in app.extensions:  # loaded by `flask oauth-hsm keys …`: serves no sessions
        return secrets.token_hex(32)
    logging.getLogger("example_app").warning(
        "EXAMPLE_SECRET_KEY is not set: a random session key for this process (sign-ins do not survive a restart "
        "and do not work across several workers)"
    )
    return secrets.token_hex(32)


def __getattr__(name: str):
    if name in ("app", "application"):
        global app
        app = create_app()
        return app
    raise AttributeError(name)
