"""The authorization server's keys: a frozen key ring, swapped whole while the server runs; in
key-set mode, key states in the token that every process follows (rotation without a restart)."""

from .key_set import KeySet, configured_ring, load_ring
from .ring import KeyRing, KeyRingHolder
from .states import KeyRecord
from .timing import Timings

__all__ = ["KeyRecord", "KeyRing", "KeyRingHolder", "KeySet", "Timings", "configured_ring", "load_ring"]
