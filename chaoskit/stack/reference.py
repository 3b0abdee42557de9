"""The reference serving stack: a trainer that never stops and a TF-Serving-compatible server.

The trainer writes checkpoints and SavedModel versions to the data directory; the server
polls the model base path.  Both append their events to the run's journal.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from chaoskit.errors import StackError
from chaoskit.journal import JOURNAL_ENV
from chaoskit.serving.client import ServingClient
from chaoskit.stack.backend import Backend
from chaoskit.stack.service import Readiness, ServiceSpec

TRAINER = "trainer"
SERVING = "serving"


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


class ReferenceStack:
    """Starts, reaches and stops the reference stack on a backend."""

    def __init__(
        self, backend: Backend, data_dir: Path, journal_path: Path, config: StackConfig
    ) -> None:
        self.backend = backend
        self.config = config
        self.data_dir = Path(data_dir)
        self.journal_path = Path(journal_path)
        self.model_base_path = self.data_dir / "models" / config.model_name
        self.checkpoint_dir = self.data_dir / "checkpoints"
        self.status_file = self.data_dir / "trainer-status.json"
        self.specs = {spec.name: spec for spec in (self._trainer_spec(), self._serving_spec())}

    def _env(self) -> dict[str, str]:
        return {JOURNAL_ENV: str(self.journal_path), "TF_CPP_MIN_LOG_LEVEL": "2"}

    def _trainer_spec(self) -> ServiceSpec:
        c = self.config
        return ServiceSpec(
            name=TRAINER,
            command=(
                sys.executable, "-m", "chaoskit.trainer",
                "--model-name", c.model_name,
                "--model-base-path", str(self.model_base_path),
                "--checkpoint-dir", str(self.checkpoint_dir),
                "--checkpoint-every", str(c.checkpoint_every),
                "--export-every", str(c.export_every),
                "--step-delay", str(c.step_delay),
                "--status-file", str(self.status_file),
            ),
            env=self._env(),
            readiness=Readiness(file=str(self.status_file), timeout=c.start_timeout),
        )

    def _serving_spec(self) -> ServiceSpec:
        c = self.config
        return ServiceSpec(
            name=SERVING,
            command=(
                sys.executable, "-m", "chaoskit.serving",
                "--model-name", c.model_name,
                "--model-base-path", str(self.model_base_path),
                "--rest-port", "{port_rest}",
                "--poll-interval", str(c.poll_interval),
            ),
            ports={"rest": c.serving_port},
            env=self._env(),
            readiness=Readiness(http_path=f"/v1/models/{c.model_name}", timeout=c.start_timeout),
        )

    @property
    def services(self) -> list[str]:
        return list(self.specs)

    def start(self) -> ReferenceStack:
        """Start the trainer, wait for its first version, then start serving."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            for spec in self.specs.values():
                self.backend.start(spec)
        except BaseException:
            self.backend.close()
            raise
        return self

    def client(self, *, timeout: float = 5.0) -> ServingClient:
        host, port = self.backend.endpoint(SERVING, "rest")
        return ServingClient(host, port, self.config.model_name, timeout=timeout)

    def ensure_running(self) -> list[str]:
        """Restart services that are not running (between experiments); returns their names."""
        repaired = []
        for name in self.specs:
            if self.backend.status(name) != "running":
                self.backend.restart(name)
                repaired.append(name)
        return repaired

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> ReferenceStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_backend(name: str, run_dir: Path, data_dir: Path) -> Backend:
    """The backend called *name*; an unknown name is a StackError naming it."""
    if name == "process":
        from chaoskit.stack.process import ProcessBackend

        return ProcessBackend(run_dir, data_dir)
    if name == "docker":
        try:
            from chaoskit.stack.docker import DockerBackend  # type: ignore[import-not-found]
        except ModuleNotFoundError as e:
            raise StackError("the docker backend is not available in this version") from e
        return DockerBackend(run_dir, data_dir)  # type: ignore[no-any-return]
    raise StackError(f"unknown backend {name!r} (choose from: process, docker)")
