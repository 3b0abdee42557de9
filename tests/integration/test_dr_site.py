"""The DR site and the replicator: real repository, real HTTP server, real proxy.

The replicator ships a local repository to the DR site through a Toxiproxy-compatible
proxy; the DR site must end up a complete repository on its own, an outage of the link
must be journaled and the backlog shipped when it heals, and the site must refuse
whatever would let a primary damage the off-site copy.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaoskit.dr import init_repository, open_repository
from chaoskit.dr.protect.replication import Replicator, SiteClient
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.site import SiteServer, repository_files
from chaoskit.dr.protect.witness import WITNESS_DIR
from chaoskit.errors import PermissionDeniedError, ReplicationError
from chaoskit.journal import Journal, read_journal
from chaoskit.proxy.client import ToxiproxyAPI
from chaoskit.proxy.server import ProxyServer
from chaoskit.proxy.testing import serving

PW = "dr site password"
TOKEN = b"s3cret-token"


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[Callable[..., SiteServer]]:
    """Start DR sites (keyword arguments go to SiteServer); all are stopped at the end."""
    numbers = itertools.count()
    with ExitStack() as running:

        def start(**options: object) -> SiteServer:
            root = tmp_path / f"site{next(numbers) or ''}"
            return running.enter_context(serving(SiteServer(root, TOKEN, **options)))  # type: ignore[arg-type]

        yield start


@pytest.fixture
def site(make_site: Callable[..., SiteServer]) -> SiteServer:
    return make_site()


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return init_repository(tmp_path / "local", PW, scrypt_n=2**10)


@pytest.fixture
def link(site: SiteServer) -> Iterator[tuple[ToxiproxyAPI, tuple[str, int]]]:
    """The DR site behind a proxy named dr-site (where a partition is injected)."""
    with ProxyServer(port=0) as proxy:
        api = ToxiproxyAPI(proxy.url)
        made = api.create_proxy("dr-site", f"127.0.0.1:{site.server_address[1]}")
        host, _, port = made["listen"].rpartition(":")
        yield api, (host, int(port))


def backup(repo: Repository, tmp_path: Path, n: int) -> str:
    source = tmp_path / f"src{n}"
    source.mkdir()
    (source / "weights.bin").write_bytes(os.urandom(200_000))
    (source / "shared.bin").write_bytes(b"same in every snapshot" * 1000)
    return repo.backup(source, time=1_000_000.0 + n, checkpoint_step=n).id


def test_replicated_site_is_a_complete_repository(tmp_path, repo, site, link):
    _, endpoint = link
    ids = [backup(repo, tmp_path, n) for n in range(3)]
    journal = Journal(tmp_path / "journal.jsonl")
    replicator = Replicator(repo, SiteClient(endpoint, TOKEN), journal)
    replicator.poll_once()
    assert replicator.pending() == []
    assert repository_files(site.root) == repository_files(repo.root)
    shipped = [e for e in read_journal(journal.path) if e["event"] == "backup.replicated"]
    assert sorted(e["snapshot"] for e in shipped) == sorted(ids)
    assert {e["wall_created"] for e in shipped} == {1_000_000.0, 1_000_001.0, 1_000_002.0}
    # the off-site copy stands alone: opened, checked and restored without the primary
    offsite = open_repository(site.root, PW)
    assert offsite.check(read_data=True).ok
    offsite.restore(ids[-1], tmp_path / "restored")
    assert (tmp_path / "restored" / "weights.bin").read_bytes() == (
        tmp_path / "src2" / "weights.bin"
    ).read_bytes()
    assert replicator.sync_once() == 0, "a second pass shipped something again"


def test_a_writer_key_backs_up_and_replicates_what_only_readers_restore(tmp_path, repo, site):
    """The primary holds a writer key only: it backs up and ships; the DR site's copy is
    restored with a reader key; the writer itself can read neither copy."""
    repo.add_key("writer", role="writer", scrypt_n=2**10)
    repo.add_key("reader", role="reader", scrypt_n=2**10)
    writer = open_repository(repo.root, "writer")
    ids = [backup(writer, tmp_path, n) for n in range(2)]
    journal = Journal(tmp_path / "journal.jsonl")
    Replicator(
        writer, SiteClient(("127.0.0.1", site.server_address[1]), TOKEN), journal
    ).sync_once()
    assert repository_files(site.root) == repository_files(repo.root)
    shipped = [e for e in read_journal(journal.path) if e["event"] == "backup.replicated"]
    assert sorted(e["snapshot"] for e in shipped) == sorted(ids)
    # a writer reads the snapshots' headers, so it reports when what it shipped was made
    made = {s.id: s.time for s in open_repository(repo.root, "reader").snapshots()}
    assert {e["snapshot"]: e["wall_created"] for e in shipped} == made
    offsite = open_repository(site.root, "reader")
    assert sorted(s.id for s in offsite.snapshots()) == sorted(ids)
    offsite.restore(ids[-1], tmp_path / "out")
    assert (tmp_path / "out" / "weights.bin").read_bytes() == (
        tmp_path / "src1" / "weights.bin"
    ).read_bytes()
    assert offsite.check(read_data=True).ok
    with pytest.raises(PermissionDeniedError, match="role writer, which may not restore"):
        open_repository(site.root, "writer").restore(ids[-1], tmp_path / "out2")


def test_partition_queues_backups_and_resumes_after_the_heal(tmp_path, repo, site, link):
    api, endpoint = link
    journal = Journal(tmp_path / "journal.jsonl")
    replicator = Replicator(repo, SiteClient(endpoint, TOKEN, probe_timeout=0.3), journal)
    backup(repo, tmp_path, 0)
    replicator.poll_once()
    api.set_enabled("dr-site", False)
    queued = [backup(repo, tmp_path, n) for n in (1, 2)]
    replicator.poll_once()
    replicator.poll_once()
    events = [e["event"] for e in read_journal(journal.path)]
    assert events.count("detected") == 1 and "recovered" not in events
    assert sorted(replicator.pending()) == sorted(queued)
    api.set_enabled("dr-site", True)
    replicator.poll_once()
    assert replicator.pending() == []
    log = read_journal(journal.path)
    kinds = [(e["event"], e.get("action")) for e in log if e["event"] != "backup.replicated"]
    assert kinds == [
        ("detected", None),
        ("recovery.started", "queue"),
        ("recovery.started", "resume"),
        ("recovered", "resume"),
        ("steady_state.ok", None),
    ]
    detected = next(e for e in log if e["event"] == "detected")
    assert detected["service"] == "dr-site" and detected["signal"] == "replication"
    assert {e["snapshot"] for e in log if e["event"] == "backup.replicated"} >= set(queued)


def test_one_failed_pass_is_not_an_outage(tmp_path, repo, site, link):
    api, endpoint = link
    journal = Journal(tmp_path / "journal.jsonl")
    replicator = Replicator(repo, SiteClient(endpoint, TOKEN, probe_timeout=0.3), journal)
    api.set_enabled("dr-site", False)
    replicator.poll_once()
    api.set_enabled("dr-site", True)
    replicator.poll_once()
    assert [e["event"] for e in read_journal(journal.path)] == []


def _request(site: SiteServer, method: str, path: str, body: bytes = b"", **headers: str):
    conn = http.client.HTTPConnection("127.0.0.1", site.server_address[1], timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_site_refuses_what_could_damage_the_offsite_copy(site):
    auth = {"Authorization": f"Bearer {TOKEN.decode()}"}
    data = b"sealed snapshot bytes"
    digest = hashlib.sha256(data).hexdigest()
    name = "snapshots/" + "ab" * 16
    put = lambda path, body, **h: _request(site, "PUT", path, body, **h)  # noqa: E731
    assert put(f"/files/{name}", data, **{"X-Content-SHA256": digest})[0] == 401
    assert put(f"/files/{name}", data, **auth, **{"X-Content-SHA256": "0" * 64})[0] == 400
    assert put("/files/../escape", data, **auth, **{"X-Content-SHA256": digest})[0] == 404
    assert put("/files/locks/" + "ab" * 16, data, **auth, **{"X-Content-SHA256": digest})[0] == 404
    assert put(f"/files/{name}", data, **auth, **{"X-Content-SHA256": digest})[0] == 201
    assert put(f"/files/{name}", data, **auth, **{"X-Content-SHA256": digest})[0] == 200
    other = b"other bytes"
    status, body = put(
        f"/files/{name}", other, **auth, **{"X-Content-SHA256": hashlib.sha256(other).hexdigest()}
    )
    assert status == 409 and b"exists with other content" in body
    assert _request(site, "DELETE", f"/files/{name}", **auth)[0] == 403  # the writer's token
    assert (site.root / name).read_bytes() == data
    assert _request(site, "GET", "/files", **auth) == (200, json.dumps([name]).encode())
    assert not [p for p in site.root.rglob("*") if p.name.startswith(".") and
                p.relative_to(site.root).parts[0] != WITNESS_DIR], "temp file left"


def test_wrong_token_is_a_clear_replication_error(repo, site):
    client = SiteClient(("127.0.0.1", site.server_address[1]), b"wrong")
    with pytest.raises(ReplicationError, match="answered 401"):
        client.list()
    closed = SiteClient(("127.0.0.1", 1), TOKEN)
    with pytest.raises(ReplicationError, match="127.0.0.1:1: GET /health failed"):
        closed.health()


SNAP = "/files/snapshots/" + "cd" * 16
HUGE = 256 << 20


def _raw(site: SiteServer, head: str, *, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send only *head* (request line and headers, never a body) on a raw socket; return
    everything the site answers and whether it closed the connection within *timeout*."""
    with socket.create_connection(("127.0.0.1", site.server_address[1]), timeout=timeout) as s:
        s.sendall(head.replace("\n", "\r\n").encode())
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = s.recv(65536)
            except TimeoutError:
                return got, False
            if not part:
                return got, True
            got += part
        return got, False


