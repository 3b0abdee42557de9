"""The reference serving stack: a trainer that never stops, TF-Serving-compatible replicas
behind a gateway proxy, and a DR site.

The trainer writes checkpoints and SavedModel versions to the data directory; each
serving replica polls the model base path.  Clients reach serving through the gateway
(a Toxiproxy proxy), each replica through a proxy of its own where network faults act;
the DR site (an append-only store for the backup repository, :mod:`chaoskit.dr.protect.site`)
is reached through the ``dr-site`` proxy.  All services append their events to the
run's journal.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from chaoskit.atomic import ensure_secret_file
from chaoskit.dr.online.engine import DRConfig
from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.online.quality import LabelledSet, reference_labelled_set
from chaoskit.dr.protect.checkpoints import checkpoint_format
from chaoskit.errors import StackError
from chaoskit.journal import JOURNAL_ENV
from chaoskit.objectives import Objectives
from chaoskit.serving.config import ServingConfig, write_config
from chaoskit.stack import volume
from chaoskit.stack.backend import BACKENDS, Backend
from chaoskit.stack.gatewayed import GatewayedStack, replica_names
from chaoskit.stack.service import Readiness, ServiceSpec
from chaoskit.stack.swarm_mode import SwarmOptions
from chaoskit.stack.trainer_progress import newest_step

TRAINER = "trainer"
SERVING = "serving"
DR_SITE = "dr-site"
CHECKPOINTS = "checkpoints"
"""The checkpoint directory under the data directory (a volume of its own when it can)."""


@dataclass(frozen=True)
class StackConfig:
    """Knobs of the reference stack (steps are trainer steps)."""

    model_name: str = "reference"
    checkpoint_every: int = 20
    export_every: int = 200
    step_delay: float = 0.05
    poll_interval: float = 0.5
    serving_port: int = 0
    start_timeout: float = 90.0
    replicas: int = 2
    checkpoint_volume_mb: int | None = 16
    """A tmpfs of this size on the checkpoint directory, so a disk-full fault fills only
    it (when this process can mount: root on Linux; None: never)."""
    model_config_poll: float = 0.1
    """Seconds between the replicas' reads of the model config file (a quality gate
    pins and rolls back the ``stable`` label through it)."""


class ReferenceStack(GatewayedStack):
    """Starts, reaches and stops the reference stack on a backend (a :class:`Stack`)."""

    checkpoint_format = checkpoint_format("tf")

    def __init__(
        self, backend: Backend, data_dir: Path, journal_path: Path, config: StackConfig
    ) -> None:
        self.backend = backend
        self.config = config
        self.data_dir = Path(data_dir)
        self.journal_path = Path(journal_path)
        self.model_base_path = self.data_dir / "models" / config.model_name
        self.checkpoint_dir = self.data_dir / CHECKPOINTS
        self.status_file = self.data_dir / "trainer-status.json"
        self.trainer_control_file = self.data_dir / "trainer-control.json"
        """Where training faults tell the trainer what to do (chaoskit.trainer.control)."""
        self.model_config_file = self.data_dir / "model-config.json"
        """The replicas' version policy and labels (chaoskit.serving.config); the default
        (the newest version) until a quality gate takes it over."""
        self._mounted = False
        self.checkpoint_volume_note: str | None = None
        """Why the checkpoints have no volume of their own (None: they have one)."""
        self.dr_site_root = self.data_dir / DR_SITE
        self.dr_site_token_file = self.data_dir / f"{DR_SITE}.token"
        self.replicas = replica_names(SERVING, config.replicas)
        servings = [self._serving_spec(name) for name in self.replicas]
        self.specs = {
            spec.name: spec for spec in (self._trainer_spec(), *servings, self._dr_site_spec())
        }
        self.trainer = TRAINER
        self.dr_site = DR_SITE
        self.goldens = Goldens(self.model_base_path)
        self.dr_config = DRConfig()
        self.objectives = Objectives()
        self.model_name = config.model_name

    quality_gate = "model config file and gRPC"
    """How a quality gate pins versions here (see the quality guard)."""

    def labelled_set(self) -> LabelledSet:
        """Held-out data from the trainer's teacher, that it never trains on."""
        return reference_labelled_set()

    def trainer_step(self) -> int | None:
        """The trainer's progress: its status file's step, or its newest checkpoint if later."""
        return newest_step(self.status_file, self.checkpoint_dir)

    def _env(self) -> dict[str, str]:
        return {JOURNAL_ENV: str(self.journal_path), "TF_CPP_MIN_LOG_LEVEL": "2"}

    def _trainer_spec(self) -> ServiceSpec:
        c = self.config
        return ServiceSpec(
            name=TRAINER,
            command=(
                sys.executable,
                "-m",
                "chaoskit.trainer",
                "--model-name",
                c.model_name,
                "--model-base-path",
                str(self.model_base_path),
                "--checkpoint-dir",
                str(self.checkpoint_dir),
                "--checkpoint-every",
                str(c.checkpoint_every),
                "--export-every",
                str(c.export_every),
                "--step-delay",
                str(c.step_delay),
                "--status-file",
                str(self.status_file),
                "--control-file",
                str(self.trainer_control_file),
            ),
            env=self._env(),
            readiness=Readiness(file=str(self.status_file), timeout=c.start_timeout),
        )

    def _serving_spec(self, name: str) -> ServiceSpec:
        c = self.config
        return ServiceSpec(
            name=name,
            command=(
                sys.executable,
                "-m",
                "chaoskit.serving",
                "--model-name",
                c.model_name,
                "--model-base-path",
                str(self.model_base_path),
                "--rest-port",
                "{port_rest}",
                "--host",
                "{bind_host}",
                "--poll-interval",
                str(c.poll_interval),
                "--model-config-file",
                str(self.model_config_file),
                "--model-config-file-poll-wait-seconds",
                str(c.model_config_poll),
                "--grpc-port",
                "{port_grpc}",
            ),
            ports={"rest": c.serving_port if name == SERVING else 0, "grpc": 0},
            env=self._env(),
            readiness=Readiness(http_path=f"/v1/models/{c.model_name}", timeout=c.start_timeout),
        )

    def _dr_site_spec(self) -> ServiceSpec:
        return ServiceSpec(
            name=DR_SITE,
            command=(
                sys.executable, "-m", "chaoskit.dr.protect.site", "--root", str(self.dr_site_root),
                "--token-file", str(self.dr_site_token_file), "--host", "{bind_host}",
                "--port", "{port_http}",
            ),
            ports={"http": 0},
            readiness=Readiness(http_path="/health", timeout=self.config.start_timeout),
            secrets=(str(self.dr_site_token_file),),
        )  # fmt: skip

    def start(self) -> ReferenceStack:
        """Start the trainer (it exports a first version), the DR site and the replicas,
        then the gateway."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ensure_secret_file(self.dr_site_token_file)  # the DR site's bearer token
        write_config(self.model_config_file, ServingConfig())
        try:
            self._mount_checkpoint_volume()
            self._start_services()
        except BaseException:
            self.close()
            raise
        return self

    def _mount_checkpoint_volume(self) -> None:
        volume.reap_orphans()
        size = self.config.checkpoint_volume_mb
        self.checkpoint_volume_note = volume.cannot_mount() if size else "not asked for"
        if self.checkpoint_volume_note is None:
            assert size is not None
            volume.mount_volume(self.data_dir / CHECKPOINTS, size)
            self._mounted = True

    def close(self) -> None:
        """Stop everything, then unmount the checkpoint volume (its trainer is gone)."""
        try:
            super().close()
        finally:
            if self._mounted:
                volume.unmount_volume(self.data_dir / CHECKPOINTS)
                self._mounted = False

    @property
    def checkpoint_volume(self) -> str | None:
        """"tmpfs" while the checkpoints have a file system of their own, else None."""
        return "tmpfs" if self._mounted else None

    def describe(self) -> dict[str, object]:
        note = self.checkpoint_volume_note
        size = self.config.checkpoint_volume_mb if self._mounted else None
        return {**super().describe(), "checkpoint_volume_mb": size,
                **({"checkpoint_volume": note} if note else {})}  # fmt: skip

    def __enter__(self) -> ReferenceStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_backend(name: str, run_dir: Path, data_dir: Path, *,
                 swarm: SwarmOptions | None = None) -> Backend:  # fmt: skip
    """The backend called *name*; an unknown name is a StackError naming it."""
    if name == "process":
        from chaoskit.stack.process import ProcessBackend

        return ProcessBackend(run_dir, data_dir)
    if name == "docker":
        from chaoskit.stack.docker import DockerBackend

        return DockerBackend(run_dir, data_dir)
    if name == "swarm":
        from chaoskit.stack.swarm import SwarmBackend

        return SwarmBackend(run_dir, data_dir, options=swarm)
    raise StackError(f"unknown backend {name!r} (choose from: {', '.join(BACKENDS)})")
