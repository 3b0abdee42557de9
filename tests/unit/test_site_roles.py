"""DR-site tokens have roles; deletion needs an admin token and respects the retention
lock.  A real DR site over real HTTP."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from chaoskit.cli import main
from chaoskit.dr.protect.repository.audit import read_log
from chaoskit.dr.protect.site import SiteServer, read_tokens
from chaoskit.proxy.testing import serving
from chaoskit.waiting import wait_until

WRITER, READER, ADMIN = b"writer-tok", b"reader-tok", b"admin-tok"
PACK = "data/ab/" + "ab" * 32


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., SiteServer]]:
    with ExitStack() as running:

        def start_site(**options: object) -> SiteServer:
            site = SiteServer(tmp_path / "site", WRITER,
                              tokens={READER: "reader", ADMIN: "admin"}, **options)  # type: ignore[arg-type]  # fmt: skip
            return running.enter_context(serving(site))

        yield start_site


def ask(site: SiteServer, method: str, path: str, token: bytes, body: bytes | None = None):
    conn = http.client.HTTPConnection(*site.server_address[:2], timeout=5)
    headers = {"Authorization": f"Bearer {token.decode()}"}
    if body is not None:
        headers["X-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    conn.request(method, path, body=body, headers=headers)
    answer = conn.getresponse()
    result = answer.status, answer.read()
    conn.close()
    return result


def test_each_role_does_only_its_part(start) -> None:
    site = start()
    assert ask(site, "PUT", f"/files/{PACK}", READER, b"pack")[0] == 403
    assert ask(site, "PUT", f"/files/{PACK}", WRITER, b"pack")[0] == 201
    assert ask(site, "GET", f"/files/{PACK}", READER) == (200, b"pack")
    status, body = ask(site, "DELETE", f"/files/{PACK}", WRITER)
    assert status == 403 and b"a writer token may not delete here" in body
    assert ask(site, "DELETE", f"/files/{PACK}", READER)[0] == 403
    assert ask(site, "PUT", f"/files/{PACK}", ADMIN, b"other")[0] == 409  # nobody overwrites
    assert ask(site, "DELETE", f"/files/{PACK}", ADMIN)[0] == 200  # no retention lock
    assert not (site.root / PACK).exists()
    refusals = [(e["details"]["method"], e["details"]["status"])
                for e in read_log(site.root / ".witness") if e["outcome"] == "refused"]  # fmt: skip
    assert refusals == [("PUT", 403), ("DELETE", 403), ("DELETE", 403), ("PUT", 409)]
    assert read_log(site.root / ".witness")[-1]["op"] == "site delete"


def test_the_retention_lock_holds_even_against_an_admin(start) -> None:
    site = start(retain=30 * 86400.0)
    assert ask(site, "PUT", f"/files/{PACK}", WRITER, b"pack")[0] == 201
    status, body = ask(site, "DELETE", f"/files/{PACK}", ADMIN)
    assert status == 423 and b"retention lock keeps everything younger than 30d" in body
    assert (site.root / PACK).read_bytes() == b"pack"
    month_ago = time.time() - 31 * 86400
    os.utime(site.root / PACK, (month_ago, month_ago))  # as if stored 31 days ago
    assert ask(site, "DELETE", f"/files/{PACK}", ADMIN)[0] == 200


def test_a_replayed_request_changes_nothing(start) -> None:
    """A captured upload sent again stores nothing new (200, ``stored: false``); a
    captured admin delete sent again finds nothing (404, audited); the copy is intact."""
    site = start()
    other = "data/cd/" + "cd" * 32
    assert ask(site, "PUT", f"/files/{PACK}", WRITER, b"pack")[0] == 201
    assert ask(site, "PUT", f"/files/{other}", WRITER, b"other")[0] == 201
    assert ask(site, "PUT", f"/files/{PACK}", WRITER, b"pack") == (200, b'{"stored":false}')
    assert ask(site, "DELETE", f"/files/{other}", ADMIN)[0] == 200
    assert ask(site, "DELETE", f"/files/{other}", ADMIN)[0] == 404
    assert (site.root / PACK).read_bytes() == b"pack"
    last = read_log(site.root / ".witness")[-1]
    assert (last["outcome"], last["details"]["status"]) == ("refused", 404)


def test_a_bad_tokens_file_is_one_clear_error(tmp_path: Path) -> None:
    good = tmp_path / "tokens"
    good.write_text("# roles\nreader r-tok\nadmin a-tok  # the operator's\n")
    assert read_tokens(good) == {b"r-tok": "reader", b"a-tok": "admin"}
    bad = tmp_path / "bad"
    bad.write_text("reader r-tok\nroot x\n")
    with pytest.raises(ValueError, match=r"bad:2: expected '<role> <token>' with role one of"):
        read_tokens(bad)
    (tmp_path / "t").write_text("tok")
    code = main(["backup", "site", "--root", str(tmp_path / "s"), "--token-file",
                 str(tmp_path / "t"), "--tokens", str(bad)])  # fmt: skip
    assert code == 2


def test_connections_over_the_limit_are_closed_at_accept_and_audited(start) -> None:
    """Two idle connections hold both slots; a third is closed unread (and audited);
    once one of the two goes, the site serves again."""
    import socket

    site = start(max_connections=2)
    address = site.server_address[:2]
    held = [socket.create_connection(address, timeout=5) for _ in range(2)]
    try:
        extra = socket.create_connection(address, timeout=5)
        assert extra.recv(100) == b"", "an over-the-limit connection must be closed at accept"
        extra.close()
        refusals = read_log(site.root / ".witness")
        assert refusals[-1]["details"]["status"] == 503
        assert refusals[-1]["details"]["reason"] == "over 2 connections"
    finally:
        held.pop().close()
    try:  # the freed slot is back once its handler has seen the close
        wait_until(lambda: served(site), 5, what="the site serves after a connection closed")
    finally:
        for conn in held:
            conn.close()


def served(site: SiteServer) -> bool:
    try:
        return ask(site, "GET", "/files", WRITER)[0] == 200
    except (ConnectionError, http.client.HTTPException):
        return False
