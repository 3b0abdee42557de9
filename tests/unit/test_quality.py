"""The quality gate: labelled scoring, drift, and verdicts that never pass on no evidence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoskit.dr.online.quality import (
    BREACH,
    CLASSIFICATION,
    INCONCLUSIVE,
    PROMOTE,
    REGRESSION,
    QualityGate,
    ks_statistic,
    psi,
    read_labelled_set,
    reference_labelled_set,
    score,
)
from chaoskit.errors import ConfigError


@pytest.fixture(scope="module")
def labelled():
    return reference_labelled_set(1000)


def noisy(labelled, scale, seed=0):
    rng = np.random.default_rng(seed)
    return labelled.expected + rng.normal(0.0, scale, labelled.expected.shape)


def test_reference_set_is_held_out_data_of_the_teacher(labelled):
    again = reference_labelled_set(1000)
    assert labelled.expected.shape == (1000, 4) and len(labelled) == 1000
    np.testing.assert_array_equal(labelled.expected, again.expected)
    assert not np.allclose(reference_labelled_set(1000, seed=1).expected, labelled.expected)
    assert score(REGRESSION, labelled.expected, labelled.expected) == 0.0
    noise = score(REGRESSION, noisy(labelled, 0.5), labelled.expected)
    assert noise == pytest.approx(0.25, rel=0.1)


def test_classification_scores_the_arg_max():
    expected = np.array([0, 2, 1, 1])
    outputs = np.array([[0.9, 0.0, 0.1], [0.1, 0.2, 0.7], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert score(CLASSIFICATION, outputs, expected) == 0.75


def test_outputs_of_another_shape_are_named():
    with pytest.raises(ConfigError, match=r"shape \[3\] per instance.*shape \[4\]"):
        score(REGRESSION, np.zeros((5, 3)), np.zeros((5, 4)))


def test_drift_measures_are_zero_for_the_same_outputs_and_large_for_a_shift(labelled):
    same = labelled.expected
    assert psi(same, same) == pytest.approx(0.0, abs=1e-9)
    assert ks_statistic(same, same) == 0.0
    shifted = same + 1.0
    assert psi(same, shifted) > 0.25
    assert ks_statistic(same, shifted) > 0.3
    assert ks_statistic(np.zeros(10), np.ones(10)) == 1.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=50),
       st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=50))
def test_drift_measures_stay_in_their_ranges(a, b):
    assert psi(np.array(a), np.array(b)) >= 0.0
    assert 0.0 <= ks_statistic(np.array(a), np.array(b)) <= 1.0


def test_a_worse_version_breaches_and_never_becomes_the_baseline(labelled):
    gate = QualityGate(REGRESSION, margin=0.2, min_samples=100)
    first = gate.judge(1, noisy(labelled, 0.3), labelled)
    assert first.decision == PROMOTE and "baseline" in first.reason
    better = gate.judge(2, noisy(labelled, 0.2, seed=1), labelled, noisy(labelled, 0.3))
    assert better.decision == PROMOTE and better.best == first.score
    assert better.psi is not None and better.ks is not None
    worse = gate.judge(3, noisy(labelled, 0.4, seed=2), labelled)
    assert worse.decision == BREACH and "beyond the bound" in worse.reason
    assert worse.score > better.score * 1.2
    # the breach did not lower the bar: a version as bad is still refused
    assert gate.judge(4, noisy(labelled, 0.4, seed=3), labelled).decision == BREACH
    assert gate.best() == better.score


def test_non_finite_outputs_breach_naming_how_many(labelled):
    gate = QualityGate(REGRESSION, margin=0.2, min_samples=10)
    outputs = labelled.expected.copy()
    outputs[:7, 0] = np.nan
    outputs[7, 1] = np.inf
    verdict = gate.judge(1, outputs, labelled)
    assert verdict.decision == BREACH and verdict.reason.startswith("8 of 1000 outputs")
    assert gate.best() is None


@pytest.mark.parametrize("answered", [None, 0, 99])
def test_too_few_samples_is_inconclusive_never_a_pass(labelled, answered):
    gate = QualityGate(REGRESSION, margin=0.2, min_samples=100)
    outputs = None if answered is None else labelled.expected[:answered]
    verdict = gate.judge(1, outputs, labelled)
    assert verdict.decision == INCONCLUSIVE and verdict.score is None
    assert f"{answered or 0} answered samples, the gate needs 100" == verdict.reason
    assert gate.best() is None


def test_a_floor_refuses_even_the_first_version(labelled):
    gate = QualityGate(REGRESSION, margin=0.2, min_samples=10, floor=0.05)
    assert gate.judge(1, noisy(labelled, 0.5), labelled).decision == BREACH
    assert gate.judge(2, noisy(labelled, 0.1), labelled).decision == PROMOTE


def test_classifier_margin_is_in_accuracy_points():
    expected = np.array([0, 1] * 50)
    right = np.eye(2)[expected]
    gate = QualityGate(CLASSIFICATION, margin=0.05, min_samples=10)
    labelled = type("L", (), {"expected": expected})()
    assert gate.judge(1, right, labelled).score == 1.0
    ninety_six = right.copy()
    ninety_six[:4] = ninety_six[:4, ::-1]
    assert gate.judge(2, ninety_six, labelled).decision == PROMOTE
    ninety = right.copy()
    ninety[:10] = ninety[:10, ::-1]
    assert gate.judge(3, ninety, labelled).decision == BREACH


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "ranking"}, "task must be one of regression, classification, got 'ranking'"),
    ({"margin": -0.1}, "margin must be a number >= 0, got -0.1"),
    ({"margin": float("nan")}, "margin must be a number >= 0, got nan"),
    ({"min_samples": 0}, "min_samples must be >= 1, got 0"),
])
def test_bad_gate_settings_are_named(kwargs, message):
    settings_ = {"task": REGRESSION, "margin": 0.1, "min_samples": 10} | kwargs
    with pytest.raises(ConfigError, match=message):
        QualityGate(settings_.pop("task"), **settings_)


def test_a_labelled_file_is_read(tmp_path):
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"instances": [[1.0], [2.0]], "labels": [0, 1]}))
    read = read_labelled_set(path, task=CLASSIFICATION, where="stack.toml")
    assert read.instances == [[1.0], [2.0]] and read.expected.tolist() == [0, 1]
    assert read.source == str(path)


@pytest.mark.parametrize("body, message", [
    (None, "cannot read labelled set"),
    ("{", "is not JSON"),
    ({"instances": [[1.0]]}, "must hold lists \"instances\" and 'targets'"),
    ({"instances": [[1.0], [2.0]], "targets": [[1.0]]}, "has 2 instances and 1 targets"),
    ({"instances": [], "targets": []}, "has 0 instances and 0 targets"),
    ({"instances": [[1.0], [2.0]], "targets": [[1.0], "x"]}, "targets of .* are not all numbers"),
])
def test_a_bad_labelled_file_gets_one_message(tmp_path, body, message):
    path = tmp_path / "set.json"
    if body is not None:
        path.write_text(body if isinstance(body, str) else json.dumps(body))
    with pytest.raises(ConfigError, match=f"^stack.toml: .*{message}"):
        read_labelled_set(path, task=REGRESSION, where="stack.toml")
