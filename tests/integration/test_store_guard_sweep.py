"""The store guard tells CheckpointManager's own sweep from damage, on real checkpoints.

CheckpointManager writes the state file listing the new checkpoint and the old ones,
deletes the oldest checkpoint's files, then writes the state file again without it.  On
a loaded machine that second write can come long after the deletion; until then the
state lists a checkpoint whose files are gone.  That must not be restored as damage,
while a damaged latest checkpoint still is, at once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaoskit.atomic import atomic_write_text
from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.protect.checkpoints import checkpoint_format
from chaoskit.dr.protect.repository.agent import checkpoint_files
from chaoskit.dr.protect.repository.repo import init_repository
from chaoskit.dr.protect.repository.source import STATE_FILE
from chaoskit.dr.protect.store_guard import SWEEP_SETTLE, StoreGuard
from chaoskit.journal import Journal

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAVE = r"""
import sys
import tensorflow as tf
v = tf.Variable(tf.zeros((64, 64)))
manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=v), sys.argv[1], max_to_keep=3)
for k in range(1, 4):
    v.assign_add(tf.ones_like(v))
    manager.save(checkpoint_number=k)
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt")
    subprocess.run([sys.executable, "-c", SAVE, str(directory)], check=True, timeout=120)
    return directory


@pytest.fixture
def guard(checkpoints: Path, tmp_path: Path) -> StoreGuard:
    """A store guard over a copy of the three checkpoints, each with its recovery point."""
    directory = tmp_path / "checkpoints"
    subprocess.run(["cp", "-a", str(checkpoints), str(directory)], check=True)
    (tmp_path / "models").mkdir()
    stack = SimpleNamespace(
        goldens=Goldens(tmp_path / "models"),
        model_base_path=tmp_path / "models", checkpoint_dir=directory, model_name="m",
        checkpoint_format=checkpoint_format("tf"), trainer="trainer", backend=None,
    )  # fmt: skip
    repo = init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)
    guard = StoreGuard(repo, stack, Journal(tmp_path / "journal.jsonl"))
    raw = (directory / STATE_FILE).read_bytes()
    for k in range(1, 4):
        prefix = f"ckpt-{k}"
        guard.agent.snapshots.append(repo.backup(
            directory, files=checkpoint_files(directory, prefix), extra_files={STATE_FILE: raw},
            checkpoint_step=k, summary={"checkpoint": prefix},
        ))  # fmt: skip
    assert guard.scan() == []
    return guard


def sweep_oldest(directory: Path) -> str:
    """Delete ckpt-1's files as the sweep does; return the state file it writes next."""
    for path in directory.glob("ckpt-1.*"):
        path.unlink()
    lines = (directory / STATE_FILE).read_text().splitlines()
    keep = [line for line in lines if '"ckpt-1"' not in line]
    return "\n".join(keep[:2] + keep[3:]) + "\n"  # and ckpt-1's timestamp (the first)


def test_a_slow_sweep_is_not_damage(guard: StoreGuard) -> None:
    directory = guard.checkpoint_dir
    rewritten = sweep_oldest(directory)
    later = threading.Timer(0.5, atomic_write_text, (directory / STATE_FILE, rewritten))
    later.start()
    try:
        assert guard.scan() == [], "CheckpointManager's sweep was taken for damage"
    finally:
        later.join()


def test_an_older_checkpoint_gone_for_good_is_damage_after_the_sweep_settle(
    guard: StoreGuard,
) -> None:
    sweep_oldest(guard.checkpoint_dir)  # and the state file is never rewritten
    began = time.monotonic()
    [damage] = guard.scan()
    assert time.monotonic() - began >= SWEEP_SETTLE
    assert damage.kind == "checkpoint-files" and "ckpt-1.index" in " ".join(damage.problems)


def test_damage_to_the_latest_checkpoint_is_found_at_once(guard: StoreGuard) -> None:
    data = next(guard.checkpoint_dir.glob("ckpt-3.data-*"))
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    began = time.monotonic()
    [damage] = guard.scan()
    assert time.monotonic() - began < SWEEP_SETTLE / 2
    assert "ckpt-3.data" in " ".join(damage.problems)
