"""``flask oauth-hsm keys …``: key pairs in the token, and their states in a key set (rotation).

Label mode (``OAUTH_HSM_SIGNING_KEY``, …): ``generate``, ``provision`` (a key plan, keys/plan.py),
``list`` (with the role the settings give each key), ``jwks``, ``destroy``. Key-set mode
(``OAUTH_HSM_KEY_SET``) adds the states (keys/states.py): ``generate --state``, ``adopt``,
``rotate``, ``retire``, and ``list``/``destroy`` follow the states. docs/hsm-and-keys.md has the rotation runbook.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

import click
from flask import current_app
from flask.cli import with_appcontext

from . import clock
from .algorithms import ALGORITHMS
from .clients import Registry
from .clients.fit import fit_checker
from .errors import ConfigError, KeyStateRefused, OAuthHSMError
from .extension import ADMIN_KEY, KEY_ADMIN, KeyAdmin
from .hsm import KeyInfo, KeyProblem, SecretKeyInfo, read_records
from .keys import KeyRecord, KeyRing, KeySet
from .keys.key_set import Change
from .keys.plan import missing_keys, parse_plan
from .keys.states import KIND, check_new, iso

STATE_CHOICE = click.Choice(["next", "active"])
USE_CHOICE = click.Choice(["sig", "enc"])


def admin() -> KeyAdmin:
    """Settings and token of the app, loaded without requiring its keys to exist."""
    found: KeyAdmin | None = current_app.extensions.get(ADMIN_KEY)
    if found is None:
        raise click.ClickException("the app did not initialise OAuthHSM")
    return found


def fail(exc: Exception) -> NoReturn:
    raise click.ClickException(str(exc))


def key_set() -> KeySet:
    try:
        return KeySet.of(admin().hsm, admin().settings)
    except ConfigError as exc:
        fail(exc)


@click.group("keys")
def keys() -> None:
    """Key pairs in the token (private halves never leave it), and their rotation states."""
    # The app is loaded only to read its settings: the keys it names may not exist yet.
    KEY_ADMIN.set(True)


@keys.command("generate")
@click.option("--alg", required=True, type=click.Choice(sorted(ALGORITHMS)), help="JOSE algorithm the key is bound to")
@click.option("--use", required=True, type=USE_CHOICE, help="sig: signs (JWS); enc: decrypts (JWE); must match --alg")
@click.option("--label", required=True, help="CKA_LABEL of the new key pair")
@click.option(
    "--rsa-bits", default=2048, show_default=True, type=click.IntRange(2048, 8192), help="RSA modulus size (RSA algs only)"
)
@click.option(
    "--crv", default="P-256", show_default=True, type=click.Choice(["P-256", "P-384", "P-521"]), help="curve for ECDH-ES keys"
)
@click.option(
    "--state",
    type=STATE_CHOICE,
    default=None,
    help="add it to the key set (OAUTH_HSM_KEY_SET): next (the usual), or active for the first key of a use",
)
@click.option("--if-missing", is_flag=True, help="succeed quietly when the label already exists")
@with_appcontext
def generate(alg: str, use: str, label: str, rsa_bits: int, crv: str, state: str | None, if_missing: bool) -> None:
    """Generate a key pair inside the token (sensitive, never extractable)."""
    hsm = admin().hsm
    try:
        if if_missing and label in {k.label for k in hsm.list_keys()}:
            click.echo(f"{label}: exists")
            return
        chosen = key_set() if state else None
        if chosen is not None and state is not None:
            check_new(chosen.records(), use, state)  # refuse before spending a key generation
        info = hsm.generate_key(alg, use, label, rsa_bits=rsa_bits, crv=crv)
        click.echo(_generated(info))
        if chosen is not None and state is not None:
            _added(chosen, chosen.add(label, state))
    except OAuthHSMError as exc:
        fail(exc)


def _generated(info: KeyInfo) -> str:
    return f"{info.label}: generated {info.alg} ({info.kty} {info.crv or info.size}) kid={info.kid}"


def _generated_secret(info: SecretKeyInfo) -> str:
    return f"{info.label}: generated {info.kind} secret key"


@keys.command("adopt")
@click.option("--label", required=True, help="a key pair in the token that is in no key set yet")
@click.option("--state", required=True, type=STATE_CHOICE)
@with_appcontext
def adopt(label: str, state: str) -> None:
    """Add an existing key pair to the key set: migrating from the label settings, or an imported key."""
    chosen = key_set()
    try:
        _added(chosen, chosen.add(label, state))
    except OAuthHSMError as exc:
        fail(exc)


def _added(chosen: KeySet, change: Change) -> None:
    r, t = change.record, chosen.timings
    if r.state == "active":
        click.echo(f"{r.label}: active {KIND[r.use]} key of key set {chosen.name!r}; every process uses it within {t.refresh} s")
        return
    assert r.published is not None
    click.echo(
        f"{r.label}: next {KIND[r.use]} key of key set {chosen.name!r}; every process publishes it within "
        f"{t.refresh} s; `keys rotate --use {r.use}` from {iso(r.published + t.publication)} (in {t.publication} s)"
    )


@keys.command("rotate")
@click.option("--use", required=True, type=USE_CHOICE)
@click.option("--label", default=None, help="the next key to promote, when there are several")
@click.option(
    "--force", is_flag=True, help="DANGEROUS: promote before caches can know the key; resource servers may reject its tokens"
)
@with_appcontext
def rotate(use: str, label: str | None, force: bool) -> None:
    """Promote the next key to active and retire the active one (docs/hsm-and-keys.md)."""
    chosen = key_set()
    try:
        change = chosen.rotate(use, label=label, force=force, vet=_registry_vet())
    except OAuthHSMError as exc:
        fail(exc)
    if force:
        click.echo(
            "warning: rotated with --force; a resource server that has not seen the new key rejects its "
            "tokens until it refetches the JWKS",
            err=True,
        )
    promoted = change.record
    click.echo(f"{promoted.label}: active (kid={promoted.kid}); every process uses it within {chosen.timings.refresh} s")
    for old in change.retired:
        _retired(old)


def _registry_vet() -> Callable[[KeyRing], None] | None:
    """The start-up check of a registry file against the key ring a rotation would make."""
    settings = admin().settings
    path = settings.registry
    if path is None:
        return None

    def vet(ring: KeyRing) -> None:
        Registry.from_file(path, fit_checker(settings, lambda: ring))

    return vet


@keys.command("retire")
@click.option("--label", required=True)
@click.option(
    "--force",
    is_flag=True,
    help="DANGEROUS (a compromised key): out of service now, although tokens it signed or JWEs to it may be refused",
)
@with_appcontext
def retire(label: str, force: bool) -> None:
    """Retire a key outside a rotation (a next key not wanted); refuses while the key is still needed."""
    chosen = key_set()
    try:
        change = chosen.retire(label, force=force)
    except OAuthHSMError as exc:
        fail(exc)
    _retired(change.record)


def _retired(r: KeyRecord) -> None:
    assert r.until is not None
    remaining = max(0, r.until - int(clock.now()))
    click.echo(
        f"{r.label}: retired; in service until {iso(r.until)} (in {remaining} s), then `keys destroy --label {r.label} --yes`"
    )


@keys.command("generate-secret")
@click.option(
    "--kind",
    required=True,
    type=click.Choice(["aes", "hmac"]),
    help="aes: seals PoP keys kept in Redis (OAUTH_HSM_POP_KEY_WRAP_KEY); hmac: DPoP nonces (OAUTH_HSM_DPOP_NONCE_KEY), "
    "pairwise sub (OAUTH_HSM_PAIRWISE_KEY)",
)
@click.option("--label", required=True, help="CKA_LABEL of the new secret key")
@click.option("--if-missing", is_flag=True, help="succeed quietly when the label already exists")
@with_appcontext
def generate_secret(kind: str, label: str, if_missing: bool) -> None:
    """Generate an AES-256 or HMAC-SHA-256 key inside the token (sensitive, never extractable)."""
    hsm = admin().hsm
    try:
        if if_missing and label in {k.label for k in hsm.list_keys()}:
            click.echo(f"{label}: exists")
            return
        info = hsm.generate_secret_key(kind, label)
    except OAuthHSMError as exc:
        fail(exc)
    click.echo(_generated_secret(info))


@keys.command("provision")
@click.argument("plan_file", type=click.File("r"))
@with_appcontext
def provision(plan_file: Any) -> None:
    """Make the keys a JSON key plan lists that the token lacks (keys/plan.py has the format).
    Keys already there are left alone; a label there as something else refuses the whole plan
    before anything is generated."""
    hsm = admin().hsm
    try:
        plan = parse_plan(plan_file.read())
        missing = missing_keys(plan, hsm.list_keys())
        for key in plan:
            if key not in missing:
                click.echo(f"{key.label}: exists")
            elif key.secret is not None:
                click.echo(_generated_secret(hsm.generate_secret_key(key.secret, key.label)))
            else:
                assert key.alg is not None and key.use is not None
                info = hsm.generate_key(key.alg, key.use, key.label, rsa_bits=key.rsa_bits, crv=key.crv)
                click.echo(_generated(info))
    except OAuthHSMError as exc:
        fail(exc)


@keys.command("list")
@with_appcontext
def list_keys() -> None:
    """Every key in the token: label, role or state, kid, alg, use, type/size (and dates).

    Label mode, ROLE: ``signs`` (OAUTH_HSM_SIGNING_KEY), ``published`` (OAUTH_HSM_PUBLISHED_KEYS:
    in the JWKS, not signing tokens), ``decrypts`` (OAUTH_HSM_ENCRYPTION_KEYS), ``-`` (not used).
    Key-set mode, STATE: ``next``, ``active``, ``retired``, ``expired`` (retired and out of
    service: may be destroyed), ``destroyed`` (only its record is left), ``-`` (in no key set), or
    the other key set the key belongs to.
    """
    found = admin()
    try:
        infos = found.hsm.list_keys()
        records = read_records(found.hsm) if found.settings.key_set else {}
    except OAuthHSMError as exc:
        fail(exc)
    if not found.settings.key_set:
        click.echo(f"{'LABEL':24} {'ROLE':9} {'KID':44} {'ALG':15} {'USE':4} KEY")
        for i in infos:
            click.echo(_row(i, _role(found, i.label)))
        return
    click.echo(f"{'LABEL':24} {'STATE':9} {'KID':44} {'ALG':15} {'USE':4} {'KEY':9} DATES")
    now = clock.now()
    for i in infos:
        raw = records.pop(i.label, None)
        click.echo(_row(i, *_state(found.settings.key_set, i.label, raw, now)))
    for label, raw in sorted(records.items()):  # records without a key pair: destroyed keys
        state, dates = _state(found.settings.key_set, label, raw, now)
        if raw.get("key_set") == found.settings.key_set:
            click.echo(
                f"{label:24} {state:9} {raw.get('kid', '-'):44} {raw.get('alg', '-'):15} {raw.get('use', '-'):4} {'-':9} {dates}"
            )


def _state(mine: str, label: str, raw: dict[str, Any] | None, now: float) -> tuple[str, str]:
    if raw is None:
        return "-", ""
    try:
        record = KeyRecord.parse(label, raw)
    except ConfigError as exc:
        return "UNUSABLE", str(exc)
    if record.key_set != mine:
        return f"set:{record.key_set}", ""
    dates = ", ".join(
        f"{name} {iso(value)}"
        for name in ("published", "activated", "retired", "until", "destroyed")
        if (value := getattr(record, name)) is not None
    )
    return record.shown_state(now), dates


def _row(i: KeyInfo | SecretKeyInfo | KeyProblem, state: str, dates: str | None = None) -> str:
    """One line of ``keys list``; ``dates`` (key-set mode) adds the KEY column's padding and DATES."""
    if isinstance(i, KeyProblem):
        return f"{i.label:24} {state:9} {'-':44} {'UNUSABLE':15} {'-':4} {i.problem}"
    if isinstance(i, SecretKeyInfo):
        return f"{i.label:24} {state:9} {'-':44} {i.kind.upper():15} {'-':4} secret"
    key = f"{i.kty} {i.crv or i.size}"
    line = f"{i.label:24} {state:9} {i.kid:44} {i.alg:15} {i.use:4} "
    return line + (key if dates is None else f"{key:9} {dates}".rstrip())


