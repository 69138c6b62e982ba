"""A host Flask app embedding flask-oauth-hsm, configured only from environment variables.

``example_app:app`` (WSGI) and ``create_app()``. The ``app`` attribute is built on first access,
so importing the package has no side effects (gunicorn and ``flask --app`` both look it up).

It is both the authorization server (``OAuthHSM``) and a resource server: ``GET /api/items``
needs an access token for ``OAUTH_HSM_RS_RESOURCE`` with scope ``read`` (``ResourceProtector``).
"""

from __future__ import annotations

import os

from flask import Flask, g, jsonify

from flask_oauth_hsm import OAuthHSM, ResourceProtector
from flask_oauth_hsm.serving import stop_on_config_error


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    oauth, api = OAuthHSM(), ResourceProtector()
    # A configuration error (a wrong PIN above all) prints one line and stops the whole server,
    # whichever server runs us: no worker is booted again to retry the PIN (serving.py).
    with stop_on_config_error():
        oauth.init_app(app)
        if _setting(app, "OAUTH_HSM_RS_RESOURCE"):
            api.init_app(app)

    @app.get("/")
    def index():
        state = app.extensions["oauth_hsm"]
        return jsonify(service="flask-oauth-hsm example", issuer=state.settings.issuer, token_endpoint=state.urls.token)

    if "oauth_hsm_rs" in app.extensions:

        @app.get("/api/items")
        @api.require_token(scope="read")
        def items():
            return jsonify(items=["hsm", "redis", "flask"], client_id=g.oauth_token["client_id"], scope=g.oauth_token["scope"])

    return app


def _setting(app: Flask, name: str):
    return app.config.get(name, os.environ.get(name))


def __getattr__(name: str):
    if name in ("app", "application"):
        global app
        app = create_app()
        return app
    raise AttributeError(name)
