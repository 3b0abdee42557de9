"""Real small and read-only filesystems: a full disk during backup leaves the repository
exactly as before; a read-only DR site can still be checked and restored from."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoskit.dr import init_repository
from chaoskit.dr.protect.repository.audit import read_log
from chaoskit.errors import RepositoryError


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs (needs root, as on CI); skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def snapshot_of_tree(root: Path) -> dict[str, bytes]:
    """Every stored file but the audit log (which records the failures)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parent.name != "audit"
    }


def test_enospc_during_backup_leaves_repository_unchanged(small_fs: Path, tmp_path: Path) -> None:
    repo = init_repository(small_fs / "repo", "pw", scrypt_n=2**10)
    src = tmp_path / "src"
    src.mkdir()
    (src / "small").write_bytes(os.urandom(500_000))
    repo.backup(src)
    before = snapshot_of_tree(repo.root)
    (src / "big").write_bytes(os.urandom(8 << 20))
    with pytest.raises(RepositoryError, match="no space left on device .* repository unchanged"):
        repo.backup(src)
    assert snapshot_of_tree(repo.root) == before
    last = read_log(repo.root)[-1]
    assert (last["op"], last["outcome"]) == ("backup", "failed")
    assert "no space left on device" in last["details"]["error"]
    assert repo.check(read_data=True).ok
    assert len(repo.snapshots()) == 1


def test_read_only_repository_restores_but_refuses_backup(small_fs: Path, tmp_path: Path) -> None:
    repo = init_repository(small_fs / "repo", "pw", scrypt_n=2**10)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(100_000))
    repo.backup(src)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.warns(UserWarning, match="read-only .* reading without a lock"):
        repo.restore("latest", tmp_path / "out")
    assert (tmp_path / "out" / "f").read_bytes() == (src / "f").read_bytes()
    with pytest.warns(UserWarning, match="read-only"):
        assert repo.check(read_data=True).ok
    with pytest.warns(UserWarning, match="read-only"):
        with pytest.raises(RepositoryError, match="Read-only file system"):
            repo.backup(src)
    with pytest.raises(RepositoryError, match="lock on repository .* Read-only file system"):
        repo.prune()
