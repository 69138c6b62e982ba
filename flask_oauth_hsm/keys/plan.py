"""A key plan: the keys a deployment needs, made idempotently by ``flask oauth-hsm keys provision``.

A plan is a JSON object ``{"keys": [entry, …]}``. An entry is a key pair
(``{"label", "alg", "use"}``, plus ``rsa_bits`` for an RSA algorithm or ``crv`` for an ECDH-ES one)
or a secret key (``{"label", "secret": "aes" | "hmac"}``). Provisioning compares the whole plan with
the token before it generates anything: a label that is already there as something else refuses
the plan, so a typo never leaves a half-provisioned token and an existing key is never replaced.
Keys of a key set (``OAUTH_HSM_KEY_SET``) get states, which a plan does not express: make those with
``keys generate --state`` (docs/hsm-and-keys.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..algorithms import ALGORITHMS, AlgSpec
from ..errors import ConfigError
from ..hsm import KeyInfo, KeyProblem, SecretKeyInfo
from ..hsm.inventory import MAX_LABEL, SECRET_KINDS as TOKEN_SECRET_KINDS

PAIR_FIELDS = {"label", "alg", "use", "rsa_bits", "crv"}
SECRET_FIELDS = {"label", "secret"}
SECRET_KINDS = tuple(sorted(TOKEN_SECRET_KINDS))  # what `keys generate-secret --kind` makes
EC_CURVES = ALGORITHMS["ECDH-ES"].curves  # the curves an ECDH-ES* key may be on


@dataclass(frozen=True)
class PlannedKey:
    """One key of a plan: a key pair (``alg``, ``use``) or a secret key (``secret``)."""

    label: str
    alg: str | None = None
    use: str | None = None
    rsa_bits: int = 2048
    crv: str = "P-256"
    secret: str | None = None

    @property
    def spec(self) -> AlgSpec:
        assert self.alg is not None, "a secret key has no algorithm"
        return ALGORITHMS[self.alg]


def parse_plan(text: str) -> list[PlannedKey]:
    """The entries of a plan, in order; ConfigError names the first entry that is wrong."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"the key plan is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"keys"} or not isinstance(doc["keys"], list):
        raise ConfigError('the key plan must be a JSON object {"keys": [...]}')
    plan = [_entry(i, raw) for i, raw in enumerate(doc["keys"])]
    seen: set[str] = set()
    for key in plan:
        if key.label in seen:
            raise ConfigError(f"key plan: label {key.label!r} is planned twice")
        seen.add(key.label)
    return plan


def _entry(i: int, raw: Any) -> PlannedKey:
    where = f"key plan: keys[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object")
    label = raw.get("label")
    if not isinstance(label, str) or not 1 <= len(label) <= MAX_LABEL:
        raise ConfigError(f"{where}: label must be a string of 1 to {MAX_LABEL} characters")
    where = f"key plan: {label!r}"
    fields = SECRET_FIELDS if "secret" in raw else PAIR_FIELDS
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} (a {_kind(raw)} has {', '.join(sorted(fields))})")
    if "secret" in raw:
        if raw["secret"] not in SECRET_KINDS:
            raise ConfigError(f"{where}: secret must be one of {', '.join(SECRET_KINDS)}")
        return PlannedKey(label, secret=raw["secret"])
    return _pair(where, label, raw)


def _kind(raw: dict[str, Any]) -> str:
    return "secret key" if "secret" in raw else "key pair"


def _pair(where: str, label: str, raw: dict[str, Any]) -> PlannedKey:
    alg = raw.get("alg")
    spec = ALGORITHMS.get(alg) if isinstance(alg, str) else None
    if spec is None:
        raise ConfigError(f"{where}: alg must be one of {', '.join(sorted(ALGORITHMS))}")
    if raw.get("use") != spec.use:
        raise ConfigError(f"{where}: {spec.name} keys have use {spec.use!r}")
    rsa_bits, crv = raw.get("rsa_bits", 2048), raw.get("crv", "P-256")
    if "rsa_bits" in raw and (spec.kty != "RSA" or type(rsa_bits) is not int or not 2048 <= rsa_bits <= 8192):
        raise ConfigError(f"{where}: rsa_bits is an integer from 2048 to 8192, for RSA algorithms only")
    if "crv" in raw and (spec.kind != "ecdh" or crv not in EC_CURVES):
        raise ConfigError(f"{where}: crv is one of {', '.join(EC_CURVES)}, for ECDH-ES algorithms only")
    return PlannedKey(label, alg=spec.name, use=spec.use, rsa_bits=rsa_bits, crv=crv)


def missing_keys(plan: list[PlannedKey], listing: Iterable[KeyInfo | SecretKeyInfo | KeyProblem]) -> list[PlannedKey]:
    """The planned keys the token lacks. Raises ConfigError, naming every conflict, if a planned
    label is in the token as something else (another algorithm, size or curve, the other kind of
    key, or a key the server would refuse)."""
    found = {row.label: row for row in listing}
    conflicts = [f"{key.label} {why}" for key in plan if key.label in found and (why := _mismatch(key, found[key.label]))]
    if conflicts:
        raise ConfigError("the token does not match the key plan (nothing was generated): " + "; ".join(conflicts))
    return [key for key in plan if key.label not in found]


def _mismatch(key: PlannedKey, row: KeyInfo | SecretKeyInfo | KeyProblem) -> str | None:
    if isinstance(row, KeyProblem):
        return f"is in the token but unusable ({row.problem})"
    if key.secret is not None:
        if not isinstance(row, SecretKeyInfo):
            return f"is a key pair ({row.alg}) in the token; the plan wants a {key.secret} secret key"
        return None if row.kind == key.secret else f"is a {row.kind} secret key in the token; the plan says {key.secret}"
    if isinstance(row, SecretKeyInfo):
        return f"is a {row.kind} secret key in the token; the plan wants a {key.alg} key pair"
    if (row.alg, row.use) != (key.alg, key.use):
        return f"is {row.alg} ({row.use}) in the token; the plan says {key.alg} ({key.use})"
    if row.kty == "RSA" and row.size != key.rsa_bits:
        return f"is RSA {row.size} in the token; the plan says {key.rsa_bits} bits"
    if key.spec.kind == "ecdh" and row.crv != key.crv:
        return f"is on {row.crv} in the token; the plan says {key.crv}"
    return None
