"""The DR site and the replicator: real repository, real HTTP server, real proxy.

The replicator ships a local repository to the DR site through a Toxiproxy-compatible
proxy; the DR site must end up a complete repository on its own, an outage of the link
must be journaled and the backlog shipped when it heals, and the site must refuse
whatever would let a primary damage the off-site copy.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoskit.dr import init_repository, open_repository
from chaoskit.dr.replication import Replicator, SiteClient
from chaoskit.dr.repository.repo import Repository
from chaoskit.dr.site import SiteServer, repository_files
from chaoskit.errors import ReplicationError
from chaoskit.journal import Journal, read_journal
from chaoskit.proxy.client import ToxiproxyAPI
from chaoskit.proxy.server import ProxyServer

PW = "dr site password"
TOKEN = b"s3cret-token"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteServer]:
    server = SiteServer(tmp_path / "site", TOKEN)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


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
    assert _request(site, "DELETE", f"/files/{name}", **auth)[0] == 501
    assert (site.root / name).read_bytes() == data
    assert _request(site, "GET", "/files", **auth) == (200, json.dumps([name]).encode())
    assert not [p for p in site.root.rglob("*") if p.name.startswith(".")], "temp file left"


def test_wrong_token_is_a_clear_replication_error(repo, site):
    client = SiteClient(("127.0.0.1", site.server_address[1]), b"wrong")
    with pytest.raises(ReplicationError, match="answered 401"):
        client.list()
    closed = SiteClient(("127.0.0.1", 1), TOKEN)
    with pytest.raises(ReplicationError, match="127.0.0.1:1: GET /health failed"):
        closed.health()
