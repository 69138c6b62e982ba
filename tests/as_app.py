"""A host app as a user would write it, for tests (no side effects on import: child processes
import this too)."""

from __future__ import annotations

from typing import Any


def build_as_app(settings: dict[str, Any], *, protect_api: bool = False):
    """A host app as a user would write it: Flask + OAuthHSM (+ ResourceProtector on /api/items)."""
    from flask import Flask, g, jsonify

    from flask_oauth_hsm import OAuthHSM, ResourceProtector

    app = Flask("test_host")
    app.config.update(settings)
    app.config["TESTING"] = True
    OAuthHSM(app)
    if protect_api:
        api = ResourceProtector(app)

        @app.get("/api/items")
        @api.require_token(scope="read")
        def items():
            return jsonify(items=["a"], client_id=g.oauth_token["client_id"], scope=g.oauth_token["scope"])

    return app
