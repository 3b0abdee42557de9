"""Retention policies (restic's semantics): which snapshots ``forget`` keeps, and why.

Times are the checkpoints' creation times.  ``keep_within`` counts back from the newest
snapshot, not from now, so an idle repository does not silently expire everything.
The hourly/daily/weekly rules keep the newest snapshot of each of the last N periods
that have one.  A snapshot is kept if any rule keeps it; an empty policy keeps all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from chaoskit.dr.protect.repository.snapshots import Snapshot
from chaoskit.durations import parse_duration
from chaoskit.errors import ConfigError


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 0
    keep_within: float = 0.0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"--{name.replace('_', '-')}: {value!r} must be an integer >= 0")

    @classmethod
    def from_options(
        cls,
        *,
        keep_within: str | float | None = None,
        keep_last: int | None = None,
        keep_hourly: int | None = None,
        keep_daily: int | None = None,
        keep_weekly: int | None = None,
        keep_tags: tuple[str, ...] = (),
    ) -> RetentionPolicy:
        """From CLI-style options: a duration string, counts that may be None."""
        within = parse_duration(keep_within, what="--keep-within") if keep_within else 0.0
        return cls(
            keep_last=keep_last or 0,
            keep_within=within,
            keep_hourly=keep_hourly or 0,
            keep_daily=keep_daily or 0,
            keep_weekly=keep_weekly or 0,
            keep_tags=keep_tags,
        )

    @property
    def empty(self) -> bool:
        return not (
            self.keep_last
            or self.keep_within
            or self.keep_hourly
            or self.keep_daily
            or self.keep_weekly
            or self.keep_tags
        )


_BUCKETS = {
    "hourly": lambda t: time.strftime("%Y-%m-%d %H", time.gmtime(t)),
    "daily": lambda t: time.strftime("%Y-%m-%d", time.gmtime(t)),
    "weekly": lambda t: time.strftime("%G-W%V", time.gmtime(t)),
}


def apply_policy(
    snapshots: Sequence[Snapshot], policy: RetentionPolicy
) -> tuple[list[tuple[Snapshot, list[str]]], list[Snapshot]]:
    """([(kept snapshot, reasons)], [removed snapshots]), newest first."""
    ordered = sorted(snapshots, key=lambda s: (s.time, s.backup_time), reverse=True)
    if policy.empty:
        return [(s, ["no policy"]) for s in ordered], []
    reasons: dict[str, list[str]] = {s.id: [] for s in ordered}
    for s in ordered[: policy.keep_last]:
        reasons[s.id].append("last")
    if policy.keep_within and ordered:
        newest = ordered[0].time
        for s in ordered:
            if newest - s.time <= policy.keep_within:
                reasons[s.id].append("within")
    for rule, count in (
        ("hourly", policy.keep_hourly),
        ("daily", policy.keep_daily),
        ("weekly", policy.keep_weekly),
    ):
        seen: set[str] = set()
        for s in ordered:
            if len(seen) >= count:
                break
            bucket = _BUCKETS[rule](s.time)
            if bucket not in seen:
                seen.add(bucket)
                reasons[s.id].append(rule)
    for s in ordered:
        if set(policy.keep_tags) & set(s.tags):
            reasons[s.id].append("tag")
    kept = [(s, reasons[s.id]) for s in ordered if reasons[s.id]]
    removed = [s for s in ordered if not reasons[s.id]]
    return kept, removed
