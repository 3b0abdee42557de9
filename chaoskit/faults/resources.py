"""Resource faults: the machine under the stack runs out of something.

:class:`DiskFull` fills the file system of the checkpoint directory (or the model store)
with one file until *leave_bytes* are free: the trainer's saves fail (``ENOSPC``) while
it goes on training, so what a crash would lose (RPO) grows until the revert removes the
file.  It acts only on a directory that is a file system of its own (a mount point): on
one shared with the host it would fill the host's disk, the run's journal included.
The reference stack mounts a small tmpfs there when it can (root on Linux).

:class:`CpuStarvation` caps one service at a fraction of a CPU (a CFS quota: a cgroup of
its own on the process backend, ``docker update`` on Docker): it still answers, slowly,
as behind a noisy neighbour or a throttled container.  A restart escapes it (the new
process or container is not limited), as a task rescheduled off a starved node does.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoskit.errors import ChaosKitError, FaultError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.stack.volume import is_mount_point

FILL_NAME = ".chaoskit-disk-full"
CHUNK = 1 << 20
TARGETS = ("checkpoints", "models")


def _target_dir(stack: Any, target: str, kind: str) -> Path:
    path = stack.checkpoint_dir if target == "checkpoints" else stack.model_base_path
    if path is None:
        raise FaultError(f"{kind}: the stack has no {target} directory")
    path = Path(path)
    if not is_mount_point(path):
        raise FaultError(
            f"{kind}: {path} is not a file system of its own, so filling it would fill "
            "everything else on that disk too (the reference stack mounts one on its "
            "checkpoints when run as root: StackConfig.checkpoint_volume_mb)"
        )
    return path


@dataclass(frozen=True)
class DiskFull(Fault):
    """Fill *target*'s file system ("checkpoints" or "models") until *leave_bytes* are free."""

    kind = "disk-full"
    target: str = "checkpoints"
    leave_bytes: int = 0

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise FaultError(f"{self.kind}: target must be one of {', '.join(TARGETS)}, "
                             f"got {self.target!r}")  # fmt: skip
        if isinstance(self.leave_bytes, bool) or not isinstance(self.leave_bytes, int) \
                or self.leave_bytes < 0:
            raise FaultError(f"{self.kind}: leave_bytes must be a whole number >= 0, got "
                             f"{self.leave_bytes!r}")  # fmt: skip

    def _inject(self, ctx: FaultContext) -> Changes:
        root = _target_dir(ctx.stack, self.target, self.kind)
        fs = os.statvfs(root)
        size, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
        if self.leave_bytes >= size:
            raise FaultError(f"{self.kind}: leave_bytes {self.leave_bytes} is not smaller than "
                             f"the volume at {root} ({size} bytes)")  # fmt: skip
        fill = root / FILL_NAME
        written = 0
        try:
            with open(fill, "wb") as f:
                zeros = bytes(CHUNK)
                while written < free - self.leave_bytes:
                    try:
                        written += f.write(zeros[: min(CHUNK, free - self.leave_bytes - written)])
                        f.flush()
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break  # full: what the fault is for
        except BaseException:
            fill.unlink(missing_ok=True)  # a fault that could not act leaves nothing
            raise
        left = os.statvfs(root)
        return Changes({"path": str(fill), "filled_bytes": written, "volume_bytes": size,
                        "free_bytes": left.f_bavail * left.f_frsize}, fill)  # fmt: skip

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        changes.undo.unlink(missing_ok=True)


@dataclass(frozen=True)
class CpuStarvation(Fault):
    """*service* may use at most *cpus* CPUs until the revert."""

    kind = "cpu-starvation"
    service: str = "serving"
    cpus: float = 0.05

    def __post_init__(self) -> None:
        most = os.cpu_count() or 1
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float)) \
                or not 0.01 <= self.cpus < most:
            raise FaultError(f"{self.kind}: cpus must be a number from 0.01 to below {most} "
                             f"(this machine's CPUs), got {self.cpus!r}")  # fmt: skip

    def _inject(self, ctx: FaultContext) -> Changes:
        backend = ctx.stack.backend
        limit = getattr(backend, "limit_cpu", None)
        if limit is None:
            raise FaultError(f"{self.kind}: the {backend.name} backend cannot limit CPU")
        instance = backend.instance(self.service)
        try:
            lift = limit(self.service, float(self.cpus))
        except ChaosKitError as e:
            raise FaultError(f"{self.kind}: {e}") from e
        return Changes({"service": self.service, "cpus": self.cpus, "instance": instance}, lift)

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        try:
            changes.undo()
        except ChaosKitError as e:
            raise FaultError(f"{self.kind}: {e}") from e
