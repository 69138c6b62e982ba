"""Security events: structured log lines and Flask signals (blinker) for host-app auditing.

Never a token, assertion, secret or PIN in an event: ids (client_id, jti, kid) and reasons only.
Subscribe with ``flask_oauth_hsm.events.token_issued.connect(fn)``; ``fn(app, **fields)``.
"""

from __future__ import annotations

import json
import logging

from blinker import NamedSignal, Namespace
from flask import current_app

logger = logging.getLogger("flask_oauth_hsm.security")
_signals = Namespace()

token_issued = _signals.signal("oauth-hsm-token-issued")
token_refused = _signals.signal("oauth-hsm-token-refused")
client_auth_failed = _signals.signal("oauth-hsm-client-auth-failed")
replay_detected = _signals.signal("oauth-hsm-replay-detected")
token_revoked = _signals.signal("oauth-hsm-token-revoked")
token_introspected = _signals.signal("oauth-hsm-token-introspected")
service_unavailable = _signals.signal("oauth-hsm-service-unavailable")
# users (docs/users.md): a code issued after consent, a denied authorization, a revoked grant
authorization_granted = _signals.signal("oauth-hsm-authorization-granted")
authorization_denied = _signals.signal("oauth-hsm-authorization-denied")
grant_revoked = _signals.signal("oauth-hsm-grant-revoked")

_LEVELS = {
    token_issued: logging.INFO,
    token_refused: logging.INFO,
    client_auth_failed: logging.WARNING,
    replay_detected: logging.WARNING,
    token_revoked: logging.INFO,
    token_introspected: logging.INFO,
    service_unavailable: logging.ERROR,
    authorization_granted: logging.INFO,
    authorization_denied: logging.INFO,
    grant_revoked: logging.WARNING,
}


def printable(value: str | None) -> str | None:
    """An attacker-supplied id made safe for a log line: ASCII, bounded."""
    return None if value is None else value[:80].encode("ascii", "backslashreplace").decode()


def emit(signal: NamedSignal, **fields: object) -> None:
    """Log one JSON line ``{"event": ..., **fields}`` and send the signal."""
    event = signal.name.removeprefix("oauth-hsm-")
    if logger.isEnabledFor(_LEVELS[signal]):
        logger.log(_LEVELS[signal], json.dumps({"event": event, **fields}, default=str, separators=(",", ":")))
    if signal.receivers:
        try:
            # attr-defined: current_app is a LocalProxy that Flask types as Flask (the proxy method is not in
            # its annotations); arg-type: blinker's send() has a keyword-only _async_wrapper a **dict could fill.
            signal.send(current_app._get_current_object(), **fields)  # type: ignore[attr-defined, arg-type]
        except Exception:  # a host's audit hook must not turn an answered request into a 500
            logging.getLogger("flask_oauth_hsm").exception("a receiver of %s failed", signal.name)
