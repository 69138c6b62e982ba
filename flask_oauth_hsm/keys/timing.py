"""The waits of a key rotation, derived from the settings (docs/hsm-and-keys.md has the runbook).

*publication*: how long a ``next`` key must be published before it becomes active, so that no
resource server meets its kid unknown: every process must have re-read the key states
(``OAUTH_HSM_KEYS_REFRESH``), every HTTP cache must have dropped the old JWKS
(``OAUTH_HSM_JWKS_MAX_AGE``), and every peer must have refetched it
(``OAUTH_HSM_JWKS_PEER_CACHE``; a peer may fetch from a cache just before it expires).

*overlap*: how long a retired key stays in service. A process that has not yet re-read the key
states still signs with it for up to ``OAUTH_HSM_KEYS_REFRESH``. Then:

- ``sig``: its last token expires ``OAUTH_HSM_ACCESS_TOKEN_LIFETIME`` later; resource servers
  accept it a little longer, on their own clocks: ``OAUTH_HSM_CLOCK_SKEW`` plus one
  ``OAUTH_HSM_JWKS_MAX_AGE`` as the margin for their leeway.
- ``enc``: access tokens escrowed to it live as long as above; peers that still have the JWKS in
  which it was the active key keep encrypting to it (max-age + peer cache), and an assertion
  encrypted then may arrive up to ``OAUTH_HSM_ASSERTION_MAX_LIFETIME`` + skew later. Refresh tokens
  are sealed to it too (docs/users.md): each refresh seals the next one to the active key, so a
  valid one is at most ``OAUTH_HSM_REFRESH_TOKEN_IDLE_LIFETIME`` old — it must decrypt that long,
  or every user idle since the rotation signs in again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..settings import Settings


@dataclass(frozen=True)
class Timings:
    refresh: int
    jwks_max_age: int
    peer_cache: int
    token_lifetime: int
    assertion_lifetime: int
    skew: int
    refresh_token_idle: int = 0  # refresh tokens sealed to an encryption key stay valid this long

    @classmethod
    def from_settings(cls, s: Settings) -> Timings:
        return cls(
            s.keys_refresh,
            s.jwks_max_age,
            s.jwks_peer_cache,
            s.access_token_lifetime,
            s.assertion_max_lifetime,
            s.clock_skew,
            s.refresh_token_idle_lifetime,
        )

    @property
    def publication(self) -> int:
        return self.refresh + self.jwks_max_age + self.peer_cache

    publication_formula = "OAUTH_HSM_KEYS_REFRESH + OAUTH_HSM_JWKS_MAX_AGE + OAUTH_HSM_JWKS_PEER_CACHE"

    def overlap(self, use: str) -> int:
        tokens = self.token_lifetime + self.skew
        if use == "sig":
            return self.refresh + tokens + self.jwks_max_age
        senders = self.jwks_max_age + self.peer_cache + self.assertion_lifetime + self.skew
        refresh_tokens = self.refresh_token_idle + self.skew
        return self.refresh + max(tokens, senders, refresh_tokens)