def _put_head(length: int, authorization: str | None, path: str = SNAP, **extra: str) -> str:
    lines = [f"PUT {path} HTTP/1.1", "Host: dr-site", f"Content-Length: {length}"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n\n"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", TOKEN.decode(), f"Basic {TOKEN.decode()}"]
)
def test_unauthenticated_huge_put_is_refused_before_its_body(site, authorization):
    """Headers announcing 256 MiB and no body at all: the 401 arrives (the site did not
    wait for the body) and the connection is closed (the body is never read)."""
    answer, closed = _raw(site, _put_head(HUGE, authorization))
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert b"WWW-Authenticate: Bearer" in answer
    assert closed, "the site kept the connection open for an unread 256 MiB body"
    assert not (site.root / SNAP.removeprefix("/files/")).exists()
    assert _request(site, "GET", "/files", Authorization=f"Bearer {TOKEN.decode()}")[0] == 200


def test_authenticated_put_over_the_limit_is_413_before_its_body(site):
    answer, closed = _raw(site, _put_head(HUGE + 1, f"Bearer {TOKEN.decode()}"))
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert (
        f"body of {HUGE + 1} bytes is over this DR site's limit of {HUGE} bytes".encode() in answer
    )
    assert closed
    answer, closed = _raw(site, _put_head(HUGE, f"Bearer {TOKEN.decode()}", "/files/../x"))
    assert answer.startswith(b"HTTP/1.1 404 ") and closed, answer


