"""Tokens we issued, read back: what introspection says about their binding (RFC 9449 §6.2, RFC
8705 §3.2, a symmetric key encrypted afresh to the asking resource server), and what revocation
removes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..clients import ResourceServer
from .pop_keys import encrypt_key, encryption_target

if TYPE_CHECKING:
    from ..server import ServerContext


def describe(ctx: ServerContext, claims: Mapping[str, Any], rs: ResourceServer) -> tuple[str, Mapping[str, Any] | None] | None:
    """``token_type`` and ``cnf`` for an introspection answer to ``rs``; None: not active (a
    symmetric key whose record is gone, or that cannot be encrypted to this resource server)."""
    cnf = claims.get("cnf")
    if cnf is None:
        return "Bearer", None
    if not isinstance(cnf, dict):
        return None
    if "jkt" in cnf:
        return "DPoP", cnf  # RFC 9449 §6.2
    if "x5t#S256" in cnf:
        return "Bearer", cnf  # RFC 8705 §3.2
    if "jwk" in cnf:
        return "pop", cnf
    vault = ctx.binding.vault
    key = vault.fetch(ctx.store, str(claims.get("jti"))) if vault is not None and "jwe" in cnf else None
    to_rs = encryption_target(rs, rs.access_token_encrypted_response_alg)
    if key is None or to_rs is None:
        return None
    return "pop", {"jwe": encrypt_key(key, to_rs)}


def forget(ctx: ServerContext, claims: Mapping[str, Any]) -> None:
    """A revoked token's symmetric key leaves Redis at once."""
    cnf = claims.get("cnf")
    if isinstance(cnf, dict) and "jwe" in cnf and ctx.binding.vault is not None:
        ctx.binding.vault.drop(ctx.store, str(claims.get("jti")))
