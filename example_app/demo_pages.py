"""The example's demo client in the browser: ``/demo/start`` begins the authorization code flow,
``/demo/callback`` redeems the code (PKCE), refreshes once and calls ``/api/items`` with the
new access token, and shows every step. It is a client like any other: it speaks HTTP to the
authorization server (which happens to be this app) and signs its ``private_key_jwt`` assertions
with its key in the dev token (``EXAMPLE_DEMO_CLIENT_KEY``).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, session

from flask_oauth_hsm import current as oauth_server
from flask_oauth_hsm.demo_client import CodeFlow, DemoClient, get, verified_claims

bp = Blueprint("demo", __name__, url_prefix="/demo")
SCOPE = "openid profile email read"


def _flow(verifier: str | None = None, state: str | None = None, nonce: str | None = None) -> CodeFlow:
    ctx = oauth_server()
    client = DemoClient(
        os.environ.get("EXAMPLE_DEMO_CLIENT_ID", "demo-client"),
        ctx.settings.issuer,
        ctx.hsm.key(os.environ.get("EXAMPLE_DEMO_CLIENT_KEY", "demo-client-sig")),
        ctx.settings.url_prefix,
    )
    resource = current_app.config.get("OAUTH_HSM_RS_RESOURCE") or os.environ.get("OAUTH_HSM_RS_RESOURCE")
    flow = CodeFlow(
        client, ctx.settings.issuer.rstrip("/") + "/demo/callback", os.environ.get("EXAMPLE_DEMO_SCOPE", SCOPE), resource
    )
    if verifier and state and nonce:
        flow.verifier, flow.state, flow.nonce = verifier, state, nonce
    return flow


@bp.get("/start")
def start() -> Any:
    flow = _flow()
    session["demo"] = {"verifier": flow.verifier, "state": flow.state, "nonce": flow.nonce}
    return redirect(flow.authorization_url())


@bp.get("/callback")
def callback() -> Any:
    saved = session.pop("demo", None)
    if saved is None:
        return render_template("demo.html", error="No flow in progress: start at /demo/start."), 400
    flow = _flow(**saved)
    try:
        code = flow.code_from(request.args.to_dict())
    except ValueError as exc:
        return render_template("demo.html", error=str(exc)), 400
    jwks = oauth_server().endpoint_url("jwks")
    status, tokens = flow.redeem(code)
    steps: list[dict[str, Any]] = [{"title": "Code redeemed (PKCE)", "status": status, "body": tokens}]
    if status == 200:
        steps[0]["claims"] = verified_claims(tokens["access_token"], jwks)[1]
        if "id_token" in tokens:
            id_claims = verified_claims(tokens["id_token"], jwks)[1]
            steps.append(
                {"title": "ID token", "status": 200, "body": id_claims, "nonce_ok": id_claims.get("nonce") == flow.nonce}
            )
        status, refreshed = flow.refresh(tokens["refresh_token"])
        steps.append({"title": "Refreshed once", "status": status, "body": refreshed})
        if status == 200:
            base = request.host_url.rstrip("/")
            status, items = get(base + "/api/items", refreshed["access_token"])
            steps.append({"title": "GET /api/items with the refreshed access token", "status": status, "body": items})
    return render_template("demo.html", steps=steps, error=None)
