"""RFC examples as interop vectors: RFC 7520 (JOSE cookbook), RFC 7515/7516 appendices, RFC 7638,
RFC 8037 and the RFC 9449 DPoP figures.

What we accept must verify / decrypt (decryption in a SoftHSM token of this module, ``vectors-rfc``,
holding the published private keys); what we do not accept must be refused *before any key is
selected or any cryptography runs*: the resolvers used for refusals raise if they are reached
(``forbid_key_selection``) or count token operations (``CountingDecrypter``).
"""

from __future__ import annotations

import hashlib
import json

import pytest

from flask_oauth_hsm.errors import InvalidKey, MalformedJose, RefusedAlgorithm
from flask_oauth_hsm.jose import compact, jwe, jwk, jws, jwt
from vector_helpers import (
    ENCRYPTIONS,
    KEY_MANAGEMENT_ALGS,
    SIGNING_ALGS,
    VECTORS_DIR,
    CountingDecrypter,
    VectorToken,
    b64u,
    b64u_lenient,
    cookbook,
    forbid_key_selection,
    load_json,
    private_key_from_jwk,
    public_part,
    skip_without_vectors,
)

skip_without_vectors()

APPENDIX = load_json(VECTORS_DIR / "rfc7515_7516_appendix.json")
DPOP_THUMBPRINTS = load_json(VECTORS_DIR / "rfc9449_7638_8037.json")

JWS_41 = cookbook("jws/4_1.rsa_v15_signature.json")
JWE_52 = cookbook("jwe/5_2.key_encryption_using_rsa-oaep_with_aes-gcm.json")
JWE_54 = cookbook("jwe/5_4.key_agreement_with_key_wrapping_using_ecdh-es_and_aes-keywrap_with_aes-gcm.json")
JWE_55 = cookbook("jwe/5_5.key_agreement_using_ecdh-es_with_aes-cbc-hmac-sha2.json")
NESTED = cookbook("6.nesting_signatures_and_encryption.json")
ED25519_JWS = cookbook("curve25519/jws.json")
X25519_JWE = cookbook("curve25519/ecdh-es.json")


def _verify(token, public: dict, algorithms=SIGNING_ALGS):
    key = jwk.load_jwk(public_part(public))
    return jws.verify(token, lambda header: key, algorithms)


def _serializations(example: dict) -> list:
    """The JSON serializations of a cookbook example, as a peer would send them (text)."""
    out = example.get("output", {})
    return [json.dumps(out[name]) for name in ("json", "json_flat") if name in out]


# --- the module's token ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token():
    """Every private key an accepted RFC JWE is encrypted to; imported before the HSM opens."""
    vt = VectorToken("vectors-rfc")
    labels = {
        "5.2": vt.add(private_key_from_jwk(JWE_52["input"]["key"]), "RSA-OAEP", "enc"),
        "5.4": vt.add(private_key_from_jwk(JWE_54["input"]["key"]), "ECDH-ES+A128KW", "enc"),
        "5.5": vt.add(private_key_from_jwk(JWE_55["input"]["key"]), "ECDH-ES", "enc"),
        "6": vt.add(private_key_from_jwk(NESTED["encrypt"]["input"]["key"]), "RSA-OAEP", "enc"),
        "7516-A.1": vt.add(private_key_from_jwk(APPENDIX["rfc7516"]["A.1"]["key"]), "RSA-OAEP", "enc"),
    }
    vt.open()
    yield vt, labels
    vt.close()


def _decrypt(token_str: str, key, algorithms=KEY_MANAGEMENT_ALGS, encryptions=ENCRYPTIONS):
    return jwe.decrypt(token_str, lambda header: key, algorithms, encryptions)


# --- RFC 7520 §4: signatures ---------------------------------------------------------------------------


def test_cookbook_4_1_rs256_verifies():
    verified = _verify(JWS_41["output"]["compact"], JWS_41["input"]["key"])
    assert verified.payload.decode("utf-8") == JWS_41["input"]["payload"]
    assert verified.header == JWS_41["signing"]["protected"]
    # The same signature under the RFC's own key *as a key set*, selected by kid (how clients are found).
    keys = jwk.JWKSet.from_dict({"keys": [{**public_part(JWS_41["input"]["key"]), "alg": "RS256"}]})
    assert jws.verify(JWS_41["output"]["compact"], lambda h: keys.select(h["alg"], "sig", h.get("kid")), ["RS256"])


