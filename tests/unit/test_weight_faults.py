"""Weight faults on hand-built tensor bundles: validation, journaling, revert — no TensorFlow.

The bundles are written byte by byte (LevelDB table + BundleEntryProto with real masked
CRC32Cs); tests/integration/test_weight_faults_tensorflow.py proves the same rewrite on bundles
TensorFlow wrote, and that TensorFlow loads the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_tfbundle import _block, _field, _varint, _with_trailer

from chaoskit.errors import FaultError
from chaoskit.faults.base import FaultContext
from chaoskit.faults.reweight import mask
from chaoskit.faults.storage import BitFlip
from chaoskit.faults.weights import SilentWeightChange, StaleModel
from chaoskit.journal import Journal, read_journal
from chaoskit.tfbundle import crc32c, read_bundle_index

KERNEL, BIAS, ZEROS, STEP = "dense/kernel", "dense/bias", "dense/zeros", "step"
DATA = "variables/variables.data-00000-of-00001"


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray]) -> None:
    """A one-shard bundle as TensorFlow lays it out, with valid CRC32Cs."""
    dtypes = {np.dtype("<f4"): 1, np.dtype("<i8"): 9}
    data, entries = b"", [(b"", _field(1, 0, _varint(1)))]
    for name in sorted(tensors):
        raw = tensors[name].tobytes()
        dims = b"".join(
            _field(2, 2, _varint(len(d)) + d)
            for d in (_field(1, 0, _varint(n)) for n in tensors[name].shape)
        )
        crc = struct.pack("<I", mask(crc32c(raw)))
        value = (_field(1, 0, _varint(dtypes[tensors[name].dtype]))
                 + _field(2, 2, _varint(len(dims)) + dims) + _field(4, 0, _varint(len(data)))
                 + _field(5, 0, _varint(len(raw))) + _field(6, 5, crc))  # fmt: skip
        entries.append((name.encode(), value))
        data += raw
    block = _block(entries)
    out = _with_trailer(block)
    meta_off, meta = len(out), _block([])
    out += _with_trailer(meta)
    handle = _varint(0) + _varint(len(block))
    index_off, index = len(out), _block([(entries[-1][0] + b"\xff", handle)])
    out += _with_trailer(index)
    footer = _varint(meta_off) + _varint(len(meta)) + _varint(index_off) + _varint(len(index))
    footer = footer.ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_name(prefix.name + ".index").write_bytes(out + footer)
    prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(data)


def tensors(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {KERNEL: rng.normal(size=(8, 4)).astype("<f4"), BIAS: rng.normal(size=4).astype("<f4"),
            ZEROS: np.zeros(4, "<f4"), STEP: np.array(seed, "<i8")}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> SimpleNamespace:
    """Versions 100 and 200 (each with a canary) and checkpoint ckpt-40."""
    base = tmp_path / "data" / "models" / "reference"
    for version in (100, 200):
        write_bundle(base / str(version) / "variables" / "variables", tensors(version))
        (base / str(version) / "saved_model.pb").write_bytes(b"graph")
        (base / str(version) / "assets.extra").mkdir()
        (base / str(version) / "assets.extra" / "chaoskit_canary.json").write_text(
            json.dumps({"version": version})
        )
    checkpoints = tmp_path / "data" / "checkpoints"
    write_bundle(checkpoints / "ckpt-40", tensors(40))
    (checkpoints / "checkpoint").write_text('model_checkpoint_path: "ckpt-40"\n')
    return SimpleNamespace(data_dir=tmp_path / "data", model_base_path=base,
                           checkpoint_dir=checkpoints)  # fmt: skip


def ctx(store: SimpleNamespace, seed: int = 1) -> FaultContext:
    return FaultContext(Journal(store.data_dir.parent / "journal.jsonl"), seed=seed, stack=store)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): digest(p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def read_tensor(prefix: Path, name: str) -> np.ndarray:
    """A tensor's values, after checking its stored CRC32C as TensorFlow does."""
    (entry,) = [e for e in read_bundle_index(f"{prefix}.index").entries if e.name == name]
    data = Path(f"{prefix}.data-00000-of-00001").read_bytes()
    raw = data[entry.offset : entry.offset + entry.size]
    assert mask(crc32c(raw)) == entry.crc32c, f"{name}: CRC32C mismatch"
    return np.frombuffer(raw, "<f4")


def test_bad_tensor_name_is_refused_naming_it(store):
    before = tree(store.data_dir)
    with pytest.raises(FaultError, match=r"no tensor 'dense/nope'.*float tensors: dense/bias"):
        SilentWeightChange(tensor="dense/nope").inject(ctx(store))
    with pytest.raises(FaultError, match=r"'step' is not a float tensor"):
        SilentWeightChange(tensor=STEP).inject(ctx(store))
    with pytest.raises(FaultError, match=r"'dense/zeros' is all zeros"):
        SilentWeightChange(tensor=ZEROS).inject(ctx(store))
    assert tree(store.data_dir) == before  # nothing touched, nothing left aside


@pytest.mark.parametrize("scale", [1.0, float("nan"), float("inf")])
def test_a_scale_that_changes_nothing_is_refused(scale):
    with pytest.raises(FaultError, match="scale must be finite and not 1"):
        SilentWeightChange(scale=scale)


@pytest.mark.parametrize(
    ("target", "why"),
    [("model:latest/variables", "is not a bundle"), ("checkpoint:bogus", "is not a bundle"),
     ("model:7", "no version '7'"), ("../outside", "is not a bundle")],
)  # fmt: skip
def test_a_target_that_is_not_a_bundle_of_the_store_is_refused(store, target, why):
    with pytest.raises(FaultError, match=why):
        SilentWeightChange(target=target).inject(ctx(store))


