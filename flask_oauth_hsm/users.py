"""The signed-in user as the host app describes it, and the calls into the host's user hooks.

The extension never owns users, passwords or sessions (docs/users.md). The host's
``@oauth.current_user`` hook returns a :class:`User` (or None when nobody is signed in);
``@oauth.user_claims`` returns a user's claims by subject, for the claims a user agreed to release
(introspection, UserInfo, ID tokens). A hook that raises is the host's user store being down: the
request fails closed with 503 (:class:`~flask_oauth_hsm.errors.HostHookFailed`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import clock
from .errors import HostHookFailed

if TYPE_CHECKING:
    from .clients import Client
    from .server import ServerContext

log = logging.getLogger("flask_oauth_hsm")
# A subject is an identifier, not a name: printable ASCII, bounded (OIDC Core §2: at most 255).
_SUBJECT = re.compile(r"[\x21-\x7E]{1,255}")


@dataclass(frozen=True)
class User:
    """Who is signed in at the host, and how.

    ``subject``: a stable, never reassigned identifier (becomes ``sub``; not an e-mail address or a
    user name, which are personal data and change). ``auth_time``: when the user last
    authenticated (seconds since the epoch). ``acr``/``amr``: how (OIDC Core §2), when known.
    ``claims``: the user's claims the consent page may show (e.g. ``email``), optional.
    """

    subject: str
    auth_time: float
    acr: str | None = None
    amr: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str) or not _SUBJECT.fullmatch(self.subject):
            raise ValueError("User.subject must be 1-255 printable ASCII characters")
        if isinstance(self.auth_time, bool) or not isinstance(self.auth_time, (int, float)) or not math.isfinite(self.auth_time):
            raise ValueError("User.auth_time must be a number of seconds since the epoch")
        object.__setattr__(self, "amr", tuple(self.amr))


def current_user(ctx: ServerContext) -> User | None:
    """The host's answer to "who is signed in?"; a wrong answer is a programming error (503)."""
    user = _call(ctx, "current_user")
    if user is not None and not isinstance(user, User):
        log.error("@current_user returned %s, not flask_oauth_hsm.User or None", type(user).__name__)
        raise HostHookFailed("current_user returned something else than a User")
    if user is not None and user.auth_time > clock.now() + ctx.settings.clock_skew:
        log.error("@current_user returned an auth_time in the future")
        raise HostHookFailed("auth_time in the future")
    return user


def login_url(ctx: ServerContext, next_url: str) -> str:
    url = _call(ctx, "login_url", next_url)
    if not isinstance(url, str) or not url:
        raise HostHookFailed("login_url returned no URL")
    return url


def skips_consent(ctx: ServerContext, client: Client, user: User) -> bool:
    if ctx.hooks.get("skip_consent") is None:
        return False
    return bool(_call(ctx, "skip_consent", client.client_id, user))


def user_claims(ctx: ServerContext, subject: str) -> Mapping[str, Any]:
    """The user's claims by subject; empty when the host has no such hook or no such user."""
    if ctx.hooks.get("user_claims") is None:
        return {}
    claims = _call(ctx, "user_claims", subject)
    if claims is None:
        return {}
    if not isinstance(claims, Mapping):
        raise HostHookFailed("user_claims returned something else than a mapping")
    return claims


def valid_subject(value: Any) -> bool:
    """A subject as :class:`User` requires it (printable ASCII, 1-255 characters)."""
    return isinstance(value, str) and bool(_SUBJECT.fullmatch(value))


def call_hook(ctx: ServerContext, name: str, *args: Any) -> Any:
    """Call the host's hook ``name``; its failure is an outage of the host (503), never a trace."""
    return _call(ctx, name, *args)


def _call(ctx: ServerContext, name: str, *args: Any) -> Any:
    try:
        return ctx.hooks[name](*args)
    except HostHookFailed:
        raise
    except Exception as exc:  # the host's user store: an outage, not the caller's fault
        log.error("the @%s hook failed: %s", name, type(exc).__name__)
        raise HostHookFailed(f"the {name} hook failed") from None
