"""The example host's authentication device for CIBA (docs/ciba.md): the ``/ciba`` page.

A real deployment pushes a notification to the user's phone; here the "device" is a page of the
host: the signed-in demo user sees the requests waiting for them (client, scope, binding
message) and presses Approve or Deny. The demo user can be named in ``login_hint`` by user name
or by ``tel:`` + ``EXAMPLE_DEMO_PHONE`` (an E.164 number; ``./dev run`` prints the dev default).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from typing import Any

from flask import Blueprint, Flask, abort, redirect, render_template, request, session
from flask_login import current_user, login_required

from flask_oauth_hsm import OAuthHSM, User
from flask_oauth_hsm.ciba import CibaRequest
from flask_oauth_hsm.ciba.device import NotYourRequest, RequestGone

from .users import Directory, _csrf

bp = Blueprint("ciba", __name__)
log = logging.getLogger("example_app")


def install(app: Flask, oauth: OAuthHSM, directory: Directory) -> None:
    """The two CIBA hooks and the device page. Call before ``oauth.init_app``."""
    phone = os.environ.get("EXAMPLE_DEMO_PHONE")

    @oauth.ciba_user
    def user_for_hint(kind: str, value: str) -> str | None:
        users = list(directory.users.values())
        if kind == "login_hint" and phone and value == "tel:" + phone and users:
            return users[0].subject
        if kind == "login_hint" and value in directory.users:
            return directory.users[value].subject
        if kind == "id_token_hint":  # the value is the verified ID token's sub
            user = directory.by_subject(value)
            return user.subject if user else None
        return None

    @oauth.ciba_notify
    def notify(req: CibaRequest) -> None:
        # A phone would buzz here; the demo user finds the request on /ciba.
        log.info("CIBA: %s asks the user to approve (%s); open /ciba", req.client_name or req.client_id, " ".join(req.scope))

    app.extensions["example_oauth"] = oauth
    app.register_blueprint(bp)


def _oauth() -> OAuthHSM:
    from flask import current_app

    oauth: OAuthHSM = current_app.extensions["example_oauth"]
    return oauth


@bp.get("/ciba")
@login_required
def device_page() -> Any:
    pending = _oauth().ciba.pending(current_user.subject)
    return render_template("ciba.html", pending=pending, csrf_token=_csrf(), done=request.args.get("done"), now=time.time())


@bp.post("/ciba")
@login_required
def decide() -> Any:
    if not hmac.compare_digest(request.form.get("csrf_token", ""), _csrf()):
        abort(400)
    handle, decision = request.form.get("handle", ""), request.form.get("decision")
    # Deciding on the device is authenticating there: auth_time is now.
    user = User(current_user.subject, int(time.time()), amr=("pwd",))
    try:
        if decision == "approve":
            _oauth().ciba.approve(handle, user=user)
        elif decision == "deny":
            _oauth().ciba.deny(handle, user=user)
        else:
            abort(400)
    except (RequestGone, NotYourRequest):
        return redirect("/ciba?done=gone")
    session.modified = True
    return redirect("/ciba?done=" + decision)
