"""A quality gate's settings (``@pytest.mark.chaos_quality``) and the config it writes."""

from __future__ import annotations

import json

import pytest

from chaoskit.dr.online.quality import PROMOTE, QualityGate, reference_labelled_set
from chaoskit.dr.online.quality_guard import pinned
from chaoskit.dr.online.quality_targets import QualityTargets
from chaoskit.errors import ConfigError
from chaoskit.serving.config import parse_config


def test_defaults_and_given_values():
    assert QualityTargets.parse({}, where="w") == QualityTargets(0.5, 1000, None, 3.0)
    got = QualityTargets.parse({"margin": 1, "min_samples": 10, "floor": 0.2,
                                "max_slowdown": 2}, where="w")  # fmt: skip
    assert got == QualityTargets(1.0, 10, 0.2, 2.0)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"margin": -0.1}, "margin must be a number >= 0, got -0.1"),
        ({"margin": "big"}, "margin must be a number >= 0, got 'big'"),
        ({"floor": float("nan")}, "floor must be a number >= 0, got nan"),
        ({"min_samples": 0}, "min_samples must be a whole number >= 1, got 0"),
        ({"min_samples": True}, "min_samples must be a whole number >= 1, got True"),
        ({"max_slowdown": 0.5}, "max_slowdown must be a number >= 1, got 0.5"),
        ({"margins": 1}, "unknown setting 'margins' (known: margin, min_samples, floor, "
                         "max_slowdown)"),
    ],
)
def test_bad_settings_name_the_value(fields, named):
    with pytest.raises(ConfigError) as e:
        QualityTargets.parse(fields, where="exp: @pytest.mark.chaos_quality")
    assert str(e.value) == f"exp: @pytest.mark.chaos_quality: {named}"


def test_pinned_config_is_what_the_server_reads():
    config = pinned(200, 400, stable=200)
    again = parse_config(json.dumps(config.as_json()))
    assert again.policy.kind == "specific" and again.policy.versions == {200, 400}
    assert dict(again.labels) == {"stable": 200}


def test_check_confirms_a_served_version_without_recording_it():
    labelled = reference_labelled_set(200)
    gate = QualityGate(labelled.task, margin=0.1, min_samples=200)
    assert gate.judge(1, labelled.expected + 0.1, labelled).decision == PROMOTE
    assert gate.check(1, labelled.expected + 0.1, labelled) is None
    assert "beyond the bound" in (gate.check(2, labelled.expected + 1.0, labelled) or "")
    assert "answered samples" in (gate.check(2, labelled.expected[:10], labelled) or "")
    assert [v for v, _ in gate.promoted] == [1]  # check() promoted nothing
