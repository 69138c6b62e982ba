"""``flask oauth-hsm …``: keys in the token, registry checks, and a demo client.

Registered as a Flask CLI plugin (``flask.commands`` entry point), so it works with any host app:
``flask --app example_app oauth-hsm keys generate --alg ES256 --use sig --label as-sig-1``.
"""

from __future__ import annotations

import json
import secrets
import sys
import urllib.request

import click
from flask import current_app
from flask.cli import with_appcontext

from .algorithms import ALGORITHMS
from .client_auth import hash_secret
from .clients import Registry
from .clients.fit import fit_checker
from .errors import ConfigError, OAuthHSMError
from .extension import ADMIN_KEY, KEY_ADMIN, KeyAdmin
from .hsm import KeyProblem, SecretKeyInfo
from .jose import jwk, jws, jwt
from .keys import KeyRing
from .server import EXTENSION_KEY, ServerContext


@click.group("oauth-hsm")
def cli() -> None:
    """flask-oauth-hsm: keys in the HSM, the registry, a demo client."""


def _state() -> ServerContext:
    ctx: ServerContext = current_app.extensions[EXTENSION_KEY]
    return ctx


def _admin() -> KeyAdmin:
    """Settings and token of the app, loaded without requiring its keys to exist."""
    admin: KeyAdmin | None = current_app.extensions.get(ADMIN_KEY)
    if admin is None:
        raise click.ClickException("the app did not initialise OAuthHSM")
    return admin


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc))


@cli.group("keys")
def keys() -> None:
    """Key pairs in the token (private halves never leave it)."""
    # The app is loaded only to read its settings: the keys it names may not exist yet.
    KEY_ADMIN.set(True)


@keys.command("generate")
@click.option("--alg", required=True, type=click.Choice(sorted(ALGORITHMS)), help="JOSE algorithm the key is bound to")
@click.option("--use", required=True, type=click.Choice(["sig", "enc"]))
@click.option("--label", required=True, help="CKA_LABEL of the new key pair")
@click.option("--rsa-bits", default=2048, show_default=True, type=int)
@click.option("--crv", default="P-256", show_default=True, type=click.Choice(["P-256", "P-384", "P-521"]),
              help="curve for ECDH-ES keys")
@click.option("--if-missing", is_flag=True, help="succeed quietly when the label already exists")
@with_appcontext
def generate(alg: str, use: str, label: str, rsa_bits: int, crv: str, if_missing: bool) -> None:
    """Generate a key pair inside the token (sensitive, never extractable)."""
    hsm = _admin().hsm
    try:
        if if_missing and label in {k.label for k in hsm.list_keys()}:
            click.echo(f"{label}: exists")
            return
        info = hsm.generate_key(alg, use, label, rsa_bits=rsa_bits, crv=crv)
    except OAuthHSMError as exc:
        _fail(exc)
    click.echo(f"{info.label}: generated {info.alg} ({info.kty} {info.crv or info.size}) kid={info.kid}")


@keys.command("generate-secret")
@click.option("--kind", required=True, type=click.Choice(["aes", "hmac"]),
              help="aes: seals PoP keys kept in Redis (OAUTH_HSM_POP_KEY_WRAP_KEY); hmac: DPoP nonces (OAUTH_HSM_DPOP_NONCE_KEY)")
@click.option("--label", required=True, help="CKA_LABEL of the new secret key")
@click.option("--if-missing", is_flag=True, help="succeed quietly when the label already exists")
@with_appcontext
def generate_secret(kind: str, label: str, if_missing: bool) -> None:
    """Generate an AES-256 or HMAC-SHA-256 key inside the token (sensitive, never extractable)."""
    hsm = _admin().hsm
    try:
        if if_missing and label in {k.label for k in hsm.list_keys()}:
            click.echo(f"{label}: exists")
            return
        info = hsm.generate_secret_key(kind, label)
    except OAuthHSMError as exc:
        _fail(exc)
    click.echo(f"{info.label}: generated {info.kind} secret key")


@keys.command("list")
@with_appcontext
def list_keys() -> None:
    """Every key in the token: label, the role the settings give it, kid, alg, use, type/size.

    ROLE: ``signs`` (OAUTH_HSM_SIGNING_KEY), ``published`` (OAUTH_HSM_PUBLISHED_KEYS: in the JWKS,
    not signing tokens), ``decrypts`` (OAUTH_HSM_ENCRYPTION_KEYS), ``-`` (not used by this app).
    """
    admin = _admin()
    try:
        infos = admin.hsm.list_keys()
    except OAuthHSMError as exc:
        _fail(exc)
    click.echo(f"{'LABEL':24} {'ROLE':9} {'KID':44} {'ALG':15} {'USE':4} KEY")
    for i in infos:
        role = _role(admin, i.label)
        if isinstance(i, KeyProblem):
            click.echo(f"{i.label:24} {role:9} {'-':44} {'UNUSABLE':15} {'-':4} {i.problem}")
        elif isinstance(i, SecretKeyInfo):
            click.echo(f"{i.label:24} {role:9} {'-':44} {i.kind.upper():15} {'-':4} secret")
        else:
            click.echo(f"{i.label:24} {role:9} {i.kid:44} {i.alg:15} {i.use:4} {i.kty} {i.crv or i.size}")


def _role(admin: KeyAdmin, label: str) -> str:
    s = admin.settings
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
        doc = {"keys": [_admin().hsm.key(label).public_jwk() for label in labels]}
    except OAuthHSMError as exc:
        _fail(exc)
    click.echo(json.dumps(doc, indent=2))


