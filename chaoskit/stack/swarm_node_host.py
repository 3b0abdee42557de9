"""What a swarm node of this machine leaves on the host, and taking it away: its
processes (dockerd, containerd, shims, containers: found by network namespace, exec root
and parentage), the mounts a killed dockerd leaves under its data dir, and its cgroups.

A SIGKILLed dockerd alone is no node loss: its shims are reparented to pid 1 and the
containers run on, so a node is killed whole.  A restarted dockerd cleans up after its
predecessor; a removed node's leftovers are chaoskit's to remove.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from chaoskit.errors import BackendError
from chaoskit.waiting import wait_until

if TYPE_CHECKING:
    from chaoskit.stack.swarm_nodes import SwarmNode

NETNS_DIR = Path("/var/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def node_processes(node: SwarmNode) -> set[int]:
    """Every live process of the node: those in its netns or naming its exec root
    (dockerd, containerd, shims), its dockerd, and all their descendants (containers)."""
    try:
        netns = os.stat(NETNS_DIR / node.netns)
        ns_id: tuple[int, int] | None = (netns.st_dev, netns.st_ino)
    except OSError:
        ns_id = None
    mark = f"{node.data_dir}/exec/".encode()
    children: dict[int, list[int]] = {}
    roots = {node.engine_pid} if node.engine_alive() and node.engine_pid else set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] in "ZX":
                continue
            children.setdefault(int(fields[1]), []).append(pid)
            ns = os.stat(f"/proc/{pid}/ns/net")
            if (ns.st_dev, ns.st_ino) == ns_id or mark in Path(f"/proc/{pid}/cmdline").read_bytes():
                roots.add(pid)
        except (OSError, IndexError, ValueError):
            continue
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def reap(pid: int) -> None:
    """Collect our own exited child (dockerd started here), so it is no zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def kill_processes(node: SwarmNode, *, grace: float = 0.0) -> None:
    """SIGTERM the dockerd and wait up to *grace* s for it; then SIGKILL whatever of the
    node still lives, until nothing does."""
    pid = node.engine_pid
    if grace and pid and node.engine_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

        def exited() -> bool:
            reap(pid)
            return not node.engine_alive()

        with contextlib.suppress(TimeoutError):
            wait_until(exited, grace, interval=0.05)

    def gone() -> bool:
        left = node_processes(node)
        for each in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
            reap(each)
        return not left

    try:
        wait_until(gone, 30, interval=0.05)
    except TimeoutError:
        raise BackendError(f"processes {sorted(node_processes(node))} of swarm node "
                           f"{node.name} survive SIGKILL") from None  # fmt: skip


def mounts_under(root: str, table: str | None = None) -> list[str]:
    """Mount points at or below *root* (deepest first) in *table* (/proc/self/mounts)."""
    found = []
    table = Path("/proc/self/mounts").read_text() if table is None else table
    for line in table.splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[1])
        if point == root or point.startswith(root + "/"):
            found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_all(root: str) -> None:
    """Detach every mount dockerd left under *root* (overlays, netns files, the data
    root's own bind mount; stacked ones too)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(10):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            if libc.umount2(os.fsencode(point), 2) != 0:  # MNT_DETACH
                err = ctypes.get_errno()
                if err not in (errno.EINVAL, errno.ENOENT):
                    raise BackendError(f"cannot unmount {point}: {os.strerror(err)}")
    raise BackendError(f"mounts under {root} keep coming back: {mounts_under(root)}")


def remove_cgroups(node: SwarmNode) -> None:
    """rmdir the (empty) groups dockerd made under its cgroup parent, deepest first."""
    homes = [CGROUP_ROOT / node.netns] + list(CGROUP_ROOT.glob(f"*/{node.netns}"))
    for home in homes:
        if home.is_dir():
            for group in sorted(home.rglob("*/"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    group.rmdir()
            with contextlib.suppress(OSError):
                home.rmdir()