def _role(found: KeyAdmin, label: str) -> str:
    s = found.settings
    if label == s.signing_key:
        return "signs"
    if label in s.encryption_keys:
        return "decrypts"
    return "published" if label in s.published_keys else "-"


@keys.command("jwks")
@click.argument("labels", nargs=-1, required=True)
@with_appcontext
def jwks(labels: tuple[str, ...]) -> None:
    """Print the public JWKS of the given key labels (for a registry entry or a peer)."""
    try:
        doc = {"keys": [admin().hsm.key(label).public_jwk() for label in labels]}
    except OAuthHSMError as exc:
        fail(exc)
    click.echo(json.dumps(doc, indent=2))


@keys.command("destroy")
@click.option("--label", required=True)
@click.option("--yes", is_flag=True, help="confirm: the key is gone for good")
@with_appcontext
def destroy(label: str, yes: bool) -> None:
    """Delete a key pair that nothing needs any more (the last step of a rotation).

    Key-set mode: only a key out of service (expired, or in no key set); its record stays, so its
    label and kid are never used again. Label mode: only a key no label setting names.
    """
    found = admin()
    settings = found.settings
    try:
        owner = read_records(found.hsm).get(label, {}).get("key_set")
    except OAuthHSMError as exc:
        fail(exc)
    if owner is not None and owner != settings.key_set:
        fail(KeyStateRefused(f"{label!r} is in key set {owner!r}: destroy it with OAUTH_HSM_KEY_SET={owner}"))
    if settings.signing_key and (label == settings.signing_key or label in settings.published_keys + settings.encryption_keys):
        fail(ConfigError(f"{label!r} is still configured (OAUTH_HSM_SIGNING_KEY/PUBLISHED_KEYS/ENCRYPTION_KEYS)"))
    try:
        if owner is not None:
            chosen = key_set()
            if yes:
                chosen.destroy(label)
            else:
                chosen.check_destroy(label)  # say why not before asking for --yes
        elif yes:
            found.hsm.destroy_key(label)
    except OAuthHSMError as exc:
        fail(exc)
    if not yes:
        fail(ConfigError("add --yes to destroy the key"))
    click.echo(f"{label}: destroyed" + ("; its record keeps the label and kid from being used again" if owner else ""))
