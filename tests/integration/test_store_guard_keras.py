"""The store guard on a real Keras ``ModelCheckpoint`` directory, and on a ``files`` glob.

Keras writes one ``.weights.h5`` per epoch, in place.  Each must become a recovery point
with its epoch as the step; damage to a checkpoint (a bit flip, the latest deleted) is
found and restored byte for byte; the trainer's own rotation (an older file deleted
after a newer one was written) is left alone.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.protect.checkpoints import checkpoint_format
from chaoskit.dr.protect.repository.repo import init_repository
from chaoskit.dr.protect.store_guard import HOUSEKEEPING_SETTLE, StoreGuard
from chaoskit.faults.base import FaultContext
from chaoskit.faults.storage import BitFlip, DeleteFile, Truncate
from chaoskit.journal import Journal, read_journal

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EPOCHS = 4

FIT = r"""
import sys
import numpy as np
import keras
rng = np.random.default_rng(0)
x, y = rng.random((64, 8)).astype("float32"), rng.integers(0, 3, 64)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(3, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
save = keras.callbacks.ModelCheckpoint(sys.argv[1] + "/ckpt-{epoch:04d}.weights.h5",
                                       save_weights_only=True)
model.fit(x, y, epochs=int(sys.argv[2]), batch_size=16, verbose=0, callbacks=[save])
"""


@pytest.fixture(scope="module")
def keras_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keras")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    subprocess.run([sys.executable, "-c", FIT, str(directory), str(EPOCHS)],
                   check=True, timeout=120, env=env)  # fmt: skip
    return directory


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_guard(tmp_path: Path, source: Path, fmt: str, pattern: str | None = None) -> StoreGuard:
    """A store guard over a copy of *source*, every checkpoint in it backed up."""
    directory = tmp_path / "checkpoints"
    subprocess.run(["cp", "-a", str(source), str(directory)], check=True)
    (tmp_path / "models").mkdir()
    stack = SimpleNamespace(
        goldens=Goldens(tmp_path / "models"),
        data_dir=tmp_path, model_base_path=tmp_path / "models", checkpoint_dir=directory,
        model_name="m", checkpoint_format=checkpoint_format(fmt, pattern), trainer=None,
        backend=None,
    )  # fmt: skip
    repo = init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)
    guard = StoreGuard(repo, stack, Journal(tmp_path / "journal.jsonl"))
    assert guard.agent is not None
    wanted = len(stack.checkpoint_format.checkpoints(directory))
    guard.agent.interval = 0.05
    guard.agent.run(max_backups=wanted, timeout=30)  # each waits for its file to settle
    assert len(guard.agent.snapshots) == wanted and not guard.agent.errors
    assert guard.scan() == []
    return guard


def fault_context(guard: StoreGuard) -> FaultContext:
    return FaultContext(guard.journal, seed=7, stack=guard.stack)


@pytest.fixture
def guard(keras_checkpoints: Path, tmp_path: Path) -> StoreGuard:
    return make_guard(tmp_path, keras_checkpoints, "keras")


def test_each_epoch_file_is_a_recovery_point_with_its_step(guard: StoreGuard) -> None:
    guard.journal.close()
    points = [e for e in read_journal(guard.journal.path) if e["event"] == "backup.recovery_point"]
    names = [f"ckpt-{k:04d}.weights.h5" for k in range(1, EPOCHS + 1)]
    assert [(p["checkpoint"], p["step"]) for p in points] == list(
        zip(names, range(1, EPOCHS + 1), strict=True)
    )
    directory = guard.checkpoint_dir
    assert directory is not None
    for point, name in zip(points, names, strict=True):
        assert point["wall_created"] == (directory / name).stat().st_mtime
    assert guard._verified_latest_checkpoint() is guard.agent.snapshots[-1]  # type: ignore[union-attr]


def test_a_bit_flip_in_the_latest_is_restored_byte_identical(guard: StoreGuard) -> None:
    latest = guard.checkpoint_dir / f"ckpt-{EPOCHS:04d}.weights.h5"  # type: ignore[operator]
    before = digest(latest)
    with BitFlip("checkpoint:latest", flips=3).inject(fault_context(guard)) as injection:
        assert injection.changes.record["path"] == str(latest)
        assert guard._verified_latest_checkpoint() is None  # a down trainer would be restored
        [damage] = guard.scan()
        assert damage.kind == "checkpoint-files" and latest.name in " ".join(damage.problems)
        restored, intact = guard.restore(damage)
        assert intact and restored is not None and restored.checkpoint_step == EPOCHS
        assert digest(latest) == before
    assert guard.scan() == []


def test_a_deleted_latest_is_restored(guard: StoreGuard) -> None:
    latest = guard.checkpoint_dir / f"ckpt-{EPOCHS:04d}.weights.h5"  # type: ignore[operator]
    before = digest(latest)
    with DeleteFile("checkpoint:latest").inject(fault_context(guard)):
        assert guard._verified_latest_checkpoint() is None  # the live latest is older now
        [damage] = guard.scan()
        assert [line.split()[:2] for line in damage.problems] == [["missing", latest.name]]
        _, intact = guard.restore(damage)
        assert intact and digest(latest) == before
    assert guard.scan() == []


def test_rotation_of_an_older_checkpoint_is_not_restored(guard: StoreGuard) -> None:
    directory = guard.checkpoint_dir
    assert directory is not None
    (directory / "ckpt-0001.weights.h5").unlink()  # keep-last-N after a newer one exists
    (directory / "ckpt-0002.weights.h5").unlink()
    began = time.monotonic()
    assert guard.scan() == []
    assert time.monotonic() - began < 5 * HOUSEKEEPING_SETTLE  # not even a settle wait
    assert not (directory / "ckpt-0001.weights.h5").exists()
    assert guard._verified_latest_checkpoint() is not None  # a down trainer just restarts
    older = directory / "ckpt-0003.weights.h5"  # rotation deletes; it never rewrites
    with BitFlip(str(older.relative_to(guard.stack.data_dir))).inject(fault_context(guard)):
        [damage] = guard.scan()
        assert older.name in " ".join(damage.problems)


def test_a_files_glob_guards_only_its_files(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "run").mkdir(parents=True)
    for step in (100, 200):
        (source / "run" / f"model-{step}.pt").write_bytes(bytes([step % 256]) * 50_000)
    (source / "run" / "notes.txt").write_text("not a checkpoint")
    home = tmp_path / "guarded"
    home.mkdir()
    guard = make_guard(home, source, "files", "run/*.pt")
    assert [s.checkpoint_step for s in guard.agent.snapshots] == [100, 200]  # type: ignore[union-attr]
    directory = guard.checkpoint_dir
    assert directory is not None
    (directory / "run" / "notes.txt").write_text("changed, and nobody minds")
    assert guard.scan() == []
    latest = directory / "run" / "model-200.pt"
    before = digest(latest)
    with Truncate("checkpoint:latest", size=10).inject(fault_context(guard)):
        [damage] = guard.scan()
        assert "run/model-200.pt" in " ".join(damage.problems)
        _, intact = guard.restore(damage)
        assert intact and digest(latest) == before
    (directory / "run" / "model-100.pt").unlink()  # rotation
    assert guard.scan() == []