def test_cookbook_4_1_refused_when_rs256_not_allowed_or_key_bound_to_ps256():
    token_str = JWS_41["output"]["compact"]
    with pytest.raises(RefusedAlgorithm):
        jws.verify(token_str, forbid_key_selection, ["ES256", "PS256"])
    ps256_key = jwk.load_jwk({**public_part(JWS_41["input"]["key"]), "alg": "PS256"})
    with pytest.raises(RefusedAlgorithm):
        jws.verify(token_str, lambda header: ps256_key, SIGNING_ALGS)


@pytest.mark.parametrize(
    ("example", "alg"),
    [
        ("jws/4_2.rsa-pss_signature.json", "PS384"),
        ("jws/4_3.ecdsa_signature.json", "ES512"),
        ("jws/4_4.hmac-sha2_integrity_protection.json", "HS256"),
        ("jws/4_5.signature_with_detached_content.json", "HS256"),
        ("rfc7797/hmac-sha2_b64_false.json", "HS256"),
    ],
)
def test_cookbook_signatures_outside_our_profile_are_refused(example, alg):
    data = cookbook(example)
    header = compact.parse_json_object(b64u_lenient(data["output"]["compact"].split(".")[0]))
    assert header["alg"] == alg
    with pytest.raises(RefusedAlgorithm):
        jws.verify(data["output"]["compact"], forbid_key_selection, SIGNING_ALGS)


def test_rfc7797_b64_false_refused_even_with_an_allowed_alg():
    """b64=false (with crit) is refused as a header feature, whatever the alg (RFC 7797, RFC 8725)."""
    data = cookbook("rfc7797/hmac-sha2_b64_false.json")
    head = b64u(json.dumps({"alg": "ES256", "b64": False, "crit": ["b64"]}).encode())
    with pytest.raises(RefusedAlgorithm):
        jws.verify(head + "." + data["input"]["payload"] + ".AAAA", forbid_key_selection, SIGNING_ALGS)
    head = b64u(json.dumps({"alg": "ES256", "b64": False}).encode())  # without crit, too
    with pytest.raises(RefusedAlgorithm):
        jws.verify(head + ".cGF5bG9hZA.AAAA", forbid_key_selection, SIGNING_ALGS)


@pytest.mark.parametrize(
    "example",
    [
        "jws/4_1.rsa_v15_signature.json",
        "jws/4_2.rsa-pss_signature.json",
        "jws/4_3.ecdsa_signature.json",
        "jws/4_4.hmac-sha2_integrity_protection.json",
        "jws/4_5.signature_with_detached_content.json",
        "jws/4_6.protecting_specific_header_fields.json",
        "jws/4_7.protecting_content_only.json",
        "jws/4_8.multiple_signatures.json",
        "rfc7797/4.2.hmac-sha2_b64_false.json",
        "rfc7797/hmac-sha2_b64_false.json",
        "curve25519/jws.json",
    ],
)
def test_cookbook_jws_json_serializations_refused(example):
    """General and flattened JSON (incl. multiple signatures, unprotected headers): compact only."""
    serializations = _serializations(cookbook(example))
    assert serializations
    for text in serializations:
        with pytest.raises(MalformedJose):
            jws.verify(text, forbid_key_selection, SIGNING_ALGS)


def test_rfc8037_ed25519_jws_verifies():
    verified = _verify(ED25519_JWS["output"]["compact"], ED25519_JWS["input"]["key"])
    assert verified.payload == ED25519_JWS["input"]["payload"].encode()
    assert verified.header == {"alg": "EdDSA"}
    appendix = DPOP_THUMBPRINTS["rfc8037"]
    assert appendix["A.4_jws_compact"] == ED25519_JWS["output"]["compact"]
    verified = _verify(appendix["A.4_jws_compact"], appendix["A.2_public_jwk"])
    assert verified.payload == appendix["A.4_payload_utf8"].encode()


