"""Storage faults on real files: what they change, that it is journaled, and safe revert."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaoskit.errors import FaultError
from chaoskit.faults.base import FaultContext
from chaoskit.faults.storage import (
    AppendBytes,
    BitFlip,
    CheckpointStateFault,
    DeleteFile,
    DeleteVersion,
    Truncate,
    ZeroRange,
)
from chaoskit.journal import Journal, read_journal

DATA = "model:latest/variables/variables.data-00000-of-00001"


@pytest.fixture
def store(tmp_path):
    """A model store laid out as the trainer writes it (contents are arbitrary bytes)."""
    base = tmp_path / "data" / "models" / "reference"
    for version in (100, 200):
        variables = base / str(version) / "variables"
        variables.mkdir(parents=True)
        (variables / "variables.data-00000-of-00001").write_bytes(bytes(range(256)) * 8)
        (variables / "variables.index").write_bytes(b"index" * 20)
        (base / str(version) / "saved_model.pb").write_bytes(b"graph" * 50)
    checkpoints = tmp_path / "data" / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "ckpt-40.index").write_bytes(b"i" * 100)
    (checkpoints / "ckpt-40.data-00000-of-00001").write_bytes(b"d" * 1000)
    (checkpoints / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-40"\nall_model_checkpoint_paths: "ckpt-40"\n'
    )
    return SimpleNamespace(
        data_dir=tmp_path / "data", model_base_path=base, checkpoint_dir=checkpoints
    )


def ctx(store, tmp_path, seed=1):
    return FaultContext(Journal(tmp_path / "journal.jsonl"), seed=seed, stack=store)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "fault",
    [BitFlip(DATA, flips=4), Truncate(DATA), ZeroRange(DATA, length=32), AppendBytes(DATA, 8),
     ZeroRange("model:latest/variables/variables.index", offset=0, length=10),
     BitFlip("checkpoint:latest.data"), Truncate("checkpoint:latest.index", size=3)],
    ids=lambda f: f.describe(),
)  # fmt: skip
def test_damage_is_journaled_and_reverted(store, tmp_path, fault):
    context = ctx(store, tmp_path)
    with fault.inject(context) as injection:
        path = Path(injection.changes.record["path"])
        assert digest(path) == injection.changes.record["sha256_after"]
        assert injection.changes.record["sha256_before"] != injection.changes.record["sha256_after"]
        assert store.data_dir in path.parents
    assert digest(path) == injection.changes.record["sha256_before"]
    kinds = [e["event"] for e in read_journal(tmp_path / "journal.jsonl")]
    assert kinds == ["fault.injected", "fault.reverted"]
    assert not list((store.data_dir / ".chaoskit-faults").iterdir())  # nothing left aside


def test_latest_means_the_highest_version(store, tmp_path):
    with BitFlip(DATA).inject(ctx(store, tmp_path)) as injection:
        assert "/200/" in injection.changes.record["path"]


def test_same_seed_same_damage(store, tmp_path):
    records = []
    for _ in range(2):
        with BitFlip(DATA, flips=3).inject(ctx(store, tmp_path, seed=42)) as injection:
            records.append(injection.changes.record["flipped"])
    assert records[0] == records[1]


def test_revert_leaves_a_file_the_dr_engine_already_repaired(store, tmp_path):
    path = store.model_base_path / "200" / "saved_model.pb"
    injection = Truncate("model:200/saved_model.pb", size=10).inject(ctx(store, tmp_path))
    path.write_bytes(b"repaired by the DR engine")
    injection.revert()
    injection.revert()  # idempotent
    assert path.read_bytes() == b"repaired by the DR engine"


def test_delete_file_and_version_come_back(store, tmp_path):
    pb = store.model_base_path / "200" / "saved_model.pb"
    with DeleteFile("model:latest/saved_model.pb").inject(ctx(store, tmp_path)):
        assert not pb.exists()
    assert pb.read_bytes() == b"graph" * 50
    with DeleteVersion("latest").inject(ctx(store, tmp_path)) as injection:
        assert not (store.model_base_path / "200").exists()
        assert injection.changes.record["version"] == 200
    assert pb.exists()


@pytest.mark.parametrize("mode", ["remove", "garble"])
def test_checkpoint_state(store, tmp_path, mode):
    state = store.checkpoint_dir / "checkpoint"
    before = state.read_bytes()
    with CheckpointStateFault(mode).inject(ctx(store, tmp_path)):
        assert (not state.exists()) if mode == "remove" else state.read_bytes() != before
    assert state.read_bytes() == before


@pytest.mark.parametrize(
    ("fault", "message"),
    [(BitFlip("../../etc/passwd"), "outside the stack.s storage"),
     (BitFlip("model:999/saved_model.pb"), "no version '999'"),
     (ZeroRange(DATA, offset=2040, length=64), "does not fit"),
     (Truncate(DATA, size=10**6), "does not fit"),
     (BitFlip("model:latest/nothing"), "is not a file"),
     (BitFlip("checkpoint:oldest"), "unknown checkpoint target")],
)  # fmt: skip
def test_bad_targets_are_clear_errors_and_change_nothing(store, tmp_path, fault, message):
    before = {p: digest(p) for p in store.data_dir.rglob("*") if p.is_file()}
    with pytest.raises(FaultError, match=message):
        fault.inject(ctx(store, tmp_path))
    after = {p: digest(p) for p in store.data_dir.rglob("*") if p.is_file()}
    assert before == after


def test_unknown_prefix_names_it_and_lists_the_valid_ones(store, tmp_path):
    with pytest.raises(FaultError) as caught:
        BitFlip("checkpont:latest.data").inject(ctx(store, tmp_path))
    message = str(caught.value)
    assert "unknown target prefix 'checkpont:'" in message
    assert "did you mean 'checkpoint:'?" in message
    for valid in ("model:latest", "checkpoint:latest.data", "plain relative path"):
        assert valid in message
    assert "is not a file" not in message


def test_plain_relative_paths_still_name_files_in_the_data_directory(store, tmp_path):
    odd = store.data_dir / "notes:v2"  # a colon in a file name: written with ./
    odd.write_bytes(b"x" * 64)
    for target in ("models/reference/100/saved_model.pb", "./notes:v2"):
        BitFlip(target).inject(ctx(store, tmp_path)).revert()
    with pytest.raises(FaultError, match="unknown target prefix 'notes:'"):
        BitFlip("notes:v2").inject(ctx(store, tmp_path))


def test_bad_mode_fails_at_construction():
    with pytest.raises(FaultError, match="'shred'"):
        CheckpointStateFault("shred")


def test_checkpoint_latest_follows_the_stack_format(store, tmp_path):
    from chaoskit.dr.protect.checkpoints import checkpoint_format
    from chaoskit.faults.targets import resolve_target

    assert resolve_target(store, "checkpoint:latest").name == "ckpt-40.data-00000-of-00001"
    keras_dir = store.data_dir / "keras"
    keras_dir.mkdir()
    for epoch in (9, 10):
        (keras_dir / f"ckpt-{epoch:04d}.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" * epoch)
    keras = SimpleNamespace(data_dir=store.data_dir, checkpoint_dir=keras_dir,
                            checkpoint_format=checkpoint_format("keras"))  # fmt: skip
    with BitFlip("checkpoint:latest").inject(ctx(keras, tmp_path)) as injection:
        assert injection.changes.record["path"] == str(keras_dir / "ckpt-0010.weights.h5")
    with pytest.raises(FaultError, match=r"'checkpoint:state' is for CheckpointManager.*keras"):
        CheckpointStateFault("remove").inject(ctx(keras, tmp_path))
    with pytest.raises(FaultError, match="no files \\(\\*.pt\\) checkpoint in"):
        resolve_target(SimpleNamespace(data_dir=store.data_dir, checkpoint_dir=keras_dir,
                                       checkpoint_format=checkpoint_format("files", "*.pt")),
                       "checkpoint:latest")  # fmt: skip
    with pytest.raises(FaultError, match="has no checkpoint directory"):
        resolve_target(SimpleNamespace(data_dir=store.data_dir, checkpoint_dir=None),
                       "checkpoint:latest")  # fmt: skip
