from __future__ import annotations

import json
import math

import pytest

from chaoskit.dr.online.detector import ConsecutiveFailureDetector
from chaoskit.dr.online.goldens import Goldens, max_abs_error
from chaoskit.errors import ConfigError


def test_alert_fires_once_after_k_consecutive_failures():
    detector = ConsecutiveFailureDetector(failures_to_alert=3)
    outcomes = [False, False, True, False, False, False, False, False]
    fired = [detector.observe(ok) for ok in outcomes]
    assert fired == [False, False, False, False, False, True, False, False]
    assert detector.observe(True) is False
    assert [detector.observe(False) for _ in range(3)] == [False, False, True]


def test_reset_rearms_the_detector():
    detector = ConsecutiveFailureDetector(failures_to_alert=1)
    assert detector.observe(False) is True
    assert detector.observe(False) is False
    detector.reset()
    assert detector.observe(False) is True


def test_k_must_be_positive():
    with pytest.raises(ConfigError, match="0"):
        ConsecutiveFailureDetector(failures_to_alert=0)


def test_max_abs_error_shapes_and_values():
    assert max_abs_error([[1.0, 2.0]], [[1.0, 2.5]]) == pytest.approx(0.5)
    assert max_abs_error([[1.0]], [[1.0], [2.0]]) == math.inf
    assert max_abs_error([["x"]], [[1.0]]) == math.inf
    assert max_abs_error([[float("nan")]], [[1.0]]) == math.inf
    assert max_abs_error(None, [[1.0]]) == math.inf


def write_canary(base, version, outputs):
    extra = base / str(version) / "assets.extra"
    extra.mkdir(parents=True)
    canary = {"inputs": [[0.0] * 8], "outputs": outputs, "step": version, "version": version,
              "signature_name": "serving_default", "tolerance": 1e-4}  # fmt: skip
    (extra / "chaoskit_canary.json").write_text(json.dumps(canary))


def test_goldens_match_the_newest_equal_version_and_see_new_versions(tmp_path):
    write_canary(tmp_path, 10, [[1.0, 2.0, 3.0, 4.0]])
    goldens = Goldens(tmp_path)
    assert goldens.matching_version([[1.0, 2.0, 3.0, 4.00001]]) == 10
    assert goldens.matching_version([[9.0, 2.0, 3.0, 4.0]]) is None
    write_canary(tmp_path, 20, [[9.0, 2.0, 3.0, 4.0]])
    assert goldens.matching_version([[9.0, 2.0, 3.0, 4.0]]) == 20
    assert goldens.latest()[0] == 20


def test_damaged_canary_files_are_skipped(tmp_path):
    write_canary(tmp_path, 1, [[1.0, 1.0, 1.0, 1.0]])
    (tmp_path / "2" / "assets.extra").mkdir(parents=True)
    (tmp_path / "2" / "assets.extra" / "chaoskit_canary.json").write_text("{not json")
    goldens = Goldens(tmp_path)
    assert goldens.for_version(2) is None
    assert goldens.latest()[0] == 1


def test_a_forgotten_version_number_exported_again_gets_its_own_goldens(tmp_path):
    """A rewound trainer exports version 20 again with other weights: the first 20's
    outputs are no longer correct, the new one's are."""
    import shutil

    write_canary(tmp_path, 10, [[1.0, 1.0, 1.0, 1.0]])
    write_canary(tmp_path, 20, [[2.0, 2.0, 2.0, 2.0]])
    goldens = Goldens(tmp_path)
    assert goldens.matching_version([[2.0, 2.0, 2.0, 2.0]]) == 20
    shutil.rmtree(tmp_path / "20")
    goldens.forget(20)
    write_canary(tmp_path, 20, [[3.0, 3.0, 3.0, 3.0]])
    assert goldens.matching_version([[2.0, 2.0, 2.0, 2.0]]) is None
    assert goldens.matching_version([[3.0, 3.0, 3.0, 3.0]]) == 20
