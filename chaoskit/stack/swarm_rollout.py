"""Changing a Swarm service's spec: rolling it out to a new one and back, scaling it.

Every service chaoskit creates has the update policy a careful platform team would give
it (:func:`update_config`): one task at a time, stop-first, each new task watched for
:data:`MONITOR_S` seconds, and ``failure_action: rollback`` — so Swarm itself rolls back a
rollout whose new tasks *exit*.  A rollback goes on whatever fails meanwhile
(``continue``: it is the way back), watching each task for 1 s only.  What Swarm cannot
see is a new task that runs but serves no model, or the wrong one; that takes probes,
which is chaoskit's part.

A rollout chaoskit makes (the bad-rollout fault) labels the task template's containers
with ``chaoskit.rollout=<id>`` and what it added; rolling it back is Swarm's own rollback
(``docker service rollback``), under the rollback policy.  A plain update back to the old
spec would not do: it runs under ``failure_action: rollback``, so a task failing while it
is watched (a restart, a slow cold start) makes Swarm roll the service forward to the bad
spec again, which is then its "previous" one.  When the service was changed after the
rollout (scaled), its previous spec is the bad one too: the rollout's additions are taken
out of the current spec instead.
"""

from __future__ import annotations

import json
import time
from typing import Any

from chaoskit.errors import StackError
from chaoskit.stack import docker_engine as engine

ROLLOUT = "chaoskit.rollout"
"""Container label of the task template a chaoskit rollout applied."""
ADDED = "chaoskit.rollout.added"
"""Container label: how many arguments and mounts the rollout appended (JSON)."""
MONITOR_S = 5
"""Seconds Swarm watches each updated task for a failure (Swarm's default)."""
FRESH_S = 60.0
"""A rollout completed less than this long ago is still suspect when a replica fails."""
GRACE_S = 20.0
"""Seconds a rollout's new task may take to be ready before it counts as failed (a
TensorFlow server's cold start here takes 5-10 s)."""
IN_PROGRESS = ("updating", "paused")


def update_config() -> Any:
    from docker.types import UpdateConfig

    return UpdateConfig(parallelism=1, delay=0, failure_action="rollback",
                        monitor=MONITOR_S * 10**9, order="stop-first")  # fmt: skip


def rollback_config() -> Any:
    from docker.types import RollbackConfig

    return RollbackConfig(parallelism=1, delay=0, failure_action="continue",
                          monitor=10**9, order="stop-first")  # fmt: skip


def inspect_service(api: Any, service: str) -> dict[str, Any]:
    with engine.engine_errors(f"inspecting swarm service {service!r}"):
        info: dict[str, Any] = api.inspect_service(service)
    return info


def _update(api: Any, info: dict[str, Any], template: dict[str, Any], what: str,
            mode: dict[str, Any] | None = None) -> None:  # fmt: skip
    spec = info["Spec"]
    with engine.engine_errors(f"{what} swarm service {spec['Name']!r}"):
        api.update_service(info["ID"], info["Version"]["Index"], task_template=template,
                           name=spec["Name"], labels=spec.get("Labels"),
                           mode=mode or spec.get("Mode"),
                           update_config=spec.get("UpdateConfig"),
                           rollback_config=spec.get("RollbackConfig"),
                           endpoint_spec=spec.get("EndpointSpec"))  # fmt: skip


