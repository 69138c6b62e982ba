"""Key rotation without downtime (docs/hsm-and-keys.md): key states in the token, every process
following them without a restart, the CLI's refusals, and peers that never notice.

Time: in-process tests freeze the package clock (``fake_clock``); the gunicorn tests move a clock
that the workers, the CLI and the resource server share through a file (rotation_app.py), so the
rotation waits pass without sleeping. Each test has a key set of its own in the main test token
and a Redis prefix of its own (a moved clock must not start a replay epoch other tests would see).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

import support
from as_helpers import RS1, RS2, ClientKey, assertion_form, claims_for, ec_enc_jwk
from conftest import ISSUER, MAIN_TOKEN, as_settings
from flask_oauth_hsm import ResourceProtector, clock
from flask_oauth_hsm.cli import cli as oauth_hsm_cli
from flask_oauth_hsm.errors import ConfigError
from flask_oauth_hsm.extension import KEY_ADMIN
from flask_oauth_hsm.hsm import write_record
from flask_oauth_hsm.jose import compact, jwe, jwk
from flask_oauth_hsm.keys import Timings
from flask_oauth_hsm.settings import load_settings
from rotation_app import OffsetClock
from scenarios import Scenario, pkjwt_client, resource_server
from test_http_server import start_gunicorn, stop

TESTS = Path(__file__).resolve().parent
UNKNOWN_KID = "is not in the cached AS JWKS"


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    """c-sig signs its assertions; c-enc must encrypt them to us; rs-1 validates tokens; rs-enc
    gets its tokens encrypted (their CEK escrowed to our active encryption key)."""
    keys = {cid: ClientKey.new("ES256") for cid in ("c-sig", "c-enc", "rs-1", "rs-enc")}
    rs_enc_private = ec.generate_private_key(ec.SECP256R1())
    clients = [
        pkjwt_client("c-sig", keys["c-sig"], resources=[RS1, RS2]),
        pkjwt_client("c-enc", keys["c-enc"], resources=[RS1], client_assertion_encryption="required"),
    ]
    servers = [
        resource_server("rs-1", RS1, [keys["rs-1"].public_jwk]),
        resource_server(
            "rs-enc",
            RS2,
            [keys["rs-enc"].public_jwk, ec_enc_jwk(rs_enc_private, "rs-enc-key")],
            access_token_encrypted_response_alg="ECDH-ES+A256KW",
            access_token_encrypted_response_enc="A256GCM",
        ),
    ]
    return Scenario({"clients": clients, "resource_servers": servers}, keys, rs_enc_private)


@dataclass
class KeySetEnv:
    """A key set of this test's own, its settings, and the CLI run as an operator would."""

    hsm: Any
    scenario: Scenario
    settings: dict[str, str]
    name: str
    _labels: Any = field(default_factory=itertools.count)
    _admin: Any = None

    @property
    def timings(self) -> Timings:
        return Timings.from_settings(load_settings(self.settings, environ={}))

    def cli(self, *args: str, ok: bool = True) -> Any:
        """``flask oauth-hsm keys …`` in this process (it reads the package clock, fake or shared)."""

        def run() -> Any:
            KEY_ADMIN.set(True)  # in a copied context: the rest of the test never sees it
            if self._admin is None:
                self._admin = _app(self.settings)
            return self._admin.test_cli_runner().invoke(oauth_hsm_cli, ["keys", *args])

        result = contextvars.copy_context().run(run)
        assert (result.exit_code == 0) == ok, result.output
        return result

    def generate(self, use: str, state: str, alg: str | None = None) -> str:
        label = f"{self.name}-{use}-{next(self._labels)}"
        self.cli(
            "generate", "--alg", alg or ("ES256" if use == "sig" else "ECDH-ES"), "--use", use, "--label", label, "--state", state
        )
        return label

    def start(self) -> str:
        """The first keys of the set (active at once: nothing is signed yet); the signing key's label."""
        self.generate("enc", "active")  # the registry has rs-enc, whose tokens escrow their CEK to us
        return self.generate("sig", "active")

    def kid(self, label: str) -> str:
        return self.hsm.key(label).kid

    def app(self, **extra: str) -> Flask:
        return _app({**self.settings, **extra})


