"""Interop round trips of our JOSE layer with two independent libraries (jwcrypto, joserfc), and the
strict-parsing negatives, all with the real SoftHSM token of the session ``hsm`` fixture.

* token signs (every signing key) -> our ``jws.verify``, jwcrypto and joserfc verify;
  the libraries sign with software keys -> our ``jws.verify``;
* the libraries encrypt to the token's public ``enc`` keys (every alg x enc we support)
  -> our ``jwe.decrypt`` runs the private part in the token;
* our ``jwe.encrypt`` to a software recipient generated here -> jwcrypto and joserfc decrypt
  (the token's private keys never leave it, so this direction needs a software recipient);
* nested JWTs (sign in the token, then encrypt: RFC 7519 §5.2, §11.2) both ways;
* negatives: encodings, duplicate members, crit, b64, zip, none, HS256 with public-key bytes,
  RSA1_5, PBES2, dir, A*KW, size cap, header key hints, key/alg binding, tampering, epk attacks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwe as rfc_jwe, jwk as rfc_jwk, jws as rfc_jws
from jwcrypto import jwe as cry_jwe, jwk as cry_jwk, jws as cry_jws

from flask_oauth_hsm.errors import (
    DecryptionFailed,
    InvalidKey,
    InvalidSignature,
    MalformedJose,
    RefusedAlgorithm,
)
from flask_oauth_hsm.jose import compact, jwe, jwk, jws, jwt
from flask_oauth_hsm.jose.compact import MAX_COMPACT_LEN
from flask_oauth_hsm.jose.jwk import public_jwk_dict
from vector_helpers import (
    ENCRYPTIONS,
    KEY_MANAGEMENT_ALGS,
    SIGNING_ALGS,
    CountingDecrypter,
    b64u,
    b64u_lenient,
    forbid_key_selection,
)

SIGNING_LABELS = {"sig-es256": "ES256", "sig-es384": "ES384", "sig-ps256": "PS256", "sig-rs256": "RS256", "sig-eddsa": "EdDSA"}
ENCRYPTION_LABELS = {
    "enc-rsa-oaep-256": "RSA-OAEP-256",
    "enc-rsa-oaep": "RSA-OAEP",
    "enc-ecdh-es": "ECDH-ES",
    "enc-ecdh-es-a128kw": "ECDH-ES+A128KW",
    "enc-ecdh-es-a256kw": "ECDH-ES+A256KW",
}
LIBRARIES = ("jwcrypto", "joserfc")
CLAIMS = {
    "iss": "https://as.example.com",
    "sub": "client-1",
    "aud": "https://rs.example.com",
    "iat": 1700000000,
    "exp": 1700000300,
    "jti": "c3a7b3e2",
    "scope": "read write",
    "name": "Zoë",
}
PLAINTEXT = "Geheimnis — ∑ secret ✓".encode() * 7
DECRYPTION_FAILED = "JWE could not be decrypted"


@pytest.fixture(autouse=True)
def _quiet_library_warnings():
    # joserfc warns about algorithms it no longer recommends (RSA-OAEP, EdDSA): we test them on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _key_set_resolver(*public_jwks: dict, use: str = "sig"):
    keys = jwk.JWKSet.from_dict({"keys": list(public_jwks)})
    return lambda header: keys.select(header["alg"], use, header.get("kid"))


def _token_resolver(hsm, label: str):
    """Key resolver over the token: the kid must name this key (the way endpoints pick enc keys)."""
    key = hsm.key(label)

    def key_for(header: dict):
        if header.get("kid", key.kid) != key.kid:
            raise InvalidKey("no such kid")
        return key

    return key_for


def _sign_raw(signer, header: bytes | dict, payload: bytes) -> str:
    """A compact JWS over arbitrary header bytes, signed in the token (for malformed-but-signed input)."""
    head = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    signing_input = b64u(head) + "." + b64u(payload)
    return signing_input + "." + b64u(signer.sign(signing_input.encode("ascii")))


# --- libraries ---------------------------------------------------------------------------------------------


def lib_verify(lib: str, token: str, public: dict, alg: str) -> bytes:
    if lib == "jwcrypto":
        obj = cry_jws.JWS()
        obj.deserialize(token)
        obj.allowed_algs = [alg]
        obj.verify(cry_jwk.JWK(**public))
        return obj.payload
    return rfc_jws.deserialize_compact(token, rfc_jwk.import_key(public), algorithms=[alg]).payload


def lib_sign(lib: str, payload: bytes, private, alg: str, kid: str) -> str:
    if lib == "jwcrypto":
        obj = cry_jws.JWS(payload)
        obj.allowed_algs = [alg]
        obj.add_signature(cry_jwk.JWK.from_pyca(private), alg, protected={"alg": alg, "kid": kid})
        return obj.serialize(compact=True)
    key = rfc_jwk.import_key(_private_dict(private))
    return rfc_jws.serialize_compact({"alg": alg, "kid": kid}, payload, key, algorithms=[alg])


def lib_encrypt(lib: str, plaintext: bytes, public: dict, alg: str, enc: str, **header) -> str:
    protected = {"alg": alg, "enc": enc, **header}
    if lib == "jwcrypto":
        obj = cry_jwe.JWE(plaintext, protected=json.dumps(protected))
        obj.allowed_algs = [alg, enc]
        obj.add_recipient(cry_jwk.JWK(**public))
        return obj.serialize(compact=True)
    return rfc_jwe.encrypt_compact(protected, plaintext, rfc_jwk.import_key(public), algorithms=[alg, enc])


def lib_decrypt(lib: str, token: str, private, alg: str, enc: str) -> tuple[dict, bytes]:
    if lib == "jwcrypto":
        obj = cry_jwe.JWE()
        obj.allowed_algs = [alg, enc]
        obj.deserialize(token, key=cry_jwk.JWK.from_pyca(private))
        return obj.jose_header, obj.payload
    obj = rfc_jwe.decrypt_compact(token, rfc_jwk.import_key(_private_dict(private)), algorithms=[alg, enc])
    return dict(obj.protected), obj.plaintext


def _private_dict(private) -> dict:
    return cry_jwk.JWK.from_pyca(private).export(as_dict=True, private_key=True)


# --- signatures ------------------------------------------------------------------------------------------------


def test_every_signing_key_of_the_token_is_covered(hsm):
    in_token = {info.alg for info in hsm.list_keys() if getattr(info, "use", None) == "sig"}  # secret keys have no use
    assert in_token <= set(SIGNING_LABELS.values()) == set(SIGNING_ALGS)


@pytest.mark.parametrize("label", list(SIGNING_LABELS))
def test_token_signature_verifies_with_ours_and_both_libraries(hsm, label):
    signer = hsm.key(label)
    assert signer.alg == SIGNING_LABELS[label]
    public = signer.public_jwk()
    assert public["kid"] == signer.kid == jwk.thumbprint(signer.public_key)  # kid is the RFC 7638 thumbprint
    payload = jwt.encode_claims(CLAIMS)
    token = jwt.sign_jwt(CLAIMS, signer, "JWT")
    verified = jws.verify(token, _key_set_resolver(public), [signer.alg])
    assert verified.payload == payload and verified.header == {"typ": "JWT", "alg": signer.alg, "kid": signer.kid}
    assert jwt.decode_claims(verified.payload) == CLAIMS
    for lib in LIBRARIES:
        assert lib_verify(lib, token, public, signer.alg) == payload, lib


@pytest.mark.parametrize("label", ["sig-es256", "sig-es384"])
def test_ecdsa_signatures_are_fixed_width_r_s(hsm, label):
    """RFC 7518 §3.4: R||S, each left-padded to the coordinate size: many signatures, so short R or S
    (one in 128) are exercised, verified by us and by jwcrypto."""
    signer = hsm.key(label)
    public, width = signer.public_jwk(), {"ES256": 64, "ES384": 96}[signer.alg]
    resolver = _key_set_resolver(public)
    for i in range(400):
        token = jws.sign(b"%d" % i, signer)
        assert len(b64u_lenient(token.split(".")[2])) == width
        assert jws.verify(token, resolver, [signer.alg]).payload == b"%d" % i
        if i % 40 == 0:
            assert lib_verify("jwcrypto", token, public, signer.alg) == b"%d" % i


@pytest.fixture(scope="module")
def software_keys():
    """Software keys for the directions where the private half must be outside the token."""
    return {
        "RSA": rsa.generate_private_key(65537, 2048),
        "P-256": ec.generate_private_key(ec.SECP256R1()),
        "P-384": ec.generate_private_key(ec.SECP384R1()),
        "P-521": ec.generate_private_key(ec.SECP521R1()),
        "Ed25519": ed25519.Ed25519PrivateKey.generate(),
    }


_SOFTWARE_SIGNING = {"ES256": "P-256", "ES384": "P-384", "PS256": "RSA", "RS256": "RSA", "EdDSA": "Ed25519"}


@pytest.mark.parametrize("lib", LIBRARIES)
@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_library_signatures_verify_with_ours(lib, alg, software_keys):
    private = software_keys[_SOFTWARE_SIGNING[alg]]
    public = {**public_jwk_dict(private.public_key()), "kid": "peer-1", "alg": alg, "use": "sig"}
    token = lib_sign(lib, jwt.encode_claims(CLAIMS), private, alg, "peer-1")
    verified = jws.verify(token, _key_set_resolver(public), SIGNING_ALGS)
    assert jwt.decode_claims(verified.payload) == CLAIMS
    # A key registered for another alg (same kty) must not verify it: alg bound to the key.
    other = {"ES256": "ES384", "ES384": "ES256", "PS256": "RS256", "RS256": "PS256", "EdDSA": None}[alg]
    if other:
        with pytest.raises((RefusedAlgorithm, InvalidKey)):
            jws.verify(token, _key_set_resolver({**public, "alg": other}), SIGNING_ALGS)


# --- encryption: libraries -> token --------------------------------------------------------------------------


@pytest.mark.parametrize("lib", LIBRARIES)
@pytest.mark.parametrize("enc", ENCRYPTIONS)
@pytest.mark.parametrize("label", list(ENCRYPTION_LABELS))
def test_library_encrypts_to_token_key_and_we_decrypt_in_token(hsm, label, enc, lib):
    key = hsm.key(label)
    assert key.alg == ENCRYPTION_LABELS[label]
    token = lib_encrypt(lib, PLAINTEXT, key.public_jwk(), key.alg, enc, kid=key.kid)
    decrypted = jwe.decrypt(token, _token_resolver(hsm, label), [key.alg], [enc])
    assert decrypted.plaintext == PLAINTEXT
    assert decrypted.header["alg"] == key.alg and decrypted.header["enc"] == enc


@pytest.mark.parametrize("label", ["enc-ecdh-es", "enc-ecdh-es-a128kw", "enc-ecdh-es-a256kw"])
def test_library_ecdh_with_party_info_decrypts_in_token(hsm, label):
    """apu/apv enter the Concat KDF (RFC 7518 §4.6.2): both sides must agree on them."""
    key = hsm.key(label)
    info = {"apu": b64u(b"Alice"), "apv": b64u(b"Bob")}
    token = lib_encrypt("jwcrypto", PLAINTEXT, key.public_jwk(), key.alg, "A256GCM", kid=key.kid, **info)
    assert jwe.decrypt(token, _token_resolver(hsm, label), [key.alg], ENCRYPTIONS).plaintext == PLAINTEXT


# --- encryption: ours -> libraries ---------------------------------------------------------------------------


_RECIPIENTS = {
    "RSA-OAEP-256": ("RSA",),
    "RSA-OAEP": ("RSA",),
    "ECDH-ES": ("P-256", "P-384", "P-521"),
    "ECDH-ES+A128KW": ("P-256", "P-384", "P-521"),
    "ECDH-ES+A256KW": ("P-256", "P-384", "P-521"),
}


@pytest.mark.parametrize("enc", ENCRYPTIONS)
@pytest.mark.parametrize("alg", KEY_MANAGEMENT_ALGS)
def test_our_encryption_decrypts_in_both_libraries(alg, enc, software_keys):
    for recipient_name in _RECIPIENTS[alg]:
        private = software_keys[recipient_name]
        recipient = jwk.load_jwk({**public_jwk_dict(private.public_key()), "kid": "rs-1", "use": "enc"})
        token = jwe.encrypt(PLAINTEXT, recipient, alg, enc, {"typ": "token-introspection+jwt"})
        header = compact.parse_protected_header(token.split(".")[0].encode())
        assert header["kid"] == "rs-1" and header["alg"] == alg and header["enc"] == enc
        if alg == "ECDH-ES":
            assert token.split(".")[1] == ""  # direct key agreement: empty encrypted key
        for lib in LIBRARIES:
            lib_header, plaintext = lib_decrypt(lib, token, private, alg, enc)
            assert plaintext == PLAINTEXT, (lib, recipient_name)
            assert lib_header["typ"] == "token-introspection+jwt"


def test_our_encryption_refuses_a_recipient_key_bound_to_another_alg(software_keys):
    recipient = jwk.load_jwk({**public_jwk_dict(software_keys["RSA"].public_key()), "alg": "RSA-OAEP-256"})
    with pytest.raises(RefusedAlgorithm):
        jwe.encrypt(PLAINTEXT, recipient, "RSA-OAEP", "A256GCM")
    with pytest.raises(RefusedAlgorithm):
        jwe.encrypt(PLAINTEXT, recipient, "RSA1_5", "A256GCM")
    signing_only = jwk.load_jwk({**public_jwk_dict(software_keys["P-256"].public_key()), "use": "sig"})
    with pytest.raises(RefusedAlgorithm):
        jwe.encrypt(PLAINTEXT, signing_only, "ECDH-ES", "A256GCM")


# --- nested JWTs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "enc", "recipient_name"),
    [
        ("ECDH-ES+A256KW", "A256GCM", "P-256"),
        ("RSA-OAEP-256", "A128GCM", "RSA"),
        ("ECDH-ES", "A128CBC-HS256", "P-384"),
    ],
)
def test_nested_sign_in_token_then_encrypt_decrypts_in_libraries(hsm, software_keys, alg, enc, recipient_name):
    signer = hsm.key("sig-es256")
    signed = jwt.sign_jwt(CLAIMS, signer, "at+jwt")
    private = software_keys[recipient_name]
    nested = jwt.nest(signed, jwk.load_jwk(public_jwk_dict(private.public_key())), alg, enc)
    assert jwt.is_encrypted(nested) and not jwt.is_encrypted(signed)
    for lib in LIBRARIES:
        header, inner = lib_decrypt(lib, nested, private, alg, enc)
        assert header["cty"] == "JWT" and inner == signed.encode()
        assert json.loads(lib_verify(lib, inner.decode(), signer.public_jwk(), "ES256")) == CLAIMS


@pytest.mark.parametrize(
    ("sig_label", "enc_label"),
    [
        ("sig-ps256", "enc-rsa-oaep-256"),
        ("sig-eddsa", "enc-ecdh-es-a128kw"),
        ("sig-rs256", "enc-ecdh-es"),
    ],
)
def test_nested_round_trip_through_the_token(hsm, sig_label, enc_label):
    signer, decrypter = hsm.key(sig_label), hsm.key(enc_label)
    nested = jwt.nest(jwt.sign_jwt(CLAIMS, signer, "at+jwt"), jwk.load_jwk(decrypter.public_jwk()), decrypter.alg, "A256GCM")
    decrypted = jwe.decrypt(nested, _token_resolver(hsm, enc_label), [decrypter.alg], ["A256GCM"])
    verified = jws.verify(jwt.unnest(decrypted), _key_set_resolver(signer.public_jwk()), [signer.alg])
    assert compact.typ_is(verified.header, "at+jwt")
    assert jwt.decode_claims(verified.payload) == CLAIMS


def test_library_nested_jwt_to_token_key(hsm, software_keys):
    private = software_keys["P-256"]
    inner = lib_sign("jwcrypto", jwt.encode_claims(CLAIMS), private, "ES256", "client-key")
    decrypter = hsm.key("enc-ecdh-es-a256kw")
    nested = lib_encrypt(
        "jwcrypto", inner.encode(), decrypter.public_jwk(), decrypter.alg, "A128GCM", kid=decrypter.kid, cty="JWT"
    )
    decrypted = jwe.decrypt(nested, _token_resolver(hsm, "enc-ecdh-es-a256kw"), [decrypter.alg], ENCRYPTIONS)
    client_key = {**public_jwk_dict(private.public_key()), "kid": "client-key"}
    verified = jws.verify(jwt.unnest(decrypted), _key_set_resolver(client_key), ["ES256"])
    assert jwt.decode_claims(verified.payload) == CLAIMS


def test_unnest_refuses_content_that_is_not_a_jwt(hsm):
    decrypter = hsm.key("enc-ecdh-es")
    token = jwe.encrypt(b"not a jwt", jwk.load_jwk(decrypter.public_jwk()), decrypter.alg, "A256GCM")
    with pytest.raises(MalformedJose):
        jwt.unnest(jwe.decrypt(token, _token_resolver(hsm, "enc-ecdh-es"), [decrypter.alg], ENCRYPTIONS))


# --- strict parsing: JWS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def es256(hsm):
    signer = hsm.key("sig-es256")
    return signer, _key_set_resolver(signer.public_jwk())


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_padding_is_refused(es256, segment):
    signer, resolver = es256
    token = jws.sign(b"payload!", signer)  # every segment length is not a multiple of 4
    assert jws.verify(token, resolver, ["ES256"])
    parts = token.split(".")
    assert len(parts[segment]) % 4
    parts[segment] += "=" * (-len(parts[segment]) % 4)
    with pytest.raises(MalformedJose):
        jws.verify(".".join(parts), resolver, ["ES256"])


def _respell(segment: str) -> str:
    """Same bytes, other spelling: set unused trailing bits of the last base64url character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 4, 3: 2}[len(segment) % 4]
    last = alphabet.index(segment[-1])
    assert last & ((1 << unused) - 1) == 0
    return segment[:-1] + alphabet[last | 1]


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_non_canonical_base64url_is_refused(es256, segment):
    signer, resolver = es256
    token = jws.sign(b"payload!", signer)
    parts = token.split(".")
    respelled = _respell(parts[segment])
    assert b64u_lenient(respelled) == b64u_lenient(parts[segment])  # a lenient decoder sees no change
    parts[segment] = respelled
    with pytest.raises(MalformedJose):
        jws.verify(".".join(parts), resolver, ["ES256"])


