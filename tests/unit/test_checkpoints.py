"""Checkpoint formats on real files: real HDF5 (h5py), real zips, synthetic tensor bundles."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_repository_agent import save

from chaoskit.dr.protect.checkpoints import (
    Checkpoint,
    FilesFormat,
    KerasFormat,
    TFFormat,
    checkpoint_format,
    hdf5_complete,
    step_in_name,
    zip_complete,
)
from chaoskit.errors import ConfigError

OLD = time.time() - 3600  # mtimes an hour ago: settled


def write_h5(path: Path, seed: int = 0, *, mtime: float | None = OLD, **kwargs: str) -> Path:
    with h5py.File(path, "w", **kwargs) as f:
        f.create_dataset("dense/kernel", data=np.random.default_rng(seed).random((64, 64)))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_zip(path: Path, *, mtime: float = OLD) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", '{"class_name": "Sequential"}')
        archive.writestr("model.weights.h5", os.urandom(4096))
    os.utime(path, (mtime, mtime))
    return path


def test_unknown_kind_names_it_and_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'tensorflow' \(choose from: tf, keras, files\)"):
        checkpoint_format("tensorflow")


@pytest.mark.parametrize(
    ("kind", "pattern", "message"),
    [("tf", "*.index", "'tf' takes no pattern"), ("files", "/abs/*.pt", "'/abs/\\*.pt'"),
     ("keras", "../*.h5", "inside the checkpoint directory"), ("files", "", "''")],
)  # fmt: skip
def test_bad_patterns_are_refused(kind: str, pattern: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        checkpoint_format(kind, pattern)


def test_formats_by_name() -> None:
    assert checkpoint_format("tf") == TFFormat()
    assert checkpoint_format("keras") == KerasFormat()
    assert checkpoint_format("keras", "best-*.keras") == KerasFormat(patterns=("best-*.keras",))
    assert checkpoint_format("files") == FilesFormat(patterns=("*",))
    assert checkpoint_format("files", "*.pt").describe() == "files (*.pt)"


@pytest.mark.parametrize(
    ("name", "step"),
    [("ckpt-0012.weights.h5", 12), ("ckpt-0003-0.45.keras", 3), ("model2-0012.h5", 12),
     ("best.weights.h5", None), ("step_700.pt", 700), ("weights.h5", None), ("run/e9.bin", 9),
     ("noext", None), ("ckpt-5", 5)],
)  # fmt: skip
def test_the_step_is_the_number_in_the_file_name(name: str, step: int | None) -> None:
    assert step_in_name(name) == step


def test_tf_checkpoints_come_from_the_state_file(tmp_path: Path) -> None:
    save(tmp_path, 1)
    save(tmp_path, 2)  # the state now lists ckpt-2 only, like max_to_keep=1
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-1"\n'
        'all_model_checkpoint_paths: "ckpt-2"\nall_model_checkpoint_timestamps: 100.5\n'
        "all_model_checkpoint_timestamps: 200.5\n"
    )
    fmt = checkpoint_format("tf")
    one, two = fmt.checkpoints(tmp_path)
    assert (one.name, one.step, one.wall_created) == ("ckpt-1", 1, 100.5)
    assert two.files == ("ckpt-2.index", "ckpt-2.data-00000-of-00001")
    assert fmt.latest(tmp_path) == two and fmt.candidates(tmp_path) == [two]
    assert dict(two.extra_files) == {"checkpoint": (tmp_path / "checkpoint").read_bytes()}
    assert fmt.complete(tmp_path, two)
    assert fmt.main_file(two) == "ckpt-2.data-00000-of-00001"
    assert fmt.restore_files(two) == (*two.files, "checkpoint")
    assert fmt.restore_files(two, with_state=False) == two.files
    (tmp_path / "ckpt-2.data-00000-of-00001").write_bytes(b"short")
    assert not fmt.complete(tmp_path, two)
    (tmp_path / "checkpoint").write_text("garbage")
    assert fmt.checkpoints(tmp_path) == [] and fmt.latest(tmp_path) is None


def test_tf_guards_what_the_state_file_lists(tmp_path: Path) -> None:
    save(tmp_path, 1)
    save(tmp_path, 2)  # the state lists only ckpt-2: ckpt-1 was swept
    fmt = TFFormat()
    backed = [Checkpoint("ckpt-1", ("ckpt-1.index",), 1, 1.0), fmt.latest(tmp_path)]
    assert [c.name for c in fmt.guarded(tmp_path, backed)] == ["ckpt-2"]  # type: ignore[misc]


def test_keras_checkpoints_are_the_files_modelcheckpoint_writes(tmp_path: Path) -> None:
    write_h5(tmp_path / "ckpt-0001.weights.h5", mtime=OLD)
    write_h5(tmp_path / "ckpt-0002.weights.h5", mtime=OLD + 10)
    write_zip(tmp_path / "ckpt-0003.keras", mtime=OLD + 20)
    write_h5(tmp_path / ".ckpt-0009.weights.h5.tmp.h5")  # hidden: never a checkpoint
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "sub.h5").mkdir()  # a directory is not one either
    fmt = checkpoint_format("keras")
    found = fmt.checkpoints(tmp_path)
    assert [(c.name, c.step) for c in found] == [
        ("ckpt-0001.weights.h5", 1), ("ckpt-0002.weights.h5", 2), ("ckpt-0003.keras", 3),
    ]  # fmt: skip
    assert found[1].wall_created == OLD + 10 and found[1].files == ("ckpt-0002.weights.h5",)
    assert fmt.latest(tmp_path) == found[2] and fmt.main_file(found[2]) == "ckpt-0003.keras"
    assert fmt.restore_files(found[0]) == ("ckpt-0001.weights.h5",)  # no state file
    assert all(fmt.complete(tmp_path, c) for c in found)


def test_a_fresh_or_broken_file_is_not_complete(tmp_path: Path) -> None:
    fmt = checkpoint_format("keras")
    fresh = write_h5(tmp_path / "ckpt-0001.weights.h5", mtime=None)
    [ckpt] = fmt.checkpoints(tmp_path)
    written = fresh.stat().st_mtime
    assert not fmt.complete(tmp_path, ckpt, now=written + 0.1)  # may still be written
    assert fmt.complete(tmp_path, ckpt, now=written + 1.0)
    data = fresh.read_bytes()
    fresh.write_bytes(data[: len(data) // 2])  # torn: shorter than its superblock says
    assert not fmt.complete(tmp_path, ckpt, now=time.time() + 60)
    fresh.write_bytes(b"\0" * len(data))  # no HDF5 signature
    assert not fmt.complete(tmp_path, ckpt, now=time.time() + 60)
    half = write_zip(tmp_path / "ckpt-0002.keras")
    half.write_bytes(half.read_bytes()[:-30])  # the central directory is written last
    assert not fmt.complete(tmp_path, fmt.checkpoints(tmp_path)[-1], now=time.time() + 60)
    fresh.unlink()
    assert not fmt.complete(tmp_path, ckpt, now=time.time() + 60)


@pytest.mark.parametrize("libver", ["earliest", "latest"])  # superblock v0 and v3
def test_hdf5_structure_check(tmp_path: Path, libver: str) -> None:
    path = write_h5(tmp_path / "w.h5", libver=libver)
    assert hdf5_complete(path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 1)
    assert not hdf5_complete(path)
    assert not hdf5_complete(tmp_path / "missing.h5")


def test_zip_structure_check(tmp_path: Path) -> None:
    assert zip_complete(write_zip(tmp_path / "m.keras"))
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 but nothing more")
    assert not zip_complete(tmp_path / "bad.keras")


def test_files_format_takes_a_glob(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    for name, age in (("run/model-a.pt", 30), ("run/model-b.pt", 20), ("other.pt", 10)):
        (tmp_path / name).write_bytes(os.urandom(100))
        os.utime(tmp_path / name, (OLD - age, OLD - age))
    fmt = checkpoint_format("files", "run/*.pt")
    found = fmt.checkpoints(tmp_path)
    assert [(c.name, c.step) for c in found] == [("run/model-a.pt", None), ("run/model-b.pt", None)]
    assert fmt.latest(tmp_path) == found[1]  # no step in the names: the newest mtime
    assert fmt.complete(tmp_path, found[0])  # not HDF5 or zip: settling is all


def test_rotation_is_not_guarded_but_a_deleted_latest_is(tmp_path: Path) -> None:
    fmt = checkpoint_format("keras")
    for step in (1, 2, 3):
        write_h5(tmp_path / f"ckpt-{step:04d}.weights.h5", step, mtime=OLD + step)
    backed = fmt.checkpoints(tmp_path)
    assert fmt.guarded(tmp_path, backed) == backed
    (tmp_path / "ckpt-0001.weights.h5").unlink()  # keep-last-2 rotation after ckpt-3
    assert [c.step for c in fmt.guarded(tmp_path, backed)] == [2, 3]
    (tmp_path / "ckpt-0003.weights.h5").unlink()  # the latest is gone: nothing newer
    assert [c.step for c in fmt.guarded(tmp_path, backed)] == [2, 3]
    write_h5(tmp_path / "ckpt-0004.weights.h5", 4, mtime=None)  # a newer one, even half-written
    assert [c.step for c in fmt.guarded(tmp_path, backed)] == [2]
    for path in tmp_path.iterdir():
        path.unlink()
    assert fmt.guarded(tmp_path, backed) == backed  # an emptied directory: all of it