def _app(settings: dict[str, str]) -> Flask:
    """A host app that lets a ConfigError through (example_app turns it into exit status 4)."""
    from as_app import build_as_app

    return build_as_app(settings, protect_api="OAUTH_HSM_RS_RESOURCE" in settings)


@pytest.fixture()
def key_set(hsm, redis_server, scenario, tmp_path) -> KeySetEnv:
    name = "ks-" + uuid.uuid4().hex[:10]
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps(scenario.registry))
    settings = as_settings(
        redis_server.url,
        str(registry),
        OAUTH_HSM_KEY_SET=name,
        OAUTH_HSM_SIGNING_KEY="",
        OAUTH_HSM_PUBLISHED_KEYS="",
        OAUTH_HSM_ENCRYPTION_KEYS="",
        OAUTH_HSM_REDIS_PREFIX=f"{name}:",
        OAUTH_HSM_RS_ISSUER=ISSUER,
        OAUTH_HSM_RS_RESOURCE=RS1,
    )
    return KeySetEnv(hsm, scenario, settings, name)


# --- talking to the AS as its peers do ----------------------------------------------------------------------


def fresh_assertion(ks: KeySetEnv, client_id: str) -> str:
    now = int(clock.now())  # the AS's clock, fake or shared
    return ks.scenario.keys[client_id].jws(claims_for(client_id, ISSUER, iat=now, exp=now + 60))


def token_form(ks: KeySetEnv, client_id: str = "c-sig", resource: str = RS1) -> dict[str, str]:
    return assertion_form(fresh_assertion(ks, client_id), resource=resource, scope="read")


def access_token(ks: KeySetEnv, app: Flask, resource: str = RS1) -> str:
    r = app.test_client().post("/oauth2/token", data=token_form(ks, resource=resource))
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["access_token"])


def kid_of(token: str) -> str:
    return str(json.loads(compact.b64url_decode(token.split(".")[0]))["kid"])


def jwks_kids(app: Flask) -> list[str]:
    return [k["kid"] for k in app.test_client().get("/oauth2/jwks").get_json()["keys"]]


def introspects_active(ks: KeySetEnv, app: Flask, token: str, caller: str = "rs-1") -> bool:
    form = {**assertion_form(fresh_assertion(ks, caller), token=token)}
    del form["grant_type"]
    r = app.test_client().post("/oauth2/introspect", data=form)
    assert r.status_code == 200, r.get_data(as_text=True)
    return bool(r.get_json()["active"])


def api_status(app: Flask, token: str) -> int:
    return app.test_client().get("/api/items", headers={"Authorization": f"Bearer {token}"}).status_code


def rotate_when_ready(ks: KeySetEnv, fake: Any, use: str) -> None:
    """Wait the publication time, rotate, and let every process re-read the key states."""
    fake.advance(ks.timings.publication)
    ks.cli("rotate", "--use", use)
    fake.advance(ks.timings.refresh)


# --- in one process, with the fake clock ----------------------------------------------------------------------


