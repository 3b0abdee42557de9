"""Is a process still there?  Shared by lock takeover and stale-rule cleanup."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether a process *pid* exists on this host (a reused pid counts as alive: the
    callers then leave things in place, the safe side)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
