"""DPoP at the token endpoint (RFC 9449 §4.3, §5, §8), real SoftHSM and Redis: every check one by
one, replay (sequential and concurrent, through gunicorn), server nonces (issue, expiry, rotation,
downgrade, per client, across app instances), DPoP-bound clients, introspection."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
import requests

from as_helpers import RS1, ClientKey, b64, b64json, claims_for
from pop_helpers import (
    POP_SETTINGS,
    RSP,
    SECRET,
    TOKEN_URL,
    dpop_jwk,
    dpop_proof,
    jkt,
    pop_as,
    pop_world,
    post_token,
    token_form,
    with_old_epoch,
)
from test_http_server import start_gunicorn, stop

__all__ = ["pop_as", "pop_world"]  # fixtures


def expect(response, status: int, error: str | None = None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    if error:
        assert body["error"] == error, body
    return body


def dpop_token(env, key, client_id="d-plain", **form):
    return post_token(env, token_form(env, client_id, **form), {"DPoP": dpop_proof(key)})


# --- success ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "PS256", "EdDSA"])
def test_dpop_bound_token(pop_as, alg):
    key = ClientKey.new(alg)
    body = expect(dpop_token(pop_as, key), 200)
    assert body["token_type"] == "DPoP"
    claims = _claims(pop_as, body["access_token"])
    assert claims["cnf"] == {"jkt": jkt(key)}


def _claims(env, token):
    from flask_oauth_hsm.tokens.access import read_own_token

    with env.app.app_context():
        return read_own_token(env.state, token)


def test_metadata_advertises_the_dpop_algorithms(pop_as):
    meta = pop_as.client().get("/.well-known/oauth-authorization-server").get_json()
    assert meta["dpop_signing_alg_values_supported"] == ["ES256", "ES384", "PS256", "EdDSA"]


def test_introspection_returns_cnf_jkt_and_token_type_dpop(pop_as):
    key = ClientKey.new("ES256")
    token = expect(dpop_token(pop_as, key, resource=RS1), 200)["access_token"]
    from flask_oauth_hsm.endpoints.introspection import introspect  # what rs-1 is told (the endpoint: test_pop_keys.py)

    with pop_as.app.app_context():
        answer = introspect(pop_as.state, token, pop_as.state.registry.resource_server("rs-1"), None)
    assert answer["active"] and answer["token_type"] == "DPoP" and answer["cnf"] == {"jkt": jkt(key)}


def test_bearer_tokens_stay_bearer(pop_as):
    body = expect(post_token(pop_as, token_form(pop_as, "d-plain")), 200)
    assert body["token_type"] == "Bearer" and "cnf" not in _claims(pop_as, body["access_token"])


def test_a_dpop_bound_client_must_send_a_proof(pop_as):
    expect(post_token(pop_as, token_form(pop_as, "d-bound")), 400, "invalid_dpop_proof")
    assert expect(dpop_token(pop_as, ClientKey.new(), "d-bound"), 200)["token_type"] == "DPoP"


def test_dpop_and_pop_together_are_refused(pop_as):
    form = token_form(pop_as, "p-both", resource=RSP, token_type="pop")
    expect(post_token(pop_as, form, {"DPoP": dpop_proof(ClientKey.new())}), 400, "invalid_request")


# --- RFC 9449 §4.3, one check at a time -------------------------------------------------------------------------


def _refused(env, proof_or_headers, error="invalid_dpop_proof"):
    headers = proof_or_headers if isinstance(proof_or_headers, dict) else {"DPoP": proof_or_headers}
    body = expect(post_token(env, token_form(env, "d-plain"), headers), 400, error)
    assert "eyJ" not in body.get("error_description", "")  # never echoes the proof
    return body


def test_step1_exactly_one_header(pop_as):
    key = ClientKey.new()
    _refused(pop_as, {"DPoP": dpop_proof(key) + "," + dpop_proof(key)})
    response = pop_as.client().post(
        "/oauth2/token", data=token_form(pop_as, "d-plain"), headers=[("DPoP", dpop_proof(key)), ("DPoP", dpop_proof(key))]
    )
    expect(response, 400, "invalid_dpop_proof")


@pytest.mark.parametrize(
    "value", ["", "x", "a.b.c", "a.b.c.d.e", "e30.e30.", b64json({"alg": "ES256"}) + ".e30.AA" * 3, "x" * 9000]
)
def test_step2_not_a_jwt(pop_as, value):
    _refused(pop_as, {"DPoP": value} if value else {"DPoP": " "})


@pytest.mark.parametrize("missing", ["jti", "htm", "htu", "iat"])
def test_step3_required_claims(pop_as, missing):
    _refused(pop_as, dpop_proof(ClientKey.new(), **{missing: None}))


@pytest.mark.parametrize(
    "bad",
    [
        {"jti": 5},
        {"jti": ""},
        {"jti": "j" * 600},
        {"iat": "now"},
        {"iat": True},
        {"iat": -1e309},
        {"htu": ["https://as.example.test/oauth2/token"]},
    ],
)
def test_step3_malformed_claims(pop_as, bad):
    _refused(pop_as, dpop_proof(ClientKey.new(), **bad))


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt", "dpop"])
def test_step4_typ(pop_as, typ):
    _refused(pop_as, dpop_proof(ClientKey.new(), header={"typ": typ}))


def test_step4_typ_with_media_type_prefix_is_the_same_type(pop_as):
    expect(
        post_token(
            pop_as, token_form(pop_as, "d-plain"), {"DPoP": dpop_proof(ClientKey.new(), header={"typ": "application/dpop+jwt"})}
        ),
        200,
    )


def _hand_signed(header: dict, claims: dict, signature: bytes = b"\0" * 64) -> str:
    return f"{b64json(header)}.{b64json(claims)}.{b64(signature)}"


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256", "ES512", "RSA-OAEP-256", ""])
def test_step5_algorithm(pop_as, alg):
    key = ClientKey.new("ES256")
    claims = {"jti": "j", "htm": "POST", "htu": TOKEN_URL, "iat": int(time.time())}
    _refused(pop_as, _hand_signed({"typ": "dpop+jwt", "alg": alg, "jwk": dpop_jwk(key)}, claims))


def test_step5_rs256_is_not_in_the_allow_list_by_default(pop_as):
    _refused(pop_as, dpop_proof(ClientKey.new("RS256")))


def test_step5_algorithm_must_fit_the_key(pop_as):
    es, ps = ClientKey.new("ES256"), ClientKey.new("PS256")
    _refused(pop_as, dpop_proof(es, header={"jwk": dpop_jwk(ps)}))  # ES256 signature, RSA key


def test_step6_signature(pop_as):
    key = ClientKey.new()
    head, payload, sig = dpop_proof(key).split(".")
    other = dpop_proof(key, jti="another").split(".")[1]
    _refused(pop_as, f"{head}.{other}.{sig}")
    _refused(pop_as, dpop_proof(key, header={"jwk": dpop_jwk(ClientKey.new())}))  # signed by another key


@pytest.mark.parametrize(
    "mutate",
    [
        lambda jwk: {**jwk, "d": "AAAA"},  # private member
        lambda jwk: {"kty": "oct", "k": "AAAA"},  # symmetric
        lambda jwk: {**jwk, "x": jwk["y"]},  # not on the curve
        lambda jwk: {**jwk, "crv": "P-192"},
        lambda jwk: None,
        lambda jwk: "a string",
    ],
)
def test_step7_the_jwk_is_a_public_key_we_accept(pop_as, mutate):
    key = ClientKey.new()
    _refused(pop_as, dpop_proof(key, header={"jwk": mutate(dpop_jwk(key))}))


def test_step7_weak_rsa_keys(pop_as):
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = ClientKey("PS256", rsa.generate_private_key(65537, 1024), "k")
    _refused(pop_as, dpop_proof(key))


@pytest.mark.parametrize("htm", ["post", "GET", "PUT", ""])
def test_step8_htm(pop_as, htm):
    _refused(pop_as, dpop_proof(ClientKey.new(), htm))


@pytest.mark.parametrize(
    "htu",
    [
        "https://as.example.test/oauth2/introspect",
        "https://evil.example/oauth2/token",
        "http://as.example.test/oauth2/token",
        "https://as.example.test:8443/oauth2/token",
        "http://localhost/oauth2/token",
    ],
)
def test_step9_htu_is_our_public_url_not_the_host_header(pop_as, htu):
    """The test client sends Host: localhost; the proof must still name our configured URL."""
    _refused(pop_as, dpop_proof(ClientKey.new(), "POST", htu))


@pytest.mark.parametrize("htu", ["https://AS.example.test/oauth2/token", "https://as.example.test:443/oauth2/token?x=1#y"])
def test_step9_htu_after_normalisation(pop_as, htu):
    expect(post_token(pop_as, token_form(pop_as, "d-plain"), {"DPoP": dpop_proof(ClientKey.new(), "POST", htu)}), 200)


@pytest.fixture(scope="module")
def settled_as(make_as, pop_world):
    return with_old_epoch(
        make_as(pop_world.scenario, OAUTH_HSM_REDIS_PREFIX=f"dpop-window-{uuid.uuid4().hex[:8]}:", **POP_SETTINGS)
    )


@pytest.mark.parametrize("offset,ok", [(-89, True), (-95, False), (25, True), (35, False)])
def test_step11_iat_window(settled_as, offset, ok):
    """OAUTH_HSM_DPOP_PROOF_MAX_AGE (60) + OAUTH_HSM_CLOCK_SKEW (30) into the past, the skew ahead."""
    env = settled_as
    response = post_token(env, token_form(env, "d-plain"), {"DPoP": dpop_proof(ClientKey.new(), iat=int(time.time()) + offset)})
    if ok:
        expect(response, 200)
    else:
        expect(response, 400, "invalid_dpop_proof")


def test_a_kid_in_the_header_is_ignored(pop_as):
    key = ClientKey.new()
    expect(post_token(pop_as, token_form(pop_as, "d-plain"), {"DPoP": dpop_proof(key, header={"kid": "whatever"})}), 200)


# --- replay (RFC 9449 §11.1) -----------------------------------------------------------------------------------


def test_sequential_replay(pop_as):
    proof = dpop_proof(ClientKey.new())
    expect(post_token(pop_as, token_form(pop_as, "d-plain"), {"DPoP": proof}), 200)
    _refused(pop_as, proof)


def test_the_same_jti_with_another_key_is_another_proof(pop_as):
    expect(post_token(pop_as, token_form(pop_as, "d-plain"), {"DPoP": dpop_proof(ClientKey.new(), jti="same")}), 200)
    expect(post_token(pop_as, token_form(pop_as, "d-plain"), {"DPoP": dpop_proof(ClientKey.new(), jti="same")}), 200)


def test_a_refused_proof_does_not_burn_the_client_assertion(pop_as):
    """The stateless checks run before client authentication: the same assertion works after."""
    form = token_form(pop_as, "d-plain")
    expect(post_token(pop_as, form, {"DPoP": dpop_proof(ClientKey.new(), "GET")}), 400, "invalid_dpop_proof")
    expect(post_token(pop_as, form, {"DPoP": dpop_proof(ClientKey.new())}), 200)


@pytest.fixture(scope="module")
def pop_server(pop_as):
    proc, base = start_gunicorn(pop_as.settings, workers=3)
    yield base
    stop(proc)


def test_concurrent_replay_through_gunicorn(pop_server):
    """The same proof 30 times at once (client_secret_post: the body itself has nothing single-use)
    to 3 workers: exactly one token."""
    proof = dpop_proof(ClientKey.new())
    form = {"grant_type": "client_credentials", "client_id": "d-secret", "client_secret": SECRET}
    barrier = Barrier(30)

    def attempt(_: int) -> int:
        barrier.wait(timeout=30)
        return requests.post(pop_server + "/oauth2/token", data=form, headers={"DPoP": proof}, timeout=30).status_code

    with ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(attempt, range(30)))
    assert codes.count(200) == 1 and codes.count(400) == 29, codes


# --- server nonces (RFC 9449 §8) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nonce_as(make_as, pop_world):
    return make_as(pop_world.scenario, OAUTH_HSM_DPOP_NONCE="required", **POP_SETTINGS)


@pytest.fixture()
def slot_start_clock(nonce_as, fake_clock):
    """The package clock moved to the start of nonce_as's next nonce slot. A nonce's life is
    counted from its slot's start (binding/nonces.py), so one issued in a slot's last second is
    good for only lifetime - step + 1 s more: a test that moves the clock, or compares the nonces
    of two requests, must not depend on where in the slot it happens to run (once in about 60
    runs it did). The step is the issuer's own, not a copy of the setting's default."""
    step = nonce_as.state.binding.nonces.issuer.step
    fake_clock.set((int(fake_clock()) // step + 1) * step)
    return fake_clock


def _fresh_form(env, client_id="d-plain"):
    """A client assertion dated by the package clock (tests move it)."""
    from flask_oauth_hsm import clock

    now = int(clock.now())
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": env.keys[client_id].jws(claims_for(client_id, env.issuer, iat=now, exp=now + 60)),
    }


def _proof(key, nonce=None):
    from flask_oauth_hsm import clock

    return dpop_proof(key, iat=int(clock.now()), nonce=nonce)


def test_nonce_required_then_used(nonce_as, slot_start_clock):
    key, form = ClientKey.new(), _fresh_form(nonce_as)
    first = post_token(nonce_as, form, {"DPoP": _proof(key)})
    body = expect(first, 400, "use_dpop_nonce")
    nonce = first.headers["DPoP-Nonce"]
    assert nonce and "nonce" in body["error_description"]
    second = post_token(nonce_as, form, {"DPoP": _proof(key, nonce)})  # the same assertion: not burnt by the first try
    assert expect(second, 200)["token_type"] == "DPoP"
    assert second.headers["DPoP-Nonce"] == nonce  # the current nonce, offered again


def test_an_unknown_nonce_gets_a_fresh_one(nonce_as):
    response = post_token(nonce_as, _fresh_form(nonce_as), {"DPoP": _proof(ClientKey.new(), "made-up")})
    expect(response, 400, "use_dpop_nonce")
    assert response.headers["DPoP-Nonce"] != "made-up"


def test_nonces_expire_and_rotate(nonce_as, slot_start_clock):
    fake_clock = slot_start_clock
    key = ClientKey.new()
    first = post_token(nonce_as, _fresh_form(nonce_as), {"DPoP": _proof(key)})
    nonce = first.headers["DPoP-Nonce"]
    fake_clock.advance(61)  # a new slot has begun (lifetime 120 s, a new nonce every 60 s)
    rotated = post_token(nonce_as, _fresh_form(nonce_as), {"DPoP": _proof(key, nonce)})
    expect(rotated, 200)
    newer = rotated.headers["DPoP-Nonce"]
    assert newer != nonce  # the success answer offers the next nonce (§8.2)
    fake_clock.advance(60)  # the first nonce is now past its lifetime
    stale = post_token(nonce_as, _fresh_form(nonce_as), {"DPoP": _proof(key, nonce)})
    expect(stale, 400, "use_dpop_nonce")
    expect(post_token(nonce_as, _fresh_form(nonce_as), {"DPoP": _proof(key, newer)}), 200)


def test_nonces_work_across_app_instances(make_as, pop_world, nonce_as):
    """Stateless: another instance (another worker or host with the same HSM key) accepts them."""
    other = make_as(pop_world.scenario, OAUTH_HSM_DPOP_NONCE="required", **POP_SETTINGS)
    nonce = post_token(nonce_as, _fresh_form(nonce_as), {"DPoP": _proof(ClientKey.new())}).headers["DPoP-Nonce"]
    expect(post_token(other, _fresh_form(other), {"DPoP": _proof(ClientKey.new(), nonce)}), 200)


def test_a_nonce_is_bound_to_its_audience():
    """Another audience's nonce (a resource server's, same HSM key) is not ours."""
    from flask_oauth_hsm import clock
    from flask_oauth_hsm.binding.nonces import NonceIssuer

    class Key:
        def hmac_sha256(self, data):
            import hashlib
            import hmac as h

            return h.new(b"k" * 32, data, hashlib.sha256).digest()

    with clock.use(clock.FakeClock(1_800_000_000)):
        ours, theirs = NonceIssuer(Key(), "https://as", 120, 5), NonceIssuer(Key(), "https://rs", 120, 5)
        assert ours.accepts(ours.current()) and not ours.accepts(theirs.current())
        assert not ours.accepts(ours.current()[:-2] + "AA") and not ours.accepts("~" * 40)


def test_optional_nonces_and_no_downgrade(make_as, pop_world):
    env = make_as(pop_world.scenario, OAUTH_HSM_DPOP_NONCE="optional", **POP_SETTINGS)
    key = ClientKey.new()
    first = post_token(env, _fresh_form(env, "p-both"), {"DPoP": _proof(key)})
    expect(first, 200)  # optional: accepted without one ...
    nonce = first.headers["DPoP-Nonce"]  # ... and offered one
    downgrade = post_token(env, _fresh_form(env, "p-both"), {"DPoP": _proof(key)})
    expect(downgrade, 400, "use_dpop_nonce")  # once given a nonce, no more proofs without
    expect(post_token(env, _fresh_form(env, "p-both"), {"DPoP": _proof(key, nonce)}), 200)
    # another client that has not been given one yet is still served without
    expect(post_token(env, _fresh_form(env, "p-asym"), {"DPoP": _proof(ClientKey.new())}), 200)


def test_per_client_nonces_with_the_global_mode_off(pop_as):
    response = post_token(pop_as, _fresh_form(pop_as, "d-nonce"), {"DPoP": _proof(ClientKey.new())})
    expect(response, 400, "use_dpop_nonce")
    nonce = response.headers["DPoP-Nonce"]
    ok = post_token(pop_as, _fresh_form(pop_as, "d-nonce"), {"DPoP": _proof(ClientKey.new(), nonce)})
    expect(ok, 200)
    assert ok.headers["DPoP-Nonce"]
    plain = post_token(pop_as, _fresh_form(pop_as, "d-plain"), {"DPoP": _proof(ClientKey.new())})
    assert plain.status_code == 200 and "DPoP-Nonce" not in plain.headers  # off: nothing offered
