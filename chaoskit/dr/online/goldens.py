"""Golden canary outputs per model version, read from each version's canary file.

The trainer records, with every exported version, a fixed set of canary inputs and the
outputs that version computes.  A prediction is *correct* when it equals the golden
outputs of a version (within the version's tolerance).  Reading goldens needs no
TensorFlow.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from chaoskit.model import load_canary, version_dirs


class Goldens:
    """Lazily loaded canary files of the versions under one model base path."""

    def __init__(self, model_base_path: Path) -> None:
        self.base = Path(model_base_path)
        self._by_version: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Read the canary files of versions not seen yet (damaged ones are skipped)."""
        for version, entry in version_dirs(self.base).items():
            if version in self._by_version:
                continue
            try:
                canary = load_canary(entry)
            except (OSError, ValueError, KeyError):
                continue
            with self._lock:
                self._by_version[version] = canary

    def forget(self, version: int) -> None:
        """*version* left the store for good: a version exported later under the same
        number (a rewound trainer's) has goldens of its own, read when it appears."""
        with self._lock:
            self._by_version.pop(version, None)

    def for_version(self, version: int) -> dict[str, Any] | None:
        if version not in self._by_version:
            self.refresh()
        return self._by_version.get(version)

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        self.refresh()
        if not self._by_version:
            return None
        version = max(self._by_version)
        return version, self._by_version[version]

    def inputs(self) -> list[list[float]]:
        latest = self.latest()
        if latest is None:
            raise LookupError(f"no canary file under {self.base}")
        return list(latest[1]["inputs"])

    def matching_version(self, predictions: Any) -> int | None:
        """The newest version whose golden outputs equal *predictions*, else None."""
        for attempt in range(2):
            with self._lock:
                candidates = sorted(self._by_version.items(), reverse=True)
            for version, canary in candidates:
                if max_abs_error(predictions, canary["outputs"]) <= canary.get("tolerance", 1e-4):
                    return version
            if attempt == 0:
                self.refresh()
        return None


def max_abs_error(got: Any, want: Any) -> float:
    """Largest absolute difference of two equally shaped nested lists (or dicts of them,
    as a model with several named outputs answers); inf if shapes or names differ."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return math.inf
        return max((max_abs_error(got[k], w) for k, w in want.items()), default=0.0)
    if isinstance(want, str):
        return 0.0 if got == want else math.inf
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return math.inf
        return max((max_abs_error(g, w) for g, w in zip(got, want, strict=True)), default=0.0)
    try:
        got_f, want_f = float(got), float(want)
    except (TypeError, ValueError):
        return math.inf
    if got_f == want_f or (math.isnan(got_f) and math.isnan(want_f)):
        return 0.0  # also NaN or inf where the export computed it: judged by quality, not here
    diff = abs(got_f - want_f)
    return diff if math.isfinite(diff) else math.inf
