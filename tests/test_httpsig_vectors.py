"""RFC 9421 Appendix B through our verification layer (binding/httpsig.py over the
http-message-signatures package), under a frozen clock: every case's exact signature base, every
signature, the B.4 transformations; deterministic algorithms re-signed to the same bytes; and the
policy our proofs add on top (what a PoP proof must cover) refusing the minimal B.2.1 signature."""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier

from flask_oauth_hsm import clock
from flask_oauth_hsm.binding import httpsig
from flask_oauth_hsm.client import sign_message
from vector_helpers import VECTORS_DIR, load_json

VECTORS = load_json(VECTORS_DIR / "rfc9421_appendix_b.json")
CASES = {case["id"]: case for case in VECTORS["cases"]}
CREATED = 1618884473
REQUEST_CASES = [cid for cid, case in CASES.items() if case["target"] != "response"]


def parse(text: str) -> tuple[httpsig.Message | None, list[tuple[str, str]], bytes, int | None]:
    """An Appendix B message (LF line endings): the request, or a response's fields and status."""
    head, _, body = text.partition("\n\n")
    start, *lines = head.split("\n")
    fields = [tuple(line.split(": ", 1)) for line in lines]
    parts = start.split(" ")
    if parts[0].startswith("HTTP/"):
        return None, fields, body.encode(), int(parts[1])  # type: ignore[return-value]
    host = next(v for n, v in fields if n.lower() == "host")
    return httpsig.Message(parts[0], f"https://{host}{parts[1]}", httpsig.Lines(fields)), fields, body.encode(), None  # type: ignore[arg-type]


def public_key(name: str):
    key = VECTORS["keys"][name]
    if name == "test-shared-secret":
        return base64.b64decode(key["base64"])
    return load_pem_public_key(key["public_pem"].encode())


def with_signature(case: dict) -> httpsig.Message:
    message, *_ = parse(VECTORS["messages"][case["target"]])
    assert message is not None
    if "Signature" not in message.headers:
        message.headers.lines += [("Signature-Input", case["signature_input"]), ("Signature", case["signature"])]
    return message


VECTOR_RULES = httpsig.Rules(components=(), max_age=60, leeway=5)


@pytest.mark.parametrize("cid", REQUEST_CASES)
def test_request_vectors_verify_with_their_exact_base(cid):
    case = CASES[cid]
    message = with_signature(case)
    keyid = case["signature_input"].split('keyid="')[1].split('"')[0]
    _, _, body, _ = parse(VECTORS["messages"][case["target"]])
    if '"content-digest"' not in case["signature_input"]:
        # These cases test the signature base and the algorithms; an uncovered Content-Digest is
        # refused by our policy (tested below), so it goes, with the body it describes.
        del message.headers["Content-Digest"]
        body = b""
    with clock.use(clock.FakeClock(CREATED + 10)):
        signed = httpsig.verify(message, body, public_key(case["key"]), case["alg"], {keyid}, VECTOR_RULES)
        assert signed.created == CREATED and signed.keyid == keyid
        result = HTTPMessageVerifier(
            signature_algorithm=httpsig.ALGORITHMS[case["alg"]], key_resolver=_Fixed(public_key(case["key"]))
        )
        elements = _FrozenVerifier.of(result).verify(
            message, max_age=None, expect_tag="header-example" if cid == "B.2.2" else None
        )
    base = "\n".join(f"{name}: {value}" for name, value in elements[0].covered_components.items())
    assert base == case["signature_base"]


class _Fixed:
    def __init__(self, key):
        self.key = key

    def resolve_public_key(self, key_id):
        return self.key


class _FrozenVerifier(HTTPMessageVerifier):
    def validate_created_and_expires(self, sig_input, max_age=None):
        pass

    @classmethod
    def of(cls, other: HTTPMessageVerifier) -> _FrozenVerifier:
        return cls(signature_algorithm=other.signature_algorithm, key_resolver=other.key_resolver)


def test_response_vector_b24_verifies_with_the_package():
    case = CASES["B.2.4"]
    _, fields, _, status = parse(VECTORS["messages"]["response"])

    class Response:
        status_code = status
        headers = httpsig.Lines([*fields, ("Signature-Input", case["signature_input"]), ("Signature", case["signature"])])

    verifier = _FrozenVerifier(
        signature_algorithm=httpsig.ALGORITHMS["ecdsa-p256-sha256"], key_resolver=_Fixed(public_key(case["key"]))
    )
    result = verifier.verify(Response(), max_age=None)
    base = "\n".join(f"{name}: {value}" for name, value in result[0].covered_components.items())
    assert base == case["signature_base"]


@pytest.mark.parametrize("cid", ["B.2.5", "B.2.6", "B.4"])
def test_deterministic_vectors_resign_to_the_same_bytes(cid):
    """hmac-sha256 and ed25519 are deterministic: our signing path (the package's prepare/apply,
    the signature computed outside it as in a token) reproduces the published signature."""
    case = CASES[cid]
    message, *_ = parse(VECTORS["messages"][case["target"]])
    assert message is not None
    message.headers = httpsig.Lines([(n, v) for n, v in message.headers.items() if not n.startswith("Signature")])
    components = tuple(c.strip('"') for c in case["signature_input"].split("(")[1].split(")")[0].split(" "))
    signer = HTTPMessageSigner(signature_algorithm=httpsig.ALGORITHMS[case["alg"]])
    created = datetime.datetime.fromtimestamp(CREATED, datetime.UTC)
    prepared = signer.prepare(
        message,
        key_id=case["key"],
        created=created,
        covered_component_ids=components,
        include_alg=False,
        label=case["label"],
        use_existing_digest="Content-Digest" in message.headers,
    )
    assert prepared.signature_base.decode() == case["signature_base"]
    signer.apply(message, prepared, _raw_signer(case)(prepared.signature_base))
    assert message.headers.get("Signature") == case["signature"]
    assert message.headers.get("Signature-Input") == case["signature_input"]