@pytest.mark.parametrize("bad", ["c2ln+", "c2ln/", "c2l n", "c2ln\n", "c2ln.", "é", "c"])
def test_characters_outside_base64url_are_refused(es256, bad):
    signer, resolver = es256
    head, _, sig = jws.sign(b"sig", signer).split(".")
    with pytest.raises(MalformedJose):
        jws.verify(".".join((head, bad, sig)), resolver, ["ES256"])


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"ES256","alg":"ES256"}',
        b'{"alg":"ES256","kid":"a","kid":"b"}',
        b'{"alg":"ES256","x":{"y":1,"y":2}}',
    ],
)
def test_duplicate_header_members_are_refused(es256, header):
    signer, resolver = es256
    with pytest.raises(MalformedJose):
        jws.verify(_sign_raw(signer, header.replace(b'"kid":"a"', f'"kid":"{signer.kid}"'.encode()), b"{}"), resolver, ["ES256"])


def test_duplicate_claim_names_are_refused(es256):
    signer, resolver = es256
    token = _sign_raw(signer, {"alg": "ES256", "kid": signer.kid}, b'{"sub":"alice","sub":"admin"}')
    verified = jws.verify(token, resolver, ["ES256"])  # the signature is fine ...
    with pytest.raises(MalformedJose):  # ... the claims set is not (RFC 7519 §4)
        jwt.decode_claims(verified.payload)
    with pytest.raises(MalformedJose):
        jwt.decode_claims(b'{"a":NaN}')


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ({"crit": ["exp"], "exp": 1}, RefusedAlgorithm),  # an extension we do not process
        ({"crit": ["http://example.com/x"]}, RefusedAlgorithm),  # named but absent
        ({"crit": []}, MalformedJose),  # RFC 7515 §4.1.11: non-empty list
        ({"crit": "b64"}, MalformedJose),
        ({"b64": False, "crit": ["b64"]}, RefusedAlgorithm),  # RFC 7797 unencoded payload
        ({"b64": False}, RefusedAlgorithm),
        ({"b64": True}, RefusedAlgorithm),
        ({"zip": "DEF"}, RefusedAlgorithm),
    ],
)
def test_header_features_we_never_honour(es256, header, error):
    signer, resolver = es256
    token = _sign_raw(signer, {"alg": "ES256", "kid": signer.kid, **header}, b"payload")
    with pytest.raises(error):
        jws.verify(token, resolver, ["ES256"])


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(es256, alg):
    signer, _ = es256
    head = b64u(json.dumps({"alg": alg, "kid": signer.kid}).encode())
    for signature in ("", b64u(b"\0" * 64)):
        with pytest.raises(RefusedAlgorithm):
            jws.verify(f"{head}.{b64u(b'{}')}.{signature}", forbid_key_selection, (*SIGNING_ALGS, alg))


