"""Parse human durations ("500ms", "30s", "5m", "1h", "1d", 2.5) into seconds."""

from __future__ import annotations

import math
import re

from chaoskit.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object, *, what: str = "duration") -> float:
    """Return *value* in seconds; numbers are seconds, strings may carry a unit.

    Raises ConfigError naming *what* and the value when it does not parse, is negative
    or is not finite (an empty *what*: the message names the value only).
    """
    bad = ConfigError(f"{what + ': ' if what else ''}{value!r} is not a duration "
                      "(use e.g. 500ms, 30s, 5m)")  # fmt: skip
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if not match:
            raise bad
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise bad
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"{what + ': ' if what else ''}{value!r} must be a finite, non-negative duration"
        )
    return seconds


def format_duration(seconds: float | None) -> str:
    """Short human form for tables: 0.153 -> '153ms', 4.21 -> '4.21s', 300 -> '5.0m',
    7200 -> '2.0h', 2592000 -> '30d', None -> '-'."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if math.isinf(seconds):
        return "unbounded"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.2f}s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"
