"""Wycheproof primitive vectors at the boundaries our JOSE layer and HSM adapter own.

* ECDSA P-256/P-384 raw r||s (ES256/ES384), RSASSA-PSS (PS256), RSASSA-PKCS1-v1_5 (RS256) and
  Ed25519 (EdDSA): public JWK through ``jwk.load_jwk``, signature through ``jws.verify_signature``.
* RSAES-OAEP (RSA-OAEP, RSA-OAEP-256): the private key imported into this module's SoftHSM token,
  ``TokenKey.rsa_decrypt`` in the token; every invalid ciphertext must raise DecryptionFailed.
* ECDH P-256/P-384 (WebCrypto JWK peer keys, i.e. the JWE ``epk`` shape): the peer JWK goes through
  the JWE ``epk`` path (``load_jwk`` + curve binding); invalid points must be refused before the
  token is asked; valid ones derive the expected Z through ``TokenKey.ecdh`` in the token.
* AES-GCM (96-bit IV, 128-bit tag, 128/256-bit keys: A128GCM/A256GCM) through the JWE content
  decryption; AES key wrap through the JWE ECDH-ES+A*KW unwrap step; RSA PKCS#1 v1.5 only to prove
  RSA1_5 JWEs are refused before any cryptography.

Categories and tallies: see tests/vector_helpers.py and docs/jose-conformance.md.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from flask_oauth_hsm.algorithms import CONTENT_ENCRYPTION, KEY_MANAGEMENT, SIGNING
from flask_oauth_hsm.errors import DecryptionFailed, InvalidKey, InvalidSignature, RefusedAlgorithm
from flask_oauth_hsm.jose import jwe, jwk, jws
from flask_oauth_hsm.jose.jwk import public_jwk_dict
from vector_helpers import (
    ACCEPTABLE,
    DIVERGENCE,
    ENCRYPTIONS,
    KEY_MANAGEMENT_ALGS,
    MATCH,
    OUT_OF_PROFILE,
    UNSUPPORTED,
    CountingDecrypter,
    Tally,
    VectorToken,
    attempt,
    b64u,
    check_count,
    ec_jwk_from_uncompressed,
    forbid_key_selection,
    private_key_from_jwk,
    skip_without_vectors,
    wycheproof,
    wycheproof_cases,
)

skip_without_vectors()

SIGNATURE_FILES = {  # file -> JOSE alg
    "ecdsa_secp256r1_sha256_p1363_test.json": "ES256",
    "ecdsa_secp384r1_sha384_p1363_test.json": "ES384",
    "rsa_pss_2048_sha256_mgf1_32_test.json": "PS256",
    "rsa_pss_3072_sha256_mgf1_32_test.json": "PS256",
    "rsa_signature_2048_sha256_test.json": "RS256",
    "rsa_signature_3072_sha256_test.json": "RS256",
    "ed25519_test.json": "EdDSA",
}
OAEP_FILES = {
    "rsa_oaep_2048_sha1_mgf1sha1_test.json": "RSA-OAEP",
    "rsa_oaep_2048_sha256_mgf1sha256_test.json": "RSA-OAEP-256",
    "rsa_oaep_3072_sha256_mgf1sha256_test.json": "RSA-OAEP-256",
}
ECDH_FILES = {"ecdh_secp256r1_webcrypto_test.json": "P-256", "ecdh_secp384r1_webcrypto_test.json": "P-384"}
GCM_FILE = "aes_gcm_test.json"
WRAP_FILE = "aes_wrap_test.json"
PKCS1_FILE = "rsa_pkcs1_2048_test.json"
ALL_FILES = (*SIGNATURE_FILES, *OAEP_FILES, *ECDH_FILES, GCM_FILE, WRAP_FILE, PKCS1_FILE)
DATA = {name: wycheproof(name) for name in ALL_FILES}

# tcId -> reason, per file: the vector expects leniency, we refuse on purpose.
DIVERGENCES: dict[str, dict[int, str]] = {name: {} for name in ALL_FILES}

# Per-file counts per category; docs/jose-conformance.md shows exactly these numbers.
EXPECTED_TALLIES: dict[str, dict[str, int]] = {
    "ecdsa_secp256r1_sha256_p1363_test.json": {MATCH: 262},
    "ecdsa_secp384r1_sha384_p1363_test.json": {MATCH: 280},
    "rsa_pss_2048_sha256_mgf1_32_test.json": {MATCH: 108},
    "rsa_pss_3072_sha256_mgf1_32_test.json": {MATCH: 108},
    "rsa_signature_2048_sha256_test.json": {MATCH: 258, ACCEPTABLE: 1},
    "rsa_signature_3072_sha256_test.json": {MATCH: 258, ACCEPTABLE: 1},
    "ed25519_test.json": {MATCH: 151},
    "rsa_oaep_2048_sha1_mgf1sha1_test.json": {MATCH: 29, OUT_OF_PROFILE: 7},
    "rsa_oaep_2048_sha256_mgf1sha256_test.json": {MATCH: 29, OUT_OF_PROFILE: 8},
    "rsa_oaep_3072_sha256_mgf1sha256_test.json": {MATCH: 29, OUT_OF_PROFILE: 8},
    "ecdh_secp256r1_webcrypto_test.json": {MATCH: 353},
    "ecdh_secp384r1_webcrypto_test.json": {MATCH: 794},
    GCM_FILE: {MATCH: 133, OUT_OF_PROFILE: 183},
    WRAP_FILE: {MATCH: 99, OUT_OF_PROFILE: 64, ACCEPTABLE: 2},
    PKCS1_FILE: {UNSUPPORTED: 67},
}

# Wycheproof "acceptable" cases: which way we go (asserted, so a change is noticed).
ACCEPTABLE_OUTCOMES: dict[str, dict[int, bool]] = {name: {} for name in ALL_FILES}
# PKCS#1 v1.5 DigestInfo without the NULL parameter: OpenSSL (via cryptography) refuses it.
ACCEPTABLE_OUTCOMES["rsa_signature_2048_sha256_test.json"][8] = False
ACCEPTABLE_OUTCOMES["rsa_signature_3072_sha256_test.json"][8] = False
# Wrapping an 8-byte key: unwraps, but no enc of ours has an 8-byte CEK, so the JWE step refuses it.
ACCEPTABLE_OUTCOMES[WRAP_FILE].update({12: False, 109: False})


def _report(failures: list[str]) -> None:
    assert not failures, f"{len(failures)} vector case(s) disagree:\n" + "\n".join(failures[:40])


# --- the module's token: every private key is imported before the HSM is opened ---------------------


def _gcm_in_profile(group: dict) -> bool:
    return group["ivSize"] == 96 and group["tagSize"] == 128 and group["keySize"] in (128, 256)


_WRAP_ALG = {128: "ECDH-ES+A128KW", 256: "ECDH-ES+A256KW"}


@pytest.fixture(scope="module")
def token():
    """OAEP keys, every distinct ECDH private key of the WebCrypto files, two ECDH-ES+A*KW keys."""
    vt = VectorToken("vectors-wp-prim")
    labels: dict = {}
    for name, alg in OAEP_FILES.items():
        group = DATA[name]["testGroups"][0]
        labels[name] = vt.add(private_key_from_jwk(group["privateKeyJwk"]), alg, "enc")
    for name in ECDH_FILES:
        for _, _, test in wycheproof_cases(DATA[name]):
            d = test["private"]["d"]
            if (name, d) not in labels:
                labels[(name, d)] = vt.add(private_key_from_jwk(test["private"]), "ECDH-ES", "enc")
    for alg in _WRAP_ALG.values():
        labels[alg] = vt.add(ec.generate_private_key(ec.SECP256R1()), alg, "enc")
    vt.open()
    yield vt, labels
    vt.close()


# --- signatures (software verification, as for client assertions and DPoP proofs) -------------------


def _signature_key(name: str, group: dict) -> dict:
    jwk_dict = group.get("publicKeyJwk") or group.get("keyJwk")
    if jwk_dict is None:  # a few ECDSA groups publish only the X9.62 point
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[group["publicKey"]["curve"]]
        jwk_dict = ec_jwk_from_uncompressed(crv, group["publicKey"]["uncompressed"])
    return jwk_dict


def classify_signature(name: str, test: dict) -> str:
    if test["tcId"] in DIVERGENCES[name]:
        return DIVERGENCE
    return ACCEPTABLE if test["result"] == "acceptable" else MATCH


@pytest.mark.parametrize("name", list(SIGNATURE_FILES))
def test_signature_vectors(name):
    spec = SIGNING[SIGNATURE_FILES[name]]
    failures = []
    for _, group, test in wycheproof_cases(DATA[name]):
        key = jwk.load_jwk(_signature_key(name, group))  # every published key is a valid key
        assert key.allows(spec.name, "sig")
        outcome = attempt(jws.verify_signature, spec, key, bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"]))
        if not outcome.accepted and not isinstance(outcome.error, InvalidSignature):
            failures.append(f"tcId {test['tcId']}: refused with {outcome.error!r}, not InvalidSignature")
        category = classify_signature(name, test)
        if category == ACCEPTABLE:
            expected = ACCEPTABLE_OUTCOMES[name].get(test["tcId"])
            if outcome.accepted is not expected:
                failures.append(
                    f"tcId {test['tcId']} (acceptable, {test['comment']}): we "
                    f"{'accept' if outcome.accepted else 'refuse'}; documented {expected}"
                )
        elif category == DIVERGENCE:
            if outcome.accepted:
                failures.append(f"tcId {test['tcId']}: documented divergence now accepted")
        elif outcome.accepted != (test["result"] == "valid"):
            failures.append(
                f"tcId {test['tcId']} ({test['result']}, {test['comment']}, {test['flags']}): "
                f"we {'accept' if outcome.accepted else 'refuse'}"
            )
    _report(failures)


# --- RSA-OAEP decryption in the token --------------------------------------------------------------


def classify_oaep(name: str, test: dict) -> str:
    if test["tcId"] in DIVERGENCES[name]:
        return DIVERGENCE
    if test["label"]:
        # RFC 7518 §4.2/§4.3: JOSE uses RSAES-OAEP with the empty label; a labelled ciphertext can
        # only fail to decrypt (asserted as DecryptionFailed below).
        return OUT_OF_PROFILE
    return ACCEPTABLE if test["result"] == "acceptable" else MATCH


def _oaep_results(name: str, token) -> list[tuple[dict, str, bytes | None, BaseException | None]]:
    """(test, category, plaintext or None, exception or None) for every case, decrypted in the token."""
    vt, labels = token
    key = vt.key(labels[name])
    assert key.alg == OAEP_FILES[name] and key.info.spec.kind == "oaep"
    results = []
    for _, _, test in wycheproof_cases(DATA[name]):
        try:
            results.append((test, classify_oaep(name, test), key.rsa_decrypt(bytes.fromhex(test["ct"])), None))
        except Exception as exc:  # noqa: BLE001 - sorted out by the two tests below
            results.append((test, classify_oaep(name, test), None, exc))
    return results


@pytest.mark.parametrize("name", list(OAEP_FILES))
def test_rsa_oaep_valid_ciphertexts_decrypt_in_token(name, token):
    failures = [
        f"tcId {test['tcId']} ({test['comment']}): valid but {error!r}"
        for test, category, plaintext, error in _oaep_results(name, token)
        if category == MATCH and test["result"] == "valid" and plaintext != bytes.fromhex(test["msg"])
    ]
    _report(failures)


# SoftHSM 2.6.1 answers a bad OAEP (SHA-1) padding on its native CKM_RSA_PKCS_OAEP with
# CKR_GENERAL_ERROR; hsm.py used to report that as HSMUnavailable (and reset the module). This test
# found it (13 invalid + 7 labelled ciphertexts of the SHA-1 file); HSM._rsa_oaep now decodes OAEP
# in software over CKM_RSA_X_509 where the token has it.
@pytest.mark.parametrize("name", list(OAEP_FILES))
def test_rsa_oaep_invalid_ciphertexts_raise_only_decryption_failed(name, token):
    """Invalid padding, wrong length, c >= n, a non-empty label: DecryptionFailed and nothing else."""
    failures = []
    for test, category, _plaintext, error in _oaep_results(name, token):
        if category == MATCH and test["result"] == "valid":
            continue
        if error is None:
            failures.append(f"tcId {test['tcId']} ({category}, {test['comment']}): decrypted")
        elif not isinstance(error, DecryptionFailed):
            failures.append(f"tcId {test['tcId']} ({test['comment']}): leaked {type(error).__name__}: {error}")
    _report(failures)


# --- ECDH with WebCrypto JWK peer keys: the JWE epk path --------------------------------------------


def classify_ecdh(name: str, test: dict) -> str:
    if test["tcId"] in DIVERGENCES[name]:
        return DIVERGENCE
    return ACCEPTABLE if test["result"] == "acceptable" else MATCH


@pytest.mark.parametrize("name", list(ECDH_FILES))
def test_ecdh_peer_jwk_and_token_derivation(name, token):
    vt, labels = token
    failures = []
    for _, _, test in wycheproof_cases(DATA[name]):
        tc = test["tcId"]
        decrypter = CountingDecrypter(vt.key(labels[(name, test["private"]["d"])]))
        peer = test["public"]
        loaded = attempt(jwk.load_jwk, peer)
        if not loaded.accepted and not isinstance(loaded.error, InvalidKey):
            failures.append(f"tcId {tc}: load_jwk refused with {loaded.error!r}, not InvalidKey")
        # The JWE path: epk -> load_jwk (on-curve check) -> bound to the token key's curve -> token.
        point = attempt(jwe._peer_point, {"epk": peer}, decrypter)
        if point.accepted:
            z = attempt(decrypter.ecdh, point.value)
            derived = z.value if z.accepted else None
        else:
            derived = None
        if test["result"] == "valid":
            if derived != bytes.fromhex(test["shared"]):
                failures.append(f"tcId {tc} ({test['comment']}): valid, got {point.error or z.error!r}")
        else:
            if derived is not None or point.accepted:
                failures.append(f"tcId {tc} ({test['comment']}): invalid peer key reached the token")
            if decrypter.calls:
                failures.append(f"tcId {tc}: the token was asked to derive with an invalid peer key")
            off_curve = set(test["flags"]) & {"InvalidCurveAttack", "InvalidPublic", "ModifiedPublicPoint"}
            if off_curve and peer.get("crv") == ECDH_FILES[name] and loaded.accepted:
                # (a valid point of *another* curve loads; the curve binding refuses it above)
                failures.append(f"tcId {tc} ({test['comment']}): load_jwk accepted a point off the curve")
    _report(failures)


# --- AES-GCM as the JWE content decryption (A128GCM / A256GCM) ---------------------------------------


def classify_gcm(group: dict, test: dict) -> str:
    if test["tcId"] in DIVERGENCES[GCM_FILE]:
        return DIVERGENCE
    if not _gcm_in_profile(group):
        return OUT_OF_PROFILE  # IV/tag/key sizes RFC 7518 §5.3 never produces: not reachable
    return ACCEPTABLE if test["result"] == "acceptable" else MATCH


def test_aes_gcm_through_jwe_content_decryption():
    failures = []
    for _, group, test in wycheproof_cases(DATA[GCM_FILE]):
        if classify_gcm(group, test) == OUT_OF_PROFILE:
            continue
        enc = CONTENT_ENCRYPTION[{128: "A128GCM", 256: "A256GCM"}[group["keySize"]]]
        key, iv, aad, ct, tag = (bytes.fromhex(test[k]) for k in ("key", "iv", "aad", "ct", "tag"))
        outcome = attempt(jwe._decrypt_content, enc, key, iv, ct, tag, aad)
        if not outcome.accepted and not isinstance(outcome.error, DecryptionFailed):
            failures.append(f"tcId {test['tcId']}: {outcome.error!r}")
        if test["result"] == "valid" and outcome.value != bytes.fromhex(test["msg"]):
            failures.append(f"tcId {test['tcId']} ({test['comment']}): valid, got {outcome.error!r}")
        if test["result"] == "invalid" and outcome.accepted:
            failures.append(f"tcId {test['tcId']} ({test['comment']}): invalid tag accepted")
    _report(failures)


# --- AES key wrap as the ECDH-ES+A*KW unwrap step of JWE decryption --------------------------------


def classify_wrap(group: dict, test: dict) -> str:
    if test["tcId"] in DIVERGENCES[WRAP_FILE]:
        return DIVERGENCE
    if group["keySize"] not in _WRAP_ALG:
        return OUT_OF_PROFILE  # A192KW is not in our profile
    if test["result"] == "acceptable":
        return ACCEPTABLE
    if test["result"] == "valid" and len(test["msg"]) // 2 not in (16, 32):
        return OUT_OF_PROFILE  # unwraps, but no enc of ours has a CEK of that length: refused
    return MATCH


def test_aes_key_wrap_through_jwe_unwrap(token, monkeypatch):
    """jwe._recover_cek for ECDH-ES+A128KW/A256KW with the vector's key as the KEK.

    The token ECDH with a real ephemeral key and our unwrap, CEK-length check and error mapping all
    run; only the Concat KDF output is replaced by the vector's KEK (it cannot be chosen otherwise).
    """
    vt, labels = token
    failures = []
    for _, group, test in wycheproof_cases(DATA[WRAP_FILE]):
        category = classify_wrap(group, test)
        if group["keySize"] not in _WRAP_ALG:
            continue
        spec = KEY_MANAGEMENT[_WRAP_ALG[group["keySize"]]]
        kek, msg, wrapped = (bytes.fromhex(test[k]) for k in ("key", "msg", "ct"))
        enc = CONTENT_ENCRYPTION["A256GCM" if len(msg) == 32 else "A128GCM"]

        def fixed_kek(z, algorithm_id, key_len, header, kek=kek, spec=spec):
            assert algorithm_id == spec.name and key_len == len(kek) and len(z) == 32
            return kek

        monkeypatch.setattr(jwe, "concat_kdf", fixed_kek)
        ephemeral = ec.generate_private_key(ec.SECP256R1()).public_key()
        header = {"alg": spec.name, "enc": enc.name, "epk": public_jwk_dict(ephemeral)}
        outcome = attempt(jwe._recover_cek, header, spec, enc, wrapped, vt.key(labels[spec.name]))
        if not outcome.accepted and not isinstance(outcome.error, DecryptionFailed):
            failures.append(f"tcId {test['tcId']}: {outcome.error!r}")
        if category == MATCH:
            expect = msg if test["result"] == "valid" else None
            if (outcome.value if outcome.accepted else None) != expect:
                failures.append(f"tcId {test['tcId']} ({test['result']}, {test['comment']}): {outcome}")
        elif category == ACCEPTABLE:
            if outcome.accepted is not ACCEPTABLE_OUTCOMES[WRAP_FILE].get(test["tcId"]):
                failures.append(f"tcId {test['tcId']} acceptable: we {'accept' if outcome.accepted else 'refuse'}")
        elif outcome.accepted:
            failures.append(f"tcId {test['tcId']} ({category}): a CEK of {len(msg)} bytes was accepted")
        # Our encrypt direction wraps with the same primitive: deterministic, so a known answer.
        if category == MATCH and test["result"] == "valid" and jwe.aes_key_wrap(kek, msg) != wrapped:
            failures.append(f"tcId {test['tcId']}: aes_key_wrap differs from the vector")
    monkeypatch.undo()
    _report(failures)


# --- RSA PKCS#1 v1.5: RSA1_5 JWEs are refused before any cryptography --------------------------------


def test_rsa1_5_jwe_refused_before_any_cryptography(token):
    vt, labels = token
    oaep_key = CountingDecrypter(vt.key(labels["rsa_oaep_2048_sha1_mgf1sha1_test.json"]))
    failures = []
    for _, _, test in wycheproof_cases(DATA[PKCS1_FILE]):
        head = b64u(b'{"alg":"RSA1_5","enc":"A128GCM"}')
        token_str = ".".join((head, b64u(bytes.fromhex(test["ct"])), b64u(bytes(12)), b64u(b"x"), b64u(bytes(16))))
        for algorithms, key_for in (
            (KEY_MANAGEMENT_ALGS, forbid_key_selection),
            ((*KEY_MANAGEMENT_ALGS, "RSA1_5"), lambda header: oaep_key),  # a misconfigured allow-list
        ):
            outcome = attempt(jwe.decrypt, token_str, key_for, algorithms, ENCRYPTIONS)
            if outcome.accepted or not isinstance(outcome.error, RefusedAlgorithm):
                failures.append(f"tcId {test['tcId']}: {outcome}")
    assert oaep_key.calls == 0, "the token was asked to decrypt an RSA1_5 key"
    _report(failures)


# --- bookkeeping ------------------------------------------------------------------------------------


def _classify(name: str, group: dict, test: dict) -> str:
    if name in SIGNATURE_FILES:
        return classify_signature(name, test)
    if name in OAEP_FILES:
        return classify_oaep(name, test)
    if name in ECDH_FILES:
        return classify_ecdh(name, test)
    if name == GCM_FILE:
        return classify_gcm(group, test)
    if name == WRAP_FILE:
        return classify_wrap(group, test)
    return UNSUPPORTED  # rsa_pkcs1: RSA1_5 is never accepted


@pytest.mark.parametrize("name", ALL_FILES)
def test_tally_matches_conformance_doc(name):
    tally = Tally()
    for _, group, test in wycheproof_cases(DATA[name]):
        category = _classify(name, group, test)
        tally.add(category, test["tcId"])
        if category == ACCEPTABLE:
            assert test["tcId"] in ACCEPTABLE_OUTCOMES[name], f"acceptable tcId {test['tcId']} not documented"
    assert tally.total == check_count(DATA[name])
    assert sorted(tally.divergent) == sorted(DIVERGENCES[name])
    assert tally.as_dict() == EXPECTED_TALLIES[name]
