"""Rate limits (OAUTH_HSM_RATE_LIMITS) through Flask-Limiter on the real Redis: per source address
before authentication, per authenticated client after it, per address for HSM work spent before
authentication; 429 with Retry-After; fail closed when Redis is down."""

from __future__ import annotations

import itertools
import secrets

import pytest

import support
from as_helpers import assertion_form, claims_for
from flask_oauth_hsm.jose import jwe, jwk

_prefixes = itertools.count()


def limited_env(make_as, limits: str, **settings):
    # Each app counts under its own prefix: the session Redis is shared by every test.
    return make_as(
        OAUTH_HSM_RATE_LIMITS=limits, OAUTH_HSM_REDIS_PREFIX=f"rl-{next(_prefixes)}-{secrets.token_hex(3)}:", **settings
    )


def token_form(env, client_id="c-es256", **extra):
    return assertion_form(env.keys[client_id].jws(claims_for(client_id, env.issuer)), **extra)


def expect_limited(response):
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.get_json() == {"error": "temporarily_unavailable", "error_description": "too many requests"}
    assert int(response.headers["Retry-After"]) >= 1 and response.headers["Cache-Control"] == "no-store"


def test_per_address_before_authentication(make_as):
    env = limited_env(make_as, "address=3/minute,client=100/minute", OAUTH_HSM_TRUSTED_PROXIES="127.0.0.1/32")
    client = env.client()
    for _ in range(3):
        assert client.post("/oauth2/token", data={"grant_type": "client_credentials"}).status_code == 401
    expect_limited(client.post("/oauth2/token", data=token_form(env)))
    # Another address (X-Forwarded-For, honoured through the trusted proxy) has its own budget,
    # and another endpoint counts apart.
    assert client.post("/oauth2/token", data=token_form(env), headers={"X-Forwarded-For": "192.0.2.7"}).status_code == 200
    assert client.post("/oauth2/revoke", data={"token": "x"}).status_code == 401


def test_per_authenticated_client(make_as):
    env = limited_env(make_as, "address=1000/minute,client=3/minute")
    client = env.client()
    for _ in range(3):
        assert client.post("/oauth2/token", data=token_form(env)).status_code == 200
    expect_limited(client.post("/oauth2/token", data=token_form(env)))
    assert client.post("/oauth2/token", data=token_form(env, "c-other")).status_code == 200  # its own budget


def test_a_claimed_client_id_cannot_spend_another_clients_budget(make_as):
    """Failed authentications claiming c-es256 count against the address only, never the client."""
    env = limited_env(make_as, "address=1000/minute,client=3/minute")
    client = env.client()
    forged = assertion_form(env.keys["c-other"].jws(claims_for("c-es256", env.issuer)))
    for _ in range(10):
        assert client.post("/oauth2/token", data=forged).status_code == 401
    assert client.post("/oauth2/token", data=token_form(env)).status_code == 200


def test_introspection_flood_by_one_resource_server(make_as):
    """The review's finding: one resource server sent 1,500 random tokens, all answered."""
    env = limited_env(make_as, "address=10000/minute,client=50/minute")
    client, answers = env.client(), []
    for _ in range(120):
        form = assertion_form(env.keys["rs-1"].jws(claims_for("rs-1", env.issuer)), token=secrets.token_urlsafe(40))
        del form["grant_type"]
        answers.append(client.post("/oauth2/introspect", data=form).status_code)
    assert answers.count(200) == 50 and answers.count(429) == 70


def test_hsm_operations_before_authentication(make_as):
    env = limited_env(make_as, "address=1000/minute,client=1000/minute,hsm=2/minute")
    as_key = jwk.load_jwk(env.state.hsm.key("enc-rsa-oaep-256").public_jwk())

    def encrypted():
        inner = env.keys["c-enc"].jws(claims_for("c-enc", env.issuer))
        return assertion_form(jwe.encrypt(inner.encode(), as_key, "RSA-OAEP-256", "A256GCM", {"cty": "JWT"}), client_id="c-enc")

    client = env.client()
    assert client.post("/oauth2/token", data=encrypted()).status_code == 200
    assert client.post("/oauth2/token", data=encrypted()).status_code == 200
    expect_limited(client.post("/oauth2/token", data=encrypted()))
    assert client.post("/oauth2/token", data=token_form(env)).status_code == 200  # no decryption: not counted


def test_limits_fail_closed_when_redis_is_down(make_as, tmp_path):
    redis = support.RedisServer(tmp_path / "redis")
    redis.start()
    try:
        env = limited_env(make_as, "address=100/minute", redis_url=redis.url)
        assert env.client().post("/oauth2/token", data=token_form(env)).status_code == 200
        redis.stop()
        r = env.client().post("/oauth2/token", data=token_form(env))
        assert r.status_code == 503 and r.get_json()["error"] == "temporarily_unavailable" and r.headers["Retry-After"]
    finally:
        redis.stop()


def test_counters_live_under_the_prefix_with_a_ttl(make_as, redis_server):
    import redis

    env = limited_env(make_as, "address=100/minute")
    env.client().post("/oauth2/token", data=token_form(env))
    prefix = env.settings["OAUTH_HSM_REDIS_PREFIX"] + "limits"
    client = redis.Redis.from_url(redis_server.url)
    keys = [k for k in client.scan_iter(match=prefix + "*")]
    assert keys and all(client.ttl(k) > 0 for k in keys)


@pytest.mark.parametrize("path", ["/oauth2/jwks", "/oauth2/health", "/.well-known/oauth-authorization-server"])
def test_public_documents_are_not_limited(make_as, path):
    env = limited_env(make_as, "address=2/minute")
    assert all(env.client().get(path).status_code == 200 for _ in range(5))


def test_authorization_endpoint_is_limited_per_address(make_user_as):
    """The browser endpoints answer a breach with a page (and Retry-After), not JSON."""
    env = make_user_as(
        OAUTH_HSM_RATE_LIMITS="address=3/minute,client=100/minute",
        OAUTH_HSM_REDIS_PREFIX=f"rl-{next(_prefixes)}-{secrets.token_hex(3)}:",
    )
    client = env.client()
    for _ in range(3):
        assert client.get("/oauth2/authorize?client_id=nobody").status_code == 400
    r = client.get("/oauth2/authorize?client_id=web")
    assert r.status_code == 429 and r.mimetype == "text/html" and int(r.headers["Retry-After"]) >= 1
    assert client.get("/oauth2/consent?id=x").status_code == 400  # another endpoint counts apart
