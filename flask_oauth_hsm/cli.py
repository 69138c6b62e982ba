"""``flask oauth-hsm …``: keys in the token (cli_keys.py), registry checks, client key pairs, and a demo client.

Registered as a Flask CLI plugin (``flask.commands`` entry point), so it works with any host app:
``flask --app example_app oauth-hsm keys generate --alg ES256 --use sig --label as-sig-1``.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource
from flask import current_app
from flask.cli import with_appcontext

from . import client_keys, demo_client as demo
from .cli_keys import admin as _admin, fail as _fail, keys
from .client_auth import hash_secret
from .clients import Registry
from .clients.fit import fit_checker
from .demo_client import CibaFlow, CodeFlow, DemoClient
from .errors import ConfigError, OAuthHSMError
from .extension import KEY_ADMIN
from .jose import jwt
from .keys import configured_ring
from .server import EXTENSION_KEY, ServerContext


@click.group("oauth-hsm")
def cli() -> None:
    """flask-oauth-hsm: keys in the HSM, the registry, client key pairs, a demo client."""


def _state() -> ServerContext:
    ctx: ServerContext = current_app.extensions[EXTENSION_KEY]
    return ctx


cli.add_command(keys)


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
        ring = configured_ring(admin.hsm, s)
        Registry.from_file(str(path), fit_checker(s, lambda: ring, {"users"}))  # as for an app with users: the strictest
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
@click.option(
    "--alg",
    default="ES256",
    show_default=True,
    type=click.Choice(client_keys.CLIENT_ALGS),
    help="the client's token_endpoint_auth_signing_alg",
)
@click.option(
    "--out",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    help="file for the private key: PKCS#8 PEM, mode 0600, never overwritten",
)
@click.option(
    "--rsa-bits",
    default=2048,
    show_default=True,
    type=click.IntRange(*client_keys.RSA_BITS),
    help="RSA modulus size (PS256 only)",
)
def client_keygen(alg: str, path: str, rsa_bits: int) -> None:
    """Make a software key pair: the private key into a new file, its public JWKS to stdout.

    The JWKS (kid = RFC 7638 thumbprint, alg, use=sig) is what goes into the client's registry
    entry as "jwks"; the private key stays with the client.
    """
    if alg != "PS256" and click.get_current_context().get_parameter_source("rsa_bits") is not ParameterSource.DEFAULT:
        _fail(ConfigError("--rsa-bits applies to PS256 only"))
    try:
        key = client_keys.generate(alg, rsa_bits)
        jwks_doc = client_keys.public_jwks(key, alg)
        client_keys.write_private_key(path, key)
    except OAuthHSMError as exc:
        _fail(exc)
    click.echo(
        f"{path}: {alg} private key written (mode 0600); keep it with the client. "
        "The public JWKS for the registry entry follows.",
        err=True,
    )
    click.echo(json.dumps(jwks_doc, indent=2))


@client.command("jwks")
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--alg",
    default="ES256",
    show_default=True,
    type=click.Choice(client_keys.CLIENT_ALGS),
    help="the client's token_endpoint_auth_signing_alg",
)
def client_jwks(key_file: str, alg: str) -> None:
    """Print the public JWKS of a key file (PEM or DER; public, or an unencrypted private key),
    e.g. a public key exported from the client's own PKCS#11 token."""
    try:
        jwks_doc = client_keys.public_jwks(client_keys.load_key_file(key_file), alg)
    except OAuthHSMError as exc:
        _fail(exc)
    click.echo(json.dumps(jwks_doc, indent=2))


BINDINGS = ("bearer", "dpop", "pop-symmetric", "pop-asymmetric")


