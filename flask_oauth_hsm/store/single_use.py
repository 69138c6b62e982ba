"""The single-use rule and the replay-state reset rule: one place for every one-time record.

Two kinds of single-use record exist, and every feature uses one of them through :class:`Store`:

* **ids minted by others** (client assertion ``jti``, DPoP proof ``jti``, request object ``jti``):
  :meth:`Store.use_once` records the id with ``SET NX EX`` in one server-side step (a Lua script,
  never get-then-set). The id is hashed with its namespace, so a 64 KB jti costs a 43-character key.
* **records we mint** (authorization codes, PAR request URIs, CIBA requests, refresh rotation):
  stored with :meth:`Store.put` and consumed with :meth:`Store.take` (``GETDEL``): of any number of
  concurrent consumers exactly one gets the record. A record lost in a reset is simply gone, so
  those fail closed by construction.

The reset rule (docs/security.md, "Replay state and Redis resets"): a key without TTL, the
*epoch*, holds the time the current replay state began. A Redis flush, or a restart without
persistence, removes it with the replay records; the next replay check starts a new epoch. For
``window`` seconds after that (the longest an id of the old state can stay valid) an id is refused
if its ``iat`` says it may have been minted before the epoch:

    refused  ⇔  now < epoch + window  and  (iat missing  or  iat < ⌊epoch⌋ − tolerance)

``⌊epoch⌋``: ``iat`` has one-second resolution, so an id minted in the epoch's own second is not
refused for that. ``tolerance`` (``OAUTH_HSM_RESET_CLOCK_TOLERANCE``): clients whose clocks run
that many seconds behind ours are still served at once. The price, stated exactly: an id whose
``iat`` lies in ``[⌊epoch⌋ − tolerance, epoch)`` that was used before the reset can be used once
more after it (once: the use records it again), until its ``exp``.

Our own tokens (introspection, revocation) follow the same rule with tolerance 0, because their
``iat`` comes from our clock: a token issued before the epoch cannot be vouched for (its
revocation may have been lost) until it would have expired anyway.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass

USE_ONCE_SCRIPT = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local fresh = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2])
if fresh then return {1, tonumber(epoch)} end
return {0, tonumber(epoch)}
"""


class Replayed(Exception):
    """This id was used before (or may have been: see the reset rule)."""


@dataclass(frozen=True)
class ResetRule:
    """Which ids a new replay epoch must refuse, and for how long (module docstring)."""

    tolerance: int  # seconds a client's clock may run behind ours

    def may_predate(self, issued_at: float | None, epoch: float, window: float, now: float, *, own_clock: bool = False) -> bool:
        if now >= epoch + window:
            return False  # every id of the old state has expired
        if issued_at is None:
            return True  # an undated id cannot show it is new
        allowance = 0 if own_clock else self.tolerance
        return issued_at < math.floor(epoch) - allowance


def id_digest(namespace: str, ident: str) -> bytes:
    """SHA-256 of the namespace and the id: a hostile 64 KB id costs a fixed-size key."""
    return hashlib.sha256(namespace.encode() + b"\0" + ident.encode("utf-8", "surrogatepass")).digest()


def hashed_key(namespace: str, digest: bytes) -> str:
    return namespace + ":" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
