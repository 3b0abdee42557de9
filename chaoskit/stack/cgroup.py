"""A cgroup of its own for one running service process (Linux, root), and the CPU limit.

Resource faults on the process backend limit a service's process in a cgroup of its own,
``chaoskit-<owner pid>-<name>`` (:class:`OwnGroup`): a CFS quota here (:class:`CpuLimit`
moves the process into a new group: cgroup v1 ``cpu.cfs_quota_us``, or v2 ``cpu.max``),
memory in :mod:`chaoskit.stack.memory_limit` (a group the service starts in).
Dissolving a group lifts its limits, moves what is left in it back and removes it; a
restarted service is a new process outside it (as a task rescheduled elsewhere escapes a
starved node).  The owner's pid in the name lets
the next run remove what a run killed with SIGKILL left (:func:`reap_orphans`).

Where the group goes: under this process's own cgroup of that controller (v1, or v2 at
the root of a cgroup namespace); on v2 otherwise beside it, under its parent, since v2
lets a group that holds processes (ours does) give no controller to its children.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from pathlib import Path

from chaoskit.errors import StackError
from chaoskit.waiting import wait_until

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
PREFIX = "chaoskit-"
CONTROLLERS = ("cpu", "memory")
UNLIMITED = (  # written before a group is dissolved, in this order (memsw >= limit on v1)
    ("cpu.cfs_quota_us", "-1"), ("cpu.max", "max"),
    ("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1"),
    ("memory.swap.max", "max"), ("memory.max", "max"),
)  # fmt: skip
BALLOON_MARK = "chaoskit-balloon"
"""In the command line of a memory balloon: a group's dissolve kills it, never moves it."""


def own_cgroup(controller: str = "cpu") -> tuple[Path, bool] | None:
    """This process's cgroup directory for *controller* and whether it is v2, or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return ROOT / controller / path.lstrip("/"), False
    for line in lines:
        if line.startswith("0::") and (ROOT / "cgroup.controllers").exists():
            return ROOT / line[3:].lstrip("/"), True
    return None


def _home(controller: str) -> tuple[Path, Path, bool] | None:
    """(where new groups go, this process's own group, v2) for *controller*, or None."""
    own = own_cgroup(controller)
    if own is None or not own[0].is_dir():
        return None
    path, v2 = own
    at_root = (path / "cgroup.controllers").exists() and not (path / "cgroup.type").exists()
    return (path.parent if v2 and not at_root else path), path, v2


def cannot_limit(controller: str = "cpu") -> str | None:
    """Why this process cannot limit another's *controller* ("cpu", "memory"), or None."""
    what = {"cpu": "CPU", "memory": "memory"}[controller]
    if os.geteuid() != 0:
        return f"limiting a process's {what} needs root"
    home = _home(controller)
    if home is None:
        return f"no {controller} cgroup controller is mounted"
    if home[2] and controller not in (home[0] / "cgroup.controllers").read_text().split():
        return f"the cgroup {home[0]} has no {controller} controller"
    return None


class OwnGroup:
    """``chaoskit-<this pid>-<name>``: a new cgroup of *controller* for processes to limit."""

    def __init__(self, controller: str, name: str) -> None:
        why = cannot_limit(controller)
        if why is not None:
            raise StackError(f"cannot limit {name}: {why}")
        home = _home(controller)
        assert home is not None
        self.home, self.parent, self.v2 = home
        self.path = self.home / f"{PREFIX}{os.getpid()}-{name}"
        try:
            if self.v2:
                self._enable(controller)
            self.path.mkdir(exist_ok=True)
        except OSError as e:
            raise StackError(f"cannot create the cgroup {self.path}: {e.strerror or e}") from e

    def _enable(self, controller: str) -> None:
        control = self.home / "cgroup.subtree_control"
        if controller not in control.read_text().split():
            control.write_text(f"+{controller}\n")

    def write(self, name: str, value: object) -> None:
        (self.path / name).write_text(f"{value}\n")

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def add(self, pid: int) -> None:
        self.write("cgroup.procs", pid)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.read("cgroup.procs").split()]
        except OSError:
            return []

    def unlimit(self) -> None:
        """Lift every limit of the group; what is in it stays."""
        _unlimit(self.path)

    def dissolve(self) -> None:
        """Lift its limits, kill its balloons, move the rest back and remove it."""
        _dissolve(self.path, self.parent)


class CpuLimit:
    """Process *pid* (service *service*) may use at most *cpus* CPUs until :meth:`lift`."""

    def __init__(self, pid: int, service: str, cpus: float) -> None:
        why = cannot_limit("cpu")
        if why is not None:
            raise StackError(f"cannot starve {service} of CPU: {why}")
        self.own = OwnGroup("cpu", service)
        self.group, self.parent = self.own.path, self.own.parent
        quota = max(1000, round(cpus * PERIOD_US))
        try:
            if self.own.v2:
                self.own.write("cpu.max", f"{quota} {PERIOD_US}")
            else:
                self.own.write("cpu.cfs_period_us", PERIOD_US)
                self.own.write("cpu.cfs_quota_us", quota)
            self.own.add(pid)
        except OSError as e:
            self.lift()
            raise StackError(f"cannot starve {service} of CPU in {self.group}: "
                             f"{e.strerror or e}") from e  # fmt: skip

    def lift(self) -> None:
        """Move every process in the group back to the parent and remove the group."""
        self.own.dissolve()


def _is_balloon(pid: str) -> bool:
    try:
        return BALLOON_MARK.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _unlimit(group: Path) -> None:
    for name, unlimited in UNLIMITED:
        if (group / name).exists():
            with contextlib.suppress(OSError):
                (group / name).write_text(f"{unlimited}\n")


def _dissolve(group: Path, parent: Path) -> None:
    if not group.is_dir():
        return
    # unlimited first: a task moved out while throttled can stay off the CPU for most
    # of a second (the kernel keeps it on the dying group's throttled queue)
    _unlimit(group)
    with contextlib.suppress(OSError):
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # it may have exited meanwhile
                if _is_balloon(pid):  # moved out, it would keep its memory
                    os.kill(int(pid), signal.SIGKILL)
                else:
                    (parent / "cgroup.procs").write_text(f"{pid}\n")
    try:
        _rmdir(group)
    except OSError as e:
        raise StackError(f"cannot remove the cgroup {group}: {e.strerror or e}") from e


def _rmdir(group: Path) -> None:
    """Remove *group*, waiting briefly for killed tasks to leave it (EBUSY until then)."""
    def removed() -> bool:
        try:
            group.rmdir()
        except OSError as e:
            if e.errno != errno.EBUSY:  # a killed balloon still exiting
                raise
            return False
        return True

    try:
        wait_until(removed, 5, interval=0.01, what=f"the cgroup {group} emptied")
    except TimeoutError:
        group.rmdir()  # raises the kernel's EBUSY, with its words


def reap_orphans() -> list[Path]:
    """Remove the cgroups (CPU and memory) of chaoskit runs whose owning process is gone."""
    reaped: list[Path] = []
    for controller in CONTROLLERS:
        home = _home(controller)
        if home is None:
            continue
        for group in home[0].glob(f"{PREFIX}*-*"):
            owner = group.name[len(PREFIX):].split("-", 1)[0]
            if group in reaped or not owner.isdigit() or int(owner) == os.getpid():
                continue
            if not Path(f"/proc/{owner}").exists():
                _dissolve(group, home[1])
                reaped.append(group)
    return reaped
