"""Recovery of a destroyed local repository from the DR site (real repository, real DR
site over HTTP): damage is named, the copy is staged then swapped in, the damaged one
kept aside, and the audit chain goes on after what the DR site held."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoskit.dr import init_repository, open_repository
from chaoskit.dr.protect.offsite import (
    Recovery,
    RepositoryWatch,
    fetch_repository,
    guard_repository,
)
from chaoskit.dr.protect.replication import Replicator, SiteClient
from chaoskit.dr.protect.repository.audit import read_log, verify_log
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.site import SiteServer
from chaoskit.errors import RepositoryError
from chaoskit.proxy.testing import serving

TOKEN = b"offsite-token"


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def record(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    def names(self) -> list[str]:
        return [e for e, _ in self.events]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteClient]:
    with serving(SiteServer(tmp_path / "site", TOKEN)) as server:
        yield SiteClient(server.server_address[:2], TOKEN)  # type: ignore[arg-type]


@pytest.fixture
def repo(tmp_path: Path, site: SiteClient) -> Repository:
    """A repository with two snapshots, both at the DR site."""
    repo = init_repository(tmp_path / "backups", "pw", scrypt_n=2**10)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        (src / "weights").write_bytes(os.urandom(200_000) + bytes([i]))
        repo.backup(src, time=10.0 + i)
    Replicator(repo, site, Events()).sync_once()
    return repo


def ransom(root: Path) -> None:
    """Rewrite every file in place, as ransomware encrypting a disk does."""
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            path.write_bytes(bytes(b ^ 0x5A for b in data) + b"PAY")


def test_the_watch_names_rewritten_and_lost_files_only(repo: Repository, tmp_path: Path) -> None:
    watch = RepositoryWatch(repo.root)
    ids = [s.id for s in repo.snapshots()]
    assert watch.problems(ids) == []
    src = tmp_path / "src"
    repo.backup(src, time=20.0)  # new files join the baseline
    assert watch.problems(ids) == []
    (repo.root / "snapshots" / ids[0]).write_bytes(b"x")
    assert watch.problems(ids) == [
        f"changed  {repo.root / 'snapshots' / ids[0]} (rewritten: repository files never are)"
    ]
    (repo.root / "config").unlink()
    (repo.root / "snapshots" / ids[1]).unlink()
    assert watch.problems(ids) == sorted([
        f"missing  {repo.root / 'config'}",
        f"changed  {repo.root / 'snapshots' / ids[0]} (rewritten: repository files never are)",
        f"missing  {repo.root / 'snapshots' / ids[1]} (a recovery point)",
    ])  # fmt: skip
    # until accepted, the damage stays named; a loss already named is not named again
    assert watch.problems(ids[:1]) == sorted([
        f"missing  {repo.root / 'config'}",
        f"changed  {repo.root / 'snapshots' / ids[0]} (rewritten: repository files never are)",
    ])  # fmt: skip
    watch.accept()
    assert watch.problems() == [f"missing  {repo.root / 'config'}"]


def test_a_ransomed_repository_comes_back_from_the_dr_site(
    repo: Repository, site: SiteClient, tmp_path: Path
) -> None:
    before = [s.id for s in repo.snapshots()]
    entries = len(read_log(repo.root))
    watch = RepositoryWatch(repo.root)
    ransom(repo.root)
    events = Events()
    assert guard_repository(repo, watch, site, events, before) == Recovery(True)
    assert events.names() == ["detected", "recovery.started", "recovered"]
    detected, recovered = events.events[0][1], events.events[2][1]
    assert detected["service"] == "backup-repository" and detected["problems"]
    assert recovered["check_ok"] is True and recovered["files"] > 0
    aside = Path(str(recovered["damaged_moved_to"]))
    assert (aside / "config").read_bytes().endswith(b"PAY"), "the damaged copy is kept"
    # the same Repository object works on the copy, and its audit chain goes on
    assert [s.id for s in repo.snapshots()] == before
    repo.restore("latest", tmp_path / "out")
    restored = (tmp_path / "out" / "weights").read_bytes()
    assert restored == (tmp_path / "src" / "weights").read_bytes()
    assert verify_log(repo.root).ok and len(read_log(repo.root)) > entries
    assert open_repository(repo.root, "pw").check(read_data=True).ok
    assert guard_repository(repo, watch, site, Events(), before) is None  # nothing left


def test_a_pack_damaged_before_it_was_shipped_names_its_snapshot(
    repo: Repository, site: SiteClient, tmp_path: Path
) -> None:
    """Drill, run 2: the attacker rewrote a pack the replicator had not shipped yet, so
    the DR site holds it damaged; the fetched copy's check names the snapshot that
    needs it (the store guard forgets that recovery point instead of restoring it for
    ever)."""
    packs_before = set((repo.root / "data").rglob("*"))
    (tmp_path / "src" / "weights").write_bytes(os.urandom(200_000))
    late = repo.backup(tmp_path / "src", time=30.0)
    (new_pack,) = [p for p in (repo.root / "data").rglob("*") if p.is_file()
                   and p not in packs_before]  # fmt: skip
    new_pack.write_bytes(bytes(b ^ 0x5A for b in new_pack.read_bytes()) + b"PAY")  # ransom()
    Replicator(repo, site, Events()).sync_once()  # ships it as it is
    watch = RepositoryWatch(repo.root)
    ransom(repo.root)
    outcome = guard_repository(repo, watch, site, Events(), [late.id])
    assert outcome is not None and outcome.recovered
    assert outcome.damaged == {late.short_id}


def test_an_attacker_still_at_work_is_caught_on_the_fetched_copy(
    repo: Repository, site: SiteClient
) -> None:
    """Drill, run 3: the attacker, still going through its list, rewrote files of the
    copy just fetched; the baseline was taken after the check, so they passed as good
    until the fault's revert rewrote them again.  The baseline is the staged copy."""
    watch = RepositoryWatch(repo.root)
    ransom(repo.root)
    fetch_repository(site, repo.root, watch)
    (repo.root / "config").write_bytes(b"encrypted again")
    assert watch.problems() == [
        f"changed  {repo.root / 'config'} (rewritten: repository files never are)"
    ]