def test_a_token_signed_by_the_retired_key_validates_until_it_expires(key_set, fake_clock):
    ks = key_set
    old_label = ks.start()
    app = ks.app()  # AS and a resource server (rs-1, local validation) in one app
    new_label = ks.generate("sig", "next")
    fake_clock.advance(ks.timings.refresh)
    assert jwks_kids(app)[:2] == [ks.kid(old_label), ks.kid(new_label)]  # next: published, signs nothing
    fake_clock.advance(ks.timings.publication - ks.timings.refresh)
    old = access_token(ks, app)  # the last token the old key signs here
    ks.cli("rotate", "--use", "sig")
    fake_clock.advance(ks.timings.refresh)  # every process has re-read the key states
    new = access_token(ks, app)
    assert (kid_of(old), kid_of(new)) == (ks.kid(old_label), ks.kid(new_label))
    assert jwks_kids(app)[:2] == [ks.kid(new_label), ks.kid(old_label)]

    fake_clock.advance(ks.timings.token_lifetime - ks.timings.refresh - 1)  # the old token's last second
    assert introspects_active(ks, app, old) and api_status(app, old) == 200
    fake_clock.advance(ks.timings.skew + 31)  # past exp, past every leeway
    assert not introspects_active(ks, app, old) and api_status(app, old) == 401
    fresh = access_token(ks, app)
    assert introspects_active(ks, app, fresh) and api_status(app, fresh) == 200
    assert ks.kid(old_label) in jwks_kids(app)  # still published: its overlap has not ended

    refused = ks.cli("destroy", "--label", old_label, "--yes", ok=False)
    assert "may still be needed until" in refused.output and "a token it signed may still be valid" in refused.output
    fake_clock.advance(ks.timings.overlap("sig"))
    assert ks.kid(old_label) not in jwks_kids(app)
    assert "destroyed" in ks.cli("destroy", "--label", old_label, "--yes").output
    assert api_status(app, access_token(ks, app)) == 200


def test_a_jwe_to_the_old_encryption_key_decrypts_during_the_overlap_only(key_set, fake_clock):
    ks = key_set
    ks.generate("sig", "active")
    old_label = ks.generate("enc", "active")
    app = ks.app()
    old_key = jwk.load_jwk(ks.hsm.key(old_label).public_jwk())

    def encrypted_assertion() -> dict[str, str]:
        inner = fresh_assertion(ks, "c-enc")
        token = jwe.encrypt(inner.encode(), old_key, "ECDH-ES", "A256GCM", {"cty": "JWT"})
        return assertion_form(token, client_id="c-enc", resource=RS1)

    def token_status() -> int:
        return app.test_client().post("/oauth2/token", data=encrypted_assertion()).status_code

    assert token_status() == 200
    new_label = ks.generate("enc", "next")
    fake_clock.advance(ks.timings.publication)
    escrowed = access_token(ks, app, resource=RS2)  # its CEK is escrowed to the old key
    until = int(fake_clock()) + ks.timings.overlap("enc")
    ks.cli("rotate", "--use", "enc")
    fake_clock.advance(ks.timings.refresh)
    assert ks.kid(old_label) not in jwks_kids(app)  # peers that refetch stop encrypting to it at once
    assert ks.kid(new_label) in jwks_kids(app)
    assert token_status() == 200  # a peer with a cached JWKS still encrypts to the old key
    assert introspects_active(ks, app, escrowed, "rs-enc")  # the AS still reads tokens escrowed to it
    assert kid_of(jwe.protected_header(access_token(ks, app, RS2))["oauth-hsm-cek"]) == ks.kid(new_label)

    fake_clock.set(until - 1)
    assert token_status() == 200
    fake_clock.set(until + ks.timings.refresh)
    assert token_status() == 401  # refused after the overlap: invalid_client
    states = {line.split()[0]: line.split()[1] for line in ks.cli("list").output.splitlines()[1:]}
    assert (states[old_label], states[new_label]) == ("expired", "active")  # the old pair may now be destroyed


def test_kids_and_labels_are_never_reused(key_set, fake_clock):
    ks = key_set
    ks.start()
    software = ec.generate_private_key(ec.SECP256R1())
    first, second = f"{ks.name}-imported-1", f"{ks.name}-imported-2"
    support.import_private_key(support.USER_PIN, MAIN_TOKEN, first, software, "ES256", "sig")
    ks.cli("adopt", "--label", first, "--state", "next")
    kid = ks.kid(first)
    ks.cli("retire", "--label", first)  # a next key nobody wants: retired, then out of service
    fake_clock.advance(ks.timings.overlap("sig") + ks.timings.refresh)
    ks.cli("destroy", "--label", first, "--yes")
    listing = ks.cli("list").output
    assert any(line.split()[:3] == [first, "destroyed", kid] for line in listing.splitlines())
    # The same key again, under another label: its kid was used, so it may not return.
    support.import_private_key(support.USER_PIN, MAIN_TOKEN, second, software, "ES256", "sig")
    refused = ks.cli("adopt", "--label", second, "--state", "next", ok=False)
    assert f"kid {kid} was already used by '{first}' (destroyed): kids are never reused" in refused.output
    again = ks.cli("generate", "--alg", "ES256", "--use", "sig", "--label", first, "--state", "next", ok=False)
    assert "already exists" in again.output  # the record keeps the label, too
    # Rotations make new kids, always.
    kids = {ks.kid(ks.generate("sig", "next"))}
    for _ in range(2):
        rotate_when_ready(ks, fake_clock, "sig")
        kids.add(ks.kid(ks.generate("sig", "next")))
    assert len(kids) == 3 and kid not in kids