@keys.command("destroy")
@click.option("--label", required=True)
@click.option("--yes", is_flag=True, help="confirm: the key is gone for good")
@with_appcontext
def destroy(label: str, yes: bool) -> None:
    """Delete a retired key pair (the last step of a rotation)."""
    settings = _admin().settings
    if label == settings.signing_key or label in settings.published_keys + settings.encryption_keys:
        _fail(ConfigError(f"{label!r} is still configured (OAUTH_HSM_SIGNING_KEY/PUBLISHED_KEYS/ENCRYPTION_KEYS)"))
    if not yes:
        _fail(ConfigError("add --yes to destroy the key"))
    try:
        _admin().hsm.destroy_key(label)
    except OAuthHSMError as exc:
        _fail(exc)
    click.echo(f"{label}: destroyed")


@cli.group("registry")
def registry() -> None:
    """The JSON registry of clients and resource servers."""
    # The app is loaded for its settings and keys; its own registry may be what is being fixed.
    KEY_ADMIN.set(True)


@registry.command("validate")
@click.argument("path", type=click.Path(exists=True, dir_okay=False), required=False)
@with_appcontext
def validate(path: str | None) -> None:
    """Validate a registry file with exactly the start-up checks (default: OAUTH_HSM_REGISTRY).

    That includes the checks against the app's settings and the keys in its token (an algorithm
    a resource server wants that no configured key can produce, say).
    """
    admin = _admin()
    s = admin.settings
    path = path or s.registry
    if path is None:
        _fail(ConfigError("give a registry path, or set OAUTH_HSM_REGISTRY"))
    try:
        ring = KeyRing.load(admin.hsm, s.signing_key, s.published_keys, s.encryption_keys)
        Registry.from_file(str(path), fit_checker(s, ring))
    except OAuthHSMError as exc:
        _fail(exc)
    click.echo(f"{path}: valid")


@registry.command("hash-secret")
@click.option("--pbkdf2", is_flag=True, help="slow hash, for human-chosen secrets")
@click.option("--stdin", "from_stdin", is_flag=True, help="read the secret from stdin instead of generating one")
def hash_secret_cmd(pbkdf2: bool, from_stdin: bool) -> None:
    """Print a new client secret and its client_secret_hash for the registry."""
    secret = sys.stdin.readline().rstrip("\n") if from_stdin else secrets.token_urlsafe(32)
    if not from_stdin:
        click.echo(f"client_secret:      {secret}")
    click.echo(f"client_secret_hash: {hash_secret(secret, 'pbkdf2-sha256' if pbkdf2 else 'sha256')}")


BINDINGS = ("bearer", "dpop", "pop-symmetric", "pop-asymmetric")


@cli.command("demo-client")
@click.option("--client-id", default="demo-client", show_default=True)
@click.option("--key-label", default="demo-client-sig", show_default=True, help="the client's signing key (in the dev token)")
@click.option("--binding", type=click.Choice(BINDINGS), default="bearer", show_default=True,
              help="what the token is bound to: nothing, a DPoP key, or a PoP key (symmetric from the AS, or ours)")
@click.option("--pop-key-label", default="demo-client-dpop", show_default=True,
              help="the DPoP / asymmetric PoP key (in the dev token)")
@click.option("--resource", default=None, help="RFC 8707 resource (default: the client's default)")
@click.option("--scope", default=None)
@click.option("--url", default=None, help="token endpoint URL (default: derived from OAUTH_HSM_ISSUER)")
@click.option("--api", default=None, help="then call this URL with the token (e.g. <issuer>/api/items)")
@with_appcontext
def demo_client(client_id: str, key_label: str, binding: str, pop_key_label: str, resource: str | None, scope: str | None,
                url: str | None, api: str | None) -> None:
    """Obtain an access token with private_key_jwt (signed in the token) and show its verified,
    decoded claims; with --api, use it (DPoP proofs and RFC 9421 signatures made here too)."""
    from .client.demo import obtain_and_call

    state = _state()
    token_url = url or state.endpoint_url("token")
    params = {k: v for k, v in (("resource", resource), ("scope", scope)) if v}
    status, body, answer = obtain_and_call(state, client_id, key_label, binding, pop_key_label, token_url, params, api)
    click.echo(f"POST {token_url} -> {status}")
    click.echo(json.dumps(body, indent=2))
    if status != 200:
        sys.exit(1)
    _show_claims(body["access_token"], state.endpoint_url("jwks"))
    if answer is not None:
        click.echo(f"\nGET {api} -> {answer[0]}")
        click.echo(answer[1])
        if answer[0] != 200:
            sys.exit(1)


def _show_claims(token: str, jwks_url: str) -> None:
    if jwt.is_encrypted(token):
        click.echo("\n(the access token is encrypted to its resource server; claims not shown)")
        return
    with urllib.request.urlopen(jwks_url, timeout=10) as resp:
        keyset = jwk.JWKSet.from_dict(json.loads(resp.read()))
    verified = jws.verify(token, lambda h: keyset.select(h["alg"], "sig", h.get("kid")), list(ALGORITHMS))
    click.echo(f"\naccess token header (signature verified with {jwks_url}):")
    click.echo(json.dumps(verified.header, indent=2))
    click.echo("claims:")
    click.echo(json.dumps(jwt.decode_claims(verified.payload), indent=2))
