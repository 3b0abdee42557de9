"""Tampering: one flipped byte anywhere is found, named, and never restored."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from chaoskit.dr import init_repository, open_repository
from chaoskit.dr.protect.repository.packs import list_packs
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.snapshots import Snapshot
from chaoskit.errors import IntegrityError, RepositoryError

PW = "pw"


def flip(path: Path, position: int, mask: int = 0x01) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[position] ^= mask
    path.write_bytes(bytes(data))


class Site:
    """A repository with two snapshots that share one file and each own another."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = init_repository(tmp / "repo", PW, scrypt_n=2**10)
        self.shared = os.urandom(200_000)
        self.only_a, self.only_b = os.urandom(150_000), os.urandom(150_000)
        src = tmp / "src"
        src.mkdir()
        (src / "shared").write_bytes(self.shared)
        (src / "only").write_bytes(self.only_a)
        self.a = self.repo.backup(src, time=1000.0)
        (src / "only").write_bytes(self.only_b)
        self.b = self.repo.backup(src, time=2000.0)

    def packs(self) -> list[Path]:
        return sorted(list_packs(self.repo.data_dir).values())

    def location(self, snap: Snapshot, name: str) -> tuple[Path, int, int]:
        entry = next(f for f in snap.files if f.path == name)
        loc = self.repo.load_index().get(entry.chunk_ids[0])
        assert loc is not None
        return list_packs(self.repo.data_dir)[loc.pack], loc.offset, loc.length


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def test_flipped_chunk_names_pack_and_only_affected_snapshot(site: Site) -> None:
    pack, offset, length = site.location(site.a, "only")
    flip(pack, offset + length // 2)
    assert site.repo.check().ok  # only reading the data can see it
    report = site.repo.check(read_data=True)
    assert not report.ok
    (problem,) = report.problems
    assert problem.kind == "pack" and problem.name == pack.name
    assert problem.snapshots == [site.a.short_id]
    with pytest.raises(IntegrityError, match=r"only: chunk [0-9a-f]+ in pack .* authentication"):
        site.repo.restore(site.a.id, site.tmp / "out")
    assert not (site.tmp / "out").exists()
    partial = site.tmp / f"out.partial-{site.a.short_id}"
    assert sorted(p.name for p in partial.iterdir()) == ["shared"]  # never the bad bytes
    assert (partial / "shared").read_bytes() == site.shared
    site.repo.restore(site.b.id, site.tmp / "out")
    assert (site.tmp / "out" / "only").read_bytes() == site.only_b


def test_flipped_pack_header_is_found_and_data_still_restores(site: Site) -> None:
    pack, _, _ = site.location(site.b, "only")
    flip(pack, pack.stat().st_size - 10)
    report = site.repo.check()
    assert [p.kind for p in report.problems] == ["pack"]
    assert "header" in report.problems[0].message
    site.repo.restore("latest", site.tmp / "out")
    assert (site.tmp / "out" / "only").read_bytes() == site.only_b
    stats = site.repo.prune()  # repairs: the pack's chunks move to a new pack
    assert stats.packs_rewritten == 1 and not pack.exists()
    assert site.repo.check(read_data=True).ok


def test_flipped_index_is_found_and_packs_are_reread(site: Site) -> None:
    for name in sorted(os.listdir(site.repo.index_dir)):
        flip(site.repo.index_dir / name, 40)
    report = site.repo.check(read_data=True)
    assert {p.kind for p in report.problems} == {"index"}
    assert all(p.name in os.listdir(site.repo.index_dir) for p in report.problems)
    site.repo.restore(site.a.id, site.tmp / "out")
    assert (site.tmp / "out" / "only").read_bytes() == site.only_a
    site.repo.prune()  # writes a good index again
    assert site.repo.check(read_data=True).ok


def test_flipped_snapshot_is_named_and_others_restore(site: Site) -> None:
    flip(site.repo.snap_dir / site.a.id, 30)
    report = site.repo.check()
    (problem,) = report.problems
    assert problem.kind == "snapshot" and problem.snapshots == [site.a.short_id]
    named = f"snapshot {site.a.short_id}( header)?: authentication"
    with pytest.raises(IntegrityError, match=named):
        site.repo.restore(site.a.id, site.tmp / "out")
    with pytest.raises(IntegrityError, match="prune refused"):
        site.repo.prune()
    site.repo.restore(site.b.id, site.tmp / "out")
    with pytest.warns(UserWarning, match=f"skipping unreadable snapshot {site.a.short_id}"):
        site.repo.forget(ids=[site.a.id], prune=True)
    assert site.repo.check(read_data=True).ok


def test_flipped_key_file_is_found_by_mac(site: Site) -> None:
    other = site.repo.add_key("other", scrypt_n=2**10)
    doc = json.loads((site.repo.keys_dir / other).read_text())
    doc["hostname"] = "forged"
    (site.repo.keys_dir / other).write_text(json.dumps(doc))
    (problem,) = site.repo.check().problems
    assert problem.kind == "key" and problem.name == other


def test_flipped_only_key_file_fails_to_open_with_clear_error(site: Site) -> None:
    (key,) = site.repo.keys_dir.iterdir()
    text = key.read_text()
    start = text.index('"data": "') + 20
    key.write_text(text[:start] + ("A" if text[start] != "A" else "B") + text[start + 1 :])
    with pytest.raises(RepositoryError, match=r"wrong password \(or damaged key file\)"):
        open_repository(site.repo.root, PW)


def test_changed_config_is_found(site: Site) -> None:
    config = json.loads((site.repo.root / "config").read_text())
    config["cipher"] = "none"
    (site.repo.root / "config").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="config: MAC mismatch"):
        repo = open_repository(site.repo.root, PW)
    assert [p.kind for p in repo.check().problems] == ["config"]


@pytest.mark.parametrize("kind", ["pack", "index", "key", "snapshot"])
def test_any_flipped_byte_is_found_by_check(site: Site, kind: str) -> None:
    """Random positions in every kind of file: check --read-data never passes."""
    repo: Repository = site.repo
    rng = random.Random(f"tamper-{kind}")
    if kind == "key":
        site.repo.add_key("second", scrypt_n=2**10)
    files = {
        "pack": site.packs(),
        "index": [repo.index_dir / n for n in os.listdir(repo.index_dir)],
        "key": [repo.keys_dir / k for k in os.listdir(repo.keys_dir) if k != repo.key_id],
        "snapshot": [repo.snap_dir / site.b.id],
    }[kind]
    for _ in range(12):
        path = rng.choice(files)
        position = rng.randrange(path.stat().st_size)
        mask = 1 << rng.randrange(8)
        flip(path, position, mask)
        report = repo.check(read_data=True)
        assert not report.ok, f"flip at {path.name}:{position} went unnoticed"
        assert any(
            p.name == path.name
            or path.name.startswith(p.name)
            or (p.kind == "snapshot" and p.name == site.b.id)
            for p in report.problems
        )
        flip(path, position, mask)
        assert repo.check(read_data=True).ok


def test_missing_pack_names_every_affected_snapshot(site: Site) -> None:
    pack, _, _ = site.location(site.a, "only")
    pack.unlink()
    report = site.repo.check()
    (problem,) = report.problems
    assert problem.kind == "pack" and problem.name == pack.name and "missing" in problem.message
    assert problem.snapshots == sorted([site.a.short_id, site.b.short_id])  # shared file
    with pytest.raises(IntegrityError, match="pack unreadable"):
        site.repo.restore(site.a.id, site.tmp / "out")