def _raw_signer(case: dict):
    if case["alg"] == "hmac-sha256":
        import hashlib
        import hmac

        secret = public_key("test-shared-secret")
        return lambda data: hmac.new(secret, data, hashlib.sha256).digest()
    private = load_pem_private_key(VECTORS["keys"][case["key"]]["private_pem"].encode(), None)
    return private.sign


@pytest.mark.parametrize("transformation", CASES["B.4"]["transformations"], ids=lambda t: t["target"])
def test_b4_transformations(transformation):
    message, *_ = parse(VECTORS["messages"][transformation["target"]])
    assert message is not None
    with clock.use(clock.FakeClock(CREATED)):
        if transformation["valid"]:
            httpsig.verify(message, b"", public_key("test-key-ed25519"), "ed25519", {"test-key-ed25519"}, VECTOR_RULES)
        else:
            with pytest.raises(httpsig.SignatureError):
                httpsig.verify(message, b"", public_key("test-key-ed25519"), "ed25519", {"test-key-ed25519"}, VECTOR_RULES)


# --- what we add on top --------------------------------------------------------------------------------


POP_RULES = httpsig.Rules(components=("@method", "@target-uri", "authorization"), max_age=60, leeway=5)


def test_a_vector_signature_is_not_a_pop_proof():
    """B.2.1 verifies, but covers nothing: as a proof it is refused, and so is a Content-Digest that
    is there but not signed."""
    _, _, body, _ = parse(VECTORS["messages"]["request"])
    key = (public_key("test-key-rsa-pss"), "rsa-pss-sha512", {"test-key-rsa-pss"})
    with clock.use(clock.FakeClock(CREATED)):
        with pytest.raises(httpsig.SignatureError, match="Content-Digest"):
            httpsig.verify(with_signature(CASES["B.2.1"]), body, *key, POP_RULES)
        with pytest.raises(httpsig.SignatureError, match="Content-Digest"):
            httpsig.verify(with_signature(CASES["B.2.1"]), b"", *key, VECTOR_RULES)
        without_body = with_signature(CASES["B.2.1"])
        del without_body.headers["Content-Digest"]
        with pytest.raises(httpsig.SignatureError, match="Required component @method"):
            httpsig.verify(without_body, b"", *key, POP_RULES)


def test_b23_body_digest_is_checked_against_the_body():
    message = with_signature(CASES["B.2.3"])
    _, _, body, _ = parse(VECTORS["messages"]["request"])
    rules = httpsig.Rules(components=("@method",), max_age=60, leeway=5)
    with clock.use(clock.FakeClock(CREATED)):
        httpsig.verify(message, body, public_key("test-key-rsa-pss"), "rsa-pss-sha512", {"test-key-rsa-pss"}, rules)
        with pytest.raises(httpsig.SignatureError):
            httpsig.verify(message, body + b" ", public_key("test-key-rsa-pss"), "rsa-pss-sha512", {"test-key-rsa-pss"}, rules)


@pytest.mark.parametrize("now,ok", [(CREATED, True), (CREATED + 65, True), (CREATED + 66, False), (CREATED - 6, False)])
def test_created_window_uses_our_clock(now, ok):
    message = with_signature(CASES["B.2.5"])
    del message.headers["Content-Digest"]  # not covered by B.2.5
    args = (message, b"", public_key("test-shared-secret"), "hmac-sha256", {"test-shared-secret"}, VECTOR_RULES)
    with clock.use(clock.FakeClock(now)):
        if ok:
            httpsig.verify(*args)
        else:
            with pytest.raises(httpsig.SignatureError):
                httpsig.verify(*args)


def test_the_algorithm_comes_from_the_key_and_the_keyid_must_name_it():
    message = with_signature(CASES["B.2.6"])
    del message.headers["Content-Digest"]  # not covered by B.2.6
    with clock.use(clock.FakeClock(CREATED)):
        with pytest.raises(httpsig.SignatureError):  # an Ed25519 signature under an HMAC "key" made of the public key
            httpsig.verify(message, b"", b"x" * 32, "hmac-sha256", {"test-key-ed25519"}, VECTOR_RULES)
        with pytest.raises(httpsig.SignatureError, match="keyid"):
            httpsig.verify(message, b"", public_key("test-key-ed25519"), "ed25519", {"another-key"}, VECTOR_RULES)


def test_our_signer_round_trips_through_our_verifier():
    class Hmac:
        alg, keyid = "hmac-sha256", "k1"

        def sign(self, data):
            import hashlib
            import hmac

            return hmac.new(b"s" * 32, data, hashlib.sha256).digest()

    message = httpsig.Message("POST", "https://rs.example/api?x=1", httpsig.Lines([("Authorization", "PoP t")]))
    sign_message(message, b'{"a":1}', Hmac(), ("@method", "@target-uri", "authorization"))
    signed = httpsig.verify(message, b'{"a":1}', b"s" * 32, "hmac-sha256", {"k1"}, POP_RULES)
    assert signed.nonce and message.headers.get("Content-Digest", "").startswith("sha-256=")
