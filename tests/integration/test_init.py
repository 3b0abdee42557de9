"""``chaoskit init`` on a real SavedModel: a stack file that loads, a canary that fits the
signature, a first experiment; and it never overwrites."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaoskit.canary import check_canary, signature_inputs
from chaoskit.model import build_model, export_saved_model
from chaoskit.stackfile import load_stack_file

pytestmark = [pytest.mark.integration]


def init(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chaoskit.cli", "init", *args, "--dir",
                           str(where)], capture_output=True, text=True, timeout=120)  # fmt: skip


def test_init_writes_a_stack_file_that_fits_the_model(tmp_path: Path) -> None:
    base = tmp_path / "models" / "mine"
    export_saved_model(build_model(seed=1), base, version=3, step=3)
    project = tmp_path / "project"
    project.mkdir()
    done = init(project, str(base), "--name", "mine")
    assert done.returncode == 0, done.stderr
    file = load_stack_file(project / "chaoskit.toml")
    assert file.model.name == "mine" and Path(file.model.base_path) == base
    from chaoskit.serving.store import signature_def_json

    metadata = {"metadata": {"signature_def": {"signature_def": signature_def_json(base / "3")}}}
    rows = json.loads((project / "canary.json").read_text())["instances"]
    check_canary(rows, signature_inputs(metadata, "serving_default"), where="canary.json")
    assert len(rows[0]) == 8  # the reference model's one input, [None, 8] floats
    compile(
        (project / "experiments" / "test_my_stack.py").read_text(), "test_my_stack.py", "exec"
    )

    before = (project / "chaoskit.toml").read_text()
    again = init(project, str(base))
    assert again.returncode == 1 and "never overwrites" in again.stderr
    assert "Traceback" not in again.stderr
    assert (project / "chaoskit.toml").read_text() == before


def test_init_without_versions_is_a_clear_error(tmp_path: Path) -> None:
    done = init(tmp_path, str(tmp_path / "empty"))
    assert done.returncode == 1 and "holds no SavedModel version" in done.stderr
    assert not (tmp_path / "chaoskit.toml").exists()
