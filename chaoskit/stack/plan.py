"""What a stack will have, known before it starts: its roles and replica names.

Collection needs it (the standard suite runs an experiment per serving replica, and
skips what the stack lacks) while starting a stack takes seconds of TensorFlow; so the
plan is read from the stack file, or is the reference stack's, without starting anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chaoskit.stack.gatewayed import replica_names


@dataclass(frozen=True)
class StackPlan:
    replicas: list[str]
    trainer: str | None
    dr_site: str | None
    checkpoint_dir: str | None
    """As the stack file writes it (None: the stack has no checkpoints)."""
    checkpoint_kind: str | None
    recovery: str
    toxiproxy_url: str | None = "planned"
    """Every stack chaoskit runs has its gateway's proxies."""
    quality_gate: str | None = None
    """How a quality gate can pin versions (None: it cannot, or has no labelled set)."""
    checkpoint_volume: str | None = None
    """The checkpoints get a file system of their own (a disk-full fault needs it)."""
    backend: str = "process"
    """Where the stack will run (an orchestrator rolls services out: ``swarm``)."""
    nodes: int = 1
    """Nodes of the swarm it runs on (the manager, and the workers chaoskit adds)."""


def plan_stack(stack_file: Path | None, *, backend: str = "process",
               nodes: int = 1) -> StackPlan:  # fmt: skip
    """The plan of the stack file's stack, or of the reference stack (None), on *backend*."""
    if stack_file is None:
        from chaoskit.stack.reference import DR_SITE, SERVING, TRAINER, StackConfig
        from chaoskit.stack.volume import cannot_mount

        volume = "tmpfs" if StackConfig().checkpoint_volume_mb and not cannot_mount() else None
        return StackPlan(replica_names(SERVING, StackConfig().replicas), TRAINER, DR_SITE,
                         "checkpoints", "tf", "chaoskit",
                         quality_gate="model config file and gRPC",
                         checkpoint_volume=volume, backend=backend, nodes=nodes)  # fmt: skip
    from chaoskit.stackfile import load_stack_file

    file = load_stack_file(stack_file)
    serving = file.named("serving")
    assert serving is not None  # the schema demands one
    checkpoints = file.checkpoints
    return StackPlan(
        replica_names(serving, file.services[serving].replicas), file.named("trainer"),
        file.named("dr-site"), checkpoints.dir if checkpoints else None,
        checkpoints.format if checkpoints else None, file.dr.recovery,
        quality_gate="grpc" if file.quality is not None else None, backend=backend, nodes=nodes,
    )  # fmt: skip
