"""A host Flask app embedding flask-oauth-hsm, configured only from environment variables.

``example_app:app`` (WSGI) and ``create_app()``. The ``app`` attribute is built on first access,
so importing the package has no side effects (gunicorn and ``flask --app`` both look it up).
"""

from __future__ import annotations

from flask import Flask, jsonify

from flask_oauth_hsm import OAuthHSM
from flask_oauth_hsm.errors import ConfigError


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    oauth = OAuthHSM()
    try:
        oauth.init_app(app)
    except ConfigError as exc:
        # One clear line, never a traceback from deep inside PKCS#11 or redis-py.
        raise SystemExit(f"flask-oauth-hsm: {exc}") from None

    @app.get("/")
    def index():
        state = app.extensions["oauth_hsm"]
        return jsonify(service="flask-oauth-hsm example", issuer=state.settings.issuer, token_endpoint=state.urls.token)

    return app


def __getattr__(name: str):
    if name in ("app", "application"):
        global app
        app = create_app()
        return app
    raise AttributeError(name)