@pytest.mark.parametrize("label", ["sig-es256", "sig-rs256", "sig-eddsa"])
def test_hs256_keyed_with_the_public_key_bytes_is_refused(hsm, label):
    """The classic key-confusion attack: HMAC keyed with what the verifier publishes."""
    key = hsm.key(label)
    public = key.public_key
    candidates = [
        json.dumps(key.public_jwk()).encode(),
        json.dumps(key.public_jwk(), separators=(",", ":"), sort_keys=True).encode(),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    ]
    resolver = _key_set_resolver(key.public_jwk())
    for secret in candidates:
        for alg in ("HS256", "HS384", "HS512"):
            signing_input = b64u(json.dumps({"alg": alg, "kid": key.kid}).encode()) + "." + b64u(b'{"sub":"admin"}')
            digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
            token = signing_input + "." + b64u(hmac.new(secret, signing_input.encode(), digest).digest())
            with pytest.raises(RefusedAlgorithm):
                jws.verify(token, resolver, SIGNING_ALGS)
            with pytest.raises(RefusedAlgorithm):  # even if a caller's allow-list names it
                jws.verify(token, forbid_key_selection, (*SIGNING_ALGS, alg))


def test_oversized_tokens_are_refused_before_parsing(hsm, es256):
    signer, resolver = es256
    token = jws.sign(b"x" * MAX_COMPACT_LEN, signer)
    assert len(token) > MAX_COMPACT_LEN
    with pytest.raises(MalformedJose):
        jws.verify(token, forbid_key_selection, ["ES256"])
    assert jws.verify(token, resolver, ["ES256"], max_len=2 * MAX_COMPACT_LEN).payload == b"x" * MAX_COMPACT_LEN
    with pytest.raises(MalformedJose):  # the cap applies before the text is even split
        jws.verify("." * (MAX_COMPACT_LEN + 1), forbid_key_selection, ["ES256"])
    decrypter = hsm.key("enc-ecdh-es")
    big = jwe.encrypt(b"y" * MAX_COMPACT_LEN, jwk.load_jwk(decrypter.public_jwk()), "ECDH-ES", "A256GCM")
    with pytest.raises(MalformedJose):
        jwe.decrypt(big, forbid_key_selection, KEY_MANAGEMENT_ALGS, ENCRYPTIONS)
    assert (
        jwe.decrypt(big, _token_resolver(hsm, "enc-ecdh-es"), ["ECDH-ES"], ENCRYPTIONS, max_len=2 * MAX_COMPACT_LEN).plaintext
        == b"y" * MAX_COMPACT_LEN
    )