# --- RFC 7520 §5: encryption ---------------------------------------------------------------------------


def test_cookbook_5_2_rsa_oaep_a256gcm_decrypts_in_token(token):
    vt, labels = token
    decrypted = _decrypt(JWE_52["output"]["compact"], vt.key(labels["5.2"]))
    assert decrypted.plaintext.decode("utf-8") == JWE_52["input"]["plaintext"]
    assert decrypted.header["kid"] == JWE_52["input"]["key"]["kid"]


def test_cookbook_5_4_ecdh_es_a128kw_p384_decrypts_in_token(token):
    vt, labels = token
    key = vt.key(labels["5.4"])
    assert key.crv == "P-384" and key.alg == "ECDH-ES+A128KW"
    decrypted = _decrypt(JWE_54["output"]["compact"], key)
    assert decrypted.plaintext.decode("utf-8") == JWE_54["input"]["plaintext"]


def test_cookbook_5_5_ecdh_es_a128cbc_hs256_decrypts_in_token(token):
    vt, labels = token
    decrypted = _decrypt(JWE_55["output"]["compact"], vt.key(labels["5.5"]))
    assert decrypted.plaintext.decode("utf-8") == JWE_55["input"]["plaintext"]


def test_cookbook_accepted_jwes_need_the_right_key_alg(token):
    """A token key serves exactly its recorded alg: 5.4 (ECDH-ES+A128KW) with the 5.5 ECDH-ES key."""
    vt, labels = token
    with pytest.raises(RefusedAlgorithm):
        _decrypt(JWE_54["output"]["compact"], vt.key(labels["5.5"]))
    with pytest.raises(RefusedAlgorithm):  # and only when the caller allows the alg/enc at all
        _decrypt(JWE_52["output"]["compact"], vt.key(labels["5.2"]), algorithms=["RSA-OAEP-256"])
    with pytest.raises(RefusedAlgorithm):
        _decrypt(JWE_55["output"]["compact"], vt.key(labels["5.5"]), encryptions=["A128GCM", "A256GCM"])


@pytest.mark.parametrize(
    ("example", "why"),
    [
        ("jwe/5_1.key_encryption_using_rsa_v15_and_aes-hmac-sha2.json", "RSA1_5"),
        ("jwe/5_3.key_wrap_using_pbes2-aes-keywrap_with-aes-cbc-hmac-sha2.json", "PBES2"),
        ("jwe/5_6.direct_encryption_using_aes-gcm.json", "dir"),
        ("jwe/5_7.key_wrap_using_aes-gcm_keywrap_with_aes-cbc-hmac-sha2.json", "A256GCMKW"),
        ("jwe/5_8.key_wrap_using_aes-keywrap_with_aes-gcm.json", "A128KW"),
        ("jwe/5_9.compressed_content.json", "zip"),
    ],
)
def test_cookbook_encryptions_outside_our_profile_are_refused(example, why):
    data = cookbook(example)
    token_str = data["output"]["compact"]
    assert why in b64u_lenient(token_str.split(".")[0]).decode()
    with pytest.raises(RefusedAlgorithm):
        jwe.decrypt(token_str, forbid_key_selection, KEY_MANAGEMENT_ALGS, ENCRYPTIONS)


def test_cookbook_5_1_rsa1_5_never_reaches_the_token_even_if_allowed(token):
    """A misconfigured allow-list naming RSA1_5 still cannot make us decrypt PKCS#1 v1.5."""
    vt, labels = token
    counting = CountingDecrypter(vt.key(labels["5.2"]))
    data = cookbook("jwe/5_1.key_encryption_using_rsa_v15_and_aes-hmac-sha2.json")
    with pytest.raises(RefusedAlgorithm):
        jwe.decrypt(
            data["output"]["compact"], lambda h: counting, (*KEY_MANAGEMENT_ALGS, "RSA1_5"), (*ENCRYPTIONS, "A128CBC-HS256")
        )
    assert counting.calls == 0


