"""Who a CIBA request is about: exactly one hint (CIBA Core §7.1), checked, then resolved by the host.

* ``login_hint``: a value the host knows the user by. Under ``OAUTH_HSM_CIBA_PROFILE=camara``
  only the CAMARA formats: ``tel:`` + an E.164 number, ``ipport:`` + an IPv4 address or a bracketed
  IPv6 address with a port, ``operatortoken:`` + an opaque token.
* ``login_hint_token``: a token whose format the host defines (passed on as it is, bounded).
  Not under the CAMARA profile.
* ``id_token_hint``: an ID token we issued to this client (our signature, our ``iss``, its ``aud``;
  expired is fine, OIDC Core §3.1.2.1); its ``sub`` names the user. Not under the CAMARA profile,
  and not for pairwise clients (their ``sub`` cannot be turned back into the user).

The host's ``@oauth.ciba_user(kind, value)`` returns the user's subject, or None:
``unknown_user_id`` (CIBA Core §13).
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

from ..errors import InvalidRequestError, JoseError, UnknownUserIdError
from ..users import call_hook, valid_subject
from ..web import Form

if TYPE_CHECKING:
    from ..clients import Client
    from ..server import ServerContext

KINDS = ("login_hint", "login_hint_token", "id_token_hint")
MAX_HINT = 4096  # a token hint is a JWT of a few hundred bytes; a login_hint is much shorter
MAX_LOGIN_HINT = 256
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # ITU-T E.164: at most 15 digits, no leading zero
_PRINTABLE = re.compile(r"[\x21-\x7E]+")
_PORT = re.compile(r"[0-9]{1,5}")


def one_hint(ctx: ServerContext, form: Form) -> tuple[str, str]:
    """The one hint of the request, as (kind, value); two hints or none: invalid_request."""
    given = [k for k in KINDS if k in form]
    if len(given) != 1:
        raise InvalidRequestError("give exactly one of login_hint, login_hint_token and id_token_hint")
    kind, value = given[0], form[given[0]]
    if ctx.settings.ciba_profile == "camara":
        if kind != "login_hint":
            raise InvalidRequestError("this server takes login_hint only (CAMARA profile)")
        if not camara_login_hint(value):
            raise InvalidRequestError("login_hint must be tel:+<E.164>, ipport:<address>:<port> or operatortoken:<token>")
    limit = MAX_LOGIN_HINT if kind == "login_hint" else MAX_HINT
    if not value or len(value) > limit or not _PRINTABLE.fullmatch(value.replace(" ", "!")):
        raise InvalidRequestError(f"{kind} must be 1 to {limit} printable characters")
    return kind, value


def camara_login_hint(value: str) -> bool:
    """CAMARA Security and Interoperability profile: the three login_hint formats."""
    scheme, sep, rest = value.partition(":")
    if not sep:
        return False
    if scheme == "tel":
        return bool(_E164.fullmatch(rest))
    if scheme == "ipport":
        return _ip_and_port(rest)
    if scheme == "operatortoken":
        return 0 < len(rest) <= MAX_LOGIN_HINT and bool(_PRINTABLE.fullmatch(rest))
    return False


def _ip_and_port(text: str) -> bool:
    """``198.51.100.7:443`` or ``[2001:db8::1]:443``: an address and a port 0-65535."""
    if text.startswith("["):
        address, sep, port = text[1:].partition("]:")
        version = 6
    else:
        address, sep, port = text.rpartition(":")
        version = 4
    if not sep or not _PORT.fullmatch(port) or int(port) > 65535:
        return False
    try:
        return ipaddress.ip_address(address).version == version
    except ValueError:
        return False


def resolve(ctx: ServerContext, client: Client, kind: str, value: str) -> str:
    """The subject of the user the hint names; unknown_user_id when the host knows none."""
    if kind == "id_token_hint":
        value = _id_token_subject(ctx, client, value)
    subject = call_hook(ctx, "ciba_user", kind, value)
    if subject is None:
        raise UnknownUserIdError("the hint names no user known here")
    if not valid_subject(subject):
        raise _hook_broken()
    return str(subject)


def _id_token_subject(ctx: ServerContext, client: Client, token: str) -> str:
    from ..jose import jws, jwt

    if client.subject_type == "pairwise":
        raise InvalidRequestError("id_token_hint cannot name a user of a pairwise client: use login_hint")
    ring = ctx.keys.ring
    try:
        verified = jws.verify(token, ring.verifier_for, ring.own_algs, max_len=MAX_HINT)
        claims = jwt.decode_claims(verified.payload)
    except JoseError:
        raise InvalidRequestError("id_token_hint is not an ID token of ours") from None
    sub = claims.get("sub")
    # Our ID tokens name the client in aud and azp; our access tokens never carry azp.
    if (claims.get("iss"), claims.get("aud"), claims.get("azp")) != (
        ctx.settings.issuer,
        client.client_id,
        client.client_id,
    ) or not isinstance(sub, str):
        raise InvalidRequestError("id_token_hint is not an ID token issued to this client")
    return sub


def _hook_broken() -> Exception:
    from ..errors import HostHookFailed

    return HostHookFailed("ciba_user returned something else than a subject or None")
