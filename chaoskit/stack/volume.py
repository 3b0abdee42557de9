"""A small file system of its own for one directory, so a disk-full fault fills only it.

Filling the file system a trainer's checkpoints share with the host (``/tmp``) would
fill everything else there too, the run's journal included.  So the reference stack
mounts a tmpfs of a few MiB on its checkpoint directory when it can (root on Linux),
and unmounts it when it closes.  The mount's source names the process that owns it
(``chaoskit-<pid>``): a run killed with SIGKILL leaves its mount behind, and the next
stack to start unmounts every chaoskit mount whose owner is gone (:func:`reap_orphans`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chaoskit.errors import StackError

SOURCE_PREFIX = "chaoskit-"


def cannot_mount() -> str | None:
    """Why this process cannot mount a volume of its own, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "mounting a tmpfs needs Linux"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None


def is_mount_point(path: Path) -> bool:
    """*path* is the root of a file system of its own (filling it fills nothing else)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False


def mount_volume(path: Path, size_mb: int) -> None:
    """Mount a tmpfs of *size_mb* MiB on the (empty or new) directory *path*."""
    if size_mb < 1:
        raise StackError(f"a checkpoint volume needs at least 1 MiB, got {size_mb!r}")
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise StackError(f"cannot mount a volume on {path}: it is not empty")
    _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755",
         f"{SOURCE_PREFIX}{os.getpid()}", str(path))  # fmt: skip


def unmount_volume(path: Path) -> None:
    """Unmount chaoskit's volume on *path* (lazily when something still holds it)."""
    if not is_mount_point(path):
        return
    try:
        _run("umount", str(path))
    except StackError:
        _run("umount", "-l", str(path))


def chaoskit_mounts() -> dict[Path, int]:
    """Mount point -> owner pid of every chaoskit volume mounted now."""
    found = {}
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        fields = line.split()
        if len(fields) < 3 or fields[2] != "tmpfs" or not fields[0].startswith(SOURCE_PREFIX):
            continue
        owner = fields[0][len(SOURCE_PREFIX):]
        if owner.isdigit():
            found[Path(fields[1].replace("\\040", " "))] = int(owner)
    return found


def reap_orphans() -> list[Path]:
    """Unmount the chaoskit volumes whose owning process is gone."""
    reaped = []
    for mount_point, owner in chaoskit_mounts().items():
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            unmount_volume(mount_point)
            reaped.append(mount_point)
    return reaped


def _run(*command: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StackError(f"{' '.join(command)}: {e}") from e
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise StackError(f"{' '.join(command)}: {why}")
