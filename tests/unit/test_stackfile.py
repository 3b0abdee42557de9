"""Stack files: a valid one loads with typed values; every mistake is one located line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from chaoskit.errors import ConfigError
from chaoskit.stack.plan import plan_stack
from chaoskit.stack.process import ProcessBackend
from chaoskit.stackfile import load_stack_file
from chaoskit.stackfile.stack import FileStack

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom-model" / "chaoskit.toml"

MINIMAL = """
[model]
name = "m"
base_path = "{data_dir}/models/m"

[services.serving]
role = "serving"
command = ["{python}", "-m", "chaoskit.serving"]
ports = { rest = 0 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chaoskit.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_stack_file(write(tmp_path, text))
    return str(info.value)


def test_the_example_loads_with_typed_values() -> None:
    file = load_stack_file(EXAMPLE)
    assert file.model.name == "custom" and file.model.tolerance == 1e-5
    assert file.checkpoints is not None and file.checkpoints.format == "keras"
    assert file.services["serving"].replicas == 2
    assert file.dr.probe_interval == pytest.approx(0.1) and file.dr.slow == pytest.approx(0.3)
    assert file.budgets.rpo == 300.0
    assert file.named("trainer") == "trainer" and file.named("dr-site") is None


def test_defaults_of_a_minimal_file(tmp_path: Path) -> None:
    file = load_stack_file(write(tmp_path, MINIMAL))
    assert file.model.canary == "auto" and file.model.signature == "serving_default"
    assert file.dr.recovery == "chaoskit" and file.dr.misses == 2
    assert file.checkpoints is None and file.budgets.ttd is None


def test_unknown_key_suggests_the_nearest(tmp_path: Path) -> None:
    text = MINIMAL.replace('role = "serving"', 'role = "serving"\nreplica = 2')
    message = error_of(tmp_path, text)
    assert "chaoskit.toml" in message
    assert "services.serving.replica: unknown key (did you mean 'replicas'?)" in message


def test_unknown_top_level_table_lists_valid_keys(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "\n[zzz]\nx = 1\n")
    assert "zzz: unknown key" in message
    assert "budgets, checkpoints, dr, model, quality, services" in message


def test_missing_required_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace('base_path = "{data_dir}/models/m"\n', ""))
    assert "model.base_path: required key missing" in message


def test_wrong_type_and_bad_duration_name_key_and_value(tmp_path: Path) -> None:
    assert "services.serving.replicas = 'two'" in error_of(
        tmp_path, MINIMAL.replace('role = "serving"', 'role = "serving"\nreplicas = "two"'))
    message = error_of(tmp_path, MINIMAL + '\n[dr]\nslow = "quick"\n')
    assert "dr.slow = 'quick': 'quick' is not a duration" in message


def test_bad_role_and_recovery_mode(tmp_path: Path) -> None:
    assert "services.serving.role = 'server'" in error_of(
        tmp_path, MINIMAL.replace('role = "serving"', 'role = "server"'))
    assert "dr.recovery = 'manual'" in error_of(tmp_path, MINIMAL + '[dr]\nrecovery = "manual"\n')


def test_a_stack_needs_serving(tmp_path: Path) -> None:
    assert "no service has role" in error_of(
        tmp_path, MINIMAL.replace('role = "serving"', 'role = "other"'))


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in error_of(tmp_path, "[model\n")
    with pytest.raises(ConfigError, match="does not exist"):
        load_stack_file(tmp_path / "nope.toml")


def test_a_missing_program_is_refused_before_anything_starts(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('"{python}", "-m"', '"no-such-program-xyz", "-m"'))
    backend = ProcessBackend(tmp_path / "run", tmp_path / "data")
    try:
        with pytest.raises(ConfigError, match=r"services.serving.command: program "
                                              r"'no-such-program-xyz' not found"):
            FileStack(path, backend, tmp_path / "data", tmp_path / "journal.jsonl")
        assert backend.services() == []
    finally:
        backend.close()


def test_placeholders_and_paths_resolve_against_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[checkpoints]\ndir = "ckpt"\nformat = "tf"\n')
    backend = ProcessBackend(tmp_path / "run", tmp_path / "data")
    try:
        stack = FileStack(path, backend, tmp_path / "data", tmp_path / "journal.jsonl")
        assert stack.model_base_path == (tmp_path / "data" / "models" / "m").absolute()
        assert stack.checkpoint_dir == tmp_path / "ckpt"
        assert stack.specs["serving"].command[0] == sys.executable
        assert stack.specs["serving"].cwd == str(tmp_path)
        assert stack.trainer is None and stack.dr_site is None
    finally:
        backend.close()


def test_quality_names_its_labelled_set_and_needs_a_grpc_port(tmp_path: Path) -> None:
    with_grpc = MINIMAL.replace("ports = { rest = 0 }", "ports = { rest = 0, grpc = 0 }")
    file = load_stack_file(write(tmp_path, with_grpc + '[quality]\nlabelled = "set.json"\n'))
    assert file.quality is not None and file.quality.task == "regression"
    assert "needs the serving service's gRPC port" in error_of(
        tmp_path, MINIMAL + '[quality]\nlabelled = "set.json"\n')
    assert "quality.task = 'ranking'" in error_of(
        tmp_path, with_grpc + '[quality]\nlabelled = "s.json"\ntask = "ranking"\n')
    assert "quality.labelled: required key missing" in error_of(tmp_path, with_grpc + "[quality]\n")


def test_plan_knows_replicas_and_roles_without_starting() -> None:
    plan = plan_stack(EXAMPLE)
    assert plan.quality_gate == "grpc"  # its [quality] table
    assert plan.replicas == ["serving", "serving-b"]
    assert plan.trainer == "trainer" and plan.dr_site is None and plan.checkpoint_kind == "keras"
    reference = plan_stack(None)
    assert reference.replicas == ["serving", "serving-b"] and reference.dr_site == "dr-site"
