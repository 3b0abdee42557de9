"""HTTPS to the DR site with a pinned certificate: real certificates, real TLS sockets."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoskit.cli import main
from chaoskit.dr.protect.replication import SiteClient
from chaoskit.dr.protect.repository.audit import read_log
from chaoskit.dr.protect.site import SiteServer
from chaoskit.dr.protect.site_tls import make_certificate, server_context
from chaoskit.errors import ConfigError, ReplicationError
from chaoskit.proxy.testing import serving

TOKEN = b"tls-token"


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path, str]:
    return make_certificate(tmp_path / "tls", ["127.0.0.1", "localhost"])


@pytest.fixture
def site(tmp_path: Path, cert: tuple[Path, Path, str]) -> Iterator[SiteServer]:
    tls = server_context(cert[0], cert[1])
    with serving(SiteServer(tmp_path / "site", TOKEN, tls=tls)) as server:
        yield server


def client(site: SiteServer, pin: str) -> SiteClient:
    return SiteClient(site.server_address[:2], TOKEN, tls_pin=pin)  # type: ignore[arg-type]


def test_a_pinned_client_stores_and_lists_over_https(site: SiteServer, cert) -> None:
    pinned = client(site, cert[2])
    pinned.health()
    pinned.put("config", b"{}")
    assert pinned.list() == {"config"}
    assert (site.root / "config").read_bytes() == b"{}"


def test_a_certificate_that_is_not_the_pinned_one_is_refused_before_any_token(
    site: SiteServer, tmp_path: Path
) -> None:
    other = make_certificate(tmp_path / "other", ["127.0.0.1"])[2]
    with pytest.raises(ReplicationError, match=rf"presented certificate sha256:[0-9a-f]{{64}}, "
                                               rf"not the pinned {other}"):  # fmt: skip
        client(site, other).list()
    assert not (site.root / "config").exists()
    assert all("token" not in e["details"]["reason"] for e in read_log(site.root / ".witness"))


def test_plain_http_to_the_tls_port_is_refused_audited_and_the_site_serves_on(
    site: SiteServer, cert
) -> None:
    with socket.create_connection(site.server_address[:2], timeout=5) as raw:
        raw.sendall(b"GET /files HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.settimeout(5)
        try:
            while raw.recv(4096):
                pass
        except ConnectionResetError:
            pass
    client(site, cert[2]).health()  # still serving
    reasons = [e["details"]["reason"] for e in read_log(site.root / ".witness")]
    assert any(r.startswith("TLS handshake failed") for r in reasons), reasons


def test_the_key_is_private_and_never_replaced(tmp_path: Path, cert) -> None:
    assert stat.S_IMODE(cert[1].stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="refusing to replace a DR site's key"):
        make_certificate(cert[1].parent, ["127.0.0.1"])


def test_a_malformed_pin_is_one_clear_error(site: SiteServer) -> None:
    with pytest.raises(ConfigError, match="certificate pin 'abc': expected sha256:<64 hex"):
        client(site, "abc").list()


def test_site_cert_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = str(tmp_path / "c")
    assert main(["backup", "site", "cert", "--out", out_dir, "--host", "dr.example"]) == 0
    out = capsys.readouterr().out
    assert "pin         sha256:" in out and (tmp_path / "c" / "site.crt").is_file()
    assert main(["backup", "site", "cert", "--out", str(tmp_path / "c")]) == 1
    assert "refusing to replace" in capsys.readouterr().err
