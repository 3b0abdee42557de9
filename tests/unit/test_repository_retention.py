"""Retention policies and forget/prune."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chaoskit.dr import RetentionPolicy, apply_policy, init_repository
from chaoskit.dr.protect.repository.packs import list_packs
from chaoskit.dr.protect.repository.snapshots import Snapshot
from chaoskit.errors import ConfigError

HOUR = 3600.0
DAY = 24 * HOUR
T0 = 1_700_000_000.0 - 1_700_000_000.0 % (7 * DAY)  # a bucket-aligned start


def snaps(times: list[float]) -> list[Snapshot]:
    return [
        Snapshot(id=f"{i:032x}", time=t, backup_time=t, hostname="h", source="/s")
        for i, t in enumerate(times)
    ]


def kept_times(times: list[float], policy: RetentionPolicy) -> list[float]:
    kept, removed = apply_policy(snaps(times), policy)
    assert len(kept) + len(removed) == len(times)
    return sorted(s.time for s, _ in kept)


def test_keep_last() -> None:
    times = [T0 + i for i in range(10)]
    assert kept_times(times, RetentionPolicy(keep_last=3)) == times[-3:]


def test_keep_within_counts_back_from_newest() -> None:
    times = [T0, T0 + 5 * DAY, T0 + 9 * DAY, T0 + 10 * DAY]
    policy = RetentionPolicy.from_options(keep_within="5d")
    assert kept_times(times, policy) == times[1:]


def test_keep_hourly_daily_weekly_keep_newest_per_period() -> None:
    times = [T0 + h * HOUR + m * 60 for h in range(0, 24 * 15, 6) for m in (0, 30)]
    hourly = kept_times(times, RetentionPolicy(keep_hourly=3))
    assert hourly == [T0 + h * HOUR + 1800 for h in (24 * 15 - 18, 24 * 15 - 12, 24 * 15 - 6)]
    daily = kept_times(times, RetentionPolicy(keep_daily=2))
    assert daily == [T0 + 13 * DAY + 18 * HOUR + 1800, T0 + 14 * DAY + 18 * HOUR + 1800]
    weekly = kept_times(times, RetentionPolicy(keep_weekly=5))
    assert len(weekly) == 3 and weekly[-1] == max(times)


def test_rules_combine_and_empty_policy_is_refused(tmp_path: Path) -> None:
    times = [T0 + i * DAY for i in range(10)]
    assert kept_times(times, RetentionPolicy(keep_last=1, keep_daily=3)) == times[-3:]
    with pytest.raises(ConfigError, match="keep-last"):
        RetentionPolicy(keep_last=-1)
    with pytest.raises(ConfigError, match="keep-within"):
        RetentionPolicy.from_options(keep_within="soon")
    repo = init_repository(tmp_path / "r", "pw", scrypt_n=2**10)
    with pytest.raises(ConfigError, match="needs a policy"):
        repo.forget(RetentionPolicy())


def test_forget_and_prune_free_space_and_keep_what_is_kept(tmp_path: Path) -> None:
    repo = init_repository(tmp_path / "r", "pw", scrypt_n=2**10)
    src = tmp_path / "src"
    src.mkdir()
    shared = os.urandom(1 << 20)
    contents = []
    for i in range(4):
        (src / "shared").write_bytes(shared)
        unique = os.urandom(2 << 20)
        (src / "unique").write_bytes(unique)
        contents.append(unique)
        repo.backup(src, time=T0 + i * HOUR)
    size_before = sum(p.stat().st_size for p in list_packs(repo.data_dir).values())
    result = repo.forget(RetentionPolicy(keep_last=1), prune=True)
    assert len(result.removed) == 3 and len(result.kept) == 1
    assert result.prune is not None and result.prune.bytes_freed >= 3 * (2 << 20)
    size_after = sum(p.stat().st_size for p in list_packs(repo.data_dir).values())
    assert size_after < size_before - 3 * (2 << 20)
    assert repo.check(read_data=True).ok
    repo.restore("latest", tmp_path / "out")
    assert (tmp_path / "out" / "unique").read_bytes() == contents[-1]
    assert (tmp_path / "out" / "shared").read_bytes() == shared


def test_prune_rewrites_mostly_garbage_packs(tmp_path: Path) -> None:
    repo = init_repository(tmp_path / "r", "pw", scrypt_n=2**10)
    src = tmp_path / "src"
    src.mkdir()
    keep = os.urandom(100_000)
    (src / "keep").write_bytes(keep)
    (src / "drop").write_bytes(os.urandom(900_000))
    first = repo.backup(src)
    (src / "drop").unlink()
    repo.backup(src)
    repo.forget(ids=[first.id])
    stats = repo.prune()
    assert stats.packs_rewritten == 1 and stats.chunks_removed == 1
    assert repo.check(read_data=True).ok
    repo.restore("latest", tmp_path / "out")
    assert (tmp_path / "out" / "keep").read_bytes() == keep


def test_prune_removes_leftovers_of_interrupted_runs(tmp_path: Path) -> None:
    repo = init_repository(tmp_path / "r", "pw", scrypt_n=2**10)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 1000)
    repo.backup(src)
    orphan = repo.data_dir / "ab" / ("ab" * 16)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"half a pack")
    tmp_file = repo.index_dir / ".deadbeef.tmp-12345"
    tmp_file.write_bytes(b"x")
    report = repo.check()
    assert report.ok and "not in the index" in report.notes[0]
    stats = repo.prune()
    assert stats.orphan_packs_deleted == 1 and not orphan.exists() and not tmp_file.exists()
    assert repo.check(read_data=True).ok and not repo.check().notes
