"""The single-use rule and the replay-state reset rule: one place for every one-time record.

Two kinds of single-use record exist, and every feature uses one of them through :class:`Store`:

* **ids minted by others** (client assertion ``jti``, DPoP proof ``jti``, request object ``jti``):
  :meth:`Store.use_once` records the id with ``SET NX EX`` in one server-side step (a Lua script,
  never get-then-set). The id is hashed with its namespace, so a 64 KB jti costs a 43-character key.
* **records we mint** (authorization codes, PAR request URIs, CIBA requests, pending
  authorizations): stored with :meth:`Store.put` and consumed with :meth:`Store.take` (``GETDEL``):
  of any number of concurrent consumers exactly one gets the record. A record lost in a reset is
  simply gone, so those fail closed by construction. :meth:`Store.consume` is ``take`` that leaves
  a *tombstone* in the record's place (``CONSUME_SCRIPT``): a later consumer learns that the
  record was used, and by what (an authorization code presented twice revokes the grant its first
  use created, RFC 6749 §4.1.2).
* **refresh rotation** (one record per grant, RFC 9700 §4.14.2): the grant's current refresh
  token id, compared and replaced in one step (``ROTATE_SCRIPT``). Presenting any other id of
  the grant — a rotated-out token — marks the whole grant revoked, atomically with the check, so
  of concurrent refreshes with one token exactly one succeeds and the others revoke the grant
  (including what the winner got). A grant record lost in a reset is gone: its refresh tokens
  fail closed (the user signs in again).

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


# KEYS[1] the record; ARGV[1] the tombstone, ARGV[2] its TTL. Returns the record (a tombstone is
# returned as it is, and left in place). Records we mint never start with the tombstone mark.
TOMBSTONE = b"\x00used:"
CONSUME_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, 6) ~= '\0used:' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return value
"""

# Grant records are hashes: 'rt' the hash of the current refresh token id ('' when the grant has no
# refresh token), 'rev' '1' once revoked, 'rel' what the user agreed to release (JSON).
# CREATE: KEYS[1]; ARGV[1] rt, ARGV[2] rel, ARGV[3] ttl -> 1 created, 0 created already revoked (a
# second redemption of the code revoked the grant before its first redemption recorded it: the
# first still answers, with tokens that are dead from the start).
GRANT_CREATE_SCRIPT = """
local revoked = redis.call('HGET', KEYS[1], 'rev') == '1'
redis.call('HSET', KEYS[1], 'rt', ARGV[1], 'rel', ARGV[2])
if not revoked then redis.call('HSET', KEYS[1], 'rev', '0') end
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
if revoked then return 0 end
return 1
"""
# ROTATE: KEYS[1]; ARGV[1] presented rt, ARGV[2] new rt, ARGV[3] ttl
# -> 1 rotated, 0 unknown (expired, or lost in a Redis reset), 2 revoked, 3 reuse (now revoked).
ROTATE_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'rt')
if not current then return 0 end
if redis.call('HGET', KEYS[1], 'rev') == '1' then return 2 end
if current ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'rev', '1')
  return 3
end
redis.call('HSET', KEYS[1], 'rt', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
# REVOKE: KEYS[1]; ARGV[1] ttl. Creates the record when missing, so a grant revoked before its
# creation (a code used twice at once) can never be created afterwards.
GRANT_REVOKE_SCRIPT = """
redis.call('HSET', KEYS[1], 'rev', '1')
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

# SWAP (compare and set): KEYS[1]; ARGV[1] the value expected, ARGV[2] the new value, ARGV[3] its TTL
# -> 1 replaced, 0 the record is gone or holds something else (a concurrent writer won). CIBA
# requests change state this way (pending -> approved or denied; the poll timing): never a
# get-then-set that could bring back a record another request has taken.
SWAP_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

ROTATED, UNKNOWN, REVOKED, REUSED = 1, 0, 2, 3


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