def roll_out(api: Any, service: str, rollout: str, *, args: tuple[str, ...] = (),
             mounts: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """Update *service*: its command with *args* appended, *mounts* added, its containers
    labelled *rollout*.  Returns what the journal records (spec versions)."""
    info = inspect_service(api, service)
    template = dict(info["Spec"]["TaskTemplate"])
    container = dict(template["ContainerSpec"])
    if (container.get("Labels") or {}).get(ROLLOUT):
        raise StackError(f"swarm service {service!r} is already rolled out "
                         f"({container['Labels'][ROLLOUT]}); roll it back first")  # fmt: skip
    added = {"args": len(args), "mounts": len(mounts)}
    container["Labels"] = {**(container.get("Labels") or {}), ROLLOUT: rollout,
                           ADDED: json.dumps(added)}  # fmt: skip
    if args:
        container["Args"] = [*(container.get("Args") or []), *args]
    if mounts:
        container["Mounts"] = [*(container.get("Mounts") or []), *mounts]
    template["ContainerSpec"] = container
    template["ForceUpdate"] = int(template.get("ForceUpdate") or 0)
    _update(api, info, template, "rolling out")
    return {"swarm_service": service, "from_version": info["Version"]["Index"]}


def replicas_of(api: Any, service: str) -> int:
    return int(inspect_service(api, service)["Spec"]["Mode"]["Replicated"]["Replicas"])


def scale(api: Any, service: str, replicas: int) -> int:
    """Set the service's replica count (its tasks are not restarted); returns the old one."""
    info = inspect_service(api, service)
    before = int(info["Spec"]["Mode"]["Replicated"]["Replicas"])
    _update(api, info, info["Spec"]["TaskTemplate"], f"scaling to {replicas}",
            mode={"Replicated": {"Replicas": replicas}})  # fmt: skip
    return before


def roll_back(api: Any, service: str) -> bool:
    """Roll the service back when its current spec is a chaoskit rollout (see the module
    docstring); False when there was nothing to roll back (Swarm, or someone, did already)."""
    info = inspect_service(api, service)
    if rollout_of(info) is None:
        return False
    previous = info.get("PreviousSpec")
    if previous is None or rollout_of({"Spec": previous}) is not None:
        _update(api, info, _without_rollout(info["Spec"]["TaskTemplate"]), "rolling back")
        return True
    with engine.engine_errors(f"rolling back swarm service {info['Spec']['Name']!r}"):
        # docker-py has no call for it: the Engine API's update with rollback=previous
        response = api._post_json(api._url("/services/{0}/update", info["ID"]),
                                  data=info["Spec"], params={"version": info["Version"]["Index"],
                                                             "rollback": "previous"})  # fmt: skip
        api._raise_for_status(response)
    return True


def _without_rollout(template: dict[str, Any]) -> dict[str, Any]:
    """*template* as it was before the rollout its container labels name."""
    container = dict(template["ContainerSpec"])
    labels = dict(container.get("Labels") or {})
    labels.pop(ROLLOUT)
    added = json.loads(labels.pop(ADDED, '{"args": 0, "mounts": 0}'))
    for key, count in (("Args", added["args"]), ("Mounts", added["mounts"])):
        if count:
            container[key] = list(container[key])[:-count]
    container["Labels"] = labels
    return {**template, "ContainerSpec": container}


def rollout_of(info: dict[str, Any]) -> str | None:
    """The chaoskit rollout a service's spec carries (None: its original spec)."""
    labels = info["Spec"]["TaskTemplate"]["ContainerSpec"].get("Labels") or {}
    return labels.get(ROLLOUT)


def task_rollout(task: dict[str, Any]) -> str | None:
    labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
    return labels.get(ROLLOUT)


def fresh_rollout(api: Any, service: str) -> str | None:
    """The rollout under way on *service*, or completed less than :data:`FRESH_S` ago, and
    not being rolled back by Swarm (None otherwise): the suspect when a replica fails."""
    info = inspect_service(api, service)
    rollout, status = rollout_of(info), info.get("UpdateStatus") or {}
    if rollout is None:
        return None
    state = status.get("State")
    if state in IN_PROGRESS:
        return rollout
    if state == "completed":
        return rollout if _age(status.get("CompletedAt")) < FRESH_S else None
    return None


def _age(stamp: str | None) -> float:
    """Seconds since Swarm's RFC 3339 *stamp* (inf when unknown)."""
    from datetime import UTC, datetime

    if not stamp:
        return float("inf")
    whole = stamp.rstrip("Z").split(".")[0]
    then = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return time.time() - then.timestamp()
