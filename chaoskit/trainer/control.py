"""A trainer's control file: how chaoskit's training faults reach a running trainer.

A JSON object, written atomically by a fault (:mod:`chaoskit.faults.training`) and
removed by its revert; every key is optional::

    {"labels": "flip" | "shuffle", "learning_rate": 1e30, "slow_repeat": 2000,
     "input_scale": 10.0, "fault": "poison-training"}

``labels``: the trainer learns from targets negated ("flip") or shuffled across the
batch ("shuffle") — poisoned or mislabeled data; ``learning_rate``: the optimizer's rate
while the file is there — a blow-up that ends in NaN/inf weights; ``slow_repeat``: the
versions exported meanwhile run the model that many times per predict (a slow model,
the same answers); ``input_scale``: they multiply their inputs by it before the model
(a preprocessing skew between training and serving).  The trainer looks at
the file before every step (one ``stat``; it is read again only when it changed), and a
missing file means training as configured.  A user's trainer that honours the same
file can be poisoned the same way.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chaoskit.atomic import atomic_write_text
from chaoskit.errors import ConfigError

LABEL_MODES = ("none", "flip", "shuffle")
MAX_SLOW_REPEAT = 100_000
"""Beyond it one predict would take seconds: a hang, not a slow model."""
KEYS = ("labels", "learning_rate", "slow_repeat", "input_scale", "fault")


@dataclass(frozen=True)
class Control:
    """What the trainer must do differently; the defaults are "nothing"."""

    labels: str = "none"
    learning_rate: float | None = None
    slow_repeat: int | None = None
    input_scale: float | None = None
    fault: str | None = None

    def __post_init__(self) -> None:
        if self.labels not in LABEL_MODES:
            raise ConfigError(f"labels must be one of {', '.join(LABEL_MODES)}, got "
                              f"{self.labels!r}")  # fmt: skip
        rate = self.learning_rate
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or not math.isfinite(rate) or rate <= 0):  # fmt: skip
            raise ConfigError(f"learning_rate must be a finite number > 0, got {rate!r}")
        repeat = self.slow_repeat
        if repeat is not None and (isinstance(repeat, bool) or not isinstance(repeat, int)
                                   or not 2 <= repeat <= MAX_SLOW_REPEAT):  # fmt: skip
            raise ConfigError(f"slow_repeat must be a whole number from 2 to "
                              f"{MAX_SLOW_REPEAT}, got {repeat!r}")  # fmt: skip
        scale = self.input_scale
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                                  or not math.isfinite(scale) or scale == 0):  # fmt: skip
            raise ConfigError(f"input_scale must be a finite number other than 0, got {scale!r}")

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != "none"}


def read_control(path: Path) -> Control:
    """The control in *path*; no file is :class:`Control` (); ConfigError naming the file."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return Control()
    except (OSError, ValueError) as e:
        raise ConfigError(f"trainer control file {path}: {e}") from e
    if not isinstance(doc, dict) or set(doc) - set(KEYS):
        raise ConfigError(f"trainer control file {path}: expected an object with "
                          f"{', '.join(KEYS)}; got {doc!r}")  # fmt: skip
    try:
        return Control(**doc)
    except ConfigError as e:
        raise ConfigError(f"trainer control file {path}: {e}") from None


def write_control(path: Path, control: Control) -> None:
    atomic_write_text(path, json.dumps(control.as_json()))


class ControlWatch:
    """Notices a new, changed or removed control file at the cost of one ``stat``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None

    def changed(self) -> Control | None:
        """The control now in force when it changed since the last call, else None.  An
        unreadable file keeps the previous control (it is reported by the caller)."""
        try:
            st = os.stat(self.path)
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return None
        self._seen = seen
        return read_control(self.path)
