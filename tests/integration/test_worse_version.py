"""A worse version on a Keras export: TensorFlow loads it and it answers differently;
the revert removes it; a version carrying chaoskit's canary is refused.

The export and the loading run in TensorFlow subprocesses; the fault runs here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaoskit.errors import FaultError
from chaoskit.faults.base import FaultContext
from chaoskit.faults.worse_version import WorseVersion
from chaoskit.journal import Journal
from chaoskit.model import canary_file, version_dirs

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom-model"
EXPORT = """
import sys
sys.path.insert(0, sys.argv[1])
import train
train.build_model().export(sys.argv[2], verbose=False)
"""
PREDICT = """
import json, sys
import numpy as np
import tensorflow as tf
x = {"features": tf.constant(np.linspace(-1, 1, 12, dtype="float32").reshape(2, 6)),
     "category": tf.constant([[1], [3]], dtype=tf.int32)}
out = {}
for path in sys.argv[1:]:
    (y,) = tf.saved_model.load(path).signatures["serving_default"](**x).values()
    out[path] = y.numpy().tolist()
print(json.dumps(out))
"""


def python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("worse") / "models"
    python(EXPORT, str(EXAMPLE), str(base / "5"))
    return base


def context(base: Path) -> FaultContext:
    stack = SimpleNamespace(data_dir=base.parent, model_base_path=base)
    return FaultContext(Journal(base.parent / "journal.jsonl"), seed=1, stack=stack)


def test_the_next_version_loads_and_answers_differently_until_reverted(store):
    with WorseVersion(scale=-1.0).inject(context(store)) as injection:
        record = injection.changes.record
        assert record["version"] == 6 and record["source_version"] == 5
        # Keras stores every variable twice (_all_variables/i and variables/j): both change
        assert len(record["copies"]) == 2 and record["tensor"] in record["copies"]
        assert sorted(version_dirs(store)) == [5, 6]
        assert not [p for p in store.iterdir() if p.name.startswith(".")]  # staged, renamed
        answers = json.loads(python(PREDICT, str(store / "5"), str(store / "6")))
    original, worse = answers[str(store / "5")], answers[str(store / "6")]
    assert max(abs(a - b) for ra, rb in zip(original, worse, strict=True)
               for a, b in zip(ra, rb, strict=True)) > 1e-3  # fmt: skip
    assert sorted(version_dirs(store)) == [5]


def test_a_version_already_set_aside_or_changed_is_left_alone(store):
    with WorseVersion(scale=0.0).inject(context(store)):
        moved = store.parent / "aside-6"
        shutil.move(store / "6", moved)  # a quality gate set it aside
    assert moved.is_dir() and sorted(version_dirs(store)) == [5]
    shutil.rmtree(moved)


def test_a_version_with_chaoskits_canary_is_refused_and_nothing_written(store, tmp_path):
    base = tmp_path / "models"
    shutil.copytree(store / "5", base / "5")
    canary_file(base / "5").parent.mkdir(parents=True, exist_ok=True)
    canary_file(base / "5").write_text("{}")
    with pytest.raises(FaultError, match="keeps a canary of its own outputs.*PoisonTraining"):
        WorseVersion().inject(context(base))
    assert sorted(p.name for p in base.iterdir()) == ["5"]


@pytest.mark.parametrize("scale", [1.0, float("nan"), float("inf"), True, "2"])
def test_a_scale_that_changes_nothing_or_is_not_a_number_is_refused(scale):
    with pytest.raises(FaultError, match=f"worse-version: scale must be .*got {scale!r}"):
        WorseVersion(scale=scale)
