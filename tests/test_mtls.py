"""Mutual TLS (RFC 8705) through a real TLS terminator: nginx in front of gunicorn, a throwaway CA
made here, the client certificate passed as ``$ssl_client_escaped_cert``. Client authentication
(tls_client_auth by subject DN and by SAN, self_signed_tls_client_auth), certificate-bound
tokens (``cnf["x5t#S256"]``) at the token endpoint, introspection and the resource server."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from as_helpers import ClientKey, assertion_form, b64, claims_for
from conftest import ISSUER
from flask_oauth_hsm.clients import Registry
from flask_oauth_hsm.errors import ConfigError
from mtls_support import CA, CERT_HEADER, VERIFY_HEADER, Nginx, _name
from scenarios import Scenario, pkjwt_client, resource_server
from test_http_server import start_gunicorn, stop

RSM = "https://rsm.example.test"
MTLS_SETTINGS = {
    "OAUTH_HSM_MTLS_CERT_HEADER": CERT_HEADER,
    "OAUTH_HSM_MTLS_VERIFY_HEADER": VERIFY_HEADER,
    "OAUTH_HSM_TRUSTED_PROXIES": "127.0.0.1/32",
}
RS_SETTINGS = {"OAUTH_HSM_RS_ISSUER": ISSUER, "OAUTH_HSM_RS_RESOURCE": RSM, "OAUTH_HSM_RS_MTLS_CERT_HEADER": CERT_HEADER}


def cert_jwk(issued) -> dict:
    n = issued.key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(n.x.to_bytes(32, "big")),
        "y": b64(n.y.to_bytes(32, "big")),
        "kid": "self",
        "use": "sig",
        "x5c": [base64.b64encode(issued.der()).decode()],
    }


def x5t(issued) -> str:
    return b64(hashlib.sha256(issued.der()).digest())


class World:
    def __init__(self, base):
        self.ca = CA(base / "ca")
        self.pki = self.ca.issue("pki", _name("mtls-client"), sans=[x509.DNSName("client.example.test")])
        self.other = self.ca.issue("other", _name("someone-else"))
        self.self_signed = self.ca.issue("self", _name("self-client"), self_signed=True)
        rogue = CA(base / "rogue", "Rogue CA")
        self.forged = rogue.issue("forged", _name("mtls-client"), sans=[x509.DNSName("client.example.test")])
        self.keys = {"m-jwt": ClientKey.new(), "m-plain": ClientKey.new(), "rs-m": ClientKey.new()}
        bound = {"tls_client_certificate_bound_access_tokens": True, "resources": [RSM]}
        self.registry = {
            "clients": [
                {
                    "client_id": "m-pki",
                    "token_endpoint_auth_method": "tls_client_auth",
                    "scope": "read",
                    "tls_client_auth_subject_dn": "CN=mtls-client,O=Example Org",
                    **bound,
                },
                {
                    "client_id": "m-san",
                    "token_endpoint_auth_method": "tls_client_auth",
                    "scope": "read",
                    "tls_client_auth_san_dns": "client.example.test",
                    **bound,
                },
                {
                    "client_id": "m-self",
                    "token_endpoint_auth_method": "self_signed_tls_client_auth",
                    "scope": "read",
                    "jwks": {"keys": [cert_jwk(self.self_signed)]},
                    **bound,
                },
                pkjwt_client("m-jwt", self.keys["m-jwt"], **bound),
                pkjwt_client("m-plain", self.keys["m-plain"], resources=[RSM]),
            ],
            "resource_servers": [resource_server("rs-m", RSM, [self.keys["rs-m"].public_jwk])],
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("mtls"))


@pytest.fixture(scope="module")
def mtls_env(make_as, world):
    return make_as(Scenario(world.registry, world.keys), protect_api=True, **MTLS_SETTINGS, **RS_SETTINGS)


@pytest.fixture(scope="module")
def proxy(mtls_env, world, tmp_path_factory):
    proc, base = start_gunicorn(mtls_env.settings, workers=2)
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), world.ca, int(base.rsplit(":", 1)[1])).start()
    yield nginx.url
    nginx.stop()
    stop(proc)


def token(proxy, world, client_id, cert, expect=200, **form):
    data = {"grant_type": "client_credentials", "client_id": client_id, **form}
    response = requests.post(
        proxy + "/oauth2/token", data=data, cert=cert.pair if cert else None, verify=str(world.ca.path), timeout=10
    )
    assert response.status_code == expect, response.text
    return response.json()


def claims_of(env, access_token):
    from flask_oauth_hsm.tokens.access import read_own_token

    with env.app.app_context():
        return read_own_token(env.state, access_token)


# --- client authentication (RFC 8705 §2) ------------------------------------------------------------------------


def test_tls_client_auth_by_subject_dn(proxy, world, mtls_env):
    body = token(proxy, world, "m-pki", world.pki)
    assert body["token_type"] == "Bearer"  # RFC 8705 §3: certificate-bound tokens keep the Bearer type
    assert claims_of(mtls_env, body["access_token"])["cnf"] == {"x5t#S256": x5t(world.pki)}


def test_tls_client_auth_by_san(proxy, world):
    token(proxy, world, "m-san", world.pki)


@pytest.mark.parametrize("client_id", ["m-pki", "m-san"])
@pytest.mark.parametrize("who", ["other", "forged", "self_signed", None])
def test_tls_client_auth_refusals(proxy, world, client_id, who):
    """another subject; the right subject from another CA (the proxy's check failed); no certificate."""
    body = token(proxy, world, client_id, getattr(world, who) if who else None, expect=401)
    assert body["error"] == "invalid_client"


def test_self_signed_tls_client_auth(proxy, world, mtls_env):
    body = token(proxy, world, "m-self", world.self_signed)
    assert claims_of(mtls_env, body["access_token"])["cnf"] == {"x5t#S256": x5t(world.self_signed)}
    for cert in (world.pki, None):  # a CA-issued certificate is still not the registered one
        token(proxy, world, "m-self", cert, expect=401)


def test_private_key_jwt_client_with_certificate_bound_tokens(proxy, world, mtls_env):
    a = world.keys["m-jwt"].jws(claims_for("m-jwt", ISSUER))
    form = {"client_assertion_type": assertion_form(a)["client_assertion_type"], "client_assertion": a}
    body = requests.post(
        proxy + "/oauth2/token",
        data={"grant_type": "client_credentials", **form},
        cert=world.other.pair,
        verify=str(world.ca.path),
        timeout=10,
    ).json()
    assert claims_of(mtls_env, body["access_token"])["cnf"] == {"x5t#S256": x5t(world.other)}
    a = world.keys["m-jwt"].jws(claims_for("m-jwt", ISSUER))
    response = requests.post(
        proxy + "/oauth2/token",
        data={"grant_type": "client_credentials", **form, "client_assertion": a},
        verify=str(world.ca.path),
        timeout=10,
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"  # no certificate to bind to


def test_a_client_without_bound_tokens_gets_bearer_tokens_with_a_certificate(proxy, world, mtls_env):
    a = world.keys["m-plain"].jws(claims_for("m-plain", ISSUER))
    body = requests.post(
        proxy + "/oauth2/token", data={**assertion_form(a)}, cert=world.pki.pair, verify=str(world.ca.path), timeout=10
    ).json()
    assert "cnf" not in claims_of(mtls_env, body["access_token"])


def test_a_client_cannot_send_the_header_itself(proxy, world):
    """nginx overwrites it: a forged header without a TLS certificate authenticates nobody."""
    pem = world.pki.cert.public_bytes(serialization.Encoding.PEM).decode()
    from urllib.parse import quote

    response = requests.post(
        proxy + "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "m-pki"},
        headers={CERT_HEADER: quote(pem), VERIFY_HEADER: "SUCCESS"},
        verify=str(world.ca.path),
        timeout=10,
    )
    assert response.status_code == 401


def test_the_header_is_believed_only_from_trusted_proxies(mtls_env, world):
    from urllib.parse import quote

    pem = quote(world.pki.cert.public_bytes(serialization.Encoding.PEM).decode())
    client = mtls_env.app.test_client()
    form = {"grant_type": "client_credentials", "client_id": "m-pki"}
    headers = {CERT_HEADER: pem, VERIFY_HEADER: "SUCCESS"}
    assert client.post("/oauth2/token", data=form, headers=headers, environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 401
    assert client.post("/oauth2/token", data=form, headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    garbage = {CERT_HEADER: "not%20a%20certificate", VERIFY_HEADER: "SUCCESS"}
    assert client.post("/oauth2/token", data=form, headers=garbage, environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 401


# --- certificate-bound tokens at the resource server and at introspection (RFC 8705 §3) ------------------------------


def test_resource_server_checks_the_binding(proxy, world):
    access_token = token(proxy, world, "m-pki", world.pki)["access_token"]
    api = proxy + "/api/items"
    headers = {"Authorization": f"Bearer {access_token}"}
    ok = requests.get(api, headers=headers, cert=world.pki.pair, verify=str(world.ca.path), timeout=10)
    assert ok.status_code == 200 and ok.json()["client_id"] == "m-pki"
    for cert in (world.other, world.self_signed, None):
        refused = requests.get(api, headers=headers, cert=cert.pair if cert else None, verify=str(world.ca.path), timeout=10)
        assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_introspection_returns_the_thumbprint(proxy, world, mtls_env):
    access_token = token(proxy, world, "m-pki", world.pki)["access_token"]
    a = world.keys["rs-m"].jws(claims_for("rs-m", ISSUER))
    form = {k: v for k, v in assertion_form(a, token=access_token).items() if k != "grant_type"}
    answer = requests.post(proxy + "/oauth2/introspect", data=form, verify=str(world.ca.path), timeout=10).json()
    assert answer["active"] and answer["token_type"] == "Bearer" and answer["cnf"] == {"x5t#S256": x5t(world.pki)}


def test_metadata_advertises_mtls(proxy, world):
    meta = requests.get(proxy + "/.well-known/oauth-authorization-server", verify=str(world.ca.path), timeout=10).json()
    assert meta["tls_client_certificate_bound_access_tokens"] is True
    assert {"tls_client_auth", "self_signed_tls_client_auth"} <= set(meta["token_endpoint_auth_methods_supported"])


# --- registration ---------------------------------------------------------------------------------------------------


def _registry_error(entry: dict) -> str:
    with pytest.raises(ConfigError) as info:
        Registry.from_document(
            {"clients": [entry], "resource_servers": [resource_server("rs-m", RSM, [ClientKey.new().public_jwk])]}
        )
    return str(info.value)


@pytest.mark.parametrize(
    "extra,expected",
    [
        ({}, "tls_client_auth needs exactly one of"),
        ({"tls_client_auth_subject_dn": "CN=a", "tls_client_auth_san_dns": "a.example"}, "tls_client_auth needs exactly one of"),
        ({"tls_client_auth_subject_dn": "not a dn"}, "tls_client_auth_subject_dn: must be a distinguished name"),
        ({"tls_client_auth_san_ip": "300.1.1.1"}, "tls_client_auth_san_ip: must be an IPv4 or IPv6 address"),
    ],
)
def test_tls_client_auth_registration(extra, expected):
    assert expected in _registry_error({"client_id": "x", "token_endpoint_auth_method": "tls_client_auth", **extra})


def test_self_signed_registration(world):
    assert "x5c" in _registry_error(
        {
            "client_id": "x",
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks": {"keys": [ClientKey.new().public_jwk]},
        }
    )
    wrong = {**cert_jwk(world.self_signed), "x": ClientKey.new().public_jwk["x"], "y": ClientKey.new().public_jwk["y"]}
    assert "jwks" in _registry_error(
        {"client_id": "x", "token_endpoint_auth_method": "self_signed_tls_client_auth", "jwks": {"keys": [wrong]}}
    )
    assert "only for token_endpoint_auth_method tls_client_auth" in _registry_error(
        {**pkjwt_client("x", ClientKey.new()), "tls_client_auth_subject_dn": "CN=a", "resources": []}
    )


def test_tls_methods_need_the_certificate_header(make_as, world):
    with pytest.raises(ConfigError, match="OAUTH_HSM_MTLS_CERT_HEADER is not set"):
        make_as(Scenario(world.registry, world.keys))
    with pytest.raises(ConfigError, match="OAUTH_HSM_MTLS_VERIFY_HEADER"):
        make_as(
            Scenario(world.registry, world.keys), OAUTH_HSM_MTLS_CERT_HEADER=CERT_HEADER, OAUTH_HSM_TRUSTED_PROXIES="127.0.0.1"
        )
    assert json.dumps(world.registry)  # the scenario itself is valid with the headers (mtls_env)
