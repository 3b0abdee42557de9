"""What an experiment's quality gate demands: ``@pytest.mark.chaos_quality(...)``.

Its own module, free of numpy: the plugin validates every marker at collection, before
anything heavy is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from chaoskit.errors import ConfigError


@dataclass(frozen=True)
class QualityTargets:
    """What an experiment's gate demands (``@pytest.mark.chaos_quality``): see
    :class:`~chaoskit.dr.online.quality.QualityGate` for *margin*, *floor*, *min_samples*;
    *max_slowdown*: how many times slower than the stable version's a new version's
    predict may be (median canary latency)."""

    margin: float = 0.5
    min_samples: int = 1000
    floor: float | None = None
    max_slowdown: float = 3.0

    @classmethod
    def parse(cls, fields: dict[str, Any], *, where: str) -> QualityTargets:
        unknown = sorted(set(fields) - {"margin", "min_samples", "floor", "max_slowdown"})
        if unknown:
            raise ConfigError(f"{where}: unknown setting {unknown[0]!r} "
                              "(known: margin, min_samples, floor, max_slowdown)")  # fmt: skip
        slowdown = fields.get("max_slowdown", cls.max_slowdown)
        if isinstance(slowdown, bool) or not isinstance(slowdown, (int, float)) \
                or not math.isfinite(slowdown) or slowdown < 1:
            raise ConfigError(f"{where}: max_slowdown must be a number >= 1, got {slowdown!r}")
        for name in ("margin", "floor"):
            value = fields.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):  # fmt: skip
                raise ConfigError(f"{where}: {name} must be a number >= 0, got {value!r}")
        samples = fields.get("min_samples", cls.min_samples)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"{where}: min_samples must be a whole number >= 1, got {samples!r}")
        return cls(float(fields.get("margin", cls.margin)), samples,
                   None if fields.get("floor") is None else float(fields["floor"]),
                   float(slowdown))  # fmt: skip
