"""Liveness and readiness for load balancers and orchestrators.

``/health``: the process answers (no dependency is touched, so a slow HSM never kills pods).
``/ready``: the HSM answers and we are logged in, and Redis runs the replay script (which also
starts a new epoch after a Redis reset, so a probe rather than a client starts it) on every master
and reports no eviction policy that could drop replay records (``"redis": "evicting"``).
503 with the failing component named, never with an error message from PKCS#11 or redis-py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Response

from .. import events
from ..errors import HSMError, StoreUnavailable, StoreUnsafe
from ..web import json_response
from . import Endpoint, register

if TYPE_CHECKING:
    from ..server import ServerContext


def health_endpoint(ctx: ServerContext) -> Response:
    return json_response({"status": "ok"})


def readiness_endpoint(ctx: ServerContext) -> Response:
    checks = {"hsm": _check(ctx.hsm.check), "redis": _check(ctx.store.probe)}
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        events.emit(events.service_unavailable, reason="readiness", **checks)
    headers = None if ready else {"Retry-After": str(ctx.settings.retry_after)}
    return json_response({"status": "ok" if ready else "unavailable", **checks}, 200 if ready else 503, headers)


def _check(probe: Callable[[], None]) -> str:
    try:
        probe()
    except StoreUnsafe:
        return "evicting"  # Redis answers but may drop replay records (docs/operations.md)
    except (HSMError, StoreUnavailable):
        return "unavailable"
    return "ok"


register(Endpoint("health", "/health", health_endpoint, methods=("GET",), rate_limited=False))
register(Endpoint("ready", "/ready", readiness_endpoint, methods=("GET",), rate_limited=False))
