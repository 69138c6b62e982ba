"""Steps shared by the endpoints that authenticate their caller."""

from __future__ import annotations

from flask import request

from .. import events
from ..client_auth import AuthFailure, authenticate, presented_credentials
from ..errors import InvalidClientError
from ..http import Form


def authenticate_caller(state, form: Form, endpoint: str, want: str):
    """The authenticated client (``want="client"``) or either kind (``want="any"``)."""
    registry = state.registry
    if want == "client":
        find = registry.client
    else:
        def find(client_id: str):
            return registry.resource_server(client_id) or registry.client(client_id)

    presented = presented_credentials(request.headers.get("Authorization"), form)
    try:
        return authenticate(presented, find, state.policies[endpoint], state)
    except AuthFailure as exc:
        signal = events.replay_detected if exc.replay else events.client_auth_failed
        events.emit(signal, endpoint=endpoint, client_id=_printable(exc.client_id or presented.client_id),
                    method=presented.method, reason=str(exc))
        raise InvalidClientError("client authentication failed", headers={"WWW-Authenticate": 'Basic realm="oauth"'}) from None


def _printable(value: str | None) -> str | None:
    return None if value is None else value[:80].encode("ascii", "backslashreplace").decode()
