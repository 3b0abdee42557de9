"""The reference model's pure-Python parts: canary files, version dirs, error files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaoskit.model import (
    CANARY_INPUTS,
    canary_file,
    error_file,
    load_canary,
    teacher_weights,
    version_dirs,
)


def write_canary(version_dir: Path, **fields) -> None:
    data = {
        "inputs": CANARY_INPUTS,
        "outputs": [[0.0] * 4 for _ in CANARY_INPUTS],
        "step": 7,
        "version": 7,
        "signature_name": "serving_default",
        "tolerance": 1e-4,
        **fields,
    }
    canary_file(version_dir).parent.mkdir(parents=True)
    canary_file(version_dir).write_text(json.dumps(data))


def test_canary_inputs_are_four_rows_of_eight_floats():
    assert len(CANARY_INPUTS) == 4
    assert all(len(row) == 8 and all(isinstance(v, float) for v in row) for row in CANARY_INPUTS)
    assert len({tuple(row) for row in CANARY_INPUTS}) == 4


def test_canary_file_layout_and_round_trip(tmp_path):
    version = tmp_path / "7"
    assert canary_file(version) == version / "assets.extra" / "chaoskit_canary.json"
    write_canary(version)
    canary = load_canary(version)
    assert canary["inputs"] == CANARY_INPUTS and canary["step"] == 7


def test_load_canary_refuses_what_is_not_a_canary(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_canary(tmp_path / "1")
    (tmp_path / "2" / "assets.extra").mkdir(parents=True)
    canary_file(tmp_path / "2").write_text('{"inputs": []}')
    with pytest.raises(ValueError, match="not a chaoskit canary"):
        load_canary(tmp_path / "2")
    canary_file(tmp_path / "2").write_text('{"inputs": [')
    with pytest.raises(ValueError):
        load_canary(tmp_path / "2")


def test_reading_a_canary_does_not_import_tensorflow(tmp_path):
    write_canary(tmp_path / "3")
    code = (
        "import sys; from chaoskit.model import load_canary; "
        f"load_canary({str(tmp_path / '3')!r}); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_version_dirs_are_integer_named_directories_only(tmp_path):
    for name in ("1", "20", "003", ".tmp-30-99", "abc", "4a"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a version")
    assert version_dirs(tmp_path) == {1: tmp_path / "1", 20: tmp_path / "20", 3: tmp_path / "003"}
    assert version_dirs(tmp_path / "missing") == {}


def test_teacher_is_fixed_by_the_seed():
    assert teacher_weights(0) == teacher_weights(0) != teacher_weights(1)
    assert len(teacher_weights(0)) == 8 and all(len(r) == 4 for r in teacher_weights(0))


@pytest.fixture
def saved_model(tmp_path: Path) -> Path:
    version = tmp_path / "9"
    (version / "variables").mkdir(parents=True)
    for name in ("saved_model.pb", "variables/variables.index"):
        (version / name).write_bytes(b"x")
    (version / "variables" / "variables.data-00000-of-00001").write_bytes(b"x")
    return version


def test_error_file_follows_tf_messages_for_saved_models(saved_model):
    v = saved_model
    data = v / "variables" / "variables.data-00000-of-00001"
    cases = [
        # bit flip in .data: TF names the bundle prefix and the shard
        (OSError(f"TensorBundle at {v}/variables/variables shard 0 (1896 bytes): Checksum does "
                 "not match: stored 1 vs. calculated on the restored bytes 2"), data),
        # truncated .data: no file named at all
        (IndexError("Read less bytes than requested"), data),
        # missing .data: named, though it does not exist
        (OSError(f"{v}/variables/variables.data-00000-of-00001; No such file or directory"), data),
        (OSError(f"Unable to read file ({v}/variables/variables.index). Perhaps the file is "
                 "corrupt (failed to seek to header entry): block checksum mismatch"),
         v / "variables" / "variables.index"),
        (OSError(f"Cannot parse file b'{v}/saved_model.pb': Error parsing message with type "
                 "'tensorflow.SavedModel': Wire format was corrupt."), v / "saved_model.pb"),
    ]  # fmt: skip
    for error, want in cases:
        assert error_file(error, v) == str(want), error


def test_error_file_for_checkpoint_prefixes(tmp_path):
    prefix = tmp_path / "ckpt-40"
    (tmp_path / "ckpt-40.index").write_bytes(b"x")
    (tmp_path / "ckpt-40.data-00000-of-00001").write_bytes(b"x")
    checksum = OSError(f"TensorBundle at {prefix} shard 0 (9 bytes): Checksum does not match")
    assert error_file(checksum, prefix) == str(tmp_path / "ckpt-40.data-00000-of-00001")
    assert error_file(IndexError("Read less bytes than requested"), prefix) == str(
        tmp_path / "ckpt-40.data-00000-of-00001"
    )
    bad_magic = OSError("Not an sstable (bad magic number)")
    assert error_file(bad_magic, prefix) == str(tmp_path / "ckpt-40.index")
    assert error_file(ValueError("no such thing"), tmp_path / "ckpt-99") is None
