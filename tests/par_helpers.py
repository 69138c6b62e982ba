"""PAR and request-object tests: a scenario of JAR/PAR clients, request objects built by hand (the
client side is not us), encrypted to the AS's key from its JWKS with joserfc."""

from __future__ import annotations

import secrets
from typing import Any

from as_helpers import ClientKey, assertion_form, claims_for
from scenarios import RS1, Scenario, pkjwt_client, user_scenario

ISSUER = "https://as.example.test"
PAR_URL = ISSUER + "/oauth2/par"
AUTHORIZE_URL = ISSUER + "/oauth2/authorize"
TOKEN_URL = ISSUER + "/oauth2/token"
TYP = "oauth-authz-req+jwt"
ENC_ALG, ENC_ENC = "RSA-OAEP-256", "A256GCM"

# client id -> registry extras (every one: private_key_jwt ES256, authorization_code + refresh_token)
JAR_CLIENTS: dict[str, dict[str, Any]] = {
    "jar": {"request_object_signing_alg": "ES256"},
    "jar-enc": {"request_object_encryption_alg": ENC_ALG, "request_object_encryption_enc": ENC_ENC},
    "jar-typ": {"request_object_typ_required": True},
    "jar-issuer": {"aud_policy": "issuer"},
    "jar-endpoint": {"aud_policy": "endpoint"},
    "jar-legacy": {"aud_policy": "legacy"},
    "par-only": {"require_pushed_authorization_requests": True},
}


def redirect_for(client_id: str) -> str:
    return f"https://{client_id}.example.test/cb"


def par_scenario() -> Scenario:
    """The users scenario (web, native, ...) plus the JAR/PAR clients above."""
    base = user_scenario()
    keys = dict(base.keys)
    clients = list(base.registry["clients"])
    for cid, extra in JAR_CLIENTS.items():
        keys[cid] = ClientKey.new("ES256")
        clients.append(
            pkjwt_client(
                cid,
                keys[cid],
                resources=[RS1],
                grant_types=["authorization_code", "refresh_token"],
                redirect_uris=[redirect_for(cid)],
                scope="openid read",
                **extra,
            )
        )
    return Scenario({**base.registry, "clients": clients}, keys)


def now() -> int:
    from flask_oauth_hsm import clock

    return int(clock.now())


def request_claims(
    cid: str, aud: Any = ISSUER, *, challenge: str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", **overrides: Any
) -> dict[str, Any]:
    """The claims of a good request object (``None`` in overrides removes a claim): a client
    assertion's claims without ``sub``, with ``client_id`` and the request's parameters."""
    t = now()
    request = {
        "client_id": cid,
        "nbf": t,
        "exp": t + 300,
        "response_type": "code",
        "redirect_uri": redirect_for(cid),
        "scope": "openid read",
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return claims_for(cid, aud, sub=None, iat=t, **{**request, **overrides})


def sign(env, client_id: str, claims: dict[str, Any], typ: str | None = TYP, **header: Any) -> str:
    return env.keys[client_id].jws(claims, {"typ": typ, **header})


def as_enc_key(env, alg: str = ENC_ALG) -> dict[str, Any]:
    """The AS's public encryption key for ``alg``, as any client finds it: in the JWKS."""
    jwks = env.client().get("/oauth2/jwks").get_json()
    return next(k for k in jwks["keys"] if k.get("use") == "enc" and k.get("alg") == alg)


def encrypt(env, signed: str, alg: str = ENC_ALG, enc: str = ENC_ENC) -> str:
    """A nested JWT (RFC 7519 §5.2) to the AS's key, with joserfc."""
    from joserfc import jwe
    from joserfc.jwk import import_key

    key = import_key(as_enc_key(env, alg))
    return jwe.encrypt_compact({"alg": alg, "enc": enc, "cty": "JWT", "kid": key.kid}, signed, key, algorithms=[alg, enc])


def par_form(env, cid: str, /, aud: Any = ISSUER, **params: Any) -> dict[str, Any]:
    """A PAR body authenticated with private_key_jwt (``aud`` of the assertion)."""
    t = now()
    form = assertion_form(env.keys[cid].jws(claims_for(cid, aud, iat=t, exp=t + 60)), **params)
    del form["grant_type"]
    return {k: v for k, v in form.items() if v is not None}


def push(env, cid: str, /, aud: Any = ISSUER, headers: dict[str, str] | None = None, **params: Any):
    return env.client().post("/oauth2/par", data=par_form(env, cid, aud, **params), headers=headers)
