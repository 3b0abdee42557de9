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
    :class:`~chaoskit.dr.online.quality.QualityGate` for *margin*, *floor*, *min_samples*."""

    margin: float = 0.5
    min_samples: int = 1000
    floor: float | None = None

    @classmethod
    def parse(cls, fields: dict[str, Any], *, where: str) -> QualityTargets:
        unknown = sorted(set(fields) - {"margin", "min_samples", "floor"})
        if unknown:
            raise ConfigError(f"{where}: unknown setting {unknown[0]!r} "
                              "(known: margin, min_samples, floor)")  # fmt: skip
        for name in ("margin", "floor"):
            value = fields.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):  # fmt: skip
                raise ConfigError(f"{where}: {name} must be a number >= 0, got {value!r}")
        samples = fields.get("min_samples", cls.min_samples)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"{where}: min_samples must be a whole number >= 1, got {samples!r}")
        return cls(float(fields.get("margin", cls.margin)), samples,
                   None if fields.get("floor") is None else float(fields["floor"]))  # fmt: skip
