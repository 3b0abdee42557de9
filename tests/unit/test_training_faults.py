"""Training faults and the trainer's control file: written, refused, noticed, reverted."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaoskit.errors import ConfigError, FaultError
from chaoskit.faults import (
    DivergeTraining,
    FaultContext,
    PoisonTraining,
    SkewPreprocessing,
    SlowModel,
)
from chaoskit.journal import Journal, read_journal
from chaoskit.trainer.control import Control, ControlWatch, read_control


@pytest.fixture
def ctx(tmp_path: Path):
    stack = SimpleNamespace(trainer_control_file=tmp_path / "trainer-control.json",
                            trainer_step=lambda: 120)  # fmt: skip
    journal = Journal(tmp_path / "journal.jsonl", source="test")
    yield FaultContext(journal, seed=1, stack=stack)
    journal.close()


def test_poison_writes_the_control_and_the_revert_removes_it(ctx, tmp_path):
    path = ctx.stack.trainer_control_file
    with PoisonTraining(labels="shuffle").inject(ctx):
        assert json.loads(path.read_text()) == {"labels": "shuffle", "fault": "poison-training"}
        assert read_control(path) == Control(labels="shuffle", fault="poison-training")
        with pytest.raises(FaultError, match="another training fault is in force"):
            DivergeTraining().inject(ctx)
    assert not path.exists()
    journal = read_journal(tmp_path / "journal.jsonl")
    events = [e for e in journal if e["event"].startswith("fault.")]
    assert [e["event"] for e in events] == ["fault.injected", "fault.reverted"]
    assert events[0]["changes"] == {"control_file": str(path), "labels": "shuffle",
                                    "fault": "poison-training", "step": 120}  # fmt: skip


def test_diverge_sets_the_learning_rate(ctx):
    with DivergeTraining(learning_rate=1e30).inject(ctx):
        assert read_control(ctx.stack.trainer_control_file).learning_rate == 1e30


@pytest.mark.parametrize("fault, control", [
    (SlowModel(repeat=500), {"slow_repeat": 500, "fault": "slow-model"}),
    (SkewPreprocessing(scale=-3), {"input_scale": -3.0, "fault": "skew-preprocessing"}),
])  # fmt: skip
def test_export_faults_ask_for_other_exports_and_the_revert_ends_them(ctx, fault, control):
    path = ctx.stack.trainer_control_file
    with fault.inject(ctx):
        assert json.loads(path.read_text()) == control
    assert not path.exists()


@pytest.mark.parametrize("make, message", [
    (lambda: SlowModel(repeat=1), "slow_repeat must be a whole number from 2 to 100000, got 1"),
    (lambda: SlowModel(repeat=10**6), "got 1000000"),
    (lambda: SkewPreprocessing(scale=0), "input_scale must be a finite number other than 0"),
    (lambda: SkewPreprocessing(scale=float("nan")), "got nan"),
    (lambda: SkewPreprocessing(scale=1), "scale 1 changes nothing"),
    (lambda: PoisonTraining(labels="swap"), "labels must be 'flip' or 'shuffle', got 'swap'"),
    (lambda: DivergeTraining(learning_rate=0), "learning_rate must be a finite number > 0, got 0"),
    (lambda: DivergeTraining(learning_rate=float("inf")), "got inf"),
])  # fmt: skip
def test_bad_parameters_are_named(make, message):
    with pytest.raises(FaultError, match=message):
        make()


def test_a_stack_whose_trainer_reads_no_control_file_refuses(tmp_path):
    journal = Journal(tmp_path / "j.jsonl", source="test")
    try:
        with pytest.raises(FaultError, match="the stack's trainer reads no control file"):
            PoisonTraining().inject(FaultContext(journal, stack=SimpleNamespace()))
    finally:
        journal.close()


def test_the_watch_notices_a_new_a_changed_and_a_removed_file(tmp_path):
    path = tmp_path / "control.json"
    watch = ControlWatch(path)
    assert watch.changed() is None  # no file, as at the start: nothing to do
    path.write_text(json.dumps({"labels": "flip"}))
    assert watch.changed() == Control(labels="flip")
    assert watch.changed() is None
    path.write_text(json.dumps({"learning_rate": 5.0, "fault": "x"}))
    assert watch.changed() == Control(learning_rate=5.0, fault="x")
    path.unlink()
    assert watch.changed() == Control()


@pytest.mark.parametrize("text, message", [
    ("{", "trainer control file .*: Expecting"),
    ('{"labels": "flip", "rate": 1}', "expected an object with labels"),
    ('{"labels": "sideways"}', "labels must be one of none, flip, shuffle, got 'sideways'"),
    ('{"learning_rate": -1}', "learning_rate must be a finite number > 0, got -1"),
    ('{"learning_rate": true}', "got True"),
    ('{"slow_repeat": 2.5}', "slow_repeat must be a whole number from 2 to 100000, got 2.5"),
])  # fmt: skip
def test_a_bad_control_file_is_one_message(tmp_path, text, message):
    path = tmp_path / "control.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_control(path)
