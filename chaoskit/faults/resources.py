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

:class:`MemoryPressure` runs one service out of memory the way production does: a memory
limit just above what it holds, and a balloon beside it in the same memory cgroup that
takes memory step by step until the kernel's OOM killer SIGKILLs the service (see
:mod:`chaoskit.stack.memory_limit`).  The DR engine sees a dead replica and restarts it,
outside the limit: the recovery.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoskit.errors import ChaosKitError, FaultError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.stack.memory_limit import MB, LimitBelowUsage
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
class _Limit(Fault):
    """A limit a backend puts on one service: its method or a FaultError, the undo."""

    def _limiter(self, ctx: FaultContext, method: str, what: str) -> Any:
        backend = ctx.stack.backend
        limit = getattr(backend, method, None)
        if limit is None:
            raise FaultError(f"{self.kind}: the {backend.name} backend cannot limit {what}")
        return limit

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        try:
            changes.undo()
        except ChaosKitError as e:
            raise FaultError(f"{self.kind}: {e}") from e


@dataclass(frozen=True)
class CpuStarvation(_Limit):
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
        limit = self._limiter(ctx, "limit_cpu", "CPU")
        instance = ctx.stack.backend.instance(self.service)
        try:
            lift = limit(self.service, float(self.cpus))
        except ChaosKitError as e:
            raise FaultError(f"{self.kind}: {e}") from e
        return Changes({"service": self.service, "cpus": self.cpus, "instance": instance}, lift)


@dataclass(frozen=True)
class MemoryPressure(_Limit):
    """*service* may hold at most *limit_mb* MB (None: what it holds now plus a little)
    while a balloon beside it takes memory, until the kernel's OOM killer kills it.

    ``inject`` returns once the service is dead, with what the kernel (or the Docker
    engine) said of it in the journal: ``oom_kills`` (the cgroup's counter, or the
    engine's ``oom`` events), ``exit_signal`` and ``oom_killed`` (both: a kill by the OOM
    killer, not assumed).  The revert stops the balloon and lifts the limit; the restarted
    service is a new process (or container) outside it.
    """

    kind = "memory-pressure"
    service: str = "serving"
    limit_mb: float | None = None

    def __post_init__(self) -> None:
        mb = self.limit_mb
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, (int, float))
                               or not mb > 0 or mb == float("inf")):  # fmt: skip
            raise FaultError(f"{self.kind}: limit_mb must be a positive number of MB (or None: "
                             f"its usage and a little more), got {mb!r}")  # fmt: skip

    def _inject(self, ctx: FaultContext) -> Changes:
        limit = self._limiter(ctx, "limit_memory", "memory")
        instance = ctx.stack.backend.instance(self.service)
        if instance is None:
            raise FaultError(f"{self.kind}: {self.service} is not running")
        limit_bytes = None if self.limit_mb is None else round(self.limit_mb * MB)
        try:
            squeeze = limit(self.service, limit_bytes)
        except LimitBelowUsage as e:
            raise FaultError(f"{self.kind}: limit_mb {self.limit_mb!r} is below the current usage "
                             f"of {self.service} ({e.usage / MB:.1f} MB)") from e  # fmt: skip
        except ChaosKitError as e:
            raise FaultError(f"{self.kind}: {e}") from e
        try:
            killed = squeeze.await_kill()
        except BaseException as e:
            squeeze.lift()  # a fault that did not act leaves nothing
            if isinstance(e, ChaosKitError):
                raise FaultError(f"{self.kind}: {e}") from e
            raise
        return Changes({"service": self.service, "instance": instance, **squeeze.facts(),
                        **killed}, squeeze.lift)  # fmt: skip