def test_header_jwk_jku_x5u_are_never_used_to_find_the_key(es256):
    """RFC 8725 §3.10: an attacker's key embedded in (or linked from) the header changes nothing."""
    signer, resolver = es256
    attacker = ec.generate_private_key(ec.SECP256R1())
    hints = {
        "jwk": public_jwk_dict(attacker.public_key()),
        "jku": "https://attacker.example/jwks",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIB"],
    }
    head = json.dumps({"alg": "ES256", "kid": signer.kid, **hints}).encode()
    signing_input = b64u(head) + "." + b64u(b'{"sub":"admin"}')
    forged = signing_input + "." + _raw_es256(attacker, signing_input.encode())
    attacker_key = jwk.load_jwk(hints["jwk"])  # the forgery is a good signature, under the wrong key
    assert jws.verify(forged, lambda header: attacker_key, ["ES256"])
    with pytest.raises(InvalidSignature):
        jws.verify(forged, resolver, ["ES256"])
    # And a genuine token carrying such hints still verifies only under *our* key.
    genuine = _sign_raw(signer, {"alg": "ES256", "kid": signer.kid, **hints}, b"ok")
    assert jws.verify(genuine, resolver, ["ES256"]).key.thumbprint == signer.kid


def _raw_es256(private, data: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
    return b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@pytest.mark.parametrize(
    ("label", "registered"),
    [
        ("sig-ps256", {"alg": "RS256", "use": "sig"}),  # key registered for RS256, token says PS256
        ("sig-rs256", {"alg": "PS256", "use": "sig"}),
        ("sig-ps256", {"use": "enc"}),  # registered as an encryption key
        ("sig-ps256", {"key_ops": ["encrypt"]}),  # ... or only for encryption operations
        ("sig-es256", {"alg": "ES384"}),  # ES384 is bound to P-384: unusable P-256 key
        ("sig-es384", {"alg": "ES256"}),
    ],
)
def test_signature_refused_when_the_key_is_bound_elsewhere(hsm, label, registered):
    signer = hsm.key(label)
    token = jwt.sign_jwt(CLAIMS, signer, "JWT")
    public = {**public_jwk_dict(signer.public_key, kid=signer.kid), **registered}
    with pytest.raises((RefusedAlgorithm, InvalidKey)):
        jws.verify(token, _key_set_resolver(public), SIGNING_ALGS)


def test_header_alg_rewritten_is_refused(hsm):
    """A PS256 signature relabelled RS256 (same RSA key, registered without alg) never verifies."""
    signer = hsm.key("sig-ps256")
    token = jws.sign(b"x", signer)
    head, body, sig = token.split(".")
    relabelled = b64u(json.dumps({"alg": "RS256", "kid": signer.kid}).encode())
    public = {k: v for k, v in signer.public_jwk().items() if k != "alg"}
    with pytest.raises(InvalidSignature):
        jws.verify(f"{relabelled}.{body}.{sig}", _key_set_resolver(public), SIGNING_ALGS)


def _jwk_mutations(software_keys) -> dict[str, object]:
    ec_public = public_jwk_dict(software_keys["P-256"].public_key())
    rsa_public = public_jwk_dict(software_keys["RSA"].public_key())
    ed_public = public_jwk_dict(software_keys["Ed25519"].public_key())
    small_rsa = public_jwk_dict(rsa.generate_private_key(65537, 1024).public_key())
    x = ec_public["x"]
    return {
        "not an object": [ec_public],
        "kty missing": {k: v for k, v in ec_public.items() if k != "kty"},
        "kty oct": {"kty": "oct", "k": b64u(bytes(32))},
        "private EC (d)": {**ec_public, "d": b64u(bytes(31) + b"\1")},
        "private RSA (p)": {**rsa_public, "p": "AQAB"},
        "x padded": {**ec_public, "x": x + "="},
        "x with +": {**ec_public, "x": x[:-2] + "+" + x[-1]},
        "x respelled": {**ec_public, "x": _respell(x)},
        "x short": {**ec_public, "x": b64u(b64u_lenient(x)[1:])},
        "x not a string": {**ec_public, "x": 12345},
        "crv unknown": {**ec_public, "crv": "P-192"},
        "crv secp256k1": {**ec_public, "crv": "secp256k1"},
        "off the curve": _off_curve(ec_public),
        "n with a leading zero": {**rsa_public, "n": b64u(b"\0" + b64u_lenient(rsa_public["n"]))},
        "e = 1": {**rsa_public, "e": "AQ"},
        "e even": {**rsa_public, "e": "AQAA"},
        "RSA 1024": small_rsa,
        "OKP x short": {**ed_public, "x": b64u(bytes(31))},
        "OKP Ed448": {**ed_public, "crv": "Ed448"},
        "OKP x bad base64": {**ed_public, "x": "@" * 43},
        "use unknown": {**ec_public, "use": "both"},
        "alg HS256": {**ec_public, "alg": "HS256"},
        "alg RS256 on EC": {**ec_public, "alg": "RS256"},
        "alg ES384 on P-256": {**ec_public, "alg": "ES384"},
        "alg ES256 with use enc": {**ec_public, "alg": "ES256", "use": "enc"},
        "alg RSA1_5": {**rsa_public, "alg": "RSA1_5"},
        "key_ops duplicated": {**ec_public, "key_ops": ["verify", "verify"]},
        "key_ops unknown": {**ec_public, "key_ops": ["sign-and-verify"]},
        "kid not a string": {**ec_public, "kid": 7},
        "kid empty": {**ec_public, "kid": ""},
    }


def test_load_jwk_refuses_every_bad_key_with_invalid_key(software_keys):
    """One exception type for every bad JWK, so key-set validation (registry, JWKS) catches it all."""
    wrong = {}
    for name, candidate in _jwk_mutations(software_keys).items():
        for load in (jwk.load_jwk, lambda c: jwk.JWKSet.from_dict({"keys": [c]})):
            try:
                load(candidate)
                wrong[name] = "accepted"
            except InvalidKey:
                pass
            except Exception as exc:  # noqa: BLE001 - the point of the test
                wrong[name] = repr(exc)
    assert not wrong


def test_key_sets_refuse_duplicate_kids_and_private_members(software_keys):
    a = {**public_jwk_dict(software_keys["P-256"].public_key()), "kid": "k1"}
    b = {**public_jwk_dict(software_keys["P-384"].public_key()), "kid": "k1"}
    with pytest.raises(InvalidKey):
        jwk.JWKSet.from_dict({"keys": [a, b]})
    with pytest.raises(InvalidKey):  # a mixed set: one private member poisons the set
        jwk.JWKSet.from_dict({"keys": [a, {"kty": "oct", "kid": "h", "k": b64u(bytes(32))}]})
    keys = jwk.JWKSet.from_dict({"keys": [a, {**b, "kid": "k2"}]})
    with pytest.raises(InvalidKey):  # no kid and two candidates: ambiguous, refused
        keys.select("ECDH-ES", "enc", None)
    assert keys.select("ES384", "sig", None).kid == "k2"  # curve binding leaves one candidate


# --- strict parsing: JWE -------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["enc-rsa-oaep", "enc-rsa-oaep-256"])
def test_rsa1_5_to_our_oaep_key_is_refused_before_the_token(hsm, label):
    key = hsm.key(label)
    token = lib_encrypt("jwcrypto", PLAINTEXT, key.public_jwk(), "RSA1_5", "A128GCM", kid=key.kid)
    counting = CountingDecrypter(key)
    for algorithms in (KEY_MANAGEMENT_ALGS, (*KEY_MANAGEMENT_ALGS, "RSA1_5")):
        with pytest.raises(RefusedAlgorithm):
            jwe.decrypt(token, lambda header: counting, algorithms, ENCRYPTIONS)
    assert counting.calls == 0


@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("PBES2-HS256+A128KW", {"kty": "oct", "k": b64u(b"correct horse battery staple")}),
        ("dir", {"kty": "oct", "k": b64u(bytes(16))}),
        ("A128KW", {"kty": "oct", "k": b64u(bytes(16))}),
        ("A256KW", {"kty": "oct", "k": b64u(bytes(32))}),
        ("A128GCMKW", {"kty": "oct", "k": b64u(bytes(16))}),
    ],
)
def test_symmetric_and_password_key_management_is_refused(alg, key):
    token = lib_encrypt("jwcrypto", PLAINTEXT, key, alg, "A128GCM")
    for algorithms in (KEY_MANAGEMENT_ALGS, (*KEY_MANAGEMENT_ALGS, alg)):
        with pytest.raises(RefusedAlgorithm):
            jwe.decrypt(token, forbid_key_selection, algorithms, ENCRYPTIONS)


