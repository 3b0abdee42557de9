"""A bad rollout: the serving service is updated to a spec that does not serve right.

Only an orchestrator rolls services out (the Swarm backend; see
:mod:`chaoskit.stack.swarm_rollout` for the update policy every service gets).  Swarm
updates the replicas one at a time; what goes wrong depends on ``change``:

* ``"crash"``: the new spec's command takes an argument this build does not know, so
  every new task exits at start, the way a flag or config mismatch does.  Swarm sees the
  failure and rolls back by itself (``failure_action: rollback``);
* ``"no-model"``: the new spec mounts an empty directory over the model base path.  Its
  tasks run and answer, with no model: Swarm, which sees running tasks, goes on;
* ``"wrong-model"``: the new spec mounts, over the model base path, a copy of the newest
  version with its largest variable times ``scale``.  Its tasks load it and answer every
  request, wrongly.

Undone by rolling the service back to its previous spec, if the fault's rollout is still
in force (the DR engine or Swarm may have rolled it back already), then waiting until
every replica runs it; the copy is removed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from chaoskit.errors import FaultError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.faults.worse_version import scaled_copy
from chaoskit.model import version_dirs

CHANGES = ("crash", "no-model", "wrong-model")
BAD_FLAG = "--chaoskit-unknown-flag"


@dataclass(frozen=True)
class BadRollout(Fault):
    """Roll *service*'s Swarm service out to a bad spec (see the module docstring)."""

    kind: ClassVar[str] = "bad-rollout"
    service: str = "serving"
    change: str = "no-model"
    scale: float = -1.0

    def __post_init__(self) -> None:
        if self.change not in CHANGES:
            raise FaultError(f"{self.kind}: change {self.change!r}: choose from "
                             f"{', '.join(CHANGES)}")  # fmt: skip

    def _inject(self, ctx: FaultContext) -> Changes:
        backend = ctx.stack.backend
        if not callable(getattr(backend, "roll_out", None)):
            raise FaultError(f"{self.kind}: the {backend.name} backend does not roll services out "
                             "(an orchestrator does: --chaos-backend swarm)")  # fmt: skip
        rollout_id = f"{self.kind}-{self.change}-{ctx.rng.randrange(16**6):06x}"
        args: tuple[str, ...] = ()
        mounts: tuple[dict[str, Any], ...] = ()
        record: dict[str, Any] = {"service": self.service, "change": self.change,
                                  "rollout": rollout_id}  # fmt: skip
        copy: Path | None = None
        base = Path(ctx.stack.model_base_path)
        if self.change == "crash":
            args = (BAD_FLAG,)
        elif self.change == "no-model":
            mounts = ({"Type": "tmpfs", "Target": str(base)},)
        else:
            copy = Path(ctx.stack.data_dir) / "rollouts" / rollout_id
            record.update(self._wrong_model(base, copy))
            mounts = ({"Type": "bind", "Source": str(copy), "Target": str(base),
                       "ReadOnly": True},)  # fmt: skip
        try:
            record.update(backend.roll_out(self.service, rollout_id, args=args, mounts=mounts))
        except BaseException:
            if copy is not None:
                shutil.rmtree(copy, ignore_errors=True)
            raise
        return Changes(record=record, undo=(rollout_id, copy))

    def _wrong_model(self, base: Path, copy: Path) -> dict[str, Any]:
        """A store holding one version: the newest, its largest variable scaled."""
        versions = version_dirs(base)
        if not versions:
            raise FaultError(f"{self.kind}: the model store {base} has no version to copy")
        newest = max(versions)
        copy.mkdir(parents=True)
        try:
            scaled = scaled_copy(versions[newest], copy / str(newest), self.kind, self.scale)
        except BaseException:
            shutil.rmtree(copy, ignore_errors=True)
            raise
        return {"version": newest, "tensor": scaled["tensor"], "copies": scaled["copies"]}

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        _, copy = changes.undo
        ctx.stack.backend.roll_back(self.service)  # a no-op wait when it was rolled back
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)
