"""Recovery objectives: the TTD, RTO and RPO budgets an experiment must meet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from chaoskit.durations import format_duration, parse_duration
from chaoskit.errors import ConfigError

NAMES = ("ttd", "rto", "rpo")


@dataclass(frozen=True)
class Objectives:
    """Budgets in seconds; None means "not budgeted" (still measured and reported)."""

    ttd: float | None = None
    rto: float | None = None
    rpo: float | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any], *, where: str = "") -> Objectives:
        """Build from marker kwargs / options like {"ttd": "500ms", "rto": 30}."""
        prefix = f"{where}: " if where else ""
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise ConfigError(
                f"{prefix}unknown objective {unknown[0]!r} (known: {', '.join(NAMES)})"
            )
        parsed = {
            name: None if value is None else parse_duration(value, what=f"{prefix}{name}={value!r}")
            for name, value in values.items()
        }
        return cls(**parsed)

    def merged_over(self, defaults: Objectives) -> Objectives:
        """These budgets, falling back to *defaults* where unset."""
        mine = asdict(self)
        return Objectives(
            **{k: mine[k] if mine[k] is not None else v for k, v in asdict(defaults).items()}
        )

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"{k}<={format_duration(v)}" for k, v in asdict(self).items() if v is not None]
        return ", ".join(parts) or "no budgets"
