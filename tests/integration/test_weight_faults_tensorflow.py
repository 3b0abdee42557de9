"""Silent weight changes on bundles TensorFlow wrote: TensorFlow loads them, without any
error, and predicts differently; only the canary (or a manifest) tells.

The trainer writes real versions and checkpoints; the fault runs here (no TensorFlow in
this process), and one TensorFlow subprocess loads the original and changed copies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from chaoskit.faults.base import FaultContext
from chaoskit.faults.storage import sha256_file
from chaoskit.faults.weights import SilentWeightChange, StaleModel
from chaoskit.journal import Journal

pytestmark = pytest.mark.integration

HEAD_KERNEL = "model/_layers/2/_kernel/.ATTRIBUTES/VARIABLE_VALUE"

CHECK = """
import json, sys
from chaoskit.model import CANARY_INPUTS, import_tensorflow, load_canary
from chaoskit.serving.store import LoadError, load_version
tf = import_tensorflow()
args = json.loads(sys.argv[1])
out = {}
for name in ("original", "changed"):
    loaded = tf.saved_model.load(args[name])  # raises on any CRC / format error
    y = loaded.signatures["serving_default"](x=tf.constant(CANARY_INPUTS))["y"].numpy()
    out[name] = y.tolist()
out["canary"] = load_canary(args["changed"])["outputs"]
try:
    load_version(1, __import__("pathlib").Path(args["changed"]))
    out["server"] = "loaded"
except LoadError as e:
    out["server"] = e.error_type
for name in ("checkpoint_original", "checkpoint_changed"):
    reader = tf.train.load_checkpoint(args[name])
    out[name] = {k: reader.get_tensor(k).tolist() for k in reader.get_variable_to_shape_map()
                 if k != "_CHECKPOINTABLE_OBJECT_GRAPH"}
print(json.dumps(out))
"""


def run_trainer(data: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "chaoskit.trainer", "--model-base-path",
         str(data / "models" / "reference"), "--checkpoint-dir", str(data / "checkpoints"),
         "--checkpoint-every", "20", "--export-every", "20", "--max-steps", "40",
         "--step-delay", "0"],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip


def copy_bundle(prefix: Path, to: Path) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    for path in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy2(path, to / path.name)
    return to / prefix.name


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Inject both faults, keep copies of what they wrote, revert, load all in TensorFlow."""
    root = tmp_path_factory.mktemp("weights")
    data = root / "data"
    run_trainer(data)
    stack = SimpleNamespace(data_dir=data, model_base_path=data / "models" / "reference",
                            checkpoint_dir=data / "checkpoints")  # fmt: skip
    ctx = FaultContext(Journal(root / "journal.jsonl"), seed=7, stack=stack)
    latest = stack.model_base_path / "40"
    paths = {"original": root / "original", "changed": root / "changed"}
    shutil.copytree(latest, paths["original"])
    before = {p.name: sha256_file(p) for p in (latest / "variables").iterdir()}
    with SilentWeightChange(tensor=HEAD_KERNEL, scale=1.5).inject(ctx) as model_fault:
        shutil.copytree(latest, paths["changed"])
    ckpt = stack.checkpoint_dir / "ckpt-40"
    paths["checkpoint_original"] = copy_bundle(ckpt, root / "ckpt-original")
    with SilentWeightChange("checkpoint:latest", scale=3.0).inject(ctx) as ckpt_fault:
        paths["checkpoint_changed"] = copy_bundle(ckpt, root / "ckpt-changed")
    after = {p.name: sha256_file(p) for p in (latest / "variables").iterdir()}
    done = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps({k: str(v) for k, v in paths.items()})],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(model_record=model_fault.changes.record, ckpt_record=ckpt_fault.changes.record,
                  reverted=before == after, stack=stack, ctx=ctx)  # fmt: skip
    return result


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


def test_tensorflow_loads_the_changed_version_and_predicts_differently(loaded):
    assert max_diff(loaded["original"], loaded["canary"]) < 1e-4  # sanity: the export's goldens
    assert max_diff(loaded["changed"], loaded["original"]) > 1e-3
    assert loaded["model_record"]["tensor"] == HEAD_KERNEL
    assert loaded["reverted"], "revert did not put the original bundle back"


def test_the_server_canary_refuses_what_tensorflow_accepts(loaded):
    assert loaded["server"] == "CanaryMismatch"


def test_a_changed_checkpoint_restores_with_exactly_one_tensor_scaled(loaded):
    original, changed = loaded["checkpoint_original"], loaded["checkpoint_changed"]
    name = loaded["ckpt_record"]["tensor"]
    assert set(original) == set(changed)
    assert [k for k in original if original[k] != changed[k]] == [name]
    assert np.allclose(np.asarray(changed[name]), 3.0 * np.asarray(original[name]), rtol=1e-6)


def test_a_stale_version_is_valid_and_reverts(loaded):
    stack, latest = loaded["stack"], loaded["stack"].model_base_path / "40"
    before = {str(p.relative_to(latest)): sha256_file(p) for p in latest.rglob("*") if p.is_file()}
    with StaleModel().inject(loaded["ctx"]) as injection:
        assert injection.changes.record["source_version"] == 20
        canary = json.loads((latest / "assets.extra" / "chaoskit_canary.json").read_text())
        assert canary["version"] == 20  # the older version's own, valid canary
    after = {str(p.relative_to(latest)): sha256_file(p) for p in latest.rglob("*") if p.is_file()}
    assert before == after
    assert not list((stack.data_dir / ".chaoskit-faults").iterdir())
