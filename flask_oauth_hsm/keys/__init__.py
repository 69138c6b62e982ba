"""The authorization server's keys: a frozen key ring, swapped whole while the server runs."""

from .ring import KeyRing, KeyRingHolder

__all__ = ["KeyRing", "KeyRingHolder"]