def test_expect_100_continue_gets_the_refusal_instead_of_the_go_ahead(site):
    answer, closed = _raw(site, _put_head(HUGE, "Bearer wrong", Expect="100-continue"))
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert b"100 Continue" not in answer and closed


def test_bearer_scheme_is_required(site):
    data = b"snapshot bytes"
    digest = {"X-Content-SHA256": hashlib.sha256(data).hexdigest()}
    for refused in (TOKEN.decode(), f"Basic {TOKEN.decode()}", "Bearer", "Bearer ", "Bearer x"):
        status, body = _request(site, "PUT", SNAP, data, Authorization=refused, **digest)
        assert status == 401, refused
        assert _request(site, "GET", "/files", Authorization=refused)[0] == 401, refused
    assert b"send 'Authorization: Bearer <token>'" in _request(site, "GET", "/files")[1]
    assert not (site.root / "snapshots").exists()
    # the scheme is case-insensitive (RFC 7235), the token is not
    assert _request(site, "GET", "/files", Authorization=f"bearer {TOKEN.decode()}")[0] == 200
    upper = f"Bearer {TOKEN.decode().upper()}"
    assert _request(site, "GET", "/files", Authorization=upper)[0] == 401


def test_request_size_limit(make_site):
    site = make_site(max_body=1000)
    auth = {"Authorization": f"Bearer {TOKEN.decode()}"}
    for size, status in ((1001, 413), (1000, 201)):
        data = os.urandom(size)
        headers = {**auth, "X-Content-SHA256": hashlib.sha256(data).hexdigest()}
        got, body = _request(site, "PUT", SNAP, data, **headers)
        assert got == status, body
    assert (
        b"over this DR site's limit of 1000 bytes"
        in _request(site, "PUT", SNAP, b"x" * 1001, **auth)[1]
    )
    assert len((site.root / SNAP.removeprefix("/files/")).read_bytes()) == 1000
    answer, closed = _raw(site, "PUT " + SNAP + " HTTP/1.1\nHost: x\n" + \
        f"Authorization: Bearer {TOKEN.decode()}\n\n")  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 411 ") and closed, answer