@cli.command("demo-client")
@click.option("--client-id", default="demo-client", show_default=True)
@click.option("--key-label", default="demo-client-sig", show_default=True, help="the client's signing key (in the dev token)")
@click.option(
    "--flow",
    type=click.Choice(["client-credentials", "code", "ciba"]),
    default="client-credentials",
    show_default=True,
    help="code: the authorization code flow with PKCE through your browser, then one refresh; "
    "ciba: a backchannel request you approve on the host's device page, then polling",
)
@click.option(
    "--binding",
    type=click.Choice(BINDINGS),
    default="bearer",
    show_default=True,
    help="client-credentials: what the token is bound to: nothing, a DPoP key, or a PoP key (symmetric from the AS, or ours)",
)
@click.option(
    "--pop-key-label", default="demo-client-dpop", show_default=True, help="the DPoP / asymmetric PoP key (in the dev token)"
)
@click.option("--resource", default=None, help="RFC 8707 resource (default: the client's default)")
@click.option("--scope", default=None, help="default: the client's (client-credentials); 'openid profile email read' (code)")
@click.option(
    "--redirect-uri",
    default="http://127.0.0.1:8765/callback",
    show_default=True,
    help="code flow: a registered loopback redirect URI; the command listens on it",
)
@click.option("--timeout", default=300, show_default=True, type=int, help="code flow: seconds to wait for the browser")
@click.option("--url", default=None, help="token endpoint URL (default: derived from OAUTH_HSM_ISSUER)")
@click.option("--api", default=None, help="client-credentials: then call this URL with the token (e.g. <issuer>/api/items)")
@click.option("--token-only", is_flag=True, help="client-credentials: print only the access token (for ACCESS_TOKEN=$(...))")
@click.option("--login-hint", default=None, help="ciba: who to ask (default: tel:$EXAMPLE_DEMO_PHONE, else $EXAMPLE_DEMO_USER)")
@click.option("--binding-message", default=None, help="ciba: a short code shown on the device (default: a random one)")
@with_appcontext
def demo_client(
    client_id: str,
    key_label: str,
    flow: str,
    binding: str,
    pop_key_label: str,
    resource: str | None,
    scope: str | None,
    redirect_uri: str,
    timeout: int,
    url: str | None,
    api: str | None,
    token_only: bool,
    login_hint: str | None,
    binding_message: str | None,
) -> None:
    """Obtain tokens as the demo client (private_key_jwt, its key in the token) and show them.

    ``--flow client-credentials`` (default): one access token for the client itself, bound to a
    key with ``--binding``, and used with ``--api`` (DPoP proofs and RFC 9421 signatures made in
    the token too). ``--flow code``: prints an authorization URL to open in a browser, listens on
    the loopback redirect URI for the answer, redeems the code with its PKCE verifier, shows the
    tokens, and refreshes once. ``--flow ciba``: asks for the user named by ``--login-hint`` at the
    backchannel authentication endpoint, tells you to approve on the host's device page, polls
    (honouring interval and slow_down), shows the tokens and calls ``--api``.
    """
    from .client.demo import obtain_and_call

    state = _state()
    jwks_url = state.endpoint_url("jwks")
    if flow in ("code", "ciba"):
        client = DemoClient(client_id, state.settings.issuer, state.hsm.key(key_label), state.settings.url_prefix)
        if flow == "code":
            _code_flow(CodeFlow(client, redirect_uri, scope or "openid profile email read", resource), jwks_url, timeout)
            return
        hint = login_hint or _default_login_hint()
        ciba = CibaFlow(client, scope or "openid profile email read", hint, binding_message or f"{secrets.randbelow(10000):04d}")
        _ciba_flow(ciba, jwks_url, api or _default_api(state))
        return
    token_url = url or state.endpoint_url("token")
    params = {k: v for k, v in (("resource", resource), ("scope", scope)) if v}
    try:
        status, body, answer = obtain_and_call(state, client_id, key_label, binding, pop_key_label, token_url, params, api)
    except OSError as exc:  # requests' ConnectionError is an OSError
        raise click.ClickException(f"cannot reach {token_url}: {exc}") from None
    if token_only and status == 200:
        click.echo(body["access_token"])
        return
    click.echo(f"POST {token_url} -> {status}", err=token_only)
    click.echo(json.dumps(body, indent=2), err=token_only)
    if status != 200:
        sys.exit(1)
    _show_claims("access token", body["access_token"], jwks_url)
    if answer is not None:
        click.echo(f"\nGET {api} -> {answer[0]}")
        click.echo(answer[1])
        if answer[0] != 200:
            sys.exit(1)


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
    _show_user_tokens("code redeemed with PKCE", status, body, jwks_url)
    if "refresh_token" not in body:
        click.echo("\n(no refresh token: the client is not registered for refresh_token)")
        return
    status, refreshed = _reach(flow.client.url("/token"), lambda: flow.refresh(body["refresh_token"]))
    click.echo(f"\nrefreshed once -> {status}")
    click.echo(json.dumps(refreshed, indent=2))
    if status != 200:
        sys.exit(1)


def _show_user_tokens(what: str, status: int, body: dict[str, Any], jwks_url: str) -> None:
    """A user grant's token response, and the verified claims of its access and ID tokens (exit 1 unless 200)."""
    click.echo(f"\n{what} -> {status}")
    click.echo(json.dumps(body, indent=2))
    if status != 200:
        sys.exit(1)
    _show_claims("access token", body["access_token"], jwks_url)
    if "id_token" in body:
        _show_claims("ID token", body["id_token"], jwks_url)


def _default_login_hint() -> str:
    phone, user = os.environ.get("EXAMPLE_DEMO_PHONE"), os.environ.get("EXAMPLE_DEMO_USER")
    if not phone and not user:
        raise click.ClickException("give --login-hint (or set EXAMPLE_DEMO_PHONE or EXAMPLE_DEMO_USER)")
    return f"tel:{phone}" if phone else str(user)


def _default_api(state: Any) -> str | None:
    """The example's protected API, when this app is also its resource server."""
    return state.settings.issuer.rstrip("/") + "/api/items" if os.environ.get("OAUTH_HSM_RS_RESOURCE") else None


def _ciba_flow(flow: CibaFlow, jwks_url: str, api: str | None) -> None:
    status, body = _reach(flow.client.url("/bc-authorize"), flow.start)
    click.echo(f"backchannel authentication request -> {status}")
    click.echo(json.dumps(body, indent=2))
    if status != 200:
        sys.exit(1)
    click.echo(f"\nauth_req_id: {flow.auth_req_id}")
    click.echo(
        f"Open {flow.client.issuer.rstrip('/')}/ciba as the user ({flow.login_hint}), check the code "
        f"{flow.binding_message} and press Approve (or Deny). Polling every {flow.interval} s ..."
    )
    status, body = _reach(flow.client.url("/token"), flow.poll)
    _show_user_tokens("polled", status, body, jwks_url)
    if api is not None:
        status, answer = _reach(api, lambda: demo.get(api, body["access_token"]))
        click.echo(f"\nGET {api} -> {status}")
        click.echo(json.dumps(answer))
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
            self.wfile.write(
                b"<!doctype html><html lang=en><title>Done</title><p>You can close this window and go back "
                b"to the terminal.</p></html>"
            )

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