def test_a_checkpoint_outside_the_store_is_refused(store, tmp_path):
    write_bundle(tmp_path / "elsewhere" / "ckpt-9", tensors(9))
    (store.checkpoint_dir / "checkpoint").write_text(
        f'model_checkpoint_path: "{tmp_path / "elsewhere" / "ckpt-9"}"\n'
    )
    before = tree(tmp_path / "elsewhere")
    with pytest.raises(FaultError, match="outside the stack.s storage"):
        SilentWeightChange("checkpoint:latest").inject(ctx(store))
    assert tree(tmp_path / "elsewhere") == before


def test_a_version_linked_outside_the_store_is_refused(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_bundle(elsewhere / "variables" / "variables", tensors(5))
    os.symlink(elsewhere, store.model_base_path / "300")
    before = tree(elsewhere)
    with pytest.raises(FaultError, match="outside the stack.s storage"):
        SilentWeightChange().inject(ctx(store))
    with pytest.raises(FaultError, match="outside the stack.s storage"):
        StaleModel().inject(ctx(store))
    assert tree(elsewhere) == before


def test_change_is_valid_journaled_and_reverted(store):
    prefix = store.model_base_path / "200" / "variables" / "variables"
    original, before = tensors(200), tree(store.data_dir)
    with SilentWeightChange(tensor=KERNEL, scale=2.0).inject(ctx(store)) as injection:
        record = injection.changes.record
        assert np.array_equal(read_tensor(prefix, KERNEL), original[KERNEL].ravel() * 2)
        assert np.array_equal(read_tensor(prefix, BIAS), original[BIAS])  # untouched, valid
        for info in record["files"].values():
            assert info["sha256_before"] != info["sha256_after"]
            assert digest(Path(info["path"]).read_bytes()) == info["sha256_after"]
        assert record["values_sha256_before"] == digest(original[KERNEL].tobytes())
        assert record["crc32c_before"] != record["crc32c_after"]
    assert tree(store.data_dir) == before
    injected, reverted = read_journal(store.data_dir.parent / "journal.jsonl")
    assert injected["changes"]["tensor"] == KERNEL and reverted["event"] == "fault.reverted"


def test_tensor_comes_from_the_seed_and_skips_zeros(store):
    def chosen(seed: int) -> str:
        with SilentWeightChange("checkpoint:latest").inject(ctx(store, seed)) as injection:
            return str(injection.changes.record["tensor"])

    by_seed = {seed: chosen(seed) for seed in range(12)}
    assert set(by_seed.values()) == {KERNEL, BIAS}  # never the zeros, never the int64 step
    assert all(chosen(seed) == name for seed, name in list(by_seed.items())[:4])


def test_damaged_tensor_is_refused_not_laundered(store):
    target = "checkpoint:latest.data"
    with BitFlip(target, offset=3).inject(ctx(store)):  # inside dense/bias (sorted first)
        damaged = tree(store.checkpoint_dir)
        with pytest.raises(FaultError, match="'dense/bias' fails its stored CRC32C"):
            SilentWeightChange("checkpoint:latest", tensor=BIAS).inject(ctx(store))
        assert tree(store.checkpoint_dir) == damaged


def test_revert_leaves_a_restored_bundle_alone(store):
    prefix = store.model_base_path / "200" / "variables" / "variables"
    with SilentWeightChange(tensor=BIAS).inject(ctx(store)) as injection:
        write_bundle(prefix, tensors(999))  # the DR engine (or a new export) wrote it meanwhile
        restored = tree(prefix.parent)
    assert tree(prefix.parent) == restored
    assert injection.reverted


def test_the_fault_never_imports_tensorflow(store):
    code = ("import sys, json; from types import SimpleNamespace as N\n"
            "from pathlib import Path as P; from chaoskit.journal import Journal\n"
            "from chaoskit.faults.weights import SilentWeightChange as S\n"
            "from chaoskit.faults.base import FaultContext as C\n"
            "d = P(sys.argv[1]); s = N(data_dir=d, model_base_path=d / 'models' / 'reference',"
            " checkpoint_dir=d / 'checkpoints')\n"
            "S().inject(C(Journal(d.parent / 'j.jsonl'), stack=s)).revert()\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in"
            " ('tensorflow', 'keras'))))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(store.data_dir)], capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    assert json.loads(done.stdout) == []


def test_stale_model_swaps_in_the_previous_version_and_reverts(store):
    latest, previous = store.model_base_path / "200", store.model_base_path / "100"
    before, old = tree(latest), tree(previous)
    with StaleModel().inject(ctx(store)) as injection:
        assert tree(latest) == old  # every file is the older version's, canary included
        assert injection.changes.record["source_version"] == 100
        assert injection.changes.record["sha256_before"] == before
    assert tree(latest) == before and tree(previous) == old
    assert not list((store.data_dir / ".chaoskit-faults").iterdir())


def test_stale_model_revert_leaves_a_restored_version_alone(store):
    latest = store.model_base_path / "200"
    with StaleModel(source="100").inject(ctx(store)):
        (latest / "saved_model.pb").write_bytes(b"restored by the DR engine")
        restored = tree(latest)
    assert tree(latest) == restored


def test_stale_model_needs_another_version(store):
    with pytest.raises(FaultError, match="no other version '200'"):
        StaleModel(source="200").inject(ctx(store))
    with pytest.raises(FaultError, match="version 100 has no previous version"):
        StaleModel("model:100").inject(ctx(store))
    with pytest.raises(FaultError, match="'latest!' is not 'previous' or a version"):
        StaleModel(source="latest!")