def test_a_small_refused_body_leaves_the_connection_usable(site):
    """A client that sent its (small) body before reading the 401 gets the answer, not a
    reset, and can go on on the same connection."""
    conn = http.client.HTTPConnection("127.0.0.1", site.server_address[1], timeout=5)
    try:
        conn.request("PUT", SNAP, body=b"x" * 5000, headers={"Authorization": "Bearer wrong"})
        answer = conn.getresponse()
        assert (answer.status, answer.getheader("Connection")) == (401, None)
        answer.read()
        conn.request("GET", "/files", headers={"Authorization": f"Bearer {TOKEN.decode()}"})
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_a_silent_client_is_disconnected(make_site):
    site = make_site(timeout=0.3)
    started = time.monotonic()
    answer, closed = _raw(site, _put_head(10, f"Bearer {TOKEN.decode()}"), timeout=5)
    assert closed and time.monotonic() - started < 4, answer
    assert _request(site, "GET", "/health") == (200, b'{"status":"ok"}')


@pytest.fixture(scope="module")
def garbage_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteServer]:
    """One site for every generated request; a short idle timeout ends what is left open."""
    root = tmp_path_factory.mktemp("garbage") / "site"
    with serving(SiteServer(root, TOKEN, timeout=0.3)) as server:
        yield server


ANSWERS = {200, 400, 401, 403, 404, 411, 413, 414, 423, 431, 501, 505}
_text = st.text(max_size=40)
REQUESTS = st.builds(
    lambda method, path, version, headers, body: (
        f"{method} {path} {version}\r\n".encode("utf-8", "surrogatepass")
        + b"".join(f"{k}: {v}\r\n".encode("utf-8", "surrogatepass") for k, v in headers)
        + b"\r\n"
        + body
    ),
    st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "PUT PUT"]) | st.text(max_size=6),
    st.sampled_from(["/health", "/files", SNAP, "/files/config", "/files/../x", "*"]) | _text,
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x"]) | st.text(max_size=9),
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "Content-Length",
                    "Authorization",
                    "Expect",
                    "Transfer-Encoding",
                    "X-Content-SHA256",
                    "Host",
                ]
            )
            | st.text(max_size=10),  # fmt: skip
            st.sampled_from(["Bearer", "Bearer x", "100-continue", "-1", str(HUGE), "chunked"])
            | st.integers(-5, 1 << 40).map(str)
            | _text,
        ),
        max_size=6,
    ),
    st.binary(max_size=300),
) | st.binary(max_size=600)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=REQUESTS)
def test_garbage_requests_get_an_http_answer_and_write_nothing(garbage_site, request):
    with socket.create_connection(("127.0.0.1", garbage_site.server_address[1]), timeout=3) as s:
        try:
            s.sendall(request)
        except OSError:
            pass  # the site may close before reading it all: that is an answer too
        answer = b""
        while True:
            try:
                part = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not part:
                break
            answer += part
    while answer.startswith(b"HTTP/1.1 100 "):  # an interim answer to Expect on a GET
        answer = answer.partition(b"\r\n\r\n")[2]
    if answer:  # else the site closed the connection (idle timeout, reset)
        assert answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), answer
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert status in ANSWERS, answer
        if status != 200:
            assert json.loads(body)["status"] == status, answer
    assert not [p for p in garbage_site.root.rglob("*")
                if p.is_file() and p.relative_to(garbage_site.root).parts[0] != WITNESS_DIR]
    assert _request(garbage_site, "GET", "/health") == (200, b'{"status":"ok"}')
