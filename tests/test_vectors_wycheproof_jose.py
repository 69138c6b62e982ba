"""Wycheproof JOSE-level vectors (JWS, JWE, JWK, JWS/JWE with key sets) against our JOSE layer.

Every tcId of json_web_{signature,encryption,key,crypto}_test.json is classified (see
tests/vector_helpers.py) and checked:

* JWS through ``jws.verify`` with the group's *public* keys as a ``JWKSet`` (``select`` by kid);
* JWE through ``jwe.decrypt`` with the group's private key imported into a SoftHSM token of this
  module (``vectors-wp-jose``), bound to the group's alg, so RSA-OAEP and ECDH run in the token.

Strict divergences (vector expects leniency, we refuse on purpose) are listed below with the reason
and the refusal we assert; docs/jose-conformance.md reports the same numbers (``EXPECTED_TALLIES``).
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from flask_oauth_hsm.errors import DecryptionFailed, InvalidKey, MalformedJose, RefusedAlgorithm
from flask_oauth_hsm.jose import compact, jwe, jwk, jws
from vector_helpers import (
    ACCEPTABLE,
    DIVERGENCE,
    ENCRYPTIONS,
    KEY_MANAGEMENT_ALGS,
    MATCH,
    SIGNING_ALGS,
    UNSUPPORTED,
    Tally,
    VectorToken,
    attempt,
    b64u_lenient,
    check_count,
    forbid_key_selection,
    is_compact,
    lenient_header,
    private_key_from_jwk,
    skip_without_vectors,
    wycheproof,
    wycheproof_cases,
)

skip_without_vectors()

JWS_FILE = "json_web_signature_test.json"
JWE_FILE = "json_web_encryption_test.json"
JWK_FILE = "json_web_key_test.json"
CRYPTO_FILE = "json_web_crypto_test.json"
FILES = (JWS_FILE, JWE_FILE, JWK_FILE, CRYPTO_FILE)
DATA = {name: wycheproof(name) for name in FILES}

_KEY_ALG_BINDING = (
    "RFC 7520 figure signed with {hdr}, but the group's key carries alg {key}: a verifier that binds "
    "the key's alg to the header alg refuses it (RFC 7517 §4.4, RFC 8725 §3.1; vectors README). "
    "{hdr} is also outside our allow-list."
)
# tcId -> (reason, the JoseError subclass our refusal must be)
DIVERGENCES: dict[str, dict[int, tuple[str, type]]] = {
    JWS_FILE: {
        346: (_KEY_ALG_BINDING.format(hdr="PS384", key="PS256"), RefusedAlgorithm),
        347: (_KEY_ALG_BINDING.format(hdr="ES512", key="ES521 (not a registered alg)"), RefusedAlgorithm),
        350: (_KEY_ALG_BINDING.format(hdr="PS384", key="PS256") + " (key_ops variant)", RefusedAlgorithm),
        351: (_KEY_ALG_BINDING.format(hdr="ES512", key="ES521") + " (key_ops variant)", RefusedAlgorithm),
        372: (
            "'?' inserted into the protected header: not base64url (RFC 7515 §2, RFC 4648 §5); a "
            "lenient decoder skips it, our strict decoder refuses the token",
            MalformedJose,
        ),
        373: (
            "'?' inserted into the payload: not base64url; our strict decoder refuses it (see "
            "test_base64_group_with_strict_decoder). Via jws.verify the HS256 refusal comes first",
            RefusedAlgorithm,
        ),
    },
    JWE_FILE: {},
    JWK_FILE: {},
    CRYPTO_FILE: {},
}

# Per-file counts per category; docs/jose-conformance.md shows exactly these numbers.
EXPECTED_TALLIES = {
    JWS_FILE: {MATCH: 325, UNSUPPORTED: 70, DIVERGENCE: 6},
    JWE_FILE: {MATCH: 42, UNSUPPORTED: 97},
    JWK_FILE: {MATCH: 11, UNSUPPORTED: 15},
    CRYPTO_FILE: {MATCH: 45, UNSUPPORTED: 38},
}


def _token(test: dict):
    return test["jws"] if "jws" in test else test["jwe"]


def _group_key(group: dict) -> dict:
    keys = group.get("public") or group.get("private")
    return keys["keys"][0] if "keys" in keys else keys


def classify(name: str, group: dict, test: dict) -> str:
    """Static category of one case (see vector_helpers): decided from the vector data alone."""
    if test["tcId"] in DIVERGENCES[name]:
        return DIVERGENCE
    token = _token(test)
    if not is_compact(token):
        return UNSUPPORTED  # JSON serialization: we accept compact only (RFC 7515 §7.1, §7.2)
    header = lenient_header(token) or {}
    alg = header.get("alg") if isinstance(header.get("alg"), str) else _group_key(group).get("alg")
    if "jws" in test:
        supported = alg in SIGNING_ALGS
    else:
        enc = header.get("enc", test.get("enc"))  # None: header unreadable, the group decides
        supported = alg in KEY_MANAGEMENT_ALGS and (enc is None or enc in ENCRYPTIONS)
    if not supported or "zip" in header or "b64" in header:
        return UNSUPPORTED
    return ACCEPTABLE if test["result"] == "acceptable" else MATCH


def _cases(*names: str, kind: str):
    out = []
    for name in names:
        for gi, _group, test in wycheproof_cases(DATA[name]):
            if kind in test:
                out.append(pytest.param(name, gi, test["tcId"], id=f"{name.split('_test')[0]}-tc{test['tcId']}"))
    return out


def _lookup(name: str, gi: int, tc_id: int) -> tuple[dict, dict]:
    group = DATA[name]["testGroups"][gi]
    (test,) = [t for t in group["tests"] if t["tcId"] == tc_id]
    return group, test


# --- the token holding every JWE group's private key -------------------------------------------------


def _jwe_group_keys():
    """(file, group index, private JWK) of every JWE group whose key we can hold in the token."""
    for name in (JWE_FILE, CRYPTO_FILE):
        for gi, group in enumerate(DATA[name]["testGroups"]):
            private = group.get("private", {})
            if any("jwe" in t for t in group["tests"]) and private.get("alg") in KEY_MANAGEMENT_ALGS:
                yield name, gi, private


@pytest.fixture(scope="module")
def jwe_keys():
    """{(file, group index): token key label}; all imports happen before the HSM is opened."""
    token = VectorToken("vectors-wp-jose")
    labels = {}
    for name, gi, private in _jwe_group_keys():
        labels[(name, gi)] = token.add(private_key_from_jwk(private), private["alg"], "enc")
    token.open()
    yield token, labels
    token.close()


def _jws_key_for(group: dict):
    keys = group.get("public") or group.get("private")
    jwks = keys if "keys" in keys else {"keys": [keys]}

    def key_for(header: dict) -> jwk.PublicJWK:
        # The verifier's own key set for this peer, selected by kid and bound to the header alg.
        # Private or symmetric members make JWKSet.from_dict refuse the whole set (InvalidKey).
        return jwk.JWKSet.from_dict(jwks).select(header["alg"], "sig", header.get("kid"))

    return key_for


def _check(category: str, name: str, test: dict, outcome, expected_plaintext: bytes | None = None) -> None:
    tc_id = test["tcId"]
    if category == MATCH:
        if test["result"] == "valid":
            assert outcome.accepted, f"tcId {tc_id} ({test['comment']}) is valid but refused: {outcome.error!r}"
            if expected_plaintext is not None:
                assert outcome.value.plaintext == expected_plaintext
        else:
            assert not outcome.accepted, f"tcId {tc_id} ({test['comment']}) is invalid but was accepted"
    elif category == UNSUPPORTED:
        assert not outcome.accepted, f"tcId {tc_id}: an unsupported algorithm was accepted"
        assert isinstance(outcome.error, (RefusedAlgorithm, MalformedJose)), (
            f"tcId {tc_id}: unsupported algorithm refused late, with {outcome.error!r}"
        )
    elif category == DIVERGENCE:
        reason, error_type = DIVERGENCES[name][tc_id]
        assert not outcome.accepted, f"tcId {tc_id}: documented strict divergence no longer refused ({reason})"
        assert isinstance(outcome.error, error_type), f"tcId {tc_id}: refused with {outcome.error!r}"
    else:
        assert category == ACCEPTABLE  # none in these files today; record either way
        pytest.skip(f"acceptable: we {'accept' if outcome.accepted else 'refuse'}")


# --- JWS -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "gi", "tc_id"), _cases(JWS_FILE, JWK_FILE, CRYPTO_FILE, kind="jws"))
def test_jws_case(name, gi, tc_id):
    group, test = _lookup(name, gi, tc_id)
    category = classify(name, group, test)
    # An algorithm outside our profile must be refused before any key is even looked up.
    key_for = forbid_key_selection if category == UNSUPPORTED else _jws_key_for(group)
    outcome = attempt(jws.verify, _token(test), key_for, SIGNING_ALGS)
    _check(category, name, test, outcome)


# --- JWE -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "gi", "tc_id"), _cases(JWE_FILE, CRYPTO_FILE, kind="jwe"))
def test_jwe_case(name, gi, tc_id, jwe_keys):
    token, labels = jwe_keys
    group, test = _lookup(name, gi, tc_id)
    category = classify(name, group, test)
    label = labels.get((name, gi))
    group_kid = group.get("private", {}).get("kid")

    def key_for(header: dict):
        kid = header.get("kid")
        if kid is not None and kid != group_kid:
            raise InvalidKey("no key with this kid")
        if label is None:
            raise InvalidKey("no token key for this group")
        return token.key(label)

    outcome = attempt(
        jwe.decrypt,
        _token(test),
        forbid_key_selection if category == UNSUPPORTED else key_for,
        KEY_MANAGEMENT_ALGS,
        ENCRYPTIONS,
    )
    expected = bytes.fromhex(test["pt"]) if "pt" in test else None
    _check(category, name, test, outcome, expected)
    if category == MATCH and test["result"] == "invalid" and _well_formed(_token(test)):
        # RFC 7516 §11.4/§11.5: past the header checks every cause of failure (tag, IV, ciphertext,
        # encrypted key, invalid epk point) is the same single DecryptionFailed.
        assert isinstance(outcome.error, DecryptionFailed), f"tcId {tc_id}: {outcome.error!r}"


def _well_formed(token: str) -> bool:
    """Five segments and a protected header our parser accepts."""
    parts = token.split(".")
    if len(parts) != 5:
        return False
    try:
        compact.parse_protected_header(parts[0].encode())
    except (MalformedJose, RefusedAlgorithm):
        return False
    return True


# --- the base64 group, decided by our strict decoder alone -------------------------------------------

# The base64 group (tcId 357-377) is HS256, which jws.verify refuses before the payload and signature
# are decoded. Here our decoder (compact.parse_protected_header / b64url_decode) decides every
# segment and the MAC is computed test-side with the group's key, so the strictness is exercised.
BASE64_DIVERGENCES = {
    367: "vector comment 'invalidBase64Padding', but this copy of the token carries no '=' at all: "
    "byte-identical to valid tcId 357, so a strict decoder accepts it (padding itself is refused: "
    "test_padded_segments_are_refused)",
    370: "as 367 ('invalidBase64PaddingInPayload'): identical to tcId 357, no padding present",
    372: DIVERGENCES[JWS_FILE][372][0],
    373: "'?' appended to the payload segment: not base64url, our decoder refuses it (RFC 7515 §2)",
}


def _base64_group():
    return [(g, t) for _, g, t in wycheproof_cases(DATA[JWS_FILE]) if g["comment"] == "base64"]


def _strict_hs256(token: str, key: bytes) -> bool:
    head, body, sig = compact.split_compact(token, 3)
    try:
        compact.parse_json_object(compact.b64url_decode(head, "header"), "header")
        compact.b64url_decode(body, "payload")
        mac = compact.b64url_decode(sig, "signature")
    except MalformedJose:
        return False
    return hmac.compare_digest(mac, hmac.new(key, head + b"." + body, hashlib.sha256).digest())


@pytest.mark.parametrize("tc_id", [t["tcId"] for _, t in _base64_group()], ids=lambda i: f"tc{i}")
def test_base64_group_with_strict_decoder(tc_id):
    group, test = next((g, t) for g, t in _base64_group() if t["tcId"] == tc_id)
    accepted = _strict_hs256(test["jws"], b64u_lenient(group["private"]["k"]))
    if tc_id in (372, 373):
        assert not accepted, BASE64_DIVERGENCES[tc_id]
    elif tc_id in (367, 370):
        assert accepted, BASE64_DIVERGENCES[tc_id]
    else:
        assert accepted == (test["result"] == "valid"), test["comment"]


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_padded_segments_are_refused(segment):
    """What 367/370 describe: '=' padding in any segment is refused (RFC 7515 §2), before crypto."""
    (valid,) = [t["jws"] for _, t in _base64_group() if t["tcId"] == 357]
    parts = valid.split(".")
    for pad in ("=", "==", "%3D"):
        mangled = ".".join(p + pad if i == segment else p for i, p in enumerate(parts))
        with pytest.raises(MalformedJose):
            if segment == 0:
                jws.verify(mangled, forbid_key_selection, SIGNING_ALGS)
            else:
                compact.b64url_decode(mangled.split(".")[segment])


# --- bookkeeping ---------------------------------------------------------------------------------------


def _tally(name: str) -> Tally:
    tally = Tally()
    for _, group, test in wycheproof_cases(DATA[name]):
        tally.add(classify(name, group, test), test["tcId"])
    return tally


@pytest.mark.parametrize("name", FILES)
def test_tally_matches_conformance_doc(name):
    tally = _tally(name)
    assert tally.total == check_count(DATA[name])
    assert sorted(tally.divergent) == sorted(DIVERGENCES[name])
    assert tally.as_dict() == EXPECTED_TALLIES[name]
