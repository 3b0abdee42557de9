"""Training faults: the trainer goes on, but what it learns is wrong.

:class:`PoisonTraining` makes the next versions learn from negated or shuffled targets
(poisoned or mislabeled data); :class:`DivergeTraining` blows the learning rate up until
the weights are NaN or inf.  Both are valid, newly trained versions to every integrity
check: only their quality on labelled data tells them apart (see
:mod:`chaoskit.dr.online.quality`).  They reach the trainer through its control file
(:mod:`chaoskit.trainer.control`); the revert removes the file, and the trainer trains
as configured from the next step on.  A stack whose trainer reads no control file
refuses them with one message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoskit.errors import ConfigError, FaultError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.trainer.control import Control, write_control


def _control_file(stack: Any, fault: str) -> Path:
    path = getattr(stack, "trainer_control_file", None)
    if path is None:
        raise FaultError(f"{fault}: the stack's trainer reads no control file "
                         "(chaoskit's trainer does, with --control-file)")  # fmt: skip
    if Path(path).exists():
        raise FaultError(f"{fault}: another training fault is in force ({path} exists)")
    return Path(path)


class _TrainingFault(Fault):
    """Writes one control file; the revert removes it."""

    def __post_init__(self) -> None:
        try:
            self.control()  # the control file's own check of the parameters
        except ConfigError as e:
            raise FaultError(f"{self.kind}: {e}") from None

    def control(self) -> Control:
        raise NotImplementedError

    def _inject(self, ctx: FaultContext) -> Changes:
        path = _control_file(ctx.stack, self.kind)
        control = self.control()
        write_control(path, control)
        step = ctx.stack.trainer_step() if hasattr(ctx.stack, "trainer_step") else None
        return Changes({"control_file": str(path), **control.as_json(), "step": step}, path)

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        changes.undo.unlink(missing_ok=True)


@dataclass(frozen=True)
class PoisonTraining(_TrainingFault):
    """The trainer learns from targets negated (``flip``) or shuffled across each batch."""

    kind = "poison-training"
    labels: str = "flip"

    def __post_init__(self) -> None:
        if self.labels not in ("flip", "shuffle"):
            raise FaultError(f"{self.kind}: labels must be 'flip' or 'shuffle', got "
                             f"{self.labels!r}")  # fmt: skip

    def control(self) -> Control:
        return Control(labels=self.labels, fault=self.kind)


@dataclass(frozen=True)
class DivergeTraining(_TrainingFault):
    """The optimizer's learning rate becomes *learning_rate* until the revert."""

    kind = "diverge-training"
    learning_rate: float = 1e30

    def control(self) -> Control:
        return Control(learning_rate=self.learning_rate, fault=self.kind)


@dataclass(frozen=True)
class SlowModel(_TrainingFault):
    """The versions exported until the revert run the model *repeat* times per predict:
    the same answers, each far slower (a costly change shipped in a new version)."""

    kind = "slow-model"
    repeat: int = 2000

    def control(self) -> Control:
        return Control(slow_repeat=self.repeat, fault=self.kind)


@dataclass(frozen=True)
class SkewPreprocessing(_TrainingFault):
    """The versions exported until the revert scale their inputs by *scale* before the
    model: serving's preprocessing no longer matches training's (the same weights)."""

    kind = "skew-preprocessing"
    scale: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale == 1:
            raise FaultError(f"{self.kind}: scale 1 changes nothing; give another factor")

    def control(self) -> Control:
        return Control(input_scale=float(self.scale), fault=self.kind)
