"""Key states in a key set, and which state changes are safe (docs/hsm-and-keys.md, rotation).

Every key of a key set is in one state, recorded with its dates in the token (hsm/records.py):

``next``
    published in the JWKS, not yet signing (``sig``) or preferred (``enc``): caches learn it.
``active``
    signs access tokens (``sig``) or receives the CEK escrow and is listed first (``enc``).
``retired``
    no longer signs; published (``sig``) and decrypting (``enc``) until ``until``, when every
    token it signed has expired and every JWE to it has arrived; after that it is *expired*: out
    of every process's key ring, and it may be destroyed.
``destroyed``
    the key pair is gone; the record stays, so its label and kid are never used again.

This module is pure: it reads records and returns the records to write, or refuses with
:class:`~flask_oauth_hsm.errors.KeyStateRefused`. Times are whole seconds of ``clock.now()``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, KeyStateRefused
from .timing import Timings

STATES = ("next", "active", "retired", "destroyed")
_TIMES = ("published", "activated", "retired", "until", "destroyed")
KIND = {"sig": "signing", "enc": "encryption"}


@dataclass(frozen=True)
class KeyRecord:
    label: str
    key_set: str
    kid: str
    alg: str
    use: str
    state: str
    published: int | None = None  # entered the JWKS
    activated: int | None = None
    retired: int | None = None
    until: int | None = None  # a retired key is needed until then
    destroyed: int | None = None

    @classmethod
    def parse(cls, label: str, raw: dict[str, Any]) -> KeyRecord:
        """A record read from the token; refuses one we cannot trust (never guesses a state)."""
        strings = ("key_set", "kid", "alg", "use", "state")
        if raw.get("unreadable") or not all(isinstance(raw.get(k), str) for k in strings):
            raise ConfigError(f"key {label!r}: its key-set record is unreadable; refusing to guess its state")
        times = {k: raw.get(k) for k in _TIMES}
        dates_ok = all(v is None or isinstance(v, int) for v in times.values())
        if raw["state"] not in STATES or raw["use"] not in KIND or not dates_ok:
            raise ConfigError(f"key {label!r}: its key-set record has an unknown state or a bad date")
        if raw["state"] == "retired" and times["until"] is None:
            raise ConfigError(f"key {label!r}: retired without an end date")
        return cls(label, raw["key_set"], raw["kid"], raw["alg"], raw["use"], raw["state"], **times)

    def to_json(self) -> dict[str, Any]:
        """The record as stored: the metadata (alg, use) plus state and dates."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        del out["label"]
        return out

    def moved(self, **changes: Any) -> KeyRecord:
        return dataclasses.replace(self, **changes)

    def in_service(self, now: float) -> bool:
        """In the key ring: published (sig) or decrypting (enc)."""
        return self.state in ("next", "active") or (self.state == "retired" and self.until is not None and now < self.until)

    def shown_state(self, now: float) -> str:
        """The state as ``keys list`` shows it: a retired key past its end date is ``expired``."""
        return "expired" if self.state == "retired" and not self.in_service(now) else self.state


def newest_active(records: Iterable[KeyRecord], use: str) -> list[KeyRecord]:
    """The active keys of ``use``, newest activation first (a tie goes by kid, the same on every host).

    Two keys are active only while a rotation is being written: the newer one already signs.
    """
    active = [r for r in records if r.use == use and r.state == "active"]
    return sorted(active, key=lambda r: (-(r.activated or 0), r.kid))


def check_new(records: Iterable[KeyRecord], use: str, state: str) -> None:
    """May a key of ``use`` join the key set (``records``) in ``state``?"""
    records = list(records)
    if state == "active" and newest_active(records, use):
        holder = newest_active(records, use)[0].label
        raise KeyStateRefused(
            f"{holder!r} is already the active {KIND[use]} key: add the new key with --state next, then `keys rotate --use {use}`"
        )
    waiting = [r.label for r in records if r.use == use and r.state == "next"]
    if state == "next" and waiting:
        raise KeyStateRefused(f"{waiting[0]!r} is already the next {KIND[use]} key: rotate to it or retire it first")


