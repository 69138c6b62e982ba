"""Registry scenarios for the authorization-server tests, built from small pieces.

A scenario is a registry document plus the software keys of the parties that are not us (clients
and some resource servers). :func:`default_scenario` is what ``as_env`` serves; tests that need
something else build their own from the same pieces and get an app from ``make_as``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from as_helpers import RS1, RS2, RS3, ClientKey, ec_enc_jwk, sha256_secret_hash

ALL_RESOURCES = [RS1, RS2, RS3]


def pkjwt_client(client_id: str, key: ClientKey, *, resources: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    entry = {
        "client_id": client_id,
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [key.public_jwk]},
        "scope": "read write",
        "resources": resources or ALL_RESOURCES,
    }
    return {**entry, **extra}


def secret_client(client_id: str, method: str, secret: str, **extra: Any) -> dict[str, Any]:
    entry = {
        "client_id": client_id,
        "token_endpoint_auth_method": method,
        "client_secret_hash": sha256_secret_hash(secret),
        "scope": "read",
        "resources": [RS1],
    }
    return {**entry, **extra}


def resource_server(client_id: str, resource: str, jwks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    entry = {
        "resource": resource,
        "client_id": client_id,
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": jwks},
        "scope": "read write",
    }
    return {**entry, **extra}


@dataclass
class Scenario:
    registry: dict[str, Any]
    keys: dict[str, ClientKey] = field(default_factory=dict)  # client_id -> its software key
    rs_enc_key: Any = None  # rs-3's private encryption key (software: that RS is not us)


# Clients of the default scenario: id -> (signing alg, registry extras)
DEFAULT_CLIENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "c-es256": ("ES256", {}),
    "c-ps256": ("PS256", {"token_endpoint_auth_signing_alg": "PS256"}),
    "c-eddsa": ("EdDSA", {}),
    "c-rs256": ("RS256", {}),
    "c-issuer": ("ES256", {"aud_policy": "issuer"}),
    "c-endpoint": ("ES256", {"aud_policy": "endpoint"}),
    "c-legacy": ("ES256", {"aud_policy": "legacy"}),
    "c-enc": ("ES256", {"client_assertion_encryption": "required"}),
    "c-enc-allowed": ("ES256", {"client_assertion_encryption": "allowed"}),
    "c-nogrant": ("ES256", {"grant_types": []}),
    "c-other": ("ES256", {}),
    "c-cip": ("ES256", {"cip_hash": True, "ip_ranges": ["10.0.0.0/8", "192.0.2.0/24"]}),
}


def default_scenario(hsm: Any) -> Scenario:
    """Clients with software keys; rs-1 software, rs-2 with keys in the test token (so our own
    ResourceProtector can use it), rs-3 with software keys and every encryption option."""
    keys = {cid: ClientKey.new(alg) for cid, (alg, _) in DEFAULT_CLIENTS.items()}
    keys["rs-1"], keys["rs-3"] = ClientKey.new("ES256"), ClientKey.new("ES256")
    rs3_enc = ec.generate_private_key(ec.SECP256R1())
    clients = [pkjwt_client(cid, keys[cid], **extra) for cid, (_, extra) in DEFAULT_CLIENTS.items()]
    clients += [
        secret_client("c-basic", "client_secret_basic", "basic-secret-0123456789"),
        secret_client("c-post", "client_secret_post", "post-secret-0123456789"),
        {"client_id": "c-public", "token_endpoint_auth_method": "none", "grant_types": [], "resources": [RS1]},
    ]
    servers = [
        resource_server("rs-1", RS1, [keys["rs-1"].public_jwk]),
        resource_server(
            "rs-2",
            RS2,
            [hsm.key("rs2-sig").public_jwk(), hsm.key_info("enc-ecdh-es-a256kw").public_jwk()],
            scope="read",
            introspection_encrypted_response_alg="ECDH-ES+A256KW",
            access_token_encrypted_response_alg="ECDH-ES+A256KW",
            access_token_encrypted_response_enc="A256GCM",
        ),
        resource_server(
            "rs-3",
            RS3,
            [keys["rs-3"].public_jwk, ec_enc_jwk(rs3_enc, "rs-3-enc")],
            aud_policy="endpoint",
            introspection_signed_response_alg="PS256",
            introspection_encrypted_response_alg="ECDH-ES+A256KW",
            introspection_encrypted_response_enc="A256GCM",
            access_token_encrypted_response_alg="ECDH-ES+A256KW",
            access_token_encrypted_response_enc="A128GCM",
        ),
    ]
    return Scenario({"clients": clients, "resource_servers": servers}, keys, rs3_enc)


# --- users: the authorization code flow (tests/test_users_*.py) --------------------------------------

RS4 = "https://rs4.example.test"  # a resource server entitled to some of the user's claims
WEB_REDIRECT = "https://web.example.test/cb"
NATIVE_REDIRECT = "http://127.0.0.1:8765/callback"


def user_scenario() -> Scenario:
    """Clients of the authorization code flow and two resource servers: rs-1 learns nothing about
    users, rs-4 is entitled to email, given_name, birthdate and username (with consent)."""
    keys = {cid: ClientKey.new("ES256") for cid in ("web", "web-2", "oidc-only", "machine", "rs-1", "rs-4")}
    user_grants = ["authorization_code", "refresh_token"]
    clients = [
        pkjwt_client(
            "web",
            keys["web"],
            resources=[RS1, RS4],
            grant_types=user_grants,
            client_name="Web Shop",
            redirect_uris=[WEB_REDIRECT, WEB_REDIRECT + "2"],
            scope="openid profile email read write",
        ),
        pkjwt_client(
            "web-2",
            keys["web-2"],
            resources=[RS1, RS4],
            grant_types=user_grants,
            redirect_uris=["https://web2.example.test/cb"],
            scope="openid profile email read write",
        ),
        {
            **pkjwt_client(
                "oidc-only",
                keys["oidc-only"],
                grant_types=["authorization_code"],
                redirect_uris=["https://login.example.test/cb"],
                scope="openid profile email",
            ),
            "resources": [],
        },
        pkjwt_client("machine", keys["machine"], resources=[RS1]),
        {
            "client_id": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": user_grants,
            "client_name": "Native App",
            "redirect_uris": [NATIVE_REDIRECT, "com.example.app:/cb"],
            "scope": "openid email read",
            "resources": [RS1],
        },
    ]
    servers = [
        resource_server("rs-1", RS1, [keys["rs-1"].public_jwk]),
        resource_server(
            "rs-4", RS4, [keys["rs-4"].public_jwk], introspection_claims=["email", "given_name", "birthdate", "username"]
        ),
    ]
    return Scenario({"clients": clients, "resource_servers": servers}, keys)
