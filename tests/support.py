"""Real components for the tests: a throwaway SoftHSM2 token store and a private redis-server.

Nothing here touches a developer's data: the token directory and Redis data live in pytest's
temporary directory, Redis listens on a free loopback port, and both go away with the session.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOFTHSM_MODULE = os.environ.get("OAUTH_HSM_TEST_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
# OAUTH_HSM_TEST_REMOTE=1: the main test token is served by `p11-kit server` and reached through
# p11-kit-client.so, the network-HSM path (conftest.py).
REMOTE_HSM = os.environ.get("OAUTH_HSM_TEST_REMOTE", "") == "1"
USER_PIN = "1234-test"
SO_PIN = "5678-test-so"
METADATA_APPLICATION = "flask-oauth-hsm"


def write_softhsm_conf(base: Path) -> Path:
    tokendir = base / "tokens"
    tokendir.mkdir(parents=True, exist_ok=True)
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
    )
    return conf


def init_token(label: str, pin: str = USER_PIN, so_pin: str = SO_PIN, env: dict | None = None) -> None:
    """Initialise a fresh token (SOFTHSM2_CONF, in ``env`` or ours, must point at a test store)."""
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        check=True,
        capture_output=True,
        env=env,
    )


def log_file(prefix: str) -> Path:
    """A log file under the session's temporary directory (removed with it)."""
    base = Path(os.environ.get("OAUTH_HSM_TEST_BASE") or "/tmp") / "logs"
    base.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log", dir=base)
    os.close(fd)
    return Path(name)


ISOLATED_TOKEN = "isolated"
ISOLATED_KEYS = {"sig-es256": ("ES256", "sig"), "enc-rsa": ("RSA-OAEP-256", "enc"), "enc-ecdh": ("ECDH-ES", "enc")}


class IsolatedStore:
    """A SoftHSM token store of one test's own, used by child processes only.

    A crash (no OS locking) or a store pulled away can then damage nothing another test uses.
    """

    def __init__(self, conf: Path):
        self.conf = conf
        self.tokendir = conf.parent / "tokens"

    @classmethod
    def create(cls, base: Path, keys: dict | None = None) -> IsolatedStore:
        store = cls(write_softhsm_conf(base))
        init_token(ISOLATED_TOKEN, env=store.env())
        generate_keys_in_child(ISOLATED_TOKEN, keys or ISOLATED_KEYS, env=store.env())
        return store

    def env(self, **extra: str) -> dict:
        """The environment of a child process that uses this store."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), **extra}

    def settings(self) -> dict:
        return {"OAUTH_HSM_PKCS11_MODULE": SOFTHSM_MODULE, "OAUTH_HSM_TOKEN_LABEL": ISOLATED_TOKEN, "OAUTH_HSM_PIN": USER_PIN}


_GENERATE = (
    "import json, sys\n"
    "from flask_oauth_hsm.hsm import HSM, HSMConfig\n"
    "args = json.loads(sys.argv[1])\n"
    "h = HSM(HSMConfig(module=args['module'], token_label=args['token'], pin=args['pin']))\n"
    "for label, (alg, use) in args['keys'].items():\n"
    "    h.generate_key(alg, use, label)\n"
)


def generate_keys_in_child(token: str, keys: dict, env: dict | None = None) -> None:
    """Generate ``keys`` (label -> (alg, use)) in ``token`` through SoftHSM, in a child process:
    this process's module may have been initialised before the token existed."""
    args = {"module": SOFTHSM_MODULE, "token": token, "pin": USER_PIN, "keys": keys}
    result = subprocess.run(
        [sys.executable, "-c", _GENERATE, json.dumps(args)], capture_output=True, text=True, env=env, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"generating keys in {token!r} failed: {result.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of our own on 127.0.0.1, no persistence; can be stopped and started again."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (the test command installs it)")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def import_private_key(
    pin: str,
    token_label: str,
    label: str,
    private_key,
    alg: str,
    use: str,
    *,
    extractable: bool = False,
    sensitive: bool = True,
) -> None:
    """Put a software private key (test vectors only) into the token as sensitive, non-extractable.

    The package itself never imports keys; vector tests need the published keys inside the token
    so decryption and signing run through the same HSM path as production keys. Runs in a child
    process: this process's module may have been initialised before the token existed, and a
    python-pkcs11 login session would log this process out of the token when it closes.
    """
    from cryptography.hazmat.primitives import serialization

    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    args = json.dumps(
        {
            "pin": pin,
            "token": token_label,
            "label": label,
            "alg": alg,
            "use": use,
            "extractable": extractable,
            "sensitive": sensitive,
            "module": SOFTHSM_MODULE,
        }
    )
    subprocess.run([sys.executable, __file__, "import-key", args], input=pem, check=True, capture_output=True)


