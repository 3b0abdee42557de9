"""Canary inputs: request files in both REST forms, inputs made from a signature, checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaoskit.canary import auto_canary, check_canary, read_canary_file, signature_inputs
from chaoskit.dr.online.goldens import max_abs_error
from chaoskit.errors import ConfigError

METADATA = {"metadata": {"signature_def": {"signature_def": {"serving_default": {
    "inputs": {
        "features": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"},
                                                                     {"size": "6"}]}},
        "category": {"dtype": "DT_INT32", "tensor_shape": {"dim": [{"size": "-1"},
                                                                     {"size": "1"}]}},
    }, "outputs": {}}}}}}  # fmt: skip


def test_columnar_inputs_become_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"inputs": {"a": [[1, 2], [3, 4]], "b": [[0], [1]]}}))
    assert read_canary_file(path, where="w") == [{"a": [1, 2], "b": [0]}, {"a": [3, 4], "b": [1]}]


def test_a_file_needs_exactly_one_form(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"instances": [1], "inputs": [1]}))
    with pytest.raises(ConfigError, match="one of \"instances\" or \"inputs\""):
        read_canary_file(path, where="w")
    path.write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        read_canary_file(path, where="w")


def test_auto_canary_fits_the_signature_and_is_seeded() -> None:
    inputs = signature_inputs(METADATA, "serving_default")
    rows = auto_canary(inputs, seed=3)
    assert rows == auto_canary(inputs, seed=3) != auto_canary(inputs, seed=4)
    assert len(rows[0]["features"]) == 6 and rows[0]["category"][0] in (0, 1)
    check_canary(rows, inputs, where="w")


def test_mismatched_canary_names_what_the_signature_expects() -> None:
    inputs = signature_inputs(METADATA, "serving_default")
    with pytest.raises(ConfigError, match=r"expects category \(DT_INT32, shape \[-1, 1\]\)"):
        check_canary([{"features": [0.0] * 6}], inputs, where="w")
    with pytest.raises(ConfigError, match="rank 2 per instance"):
        check_canary([{"features": [[0.0] * 6], "category": [1]}], inputs, where="w")


def test_unknown_signature_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="'predict' not found .*serving_default"):
        signature_inputs(METADATA, "predict")


def test_outputs_with_names_compare_per_name() -> None:
    assert max_abs_error({"p": [0.5, 0.25]}, {"p": [0.5, 0.5]}) == 0.25
    assert max_abs_error({"q": [0.5]}, {"p": [0.5]}) == float("inf")


def test_non_finite_outputs_match_only_the_same_non_finite_golden() -> None:
    nan, inf = float("nan"), float("inf")
    assert max_abs_error([[nan, inf, -inf]], [[nan, inf, -inf]]) == 0.0  # a diverged export
    assert max_abs_error([[nan]], [[0.5]]) == inf
    assert max_abs_error([[0.5]], [[nan]]) == inf
    assert max_abs_error([[inf]], [[-inf]]) == inf
    assert max_abs_error([[inf]], [[1e30]]) == inf