def test_cli_refusals(key_set, fake_clock):
    ks = key_set
    no_next = ks.cli("rotate", "--use", "sig", ok=False)
    assert "there is no next signing key" in no_next.output
    active = ks.generate("sig", "active")
    twice = ks.cli("generate", "--alg", "ES256", "--use", "sig", "--label", f"{ks.name}-x", "--state", "active", ok=False)
    assert f"'{active}' is already the active signing key" in twice.output
    assert f"{ks.name}-x" not in ks.cli("list").output  # refused before a key was generated
    replaced = ks.cli("retire", "--label", active, ok=False).output
    assert "is the active signing key: `keys rotate --use sig` replaces it" in replaced
    assert "is active: retire it first" in ks.cli("destroy", "--label", active, "--yes", ok=False).output

    waiting = ks.generate("sig", "next")
    assert (
        "is already the next signing key"
        in ks.cli("generate", "--alg", "ES256", "--use", "sig", "--label", f"{ks.name}-y", "--state", "next", ok=False).output
    )
    assert "is next: retire it first" in ks.cli("destroy", "--label", waiting, "--yes", ok=False).output
    fake_clock.advance(ks.timings.publication - 10)
    early = ks.cli("rotate", "--use", "sig", ok=False).output
    publication = ks.timings.publication
    assert f"has been published for {publication - 10} s; caches need {publication} s" in early
    assert "(in 10 s), or with --force" in early
    unfit = ks.cli("rotate", "--use", "sig", "--force", ok=False).output  # the registry must still fit
    assert "resource server 'rs-enc' wants encrypted access tokens; we need an active encryption key" in unfit
    ks.generate("enc", "active")
    forced = ks.cli("rotate", "--use", "sig", "--force")
    assert "warning: rotated with --force" in forced.output and f"{waiting}: active" in forced.output
    assert f"{active}: retired; in service until" in forced.output

    refused = ks.cli("retire", "--label", active, ok=False).output
    assert "is retired and may still be needed until" in refused and "a token it signed may still be valid" in refused
    assert "may still be needed" in ks.cli("destroy", "--label", active, "--yes", ok=False).output
    ks.cli("retire", "--label", active, "--force")  # a compromised key: out of service now
    fake_clock.advance(1)
    assert "leaves the key ring of every process by" in ks.cli("destroy", "--label", active, "--yes", ok=False).output
    fake_clock.advance(ks.timings.refresh)
    assert "add --yes to destroy the key" in ks.cli("destroy", "--label", active, ok=False).output
    ks.cli("destroy", "--label", active, "--yes")
    assert "was already destroyed" in ks.cli("destroy", "--label", active, "--yes", ok=False).output
    assert "is not in this key set" in ks.cli("retire", "--label", "sig-es256", ok=False).output


def test_state_commands_need_a_key_set(as_env):
    def run(*args: str) -> Any:
        def invoke() -> Any:
            KEY_ADMIN.set(True)
            return _app(as_env.settings).test_cli_runner().invoke(oauth_hsm_cli, ["keys", *args])

        return contextvars.copy_context().run(invoke)

    result = run("rotate", "--use", "sig")
    assert result.exit_code != 0 and "OAUTH_HSM_KEY_SET is not set" in result.output


