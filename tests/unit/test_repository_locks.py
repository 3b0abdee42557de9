"""Locks: shared vs exclusive, and takeover of stale locks left by dead processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaoskit.dr import init_repository
from chaoskit.dr.protect.repository.locks import Lock, list_locks
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.errors import RepositoryError


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)


def test_shared_locks_coexist_exclusive_excludes(repo: Repository) -> None:
    with repo.lock(exclusive=False), repo.lock(exclusive=False):
        assert len(list_locks(repo.locks_dir)) == 2
        with pytest.raises(RepositoryError, match="locked: shared lock .* held by pid"):
            repo.lock(exclusive=True)
    with repo.lock(exclusive=True):
        with pytest.raises(RepositoryError, match="exclusive lock"):
            repo.lock(exclusive=False)
    assert list_locks(repo.locks_dir) == []


def test_prune_waits_for_no_one_but_refuses_while_backup_runs(
    repo: Repository, tmp_path: Path
) -> None:
    (tmp_path / "src").mkdir()
    with repo.lock(exclusive=False):
        with pytest.raises(RepositoryError, match="locked"):
            repo.prune()
    repo.prune()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_lock_of_dead_process_is_taken_over_with_warning(repo: Repository) -> None:
    doc = {
        "exclusive": True,
        "hostname": socket.gethostname(),
        "pid": _dead_pid(),
        "start_ticks": 1,
        "time": time.time(),
    }
    (repo.locks_dir / ("ab" * 16)).write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match=r"removing stale exclusive lock .* is gone"):
        with repo.lock(exclusive=True):
            assert [i.pid for i in list_locks(repo.locks_dir)] == [os.getpid()]
    assert list_locks(repo.locks_dir) == []


def test_reused_pid_makes_lock_stale(repo: Repository) -> None:
    doc = {
        "exclusive": True,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "start_ticks": -5,
        "time": time.time(),
    }
    (repo.locks_dir / ("cd" * 16)).write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="another process"):
        repo.lock(exclusive=True).release()


def test_old_lock_from_other_host_is_stale_fresh_one_is_not(repo: Repository) -> None:
    doc = {
        "exclusive": True,
        "hostname": "elsewhere",
        "pid": 1,
        "start_ticks": None,
        "time": time.time(),
    }
    path = repo.locks_dir / ("ef" * 16)
    path.write_text(json.dumps(doc))
    with pytest.raises(RepositoryError, match="on elsewhere"):
        repo.lock(exclusive=False)
    doc["time"] = time.time() - 2 * 3600
    path.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="not refreshed"):
        repo.lock(exclusive=False).release()


def test_lock_of_sigkilled_process_does_not_block(repo: Repository) -> None:
    code = (
        "import sys, time; from chaoskit.dr import open_repository;"
        f"r = open_repository({str(repo.root)!r}, 'pw'); r.lock(exclusive=True);"
        "print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(RepositoryError, match="locked"):
            repo.lock(exclusive=False)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with pytest.warns(UserWarning, match="stale"):
        repo.lock(exclusive=False).release()


def test_lock_is_refreshed_while_held(tmp_path: Path) -> None:
    lock = Lock(tmp_path, exclusive=False, refresh_every=0.05).acquire()
    try:
        first = list_locks(tmp_path)[0].time
        deadline = time.monotonic() + 10
        while list_locks(tmp_path)[0].time == first:
            assert time.monotonic() < deadline, "lock was never refreshed"
            time.sleep(0.02)
    finally:
        lock.release()
