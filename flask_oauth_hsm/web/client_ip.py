"""The caller's IP address: ``X-Forwarded-For`` is followed only through trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..clients import IPNetwork


def client_address(remote_addr: str | None, forwarded_for: str | None, trusted: Iterable[IPNetwork]) -> str | None:
    """Walk ``X-Forwarded-For`` right to left while the hop is a trusted proxy."""
    try:
        hop = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return None
    trusted = tuple(trusted)
    chain = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    while chain and any(hop in net for net in trusted):
        try:
            hop = ipaddress.ip_address(chain.pop())
        except ValueError:
            return None
    return str(hop)
