"""``flask oauth-hsm …``: keys in the token, registry checks, client key pairs, and a demo client.

Registered as a Flask CLI plugin (``flask.commands`` entry point), so it works with any host app:
``flask --app example_app oauth-hsm keys generate --alg ES256 --use sig --label as-sig-1``.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.error
import urllib.parse
from typing import Any, Callable

import click
from flask import current_app
from flask.cli import with_appcontext

from . import client_keys
from . import demo_client as demo
from .algorithms import ALGORITHMS
from .client_auth import ASSERTION_TYPE, hash_secret
from .clients import Registry
from .clients.fit import fit_checker
from .errors import ConfigError, OAuthHSMError
from .extension import ADMIN_KEY, KEY_ADMIN, KeyAdmin
from .demo_client import CodeFlow, DemoClient
from .hsm import KeyProblem, SecretKeyInfo
from .jose import jwt
from .keys import KeyRing
from .server import EXTENSION_KEY, ServerContext


@click.group("oauth-hsm")
def cli() -> None:
    """flask-oauth-hsm: keys in the HSM, the registry, client key pairs, a demo client."""


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
@click.option("--use", required=True, type=click.Choice(["sig", "enc"]),
              help="sig: signs (JWS); enc: decrypts (JWE); must match --alg")
@click.option("--label", required=True, help="CKA_LABEL of the new key pair")
@click.option("--rsa-bits", default=2048, show_default=True, type=click.IntRange(2048, 8192),
              help="RSA modulus size (RSA algs only)")
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
        Registry.from_file(str(path), fit_checker(s, ring, {"users"}))  # as for an app with users: the strictest
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


@cli.group("client")
def client() -> None:
    """Key pairs for clients outside this server's HSM (private_key_jwt)."""


@client.command("keygen")
@click.option("--alg", default="ES256", show_default=True, type=click.Choice(client_keys.CLIENT_ALGS),
              help="the client's token_endpoint_auth_signing_alg")
@click.option("--out", "path", required=True, type=click.Path(dir_okay=False),
              help="file for the private key: PKCS#8 PEM, mode 0600, never overwritten")
@click.option("--rsa-bits", default=2048, show_default=True,
              type=click.IntRange(*client_keys.RSA_BITS), help="RSA modulus size (PS256 only)")
def client_keygen(alg: str, path: str, rsa_bits: int) -> None:
    """Make a software key pair: the private key into a new file, its public JWKS to stdout.

    The JWKS (kid = RFC 7638 thumbprint, alg, use=sig) is what goes into the client's registry
    entry as "jwks"; the private key stays with the client.
    """
    if alg != "PS256" and click.get_current_context().get_parameter_source("rsa_bits").name != "DEFAULT":
        _fail(ConfigError("--rsa-bits applies to PS256 only"))
    try:
        key = client_keys.generate(alg, rsa_bits)
        jwks_doc = client_keys.public_jwks(key, alg)
        client_keys.write_private_key(path, key)
    except OAuthHSMError as exc:
        _fail(exc)
    click.echo(f"{path}: {alg} private key written (mode 0600); keep it with the client. "
               "The public JWKS for the registry entry follows.", err=True)
    click.echo(json.dumps(jwks_doc, indent=2))


@client.command("jwks")
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--alg", default="ES256", show_default=True, type=click.Choice(client_keys.CLIENT_ALGS),
              help="the client's token_endpoint_auth_signing_alg")
def client_jwks(key_file: str, alg: str) -> None:
    """Print the public JWKS of a key file (PEM or DER; public, or an unencrypted private key),
    e.g. a public key exported from the client's own PKCS#11 token."""
    try:
        jwks_doc = client_keys.public_jwks(client_keys.load_key_file(key_file), alg)
    except OAuthHSMError as exc:
        _fail(exc)
    click.echo(json.dumps(jwks_doc, indent=2))


@cli.command("demo-client")
@click.option("--client-id", default="demo-client", show_default=True)
@click.option("--key-label", default="demo-client-sig", show_default=True, help="the client's signing key (in the dev token)")
@click.option("--flow", type=click.Choice(["client-credentials", "code"]), default="client-credentials", show_default=True,
              help="code: the authorization code flow with PKCE through your browser, then one refresh")
@click.option("--resource", default=None, help="RFC 8707 resource (default: the client's default)")
@click.option("--scope", default=None, help="default: the client's (client-credentials); 'openid profile email read' (code)")
@click.option("--redirect-uri", default="http://127.0.0.1:8765/callback", show_default=True,
              help="code flow: a registered loopback redirect URI; the command listens on it")