@pytest.mark.parametrize("enc", ["A192GCM", "A256CBC-HS512", "A192CBC-HS384"])
def test_content_encryptions_outside_our_profile_are_refused(hsm, enc):
    key = hsm.key("enc-ecdh-es-a128kw")
    token = lib_encrypt("jwcrypto", PLAINTEXT, key.public_jwk(), key.alg, enc)
    counting = CountingDecrypter(key)
    with pytest.raises(RefusedAlgorithm):
        jwe.decrypt(token, lambda header: counting, KEY_MANAGEMENT_ALGS, (*ENCRYPTIONS, enc))
    assert counting.calls == 0


def test_compressed_jwe_is_refused_before_the_token(hsm):
    key = hsm.key("enc-ecdh-es")
    token = lib_encrypt("jwcrypto", PLAINTEXT, key.public_jwk(), key.alg, "A256GCM", zip="DEF")
    counting = CountingDecrypter(key)
    with pytest.raises(RefusedAlgorithm):
        jwe.decrypt(token, lambda header: counting, KEY_MANAGEMENT_ALGS, ENCRYPTIONS)
    assert counting.calls == 0


def test_jwe_alg_must_be_the_token_keys_alg(hsm):
    """RSA-OAEP to the public key of the RSA-OAEP-256 key (and ECDH-ES to the +A128KW key)."""
    for label, alg in (
        ("enc-rsa-oaep-256", "RSA-OAEP"),
        ("enc-rsa-oaep", "RSA-OAEP-256"),
        ("enc-ecdh-es-a128kw", "ECDH-ES"),
        ("enc-ecdh-es", "ECDH-ES+A256KW"),
    ):
        key = hsm.key(label)
        token = lib_encrypt("jwcrypto", PLAINTEXT, key.public_jwk(), alg, "A256GCM")
        counting = CountingDecrypter(key)
        with pytest.raises(RefusedAlgorithm):
            jwe.decrypt(token, lambda header: counting, KEY_MANAGEMENT_ALGS, ENCRYPTIONS)  # noqa: B023 - called now
        assert counting.calls == 0, label