@pytest.mark.parametrize(
    "example",
    [
        "jwe/5_1.key_encryption_using_rsa_v15_and_aes-hmac-sha2.json",
        "jwe/5_2.key_encryption_using_rsa-oaep_with_aes-gcm.json",
        "jwe/5_3.key_wrap_using_pbes2-aes-keywrap_with-aes-cbc-hmac-sha2.json",
        "jwe/5_4.key_agreement_with_key_wrapping_using_ecdh-es_and_aes-keywrap_with_aes-gcm.json",
        "jwe/5_5.key_agreement_using_ecdh-es_with_aes-cbc-hmac-sha2.json",
        "jwe/5_6.direct_encryption_using_aes-gcm.json",
        "jwe/5_7.key_wrap_using_aes-gcm_keywrap_with_aes-cbc-hmac-sha2.json",
        "jwe/5_8.key_wrap_using_aes-keywrap_with_aes-gcm.json",
        "jwe/5_9.compressed_content.json",
        "jwe/5_10.including_additional_authentication_data.json",
        "jwe/5_11.protecting_specific_header_fields.json",
        "jwe/5_12.protecting_content_only.json",
        "jwe/5_13.encrypting_to_multiple_recipients.json",
        "curve25519/ecdh-es.json",
    ],
)
def test_cookbook_jwe_json_serializations_refused(example):
    """JSON serializations (AAD, unprotected headers, multiple recipients): compact only."""
    serializations = _serializations(cookbook(example))
    assert serializations
    for text in serializations:
        with pytest.raises(MalformedJose):
            jwe.decrypt(text, forbid_key_selection, KEY_MANAGEMENT_ALGS, ENCRYPTIONS)


def test_curve25519_x25519_epk_refused_before_the_token(token):
    """ECDH-ES is ours, X25519 is not: even handed our P-256 ECDH-ES key, the OKP epk is refused."""
    vt, labels = token
    counting = CountingDecrypter(vt.key(labels["5.5"]))
    with pytest.raises(MalformedJose):  # the epk is not an EC key: refused as a header error
        jwe.decrypt(X25519_JWE["output"]["compact"], lambda h: counting, KEY_MANAGEMENT_ALGS, ENCRYPTIONS)
    assert counting.calls == 0


# --- RFC 7520 §6: nesting ---------------------------------------------------------------------------


def test_cookbook_6_nested_jws_in_jwe(token):
    vt, labels = token
    decrypted = _decrypt(NESTED["encrypt"]["output"]["compact"], vt.key(labels["6"]))
    inner = jwt.unnest(decrypted)
    assert inner.decode("ascii") == NESTED["sign"]["output"]["compact"]
    verified = _verify(inner, NESTED["sign"]["input"]["key"])
    assert verified.header == {"alg": "PS256", "typ": "JWT"}
    assert jwt.decode_claims(verified.payload) == json.loads(NESTED["sign"]["input"]["payload"])


# --- RFC 7515 / RFC 7516 appendices ------------------------------------------------------------------


def test_rfc7515_a2_rs256_verifies():
    a2 = APPENDIX["rfc7515"]["A.2"]
    verified = _verify(a2["compact"], a2["key"])
    assert verified.header == json.loads(a2["protected_utf8"])
    assert jwt.decode_claims(verified.payload)["iss"] == "joe"
    assert b64u(verified.payload) == a2["payload_b64u"]


def test_rfc7515_a3_es256_verifies():
    a3 = APPENDIX["rfc7515"]["A.3"]
    verified = _verify(a3["compact"], a3["key"])
    assert b64u(verified.payload) == a3["payload_b64u"]
    # ES256 is bound to P-256: the same signature under a key restricted to ES384 is refused.
    with pytest.raises((RefusedAlgorithm, InvalidKey)):
        _verify(a3["compact"], {**a3["key"], "alg": "ES384"})


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ("A.1", RefusedAlgorithm),  # HS256
        ("A.4", RefusedAlgorithm),  # ES512
        ("A.5", RefusedAlgorithm),  # alg none
        ("E", RefusedAlgorithm),  # crit names an extension we do not process
    ],
)
def test_rfc7515_refusals(section, error):
    compact_str = APPENDIX["rfc7515"][section]["compact"]
    with pytest.raises(error) as info:
        jws.verify(compact_str, forbid_key_selection, SIGNING_ALGS)
    if section == "E":
        assert "crit" in str(info.value)


