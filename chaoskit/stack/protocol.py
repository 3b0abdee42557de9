"""The ``Stack`` protocol: what experiments, faults and the DR engine may know of a stack.

The stack under test is the user's (described by a stack file, :mod:`chaoskit.stackfile`)
or chaoskit's own reference stack (:mod:`chaoskit.stack.reference`, the embedded
default); both implement this protocol, and nothing outside ``chaoskit/stack`` and
``chaoskit/stackfile`` may rely on more.  Roles, not names: a stack may have no trainer,
one serving replica, no DR site; what an experiment needs and a stack lacks is a skip
that names it (:func:`require`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from chaoskit.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from chaoskit.dr.online.engine import DRConfig
    from chaoskit.dr.online.goldens import Goldens
    from chaoskit.dr.protect.checkpoints import CheckpointFormat
    from chaoskit.objectives import Objectives
    from chaoskit.serving.client import ServingClient
    from chaoskit.stack.backend import Backend
    from chaoskit.stack.gateway import Gateway

Recovery = Literal["chaoskit", "observe"]
"""Who recovers: chaoskit's DR engine, or the platform (the engine only detects)."""

RECOVERY_MODES: tuple[Recovery, ...] = ("chaoskit", "observe")


@runtime_checkable
class Stack(Protocol):
    """A running serving stack, seen through its roles."""

    backend: Backend
    """Where its services run; faults and recovery act through it."""
    gateway: Gateway | None
    """The proxies clients and replicas are reached through (None before start)."""
    data_dir: Path
    """chaoskit's working directory for this stack (goldens, quarantine, backups)."""
    model_name: str
    model_base_path: Path
    """The SavedModel versions, in TF Serving's layout (``<base>/<int version>/``)."""
    checkpoint_dir: Path | None
    """The trainer's checkpoints; None for a stack without them."""
    checkpoint_format: CheckpointFormat
    """How checkpoints lie in ``checkpoint_dir`` (tf, keras, files)."""
    replicas: list[str]
    """Service names of the serving replicas; the first is the primary."""
    trainer: str | None
    """Service name of the trainer; None for a stack without one."""
    dr_site: str | None
    """Service name of the DR site; None for a stack without one."""
    recovery: Recovery
    goldens: Goldens
    """The canary and the golden outputs of each version (shared, thread-safe)."""
    dr_config: DRConfig
    objectives: Objectives
    """The stack's default budgets (an experiment's marker overrides them)."""

    @property
    def services(self) -> list[str]:
        """Every service name, in start order."""

    @property
    def storage_roots(self) -> list[Path]:
        """Directories storage faults may touch (the model store, checkpoints, data dir)."""

    @property
    def toxiproxy_url(self) -> str | None:
        """The Toxiproxy API holding this stack's proxies (network faults use it)."""

    def start(self) -> Stack: ...

    def close(self) -> None: ...

    def client(self, *, timeout: float = 5.0) -> ServingClient:
        """Serving as clients see it: through the gateway."""

    def replica_client(self, replica: str, *, timeout: float = 5.0) -> ServingClient:
        """One replica as the gateway reaches it: through its proxy, where links break."""

    def direct_client(self, replica: str, *, timeout: float = 5.0) -> ServingClient:
        """One replica on its own port, bypassing every proxy (tells link from process)."""

    def probe_client(self, replica: str, *, timeout: float = 5.0) -> Any:
        """What the DR engine probes *replica* with (REST or gRPC, as the stack says)."""

    def grpc_client(self, replica: str, *, timeout: float = 5.0) -> Any:
        """One replica's gRPC API on its own port (a ``GrpcServingClient``), or None when
        it has no port named ``grpc``."""

    def dr_site_endpoint(self) -> tuple[str, int]:
        """The DR site as the replicator reaches it (through its proxy)."""

    def trainer_step(self) -> int | None:
        """The trainer's progress now, in steps, when the stack can tell it."""

    def ensure_running(self) -> list[str]:
        """Between experiments: restart what is down, route the gateway to the primary;
        returns what it had to repair."""


NEEDS = ("trainer", "checkpoints", "dr-site", "replicas>=2", "proxies", "quality-gate",
         "checkpoint-volume", "orchestrator", "nodes>=2")


def missing_roles(stack: Any, needs: tuple[str, ...]) -> list[str]:
    """What of *needs* (see :data:`NEEDS`) *stack* (a Stack or a
    :class:`~chaoskit.stack.plan.StackPlan`) lacks, each said so a user can act on it."""
    unknown = [n for n in needs if n not in NEEDS]
    if unknown:
        raise ConfigError(f"unknown need {unknown[0]!r} (known: {', '.join(NEEDS)})")
    lacking = []
    for need in needs:
        if need == "trainer" and stack.trainer is None:
            lacking.append("a service with role 'trainer'")
        elif need == "checkpoints" and stack.checkpoint_dir is None:
            lacking.append("a [checkpoints] table")
        elif need == "dr-site" and stack.dr_site is None:
            lacking.append("a service with role 'dr-site'")
        elif need == "replicas>=2" and len(stack.replicas) < 2:
            lacking.append("a second serving replica (replicas = 2)")
        elif need == "proxies" and stack.toxiproxy_url is None:
            lacking.append("the gateway's proxies")
        elif need == "checkpoint-volume" and getattr(stack, "checkpoint_volume", None) is None:
            lacking.append("a checkpoint directory on a file system of its own (the "
                           "reference stack mounts one when run as root on Linux)")
        elif need == "orchestrator" and _backend_name(stack) != "swarm":
            lacking.append("an orchestrator that rolls services out (--chaos-backend swarm)")
        elif need == "nodes>=2" and (_backend_name(stack) != "swarm" or _nodes(stack) < 2):
            lacking.append("a second swarm node (--chaos-backend swarm --chaos-swarm-workers 1)")
        elif need == "quality-gate" and getattr(stack, "quality_gate", None) is None:
            lacking.append("a labelled set to judge versions on (a stack file's [quality] "
                           "table, with a gRPC port on serving)")
    return lacking


def _backend_name(stack: Any) -> str | None:
    """A plan's backend, or a running stack's."""
    backend = getattr(stack, "backend", None)
    return backend if isinstance(backend, str) else getattr(backend, "name", None)


def _nodes(stack: Any) -> int:
    """A plan's node count, or a running swarm stack's (its manager and added workers)."""
    if isinstance(getattr(stack, "nodes", None), int):
        return int(stack.nodes)
    topology = getattr(getattr(stack, "backend", None), "topology", None)
    return 1 + len(topology.added) if topology is not None else 1


def within(path: Path, roots: list[Path]) -> bool:
    """True when *path* is one of *roots* or lies under one of them."""
    return any(path == root or root in path.parents for root in roots)
