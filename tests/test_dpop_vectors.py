"""RFC 9449 DPoP figures through our proof checks (RFC 9449 §4.3) under a frozen clock, and the
negative derivations the vector notes list, re-signed with our own test keys."""

from __future__ import annotations

import uuid

import pytest

from as_helpers import ClientKey
from flask_oauth_hsm import clock
from flask_oauth_hsm.binding import dpop, use_proof_once
from flask_oauth_hsm.binding.uri import normalise, same_resource
from flask_oauth_hsm.store import ResetRule, Store, connect
from pop_helpers import ath, dpop_proof
from vector_helpers import VECTORS_DIR, load_json

VECTORS = load_json(VECTORS_DIR / "rfc9449_7638_8037.json")["rfc9449_dpop"]
FIGURES = VECTORS["proofs"]
ALGS = ("ES256", "ES384", "PS256", "EdDSA")


def check(value: str, *, method: str, url: str, access_token: str | None = None) -> dpop.Proof:
    return dpop.verify_proof(value, method=method, url=url, algorithms=ALGS, max_age=60, leeway=5, access_token=access_token)


@pytest.mark.parametrize("name", ["figure2_token_request_proof", "figure7_refresh_request_proof"])
def test_token_request_figures_verify_at_their_time(name):
    figure = FIGURES[name]
    with clock.use(clock.FakeClock(figure["payload"]["iat"] + 2)):
        proof = check(figure["compact"], method="POST", url="https://server.example.com/token")
    assert proof.jkt == figure["expected_jkt"] == VECTORS["expected_cnf_jkt"]
    assert proof.jti == "-BwC3ESc6acc2lTc" and proof.nonce is None


def test_resource_figure_with_ath():
    figure = FIGURES["figure13_resource_request_proof"]
    with clock.use(clock.FakeClock(figure["payload"]["iat"])):
        proof = check(
            figure["compact"],
            method="GET",
            url="https://resource.example.org/protectedresource",
            access_token=VECTORS["access_token_fig6"],
        )
        assert proof.jkt == VECTORS["expected_cnf_jkt"]
        with pytest.raises(dpop.ProofError, match="ath"):
            check(
                figure["compact"],
                method="GET",
                url="https://resource.example.org/protectedresource",
                access_token=VECTORS["access_token_fig6"] + "x",
            )
    assert dpop.access_token_hash(VECTORS["access_token_fig6"]) == VECTORS["expected_ath_for_access_token"]


def test_the_figures_are_refused_with_the_real_clock():
    for figure in FIGURES.values():
        with pytest.raises(dpop.ProofError, match="iat"):
            check(figure["compact"], method=figure["payload"]["htm"], url=figure["payload"]["htu"])


def test_figures_2_and_7_share_a_jti_and_the_second_is_a_replay(redis_server):
    """The replay cache is keyed on (proof key, jti), not on the token bytes: figure 7 differs from
    figure 2 in iat and signature, yet reuses its jti."""
    store = Store(connect(redis_server.url, 1.0), f"dpop-vectors-{uuid.uuid4().hex}:", ResetRule(5))
    first, second = FIGURES["figure2_token_request_proof"], FIGURES["figure7_refresh_request_proof"]
    fake = clock.FakeClock(first["payload"]["iat"] + 1)
    with clock.use(fake):
        proof = check(first["compact"], method="POST", url="https://server.example.com/token")
        use_proof_once(store, "dpop", proof, 60, 5, "vectors")
        fake.set(second["payload"]["iat"] + 1)  # 45 minutes later; the record's TTL ran on Redis's clock
        again = check(second["compact"], method="POST", url="https://server.example.com/token")
        assert (again.jkt, again.jti) == (proof.jkt, proof.jti) and second["compact"] != first["compact"]
        with pytest.raises(dpop.ProofError, match="used before"):
            use_proof_once(store, "dpop", again, 60, 5, "vectors")


# --- derivations (vector notes), with our own key ---------------------------------------------------------

URL = "https://server.example.com/token"


@pytest.mark.parametrize(
    "htu",
    [
        "https://SERVER.example.com/token",  # host case (RFC 3986 §6.2.2.1)
        "https://server.example.com:443/token",  # default port (§6.2.3)
        "https://server.example.com/token?q=1#f",  # query and fragment ignored (RFC 9449 §4.3 step 9)
        "HTTPS://server.example.com/./token",  # scheme case, dot segment
        "https://server.example.com/%74oken",  # percent-encoded unreserved character
    ],
)
def test_htu_normalisation_accepts(htu):
    key = ClientKey.new("ES256")
    check(dpop_proof(key, "POST", htu), method="POST", url=URL)


@pytest.mark.parametrize(
    "htu",
    [
        "https://server.example.com/token2",
        "https://server.example.com/Token",
        "http://server.example.com/token",
        "https://server.example.com:8443/token",
        "https://other.example.com/token",
        "https://user@server.example.com/token",
        "server.example.com/token",
        "https://server.example.com/to ken",
        "",
        "https://[::1/token",
    ],
)
def test_htu_mismatch_refused(htu):
    with pytest.raises(dpop.ProofError, match="htu"):
        check(dpop_proof(ClientKey.new("ES256"), "POST", htu), method="POST", url=URL)


def test_htm_is_case_sensitive_and_ath_required_at_the_resource():
    key = ClientKey.new("ES256")
    with pytest.raises(dpop.ProofError, match="htm"):
        check(dpop_proof(key, "post"), method="POST", url=URL)
    with pytest.raises(dpop.ProofError, match="htm"):
        check(dpop_proof(key, "GET"), method="POST", url=URL)
    token = "an-access-token"
    check(dpop_proof(key, "GET", URL, ath=ath(token)), method="GET", url=URL, access_token=token)
    with pytest.raises(dpop.ProofError, match="ath"):
        check(dpop_proof(key, "GET", URL), method="GET", url=URL, access_token=token)


def test_normalise_examples():
    assert normalise("https://EXAMPLE.com:443/a/b/../c/%7euser?x#y") == "https://example.com/a/c/~user"
    assert normalise("http://example.com") == "http://example.com/"
    assert normalise("https://[2001:DB8::1]:8443/p") == "https://[2001:db8::1]:8443/p"
    assert normalise("https://example.com/a%2fb") == "https://example.com/a%2Fb"
    assert normalise("ftp://example.com/") is None and not same_resource("x", "x")
