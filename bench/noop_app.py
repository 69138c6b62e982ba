"""Do-nothing baselines for the load generator and the server: the ceiling before any OAuth work.

``noop_app:app``  Flask, ``POST /oauth2/token`` answers a static token-shaped JSON body with the
                  same no-store headers as the real endpoint, without reading the form.
``noop_app:bare`` the same answer from a bare WSGI callable (no Flask): gunicorn + wrk alone.

Used by bench/token_endpoint.py (the "do-nothing" rows), in the same run as the real endpoint.
"""

from __future__ import annotations

import json

from flask import Flask, Response

BODY = json.dumps(
    {"access_token": "x" * 560, "token_type": "Bearer", "expires_in": 300, "scope": "read write"}, separators=(",", ":")
).encode()
HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]

app = Flask(__name__)


@app.get("/")
def index():
    return "ok"


@app.post("/oauth2/token")
def token():
    return Response(BODY, status=200, headers=HEADERS[1:], mimetype="application/json")


def bare(environ, start_response):
    """The same answer without a framework (does not read the body either)."""
    if environ["PATH_INFO"] == "/":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    start_response("200 OK", [*HEADERS, ("Content-Length", str(len(BODY)))])
    return [BODY]