def test_rfc7515_alg_none_refused_even_if_a_caller_lists_it():
    with pytest.raises(RefusedAlgorithm):
        jws.verify(APPENDIX["rfc7515"]["A.5"]["compact"], forbid_key_selection, (*SIGNING_ALGS, "none"))


@pytest.mark.parametrize("section", ["A.6", "A.7"])
def test_rfc7515_json_serializations_refused(section):
    body = APPENDIX["rfc7515"][section]
    serialized = json.dumps(body.get("general_json") or body.get("flattened_json"))
    with pytest.raises(MalformedJose):
        jws.verify(serialized, forbid_key_selection, SIGNING_ALGS)


def test_rfc7516_a1_rsa_oaep_a256gcm_decrypts_in_token(token):
    vt, labels = token
    a1 = APPENDIX["rfc7516"]["A.1"]
    decrypted = _decrypt(a1["compact"], vt.key(labels["7516-A.1"]))
    assert decrypted.plaintext.decode() == a1["plaintext"]
    assert decrypted.header == {"alg": "RSA-OAEP", "enc": "A256GCM"}


@pytest.mark.parametrize("section", ["A.2", "A.3"])  # RSA1_5, A128KW
def test_rfc7516_refusals(section):
    with pytest.raises(RefusedAlgorithm):
        jwe.decrypt(APPENDIX["rfc7516"][section]["compact"], forbid_key_selection, KEY_MANAGEMENT_ALGS, ENCRYPTIONS)


def test_rfc7516_a4_two_recipients_refused():
    serialized = json.dumps(APPENDIX["rfc7516"]["A.4"]["general_json"])
    with pytest.raises(MalformedJose):
        jwe.decrypt(serialized, forbid_key_selection, KEY_MANAGEMENT_ALGS, ENCRYPTIONS)


# --- RFC 7638, RFC 8037 thumbprints and RFC 9449 DPoP figures ----------------------------------------


def test_rfc7638_thumbprint_example():
    example = DPOP_THUMBPRINTS["rfc7638_thumbprint"]
    key = jwk.load_jwk(example["jwk"])  # alg and kid are present and must not change the thumbprint
    assert key.thumbprint == example["expected_sha256_thumbprint"]
    assert jwk.thumbprint(key.key) == example["expected_sha256_thumbprint"]
    canonical = json.dumps(jwk._required_members(key.key), separators=(",", ":"), sort_keys=True)
    assert canonical == example["canonical_input"]


def test_rfc8037_ed25519_thumbprint_and_private_jwk_refused():
    appendix = DPOP_THUMBPRINTS["rfc8037"]
    key = jwk.load_jwk(appendix["A.2_public_jwk"])
    assert key.thumbprint == appendix["A.3_thumbprint"]["expected"]
    assert key.allows("EdDSA", "sig") and not key.allows("ES256", "sig")
    with pytest.raises(InvalidKey):  # a private JWK is never loaded, not even "just the public half"
        jwk.load_jwk(appendix["A.1_private_jwk"])


@pytest.mark.parametrize("figure", list(DPOP_THUMBPRINTS["rfc9449_dpop"]["proofs"]))
def test_rfc9449_dpop_figures_jkt_and_signature(figure):
    proof = DPOP_THUMBPRINTS["rfc9449_dpop"]["proofs"][figure]
    # A DPoP proof is the one place the key legitimately comes from the header `jwk` (RFC 9449 §4.3).
    verified = jws.verify(proof["compact"], lambda header: jwk.load_jwk(header["jwk"]), ["ES256"])
    assert verified.header == proof["header"]
    assert compact.typ_is(verified.header, "dpop+jwt")
    assert jwt.decode_claims(verified.payload) == proof["payload"]
    assert verified.key.thumbprint == proof["expected_jkt"] == DPOP_THUMBPRINTS["rfc9449_dpop"]["expected_cnf_jkt"]
    if "ath" in proof["payload"]:
        access_token = DPOP_THUMBPRINTS["rfc9449_dpop"]["access_token_fig6"]
        assert b64u(hashlib.sha256(access_token.encode("ascii")).digest()) == proof["payload"]["ath"]