def _import_key_main(args: dict, pem: bytes) -> None:
    import pkcs11
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.util.ec import encode_named_curve_parameters

    private_key = serialization.load_pem_private_key(pem, None)
    token = pkcs11.lib(args["module"]).get_token(token_label=args["token"])
    sign = args["use"] == "sig"
    common = {Attribute.TOKEN: True, Attribute.LABEL: args["label"], Attribute.ID: os.urandom(8)}
    priv_t = {
        **common,
        Attribute.CLASS: ObjectClass.PRIVATE_KEY,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: args["sensitive"],
        Attribute.EXTRACTABLE: args["extractable"],
        Attribute.SIGN: sign,
    }
    pub_t = {**common, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.PRIVATE: False, Attribute.VERIFY: sign}
    if isinstance(private_key, rsa.RSAPrivateKey):
        n = private_key.private_numbers()
        pub = n.public_numbers
        b = lambda i: i.to_bytes((i.bit_length() + 7) // 8, "big")  # noqa: E731
        priv_t.update(
            {
                Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.DECRYPT: not sign,
                Attribute.MODULUS: b(pub.n),
                Attribute.PUBLIC_EXPONENT: b(pub.e),
                Attribute.PRIVATE_EXPONENT: b(n.d),
                Attribute.PRIME_1: b(n.p),
                Attribute.PRIME_2: b(n.q),
                Attribute.EXPONENT_1: b(n.dmp1),
                Attribute.EXPONENT_2: b(n.dmq1),
                Attribute.COEFFICIENT: b(n.iqmp),
            }
        )
        pub_t.update(
            {
                Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.ENCRYPT: not sign,
                Attribute.MODULUS: b(pub.n),
                Attribute.PUBLIC_EXPONENT: b(pub.e),
            }
        )
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        params = encode_named_curve_parameters(private_key.curve.name)
        size = (private_key.curve.key_size + 7) // 8
        point = private_key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        der_point = (bytes([0x04, len(point)]) if len(point) < 128 else bytes([0x04, 0x81, len(point)])) + point
        priv_t.update(
            {
                Attribute.KEY_TYPE: KeyType.EC,
                Attribute.EC_PARAMS: params,
                Attribute.DERIVE: not sign,
                Attribute.VALUE: private_key.private_numbers().private_value.to_bytes(size, "big"),
            }
        )
        pub_t.update({Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: params, Attribute.EC_POINT: der_point})
    else:
        raise TypeError("unsupported key type for import")
    with token.open(rw=True, user_pin=args["pin"]) as session:
        session.create_object(priv_t)
        session.create_object(pub_t)
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.LABEL: args["label"],
                Attribute.APPLICATION: METADATA_APPLICATION,
                Attribute.VALUE: json.dumps({"alg": args["alg"], "use": args["use"]}).encode(),
            }
        )


def write_metadata_object(token_label: str, label: str, value: bytes, pin: str = USER_PIN) -> None:
    """Replace the flask-oauth-hsm metadata object of ``label`` with raw ``value`` (a broken one,
    for tests), in a child process like import_private_key."""
    args = json.dumps({"pin": pin, "token": token_label, "label": label, "module": SOFTHSM_MODULE})
    subprocess.run([sys.executable, __file__, "write-metadata", args], input=value, check=True, capture_output=True)


def _write_metadata_main(args: dict, value: bytes) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    token = pkcs11.lib(args["module"]).get_token(token_label=args["token"])
    with token.open(rw=True, user_pin=args["pin"]) as session:
        for old in list(session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: args["label"]})):
            old.destroy()  # replaces the metadata the key was generated with
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.LABEL: args["label"],
                Attribute.APPLICATION: METADATA_APPLICATION,
                Attribute.VALUE: value,
            }
        )


if __name__ == "__main__" and sys.argv[1:2] == ["import-key"]:
    _import_key_main(json.loads(sys.argv[2]), sys.stdin.buffer.read())
if __name__ == "__main__" and sys.argv[1:2] == ["write-metadata"]:
    _write_metadata_main(json.loads(sys.argv[2]), sys.stdin.buffer.read())