def test_settings_choose_one_mode(key_set):
    with pytest.raises(ConfigError, match=r"^OAUTH_HSM_KEY_SET: the key states decide the keys; unset OAUTH_HSM_SIGNING_KEY"):
        load_settings({**key_set.settings, "OAUTH_HSM_SIGNING_KEY": "sig-es256"}, environ={})
    with pytest.raises(ConfigError, match=f"OAUTH_HSM_KEY_SET: key set '{key_set.name}' has no active signing key"):
        key_set.app()
    with pytest.raises(ConfigError, match="OAUTH_HSM_KEY_SET: must be 1 to 64"):
        load_settings({**key_set.settings, "OAUTH_HSM_KEY_SET": "a b"}, environ={})


def test_migrating_from_labels_changes_nothing_peers_see(key_set, make_as):
    ks = key_set
    sig, enc = f"{ks.name}-legacy-sig", f"{ks.name}-legacy-enc"
    ks.hsm.generate_key("ES256", "sig", sig)
    ks.hsm.generate_key("ECDH-ES", "enc", enc)
    labels = {"OAUTH_HSM_KEY_SET": "", "OAUTH_HSM_SIGNING_KEY": sig, "OAUTH_HSM_ENCRYPTION_KEYS": enc}
    label_mode = ks.app(**labels)
    before = label_mode.test_client().get("/oauth2/jwks").get_json()
    ks.cli("adopt", "--label", sig, "--state", "active")
    ks.cli("adopt", "--label", enc, "--state", "active")
    key_set_mode = ks.app()
    assert key_set_mode.test_client().get("/oauth2/jwks").get_json() == before
    for app in (label_mode, key_set_mode):  # old and new processes side by side, as in a rolling restart
        assert kid_of(access_token(ks, app)) == ks.kid(sig)


def test_a_key_set_that_does_not_load_keeps_the_current_keys(key_set, fake_clock, caplog):
    ks = key_set
    label = ks.start()
    app = ks.app()
    record = {
        "alg": "ES256",
        "use": "sig",
        "key_set": ks.name,
        "kid": ks.kid(label),
        "state": "retired",
        "published": int(fake_clock()),
        "retired": int(fake_clock()),
        "until": int(fake_clock()) + 60,
    }
    write_record(ks.hsm, label, record)  # as if someone retired the only signing key by hand
    fake_clock.advance(ks.timings.refresh)
    with caplog.at_level(logging.ERROR, logger="flask_oauth_hsm.keys"):
        assert kid_of(access_token(ks, app)) == ks.kid(label)
    assert "cannot re-read the key set; keeping the current key ring" in caplog.text and "no active signing key" in caplog.text
    write_record(ks.hsm, label, {**record, "state": "active", "activated": int(fake_clock())})
    fake_clock.advance(ks.timings.refresh)
    assert kid_of(access_token(ks, app)) == ks.kid(label)
    write_record(ks.hsm, label, {**record, "state": "revoked"})  # a state nobody knows: never guessed
    try:
        with pytest.raises(ConfigError, match=f"OAUTH_HSM_KEY_SET: key '{label}': its key-set record has an unknown state"):
            ks.app()
    finally:
        write_record(ks.hsm, label, {**record, "state": "active"})  # the token is shared: leave no broken record


def test_list_shows_states_and_dates(key_set, fake_clock):
    ks = key_set
    active = ks.generate("sig", "active")
    waiting = ks.generate("sig", "next")
    lines = {line.split()[0]: line for line in ks.cli("list").output.splitlines()[1:]}
    assert ks.cli("list").output.splitlines()[0].split() == ["LABEL", "STATE", "KID", "ALG", "USE", "KEY", "DATES"]
    assert lines[active].split()[1:5] == ["active", ks.kid(active), "ES256", "sig"]
    assert "published " in lines[active] and "activated " in lines[active]
    assert lines[waiting].split()[1] == "next" and "activated" not in lines[waiting]
    assert lines["sig-es256"].split()[1] == "-"  # in no key set


