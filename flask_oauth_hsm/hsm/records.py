"""Key records in the token: the metadata objects that carry a key's rotation state.

A key's metadata object (``CKA_APPLICATION`` = ``flask-oauth-hsm``, inventory.py) holds JSON. For a
key in a key set it also holds the key's state and dates (keys/states.py), so every process on
every host that shares the token reads the same key set without a restart.

PKCS#11 facts this module is built around:

- SoftHSM 2.6.1 refuses to change ``CKA_VALUE`` of a data object once it exists
  (``CKR_ATTRIBUTE_READ_ONLY``). A record is therefore *replaced*: the new version is created
  first with a higher ``seq``, then the older versions are destroyed. A reader that finds two
  versions (between the two steps, or after a crash) takes the highest ``seq``.
- Records are private token objects (``CKA_PRIVATE`` true): only a logged-in session can create or
  read them, so whoever reaches the token without the PIN cannot change a key's state. A public
  object that claims to be a record is ignored. Every session of ours is logged in (pool.py).
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import pkcs11
from pkcs11 import Attribute, ObjectClass

from .inventory import METADATA_APPLICATION

if TYPE_CHECKING:
    from .adapter import HSM

UNREADABLE: dict[str, Any] = {"unreadable": True}  # a record we own but cannot parse: never guessed


def read_records(hsm: HSM) -> dict[str, dict[str, Any]]:
    """label -> the newest key record (those with a ``key_set``), or :data:`UNREADABLE`."""
    records: dict[str, dict[str, Any]] = hsm._with_session(_read_all)
    return records


def write_record(hsm: HSM, label: str, record: dict[str, Any]) -> None:
    """Replace the metadata of ``label`` with ``record`` (its ``seq`` one above the newest)."""
    hsm._with_session(lambda s: _replace(s, label, record), rw=True)


def destroy_pair(hsm: HSM, label: str) -> None:
    """Delete the key pair of ``label`` and keep its record (a destroyed key's kid stays known)."""

    def destroy(session: Any) -> None:
        for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            for obj in list(session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label})):
                obj.destroy()

    hsm._with_session(destroy, rw=True)
    hsm.forget_key_cache()


def _ours(session: Any, label: str | None = None, *, private_only: bool = False) -> list[Any]:
    template: dict[Any, Any] = {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: METADATA_APPLICATION}
    if label is not None:
        template[Attribute.LABEL] = label
    if private_only:  # records only: the token leaves out every key's plain (public) metadata
        template[Attribute.PRIVATE] = True
    return list(session.get_objects(template))


def _parse(obj: Any) -> dict[str, Any] | None:
    """The record in ``obj``; None for plain metadata (no key set); UNREADABLE when broken."""
    try:
        value = json.loads(obj[Attribute.VALUE])
        private = obj[Attribute.PRIVATE]
    except pkcs11.ObjectHandleInvalid:
        return None  # replaced by a writer while we read: its successor is in the same listing
    except (pkcs11.PKCS11Error, ValueError):
        return UNREADABLE
    if not isinstance(value, dict) or "key_set" not in value:
        return None
    if not private:
        return None  # anyone could have written it without the PIN: not a record of ours
    if not isinstance(value.get("seq"), int):
        return UNREADABLE
    return value


def _read_all(session: Any) -> dict[str, dict[str, Any]]:
    newest: dict[str, dict[str, Any]] = {}
    for obj in _ours(session, private_only=True):  # every process does this every OAUTH_HSM_KEYS_REFRESH
        record = _parse(obj)
        if record is None:
            continue
        try:
            label = obj[Attribute.LABEL]
        except pkcs11.ObjectHandleInvalid:
            continue
        held = newest.get(label)
        if record is UNREADABLE or held is UNREADABLE:
            newest[label] = UNREADABLE
        elif held is None or record["seq"] > held["seq"]:
            newest[label] = record
    return newest


def _replace(session: Any, label: str, record: dict[str, Any]) -> None:
    old = _ours(session, label)
    seqs = [r["seq"] for r in (_parse(o) for o in old) if r is not None and r is not UNREADABLE]
    value = {**record, "seq": max(seqs, default=0) + 1}
    session.create_object(
        {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.LABEL: label,
            Attribute.APPLICATION: METADATA_APPLICATION,
            Attribute.VALUE: json.dumps(value, sort_keys=True).encode(),
        }
    )
    for obj in old:  # only after the new version exists: a reader never sees none
        with contextlib.suppress(pkcs11.ObjectHandleInvalid):  # another writer removed it first
            obj.destroy()
