"""KeyRingHolder.follow (keys/ring.py): a request never gets a ring older than the refresh period,
even while another request of the same process is re-reading it."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from flask_oauth_hsm.keys.ring import KeyRingHolder


def ring(name: str) -> SimpleNamespace:
    """What the holder reads of a key ring: its fingerprint, and the counts it logs."""
    return SimpleNamespace(fingerprint=name, signing=SimpleNamespace(kid=name), published=[], decryption=[])


def test_a_request_during_a_re_read_waits_for_the_new_ring(fake_clock):
    """Regression: the re-read marked the ring as read before swapping the new one in, so a request
    arriving in between found it "not due" and was served the old ring (a token signed by the
    retired key after a rotation; seen once in tests/test_key_rotation.py with two workers)."""
    in_derive, release = threading.Event(), threading.Event()
    derive_calls = 0

    def derive(r):
        nonlocal derive_calls
        derive_calls += 1
        if derive_calls > 1:  # the re-read: hold it inside the swap
            in_derive.set()
            release.wait(30)
        return b"{}", r.fingerprint

    holder = KeyRingHolder()
    holder.publish(ring("old"), derive)
    holder.follow(lambda: ring("new"), every=30)
    fake_clock.advance(31)

    seen: dict[str, str] = {}
    rereader = threading.Thread(target=lambda: seen.setdefault("rereader", holder.ring.fingerprint))
    rereader.start()
    assert in_derive.wait(30), "the re-read did not start"
    other = threading.Thread(target=lambda: seen.setdefault("other", holder.ring.fingerprint))
    other.start()
    other.join(1.0)  # before the fix it returned "old" at once; after it, it waits for the re-read
    release.set()
    rereader.join(30)
    other.join(30)
    assert seen == {"rereader": "new", "other": "new"}
