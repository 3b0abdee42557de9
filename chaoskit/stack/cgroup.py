"""A CPU limit on one running service process: a cgroup of its own (Linux, root).

The process backend starves a service of CPU by moving its process into a new cgroup
beside this process's own, ``chaoskit-<owner pid>-<service>``, with a CFS quota (cgroup
v1 ``cpu.cfs_quota_us``, or v2 ``cpu.max``).  Lifting the limit moves the process back
and removes the cgroup; a restarted service is a new process outside it (as a task
rescheduled elsewhere escapes a starved node).  The owner's pid in the name lets the
next run remove what a run killed with SIGKILL left (:func:`reap_orphans`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from chaoskit.errors import StackError

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
PREFIX = "chaoskit-"


def _own_cgroup() -> tuple[Path, bool] | None:
    """This process's cpu cgroup directory and whether it is cgroup v2, or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return ROOT / "cpu" / path.lstrip("/"), False
    for line in lines:
        if line.startswith("0::") and (ROOT / "cgroup.controllers").exists():
            return ROOT / line[3:].lstrip("/"), True
    return None


def cannot_limit() -> str | None:
    """Why this process cannot limit another's CPU, or None when it can."""
    if os.geteuid() != 0:
        return "limiting a process's CPU needs root"
    own = _own_cgroup()
    if own is None or not own[0].is_dir():
        return "no cpu cgroup controller is mounted"
    return None


class CpuLimit:
    """Process *pid* (service *service*) may use at most *cpus* CPUs until :meth:`lift`."""

    def __init__(self, pid: int, service: str, cpus: float) -> None:
        why = cannot_limit()
        if why is not None:
            raise StackError(f"cannot starve {service} of CPU: {why}")
        own = _own_cgroup()
        assert own is not None
        self.parent, v2 = own
        self.group = self.parent / f"{PREFIX}{os.getpid()}-{service}"
        quota = max(1000, round(cpus * PERIOD_US))
        try:
            self.group.mkdir(exist_ok=True)
            if v2:
                (self.group / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
            else:
                (self.group / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (self.group / "cpu.cfs_quota_us").write_text(f"{quota}\n")
            (self.group / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as e:
            self.lift()
            raise StackError(f"cannot starve {service} of CPU in {self.group}: "
                             f"{e.strerror or e}") from e  # fmt: skip

    def lift(self) -> None:
        """Move every process in the group back to the parent and remove the group."""
        _dissolve(self.group, self.parent)


def _dissolve(group: Path, parent: Path) -> None:
    if not group.is_dir():
        return
    # unlimited first: a task moved out while throttled can stay off the CPU for most
    # of a second (the kernel keeps it on the dying group's throttled queue)
    for name, unlimited in (("cpu.cfs_quota_us", "-1"), ("cpu.max", "max")):
        if (group / name).exists():
            with contextlib.suppress(OSError):
                (group / name).write_text(f"{unlimited}\n")
    with contextlib.suppress(OSError):
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # it may have exited meanwhile
                (parent / "cgroup.procs").write_text(f"{pid}\n")
    try:
        group.rmdir()
    except OSError as e:
        raise StackError(f"cannot remove the cgroup {group}: {e.strerror or e}") from e


def reap_orphans() -> list[Path]:
    """Remove the cgroups of chaoskit runs whose owning process is gone."""
    own = _own_cgroup()
    if own is None or not own[0].is_dir():
        return []
    parent, reaped = own[0], []
    for group in parent.glob(f"{PREFIX}*-*"):
        owner = group.name[len(PREFIX):].split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and not Path(f"/proc/{owner}").exists():
            _dissolve(group, parent)
            reaped.append(group)
    return reaped
