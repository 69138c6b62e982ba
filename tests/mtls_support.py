"""A real TLS terminator for the mTLS tests: a throwaway CA and certificates made here, and an
nginx of our own (from the distribution) on a free loopback port in front of gunicorn, passing the
client certificate as ``$ssl_client_escaped_cert`` and its verification as ``$ssl_client_verify``.

``ssl_verify_client optional_no_ca``: nginx asks every client for a certificate and checks it
against the CA, but lets self-signed ones through: ``tls_client_auth`` relies on the check (the
verify header says SUCCESS), ``self_signed_tls_client_auth`` does not (RFC 8705 §2.1, §2.2).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import support

CERT_HEADER, VERIFY_HEADER = "X-SSL-Client-Cert", "X-SSL-Client-Verify"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed (./dev test installs it)")
    return found


@dataclass
class Issued:
    cert: x509.Certificate
    key: Any
    cert_path: Path
    key_path: Path

    @property
    def pair(self) -> tuple[str, str]:
        return str(self.cert_path), str(self.key_path)

    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _name(cn: str, org: str | None = "Example Org") -> x509.Name:
    """The usual order, most significant RDN first: its RFC 4514 string is "CN=…,O=…"."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class CA:
    """A throwaway certificate authority that writes what it issues under ``base``."""

    def __init__(self, base: Path, name: str = "Test CA"):
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = base / f"{name.replace(' ', '-').lower()}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        label: str,
        subject: x509.Name,
        *,
        sans: list[x509.GeneralName] | None = None,
        server: bool = False,
        self_signed: bool = False,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        issuer, signer = (subject, key) if self_signed else (self.cert.subject, self.key)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(signer, hashes.SHA256())
        cert_path, key_path = self.base / f"{label}.pem", self.base / f"{label}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return Issued(cert, key, cert_path, key_path)

    def server_cert(self) -> Issued:
        return self.issue(
            "server",
            _name("127.0.0.1", None),
            server=True,
            sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        )


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp-body;
  proxy_temp_path {dir}/tmp-proxy;
  fastcgi_temp_path {dir}/tmp-fastcgi;
  uwsgi_temp_path {dir}/tmp-uwsgi;
  scgi_temp_path {dir}/tmp-scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {server_cert};
    ssl_certificate_key {server_key};
    ssl_client_certificate {ca};
    ssl_verify_client optional_no_ca;
    location / {{
      proxy_pass http://127.0.0.1:{upstream};
      proxy_set_header Host $host:$server_port;
      # Always overwritten, never passed on from the client (docs/proof-of-possession.md).
      proxy_set_header {cert_header} $ssl_client_escaped_cert;
      proxy_set_header {verify_header} $ssl_client_verify;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
"""


class Nginx:
    """nginx terminating TLS on a free loopback port, proxying to ``upstream``."""

    def __init__(self, workdir: Path, ca: CA, upstream: int):
        self.dir, self.ca, self.upstream = workdir, ca, upstream
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = support.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        server = self.ca.server_cert()
        conf = self.dir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                dir=self.dir,
                port=self.port,
                upstream=self.upstream,
                server_cert=server.cert_path,
                server_key=server.key_path,
                ca=self.ca.path,
                cert_header=CERT_HEADER,
                verify_header=VERIFY_HEADER,
            )
        )
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        context = ssl.create_default_context(cafile=str(self.ca.path))
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited: " + (self.dir / "error.log").read_text()[-2000:])
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock,
                    context.wrap_socket(sock, server_hostname="127.0.0.1"),
                ):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not come up")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
