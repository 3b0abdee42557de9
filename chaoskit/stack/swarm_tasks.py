"""Reading Swarm's task list: which task is a slot's now, its container, its ports.

Swarm keeps a service's task history (failed and shut-down tasks, five per slot by
default) beside the tasks it wants running; these pure functions pick from it.
"""

from __future__ import annotations

from typing import Any

RUNNING = "running"
FAILED = ("failed", "rejected")
STARTING = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting")


def created_at(task: dict[str, Any]) -> tuple[str, str]:
    """Swarm's RFC 3339 creation time as a sortable key (its fraction drops trailing zeros)."""
    stamp = str(task.get("CreatedAt", "")).rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    return whole, fraction.ljust(9, "0")


def latest(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(tasks, key=created_at, default=None)


def slot_task(tasks: list[dict[str, Any]], slot: int) -> dict[str, Any] | None:
    """The slot's current task: the newest one Swarm wants running (None between a task's
    end and its replacement's creation)."""
    wanted = [t for t in tasks if t.get("Slot") == slot and t.get("DesiredState") == RUNNING]
    return latest(wanted)


def task_container(task: dict[str, Any] | None) -> str | None:
    status = (task or {}).get("Status") or {}
    container = (status.get("ContainerStatus") or {}).get("ContainerID")
    return str(container) if container else None


def published_port(task: dict[str, Any], target: int) -> int | None:
    for port in ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []:
        if port.get("TargetPort") == target and port.get("PublishedPort"):
            return int(port["PublishedPort"])
    return None


def live_slots(tasks: list[dict[str, Any]]) -> set[int]:
    """Slots Swarm keeps: those with a task it wants running, or ready to start (a
    replacement waiting out its restart delay)."""
    return {int(t["Slot"]) for t in tasks if t.get("DesiredState") in ("ready", RUNNING)}
