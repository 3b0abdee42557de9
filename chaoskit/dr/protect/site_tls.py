"""TLS for the DR site: a certificate chaoskit makes, and clients that pin it.

A DR site is one service run by the team that runs the primary, so there is no public CA
to ask: ``chaoskit backup site cert`` makes a self-signed certificate (ECDSA P-256, the
site's host names as subject alternative names) and prints its SHA-256 fingerprint;
clients pin that fingerprint (as SSH pins a host key), so a certificate that is not the
site's ends the connection before the bearer token is sent.  The private key file is
written 0600 with temp file + fsync + rename.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chaoskit.atomic import atomic_write_bytes
from chaoskit.errors import ConfigError, ReplicationError

CERT_FILE, KEY_FILE = "site.crt", "site.key"


def fingerprint(der: bytes) -> str:
    """``sha256:<hex>`` of a DER certificate, the form pins are written in."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def make_certificate(out_dir: Path, hosts: list[str], *, days: int = 825) -> tuple[Path, Path, str]:
    """Write a self-signed certificate and its key for *hosts*; returns their paths and
    the certificate's fingerprint.  Refuses to overwrite an existing key."""
    if not hosts:
        raise ConfigError("a DR-site certificate needs at least one host name or address")
    cert_path, key_path = out_dir / CERT_FILE, out_dir / KEY_FILE
    if key_path.exists():
        raise ConfigError(f"{key_path} exists: refusing to replace a DR site's key")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"chaoskit DR site {hosts[0]}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    atomic_write_bytes(key_path, pem_key)
    os.chmod(key_path, 0o600)
    atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path, fingerprint(cert.public_bytes(serialization.Encoding.DER))


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"DR-site certificate {cert} / key {key}: {e}") from e
    return context


def certificate_fingerprint(cert: Path) -> str:
    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"DR-site certificate {cert}: {e}") from e
    return fingerprint(loaded.public_bytes(serialization.Encoding.DER))


def check_pin(pin: str) -> str:
    digest = pin.removeprefix("sha256:").replace(":", "").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"certificate pin {pin!r}: expected sha256:<64 hex digits>")
    return "sha256:" + digest


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a DR site whose certificate must have the pinned fingerprint; checked
    right after the handshake, before any request (and its token) is sent."""

    def __init__(self, host: str, port: int, pin: str, *, timeout: float) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pin is the check: a self-signed site
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        super().__init__(host, port, timeout=timeout, context=context)
        self.pin = check_pin(pin)

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True) or b""
        got = fingerprint(der)
        if got != self.pin:
            self.sock.close()
            raise ReplicationError(
                f"DR site {self.host}:{self.port} presented certificate {got}, not the "
                f"pinned {self.pin}: refusing to talk to it"
            )