def check_kid_unused(kid: str, raws: Mapping[str, Mapping[str, Any]]) -> None:
    """``kid`` appears in no record of any key set, destroyed ones included: kids are never reused.

    Reads only what it needs from each raw record, so a record of another key set that does not
    parse does not block this one; one that cannot be read at all might hide the kid, and does.
    """
    for label, raw in sorted(raws.items()):
        if raw.get("unreadable"):
            raise KeyStateRefused(
                f"the key record of {label!r} cannot be read: repair it before adding keys (kids must stay unique)"
            )
        if raw.get("kid") == kid:
            raise KeyStateRefused(f"kid {kid} was already used by {label!r} ({raw.get('state')}): kids are never reused")


def rotation(
    records: Iterable[KeyRecord], use: str, now: int, timings: Timings, *, label: str | None = None, force: bool = False
) -> list[KeyRecord]:
    """The records to write, in order, to make the next key active and retire the active one.

    The next key is written first: until the old key's record follows, two keys are active and
    the newer one signs, so a process reading in between sees a valid key set.
    """
    records = list(records)
    waiting = [r for r in records if r.use == use and r.state == "next" and (label is None or r.label == label)]
    if not waiting:
        which = f"{label!r} is not a next {KIND[use]} key" if label else f"there is no next {KIND[use]} key"
        raise KeyStateRefused(f"{which}: `flask oauth-hsm keys generate --use {use} --state next ...` first")
    if len(waiting) > 1:
        raise KeyStateRefused(f"several next {KIND[use]} keys ({', '.join(r.label for r in waiting)}): choose one with --label")
    promoted = waiting[0]
    published = promoted.published if promoted.published is not None else now
    ready = published + timings.publication
    if now < ready and not force:
        raise KeyStateRefused(
            f"{promoted.label!r} has been published for {now - published} s; caches need {timings.publication} s "
            f"({timings.publication_formula}): rotate at {iso(ready)} (in {ready - now} s), or with --force, which "
            "lets resource servers meet an unknown kid"
        )
    retiring = [r.moved(state="retired", retired=now, until=now + timings.overlap(use)) for r in newest_active(records, use)]
    return [promoted.moved(state="active", activated=now), *retiring]


def retirement(records: Iterable[KeyRecord], label: str, now: int, timings: Timings, *, force: bool = False) -> KeyRecord:
    """The record of ``label`` retired now (or, with ``force``, out of service now)."""
    records = list(records)
    record = find(records, label)
    if record.state == "destroyed":
        raise KeyStateRefused(f"{label!r} was destroyed")
    if record.state == "retired":
        assert record.until is not None
        if now >= record.until:
            raise KeyStateRefused(f"{label!r} has been out of service since {iso(record.until)}: `keys destroy` removes it")
        if not force:
            raise KeyStateRefused(
                f"{label!r} is retired and may still be needed until {iso(record.until)} "
                f"(in {record.until - now} s): {_needed_for(record.use)}"
            )
        return record.moved(until=now)
    if record.state == "active" and newest_active(records, record.use)[0].label == label:
        raise KeyStateRefused(f"{label!r} is the active {KIND[record.use]} key: `keys rotate --use {record.use}` replaces it")
    return record.moved(state="retired", retired=now, until=now if force else now + timings.overlap(record.use))


def destruction(records: Iterable[KeyRecord], label: str, now: int, timings: Timings) -> KeyRecord:
    """The tombstone of ``label``, once no process may still use the key."""
    record = find(records, label)
    if record.state == "destroyed":
        raise KeyStateRefused(f"{label!r} was already destroyed")
    if record.in_service(now):
        if record.state == "retired":
            assert record.until is not None
            raise KeyStateRefused(
                f"{label!r} is retired but may still be needed until {iso(record.until)} "
                f"(in {record.until - now} s): {_needed_for(record.use)}"
            )
        raise KeyStateRefused(f"{label!r} is {record.state}: retire it first (`keys retire`, `keys rotate`)")
    assert record.until is not None
    gone = record.until + timings.refresh  # every process has re-read the states since it expired
    if now < gone:
        raise KeyStateRefused(
            f"{label!r} leaves the key ring of every process by {iso(gone)} (in {gone - now} s, "
            "OAUTH_HSM_KEYS_REFRESH): destroy it then"
        )
    return record.moved(state="destroyed", destroyed=now)


def find(records: Iterable[KeyRecord], label: str) -> KeyRecord:
    for r in records:
        if r.label == label:
            return r
    raise KeyStateRefused(f"{label!r} is not in this key set (`flask oauth-hsm keys list`)")


def _needed_for(use: str) -> str:
    if use == "sig":
        return "a token it signed may still be valid"
    return "a JWE to it may still arrive, and access tokens escrowed to it may still be valid"


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
