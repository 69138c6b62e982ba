"""A key set (``OAUTH_HSM_KEY_SET``): the keys of one authorization server and their states, in the token.

Where the state lives: in each key's metadata record in the token (hsm/records.py), so every
process on every host that shares the token reads the same key set; each process re-reads it
every ``OAUTH_HSM_KEYS_REFRESH`` seconds (KeyRingHolder.follow) and swaps its key ring, without a
restart. The CLI changes states through :class:`KeySet`; the rules are in states.py, the waits in
timing.py.

Which keys the ring holds at time ``now`` (keys in service, states.py):

- signs: the newest ``active`` signing key; the JWKS lists it first, then the other active (a
  rotation being written), ``next`` and ``retired`` signing keys — all of them verify our tokens;
- decrypts: ``active`` encryption keys (the newest one receives the CEK escrow), then ``next``
  ones, then ``retired`` ones; the JWKS lists active and next encryption keys, never retired ones,
  so no peer starts encrypting to a key that is going away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import clock
from ..errors import ConfigError, KeyNotFound, KeyStateRefused
from ..hsm import HSM, TokenKey, destroy_pair as _destroy_pair, read_records, write_record
from . import states
from .ring import KeyRing
from .states import KeyRecord
from .timing import Timings

if TYPE_CHECKING:
    from ..settings import Settings


def read(hsm: HSM, name: str | None = None) -> list[KeyRecord]:
    """The key records of key set ``name`` (None: of every key set; kids are unique across all).

    A record we cannot read could be anybody's: it stops every key set from loading.
    """
    raws = sorted(read_records(hsm).items())
    return [KeyRecord.parse(label, raw) for label, raw in raws if name is None or raw.get("key_set", name) == name]


def configured_ring(hsm: HSM, settings: Settings) -> KeyRing:
    """The key ring at start-up: from the key set if there is one, else from the label settings."""
    if settings.key_set is not None:
        return load_ring(hsm, settings.key_set)
    assert settings.signing_key is not None  # load_settings requires it without a key set
    return KeyRing.load(hsm, settings.signing_key, settings.published_keys, settings.encryption_keys)


def load_ring(hsm: HSM, name: str, now: float | None = None) -> KeyRing:
    """The key ring of key set ``name`` at ``now``; ConfigError naming OAUTH_HSM_KEY_SET if it cannot serve."""
    now = clock.now() if now is None else now
    try:
        live = [r for r in read(hsm, name) if r.in_service(now)]
        return _ring(hsm, name, live)
    except ConfigError as exc:
        raise ConfigError(f"OAUTH_HSM_KEY_SET: {exc}") from None


def _ring(hsm: HSM, name: str, live: list[KeyRecord]) -> KeyRing:
    def keys(use: str, state: str) -> list[TokenKey]:
        chosen = states.newest_active(live, use) if state == "active" else [r for r in live if r.use == use and r.state == state]
        return [_key(hsm, r) for r in chosen]

    signers = keys("sig", "active")
    if not signers:
        raise ConfigError(
            f"key set {name!r} has no active signing key (`flask oauth-hsm keys generate --use sig "
            "--state active ...` starts one)"
        )
    active_enc = keys("enc", "active")
    next_enc = keys("enc", "next")
    verifying = [*keys("sig", "next"), *keys("sig", "retired")]
    published = tuple(k.info for k in (*signers, *verifying, *active_enc, *next_enc))
    decryption = (*active_enc, *next_enc, *keys("enc", "retired"))
    escrow = active_enc[0] if active_enc else None
    return KeyRing.build(tuple(signers), published, decryption, escrow, f"key set {name!r} lists one key twice")


def _key(hsm: HSM, record: KeyRecord) -> TokenKey:
    try:
        key = hsm.key(record.label)
    except KeyNotFound:
        raise ConfigError(f"key {record.label!r} is {record.state} but its key pair is not in the token") from None
    if (key.kid, key.alg, key.info.use) != (record.kid, record.alg, record.use):
        raise ConfigError(f"key {record.label!r}: its record names another key (kid, alg or use differ)")
    return key


@dataclass(frozen=True)
class Change:
    """What a command did, for its output."""

    record: KeyRecord
    retired: tuple[KeyRecord, ...] = ()


class KeySet:
    """The key set ``name`` as the CLI changes it: each method reads the records, checks the
    rule (states.py), writes, and returns what changed. Time is ``clock.now()``."""

    def __init__(self, hsm: HSM, name: str, timings: Timings):
        self.hsm, self.name, self.timings = hsm, name, timings

    @classmethod
    def of(cls, hsm: HSM, settings: Settings) -> KeySet:
        if settings.key_set is None:
            raise ConfigError("OAUTH_HSM_KEY_SET is not set: key states need a key set (docs/hsm-and-keys.md)")
        return cls(hsm, settings.key_set, Timings.from_settings(settings))

    def records(self) -> list[KeyRecord]:
        return read(self.hsm, self.name)

    def add(self, label: str, state: str) -> Change:
        """Put the key pair ``label`` (generated or imported, in no key set yet) into this set."""
        info = self.hsm.key(label).info
        raws = read_records(self.hsm)
        if label in raws:
            raise KeyStateRefused(f"{label!r} is already in key set {raws[label].get('key_set')!r}")
        states.check_kid_unused(info.kid, raws)
        states.check_new(self.records(), info.use, state)
        now = int(clock.now())
        record = KeyRecord(
            label, self.name, info.kid, info.alg, info.use, state, published=now, activated=now if state == "active" else None
        )
        write_record(self.hsm, label, record.to_json())
        return Change(record)

    def rotate(
        self, use: str, *, label: str | None = None, force: bool = False, vet: Callable[[KeyRing], None] | None = None
    ) -> Change:
        now = int(clock.now())
        records = self.records()
        changed = states.rotation(records, use, now, self.timings, label=label, force=force)
        if vet is not None:  # e.g. the registry still fits the new key ring (an alg change)
            after = {r.label: r for r in (*records, *changed)}.values()
            vet(_ring(self.hsm, self.name, [r for r in after if r.in_service(now)]))
        for record in changed:
            write_record(self.hsm, record.label, record.to_json())
        return Change(changed[0], tuple(changed[1:]))

    def retire(self, label: str, *, force: bool = False) -> Change:
        record = states.retirement(self.records(), label, int(clock.now()), self.timings, force=force)
        write_record(self.hsm, label, record.to_json())
        return Change(record)

    def check_destroy(self, label: str) -> KeyRecord:
        """The tombstone ``destroy`` would write, or the refusal."""
        return states.destruction(self.records(), label, int(clock.now()), self.timings)

    def destroy(self, label: str) -> Change:
        """Delete the key pair; its record stays as a tombstone (the kid is never used again)."""
        record = self.check_destroy(label)
        write_record(self.hsm, label, record.to_json())
        _destroy_pair(self.hsm, label)
        return Change(record)