def _flip(segment: str, byte_index: int = -1) -> str:
    raw = bytearray(b64u_lenient(segment))
    raw[byte_index] ^= 0x01
    return b64u(bytes(raw))


def _tampered(token: str, part: str) -> str:
    head, ek, iv, ct, tag = token.split(".")
    if part == "tag":
        tag = _flip(tag)
    elif part == "truncated tag":
        tag = b64u(b64u_lenient(tag)[:-1])
    elif part == "iv":
        iv = _flip(iv, 0)
    elif part == "ciphertext":
        ct = _flip(ct, len(b64u_lenient(ct)) // 2)
    elif part == "encrypted key":
        ek = _flip(ek, len(b64u_lenient(ek)) // 2)
    elif part == "protected header":  # still a valid header, but not the authenticated one
        header = json.loads(b64u_lenient(head))
        head = b64u(json.dumps({**header, "typ": "JWT"}).encode())
    return ".".join((head, ek, iv, ct, tag))


_TAMPER_PARTS = ("tag", "truncated tag", "iv", "ciphertext", "encrypted key", "protected header")


def _tamper_params():
    for label in ENCRYPTION_LABELS:
        for enc in ("A256GCM", "A128CBC-HS256"):
            for part in _TAMPER_PARTS:
                if part == "encrypted key" and label == "enc-ecdh-es":
                    continue  # ECDH-ES has no encrypted key (covered by the next test)
                # (enc-rsa-oaep + encrypted key found the CKR_GENERAL_ERROR -> HSMUnavailable bug in hsm.py)
                yield pytest.param(label, enc, part, id=f"{label}-{enc}-{part.replace(' ', '_')}")


@pytest.mark.parametrize(("label", "enc", "part"), list(_tamper_params()))
def test_tampering_gives_one_uniform_decryption_failure(hsm, label, enc, part):
    key = hsm.key(label)
    token = lib_encrypt("jwcrypto", PLAINTEXT, key.public_jwk(), key.alg, enc, kid=key.kid)
    resolver = _token_resolver(hsm, label)
    assert jwe.decrypt(token, resolver, [key.alg], ENCRYPTIONS).plaintext == PLAINTEXT
    with pytest.raises(DecryptionFailed) as info:
        jwe.decrypt(_tampered(token, part), resolver, [key.alg], ENCRYPTIONS)
    assert str(info.value) == DECRYPTION_FAILED  # one failure, one message: no oracle (RFC 7516 §11.4)


def test_ecdh_es_with_a_non_empty_encrypted_key_is_refused_before_the_token(hsm):
    key = hsm.key("enc-ecdh-es")
    head, ek, iv, ct, tag = lib_encrypt("jwcrypto", PLAINTEXT, key.public_jwk(), key.alg, "A256GCM").split(".")
    assert ek == ""
    counting = CountingDecrypter(key)
    with pytest.raises(DecryptionFailed):  # RFC 7516 §5.2 step 10: direct agreement, empty key
        jwe.decrypt(".".join((head, b64u(bytes(40)), iv, ct, tag)), lambda h: counting, ["ECDH-ES"], ENCRYPTIONS)
    assert counting.calls == 0


def _with_epk(token: str, epk) -> str:
    head, *rest = token.split(".")
    header = json.loads(b64u_lenient(head))
    if epk is None:
        header.pop("epk")
    else:
        header["epk"] = epk
    return ".".join((b64u(json.dumps(header).encode()), *rest))


def _off_curve(epk: dict) -> dict:
    y = bytearray(b64u_lenient(epk["y"]))
    y[-1] ^= 0x01
    return {**epk, "y": b64u(bytes(y))}


@pytest.mark.parametrize("label", ["enc-ecdh-es", "enc-ecdh-es-a128kw", "enc-ecdh-es-a256kw"])
def test_hostile_epk_is_refused_before_the_token(hsm, label):
    key = hsm.key(label)
    token = lib_encrypt("jwcrypto", PLAINTEXT, key.public_jwk(), key.alg, "A128GCM")
    epk = json.loads(b64u_lenient(token.split(".")[0]))["epk"]
    p384 = public_jwk_dict(ec.generate_private_key(ec.SECP384R1()).public_key())
    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_d = b64u(attacker.private_numbers().private_value.to_bytes(32, "big"))
    cases = {
        "off the curve": (_off_curve(epk), DecryptionFailed),
        "point at (0, 0)": ({**epk, "x": b64u(bytes(32)), "y": b64u(bytes(32))}, DecryptionFailed),
        "on another curve (P-384)": (p384, DecryptionFailed),
        "P-384 curve name, P-256 coordinates": ({**epk, "crv": "P-384"}, DecryptionFailed),
        "secp256k1": ({**epk, "crv": "secp256k1"}, DecryptionFailed),
        "carrying a private key": ({**public_jwk_dict(attacker.public_key()), "d": attacker_d}, DecryptionFailed),
        "OKP (X25519)": ({"kty": "OKP", "crv": "X25519", "x": b64u(bytes(32))}, MalformedJose),
        "missing": (None, MalformedJose),
        "not an object": ("epk", MalformedJose),
    }
    for name, (bad_epk, error) in cases.items():
        counting = CountingDecrypter(key)
        with pytest.raises(error):
            jwe.decrypt(_with_epk(token, bad_epk), lambda h: counting, [key.alg], ENCRYPTIONS)  # noqa: B023 - called now
        assert counting.calls == 0, f"epk {name} reached the token"