def test_a_state_written_without_the_pin_is_ignored(key_set, fake_clock):
    """Records are private token objects: a public one claiming a state (anyone who reaches the
    token without the PIN can write those) changes nothing."""
    ks = key_set
    signer = ks.start()
    intruder = f"{ks.name}-intruder"
    info = ks.hsm.generate_key("ES256", "sig", intruder)
    claim = {
        "alg": "ES256",
        "use": "sig",
        "key_set": ks.name,
        "kid": info.kid,
        "state": "active",
        "seq": 99,
        "published": int(fake_clock()) - 3600,
        "activated": int(fake_clock()),
    }
    support.write_metadata_object(MAIN_TOKEN, intruder, json.dumps(claim).encode())
    app = ks.app()
    assert kid_of(access_token(ks, app)) == ks.kid(signer) and info.kid not in jwks_kids(app)
    states = {line.split()[0]: line.split()[1] for line in ks.cli("list").output.splitlines()[1:]}
    assert states[intruder] == "-"


def test_the_resource_servers_jwks_cache_reads_the_package_clock(hsm, fake_clock):
    from flask_oauth_hsm.rs.state import JWKSCache

    fetches: list[float] = []

    def fetch() -> dict[str, Any]:  # what the AS's JWKS endpoint would answer
        fetches.append(fake_clock())
        return {"keys": [hsm.key("sig-es256").public_jwk()]}

    cache, header = JWKSCache(fetch, ttl=300), {"alg": "ES256", "kid": hsm.key("sig-es256").kid}
    cache.key_for(header)
    fake_clock.advance(299)
    cache.key_for(header)
    assert len(fetches) == 1
    fake_clock.advance(2)  # past the cache lifetime
    cache.key_for(header)
    assert len(fetches) == 2
    fake_clock.advance(-3600)  # a clock set back expires the cache instead of freezing it for an hour
    cache.key_for(header)
    assert len(fetches) == 3


# --- over HTTP: gunicorn workers and a resource server with a cached JWKS ---------------------------------------


@pytest.fixture()
def shared_clock(tmp_path):
    """A clock the gunicorn workers read too (rotation_app.py)."""
    shared = OffsetClock(tmp_path / "clock-offset")
    with clock.use(shared):
        yield shared