@click.option("--timeout", default=300, show_default=True, type=int, help="code flow: seconds to wait for the browser")
@click.option("--url", default=None, help="token endpoint URL (default: derived from OAUTH_HSM_ISSUER)")
@click.option("--token-only", is_flag=True, help="client-credentials: print only the access token (for ACCESS_TOKEN=$(...))")
@with_appcontext
def demo_client(client_id: str, key_label: str, flow: str, resource: str | None, scope: str | None, redirect_uri: str,
                timeout: int, url: str | None, token_only: bool) -> None:
    """Obtain tokens as the demo client (private_key_jwt, its key in the token) and show them.

    ``--flow client-credentials`` (default): one access token for the client itself.
    ``--flow code``: prints an authorization URL to open in a browser, listens on the loopback
    redirect URI for the answer, redeems the code with its PKCE verifier, shows the tokens, and
    refreshes once.
    """
    state = _state()
    client = DemoClient(client_id, state.settings.issuer, state.hsm.key(key_label), state.settings.url_prefix)
    jwks_url = state.endpoint_url("jwks")
    if flow == "code":
        _code_flow(CodeFlow(client, redirect_uri, scope or "openid profile email read", resource), jwks_url, timeout)
        return
    form = {"grant_type": "client_credentials"}
    if resource:
        form["resource"] = resource
    if scope:
        form["scope"] = scope
    token_url = url or state.endpoint_url("token")
    status, body = _reach(token_url, lambda: demo.post(token_url, {**form, "client_assertion_type": ASSERTION_TYPE,
                                                                    "client_assertion": client.assertion()}))
    if token_only and status == 200:
        click.echo(body["access_token"])
        return
    click.echo(f"POST {token_url} -> {status}", err=token_only)
    click.echo(json.dumps(body, indent=2), err=token_only)
    if status != 200:
        sys.exit(1)
    _show_claims("access token", body["access_token"], jwks_url)


def _reach(url: str, call: Callable[[], tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
    try:
        return call()
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from None


def _code_flow(flow: CodeFlow, jwks_url: str, timeout: int) -> None:
    parts = urllib.parse.urlsplit(flow.redirect_uri)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
        raise click.ClickException("--redirect-uri must be a loopback http URI with a port, e.g. http://127.0.0.1:8765/callback")
    click.echo("Open this URL in a browser, sign in and approve:\n")
    click.echo("  " + flow.authorization_url() + "\n")
    click.echo(f"Waiting for the answer on {flow.redirect_uri} (at most {timeout} s) ...")
    try:
        params = wait_for_redirect(parts.hostname, parts.port, parts.path or "/", timeout)
        code = flow.code_from(params)
    except (OSError, TimeoutError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    status, body = _reach(flow.client.url("/token"), lambda: flow.redeem(code))
    click.echo(f"\ncode redeemed with PKCE -> {status}")
    click.echo(json.dumps(body, indent=2))
    if status != 200:
        sys.exit(1)
    _show_claims("access token", body["access_token"], jwks_url)
    if "id_token" in body:
        _show_claims("ID token", body["id_token"], jwks_url)
    if "refresh_token" not in body:
        click.echo("\n(no refresh token: the client is not registered for refresh_token)")
        return
    status, refreshed = _reach(flow.client.url("/token"), lambda: flow.refresh(body["refresh_token"]))
    click.echo(f"\nrefreshed once -> {status}")
    click.echo(json.dumps(refreshed, indent=2))
    if status != 200:
        sys.exit(1)


def wait_for_redirect(host: str, port: int, path: str, timeout: float) -> dict[str, str]:
    """Serve one loopback request to ``path`` (RFC 8252 §7.3) and return its query parameters."""
    import http.server

    answer: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            parts = urllib.parse.urlsplit(self.path)
            if parts.path != path:
                self.send_error(404)
                return
            answer.update({k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()})
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"<!doctype html><html lang=en><title>Done</title><p>You can close this window and go back "
                             b"to the terminal.</p></html>")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer((host, port), Handler)
    server.timeout = 1.0
    deadline = time.monotonic() + timeout
    try:
        while not answer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from the browser in time")
            server.handle_request()
    finally:
        server.server_close()
    return answer


def _show_claims(what: str, token: str, jwks_url: str) -> None:
    if jwt.is_encrypted(token):
        click.echo(f"\n(the {what} is encrypted to its resource server; claims not shown)")
        return
    header, claims = demo.verified_claims(token, jwks_url)
    click.echo(f"\n{what} header (signature verified with {jwks_url}):")
    click.echo(json.dumps(header, indent=2))
    click.echo("claims:")
    click.echo(json.dumps(claims, indent=2))
