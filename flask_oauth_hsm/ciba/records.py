"""A CIBA authentication request in Redis: its record, its states, and the user's index.

The client holds ``auth_req_id`` (256 random bits: CIBA Core §7.3 asks for at least 160); we
keep only its SHA-256, the *handle*, which is also what the host's device page sees — so neither
Redis nor the host can poll for the tokens. Records (``Store`` namespace ``ciba``):

* created ``pending`` by ``/bc-authorize`` (``Store.put``), with a TTL past ``expires_at`` so an
  expired request answers ``expired_token`` for a while rather than ``invalid_grant``;
* decided once by the host, ``pending`` → ``approved`` or ``denied``, compare-and-set
  (``Store.swap``): a decision never resurrects a record the token endpoint already took;
* taken by the one poll that gets the tokens or the denial (``Store.take``, GETDEL): of concurrent
  polls exactly one gets the record.

The index (namespace ``ciba-user``, per subject) lists a user's handles for the device page;
losing an entry only hides a request from that page (the notification was sent anyway).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .. import clock
from ..store import Replayed

if TYPE_CHECKING:
    from ..store import Store

NAMESPACE, INDEX = "ciba", "ciba-user"
EXPIRED_GRACE = 300  # seconds an expired request is kept to answer expired_token (CIBA Core §11)
PENDING, APPROVED, DENIED = "pending", "approved", "denied"
MAX_INDEX = 32  # pending requests shown per user: more is a flood, not a person's day


def new_auth_req_id() -> str:
    return secrets.token_urlsafe(32)  # 256 bits (CIBA Core §7.3: at least 128, CAMARA: 160)


def handle_of(auth_req_id: str) -> str:
    digest = hashlib.sha256(b"ciba\0" + auth_req_id.encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class CibaRequest:
    """What the host's device hook and device page see of a request (never the auth_req_id)."""

    handle: str  # names the request in approve()/deny(); not a credential
    client_id: str
    client_name: str | None
    subject: str  # the user asked (the host's own subject)
    scope: tuple[str, ...]
    binding_message: str | None
    acr_values: tuple[str, ...]
    expires_at: int


@dataclass(frozen=True)
class CibaRecord:
    client_id: str
    subject: str
    scope: tuple[str, ...]
    resources: tuple[str, ...]
    binding_message: str | None
    acr_values: tuple[str, ...]
    issued_at: int
    expires_at: int
    state: str = PENDING
    auth_time: int | None = None  # set by the approval, with acr and amr
    acr: str | None = None
    amr: tuple[str, ...] = field(default=())

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> CibaRecord:
        doc: dict[str, Any] = json.loads(raw)
        for name in ("scope", "resources", "acr_values", "amr"):
            doc[name] = tuple(doc[name])
        return cls(**doc)

    def ttl(self) -> int:
        return max(1, int(self.expires_at - clock.now()) + EXPIRED_GRACE)

    def expired(self) -> bool:
        return clock.now() >= self.expires_at

    def shown(self, handle: str, client_name: str | None) -> CibaRequest:
        return CibaRequest(
            handle, self.client_id, client_name, self.subject, self.scope, self.binding_message, self.acr_values, self.expires_at
        )


def create(store: Store, handle: str, record: CibaRecord, longest: int) -> None:
    """Store a new request; ``longest``: the longest any request lives (the index outlives them all)."""
    store.put(NAMESPACE, handle, record.encode(), record.ttl())
    _index_add(store, record.subject, handle, longest + EXPIRED_GRACE)


def load(store: Store, handle: str) -> tuple[CibaRecord, bytes] | None:
    raw = store.read(NAMESPACE, handle)
    return (CibaRecord.decode(raw), raw) if raw is not None else None


def decide(store: Store, handle: str, record: CibaRecord, raw: bytes, **decision: Any) -> bool:
    """``pending`` → the decision (compare-and-set); False when the record changed or went first."""
    decided = replace(record, **decision)
    return store.swap(NAMESPACE, handle, raw, decided.encode(), record.ttl())


def take(store: Store, handle: str) -> CibaRecord | None:
    raw = store.take(NAMESPACE, handle)
    return CibaRecord.decode(raw) if raw is not None else None


def forget(store: Store, handle: str) -> None:
    store.forget(NAMESPACE, handle)


def handles_of(store: Store, subject: str) -> list[str]:
    raw = store.read(INDEX, subject)
    return list(json.loads(raw)) if raw is not None else []


def _index_add(store: Store, subject: str, handle: str, ttl: int) -> None:
    """Add ``handle`` to the user's index (compare-and-set; a few tries against concurrent adds)."""
    for _ in range(5):
        raw = store.read(INDEX, subject)
        if raw is None:
            try:
                store.put(INDEX, subject, json.dumps([handle]).encode(), ttl)
                return
            except Replayed:
                continue  # another request created it meanwhile
        handles = [h for h in json.loads(raw) if store.read(NAMESPACE, h) is not None][-(MAX_INDEX - 1) :] + [handle]
        if store.swap(INDEX, subject, raw, json.dumps(handles).encode(), ttl):
            return
