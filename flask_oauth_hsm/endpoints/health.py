"""Liveness and readiness for load balancers and orchestrators.

``/health``: the process answers (no dependency is touched, so a slow HSM never kills pods).
``/ready``: the HSM answers and we are logged in, and Redis runs the replay script (which also
starts a new epoch after a Redis restart, so probes rather than clients spend its first second).
503 with the failing component named, never with an error message from PKCS#11 or redis-py.
"""

from __future__ import annotations

from flask import request

from .. import events
from ..errors import HSMError, MethodNotAllowedError, StoreUnavailable
from ..http import json_response


def _get_only() -> None:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowedError("use GET", headers={"Allow": "GET, HEAD"})


def health_endpoint():
    _get_only()
    return json_response({"status": "ok"})


def readiness_endpoint():
    from ..extension import current_state

    _get_only()
    state = current_state()
    checks = {"hsm": _check(state.hsm.check), "redis": _check(state.store.probe)}
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        events.emit(events.service_unavailable, reason="readiness", **checks)
    headers = None if ready else {"Retry-After": str(state.settings.retry_after)}
    return json_response({"status": "ok" if ready else "unavailable", **checks}, 200 if ready else 503, headers)


def _check(probe) -> str:
    try:
        probe()
    except (HSMError, StoreUnavailable):
        return "unavailable"
    return "ok"