def test_without_a_dr_site_the_damage_is_reported_once(repo: Repository) -> None:
    watch = RepositoryWatch(repo.root)
    ransom(repo.root)
    events = Events()
    assert guard_repository(repo, watch, None, events, []) == Recovery(False)
    assert events.names() == ["detected", "recovery.failed"]
    assert events.events[1][1]["reason"] == "no DR site to fetch the repository from"
    assert guard_repository(repo, watch, None, events, []) is None


def test_a_fetch_that_fails_midway_leaves_the_repository_as_it_was(
    repo: Repository, site: SiteClient
) -> None:
    class Breaks:
        def __init__(self) -> None:
            self.calls = 0

        def list(self) -> set[str]:
            return site.list()

        def get(self, path: str) -> bytes:
            self.calls += 1
            if self.calls == 3:
                raise RepositoryError("link lost")
            return site.get(path)

    listing = sorted(p.relative_to(repo.root) for p in repo.root.rglob("*"))
    with pytest.raises(RepositoryError, match="link lost"):
        fetch_repository(Breaks(), repo.root)
    assert sorted(p.relative_to(repo.root) for p in repo.root.rglob("*")) == listing
    assert not any(p.name.endswith("-from-dr-site") for p in repo.root.parent.iterdir())


def test_an_empty_dr_site_is_refused(tmp_path: Path) -> None:
    with serving(SiteServer(tmp_path / "empty", TOKEN)) as server:
        client = SiteClient(server.server_address[:2], TOKEN)  # type: ignore[arg-type]
        with pytest.raises(RepositoryError, match="the DR site holds no repository"):
            fetch_repository(client, tmp_path / "backups")