def serve(ks: KeySetEnv, shared: OffsetClock, workers: int) -> tuple[Any, str]:
    env = {
        **ks.settings,
        "ROTATION_CLOCK_FILE": str(shared.path),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    return start_gunicorn(env, workers=workers, app="rotation_app:app")


def http_token(ks: KeySetEnv, base: str) -> requests.Response:
    r = requests.post(base + "/oauth2/token", data=token_form(ks), timeout=10)
    assert r.status_code == 200, r.text
    return r


def test_a_caching_resource_server_never_meets_an_unknown_kid(key_set, shared_clock, caplog):
    """A full rotation, twice, with the real ResourceProtector and its JWKS cache over HTTP."""
    ks = key_set
    first = ks.start()
    proc, base = serve(ks, shared_clock, workers=2)
    try:
        rs = Flask("rs")
        rs.config.update(
            {"OAUTH_HSM_RS_ISSUER": ISSUER, "OAUTH_HSM_RS_RESOURCE": RS1, "OAUTH_HSM_RS_JWKS_URI": base + "/oauth2/jwks"}
        )
        protector = ResourceProtector(rs)

        @rs.get("/api")
        @protector.require_token(scope="read")
        def api() -> str:
            return "ok"

        def validates(token: str) -> bool:
            return rs.test_client().get("/api", headers={"Authorization": f"Bearer {token}"}).status_code == 200

        caplog.set_level(logging.INFO, logger="flask_oauth_hsm.resource")
        t, current, signed_by = ks.timings, first, [ks.kid(first)]
        assert validates(http_token(ks, base).json()["access_token"])  # the resource server caches the JWKS now
        for _ in range(2):  # the runbook, twice: generate next, wait, rotate, wait, destroy
            new_label = ks.generate("sig", "next")
            for _ in range(t.publication // 60 + 1):  # traffic all along, validated as it comes
                shared_clock.advance(60)
                last_old = http_token(ks, base).json()["access_token"]
                assert kid_of(last_old) == ks.kid(current) and validates(last_old)
            ks.cli("rotate", "--use", "sig")
            for _ in range(t.overlap("sig") // 60 + 2):
                shared_clock.advance(60)
                token = http_token(ks, base).json()["access_token"]
                assert kid_of(token) == ks.kid(new_label) and validates(token)
                assert validates(last_old) or _expired(last_old)
            published = requests.get(base + "/oauth2/jwks", timeout=10).json()["keys"]
            assert {k["kid"] for k in published if k["use"] == "sig"} == {ks.kid(new_label)}  # the old key is gone
            ks.cli("destroy", "--label", current, "--yes")
            current = new_label
            signed_by.append(ks.kid(current))
        assert UNKNOWN_KID not in caplog.text
        assert len(set(signed_by)) == 3
    finally:
        stop(proc)


def _expired(token: str) -> bool:
    claims = json.loads(compact.b64url_decode(token.split(".")[1]))
    return bool(claims["exp"] < clock.now())


def test_every_worker_follows_a_rotation_without_a_restart(key_set, shared_clock):
    ks = key_set
    first = ks.start()
    proc, base = serve(ks, shared_clock, workers=2)
    try:
        before = by_worker(ks, base)
        assert set(before.values()) == {ks.kid(first)}
        second = ks.generate("sig", "next")
        shared_clock.advance(ks.timings.publication)
        ks.cli("rotate", "--use", "sig")
        shared_clock.advance(ks.timings.refresh)
        after = by_worker(ks, base)
        assert set(after) == set(before)  # the same two workers: nobody restarted
        assert set(after.values()) == {ks.kid(second)}
    finally:
        stop(proc)


def by_worker(ks: KeySetEnv, base: str) -> dict[str, str]:
    """worker pid -> the kid of the tokens it signs; asks until both workers have answered, and
    every answer of a worker must name the same kid."""
    seen: dict[str, set[str]] = {}
    with ThreadPoolExecutor(8) as pool:
        for _ in range(50):
            for r in pool.map(lambda _: http_token(ks, base), range(16)):
                seen.setdefault(r.headers["X-Worker-Pid"], set()).add(kid_of(r.json()["access_token"]))
            if len(seen) == 2:
                break
    assert len(seen) == 2 and all(len(kids) == 1 for kids in seen.values()), seen
    return {pid: next(iter(kids)) for pid, kids in seen.items()}


def test_the_runbook_commands_as_an_operator_types_them(key_set):
    """``flask --app … oauth-hsm keys …`` in its own process, on the real clock (docs/hsm-and-keys.md)."""
    import subprocess
    import sys

    env = {**os.environ, **key_set.settings}

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "example_app", "oauth-hsm", "keys", *args],
            env=env,
            cwd=TESTS.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )

    sig, enc, nxt = (f"{key_set.name}-{x}" for x in ("sig-2025", "enc-2025", "sig-2026"))
    assert flask("generate", "--alg", "ES256", "--use", "sig", "--label", sig, "--state", "active").returncode == 0
    assert flask("generate", "--alg", "ECDH-ES", "--use", "enc", "--label", enc, "--state", "active").returncode == 0
    made = flask("generate", "--alg", "ES256", "--use", "sig", "--label", nxt, "--state", "next")
    assert made.returncode == 0 and f"{nxt}: next signing key of key set '{key_set.name}'" in made.stdout
    assert "every process publishes it within 30 s; `keys rotate --use sig` from" in made.stdout
    early = flask("rotate", "--use", "sig")
    assert early.returncode == 1
    assert re.search(r"Error: '.*' has been published for \d+ s; caches need 630 s \(OAUTH_HSM_KEYS_REFRESH", early.stderr)
    listing = flask("list").stdout.splitlines()
    states = {line.split()[0]: line.split()[1] for line in listing[1:]}
    assert (states[sig], states[enc], states[nxt]) == ("active", "active", "next")
    destroy = flask("destroy", "--label", nxt, "--yes")
    assert destroy.returncode == 1 and "is next: retire it first" in destroy.stderr
