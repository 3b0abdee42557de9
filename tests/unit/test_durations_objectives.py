from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaoskit.durations import format_duration, parse_duration
from chaoskit.errors import ConfigError
from chaoskit.objectives import Objectives


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0),
     ("1.5s", 1.5), (" 7 ", 7.0), (2, 2.0), (0.25, 0.25), (".5s", 0.5)],
)  # fmt: skip
def test_parse_duration_accepts_units(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "fast", "5 minutes", "-1s", "1e3", "nan", True, None, [1]])
def test_parse_duration_rejects_and_names_the_value(bad):
    with pytest.raises(ConfigError) as info:
        parse_duration(bad, what="rto")
    assert "rto" in str(info.value)
    assert repr(bad) in str(info.value)


def test_parse_duration_rejects_infinite_numbers():
    with pytest.raises(ConfigError):
        parse_duration(math.inf)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h"]))
def test_parse_duration_round_trips_integers(n, unit):
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * factor)


def test_format_duration():
    assert format_duration(None) == "-"
    assert format_duration(0.153) == "153ms"
    assert format_duration(4.214) == "4.21s"
    assert format_duration(300) == "5.0m"
    assert format_duration(3 * 3600) == "3.0h"
    assert format_duration(30 * 86400) == "30d"
    assert format_duration(math.inf) == "unbounded"


def test_objectives_parse_and_merge():
    mine = Objectives.parse({"ttd": "500ms", "rto": 30})
    defaults = Objectives.parse({"rto": "5m", "rpo": "1m"})
    merged = mine.merged_over(defaults)
    assert merged == Objectives(ttd=0.5, rto=30.0, rpo=60.0)
    assert "ttd<=500ms" in merged.describe()


def test_objectives_reject_unknown_names_and_bad_values():
    with pytest.raises(ConfigError, match="'rtoo'"):
        Objectives.parse({"rtoo": "1s"})
    with pytest.raises(ConfigError, match="test_x: rto='soon'"):
        Objectives.parse({"rto": "soon"}, where="test_x")
