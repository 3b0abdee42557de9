"""A stack described by a stack file: the user's model, trainer and serving, as a Stack.

Everything the file says is checked before any service starts (commands exist, each
service can run on the chosen backend, a canary file fits its format); what can only
be checked against a running model (the canary against the signature) is checked as
soon as serving answers, and a mismatch stops every service again.  Placeholders in
commands and paths: ``{python}`` (this interpreter), ``{stack_dir}``, ``{data_dir}``,
``{model_name}``, ``{model_base_path}``, ``{checkpoint_dir}``, ``{dr_site_root}``,
``{dr_site_token_file}``, and the backend's own ``{port_<name>}``, ``{bind_host}``,
``{run_dir}``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoskit.atomic import atomic_write_text, ensure_secret_file
from chaoskit.canary import auto_canary, check_canary, read_canary_file, signature_inputs
from chaoskit.dr.online.engine import DRConfig
from chaoskit.dr.online.quality import LabelledSet, read_labelled_set
from chaoskit.dr.online.recorded_goldens import RecordedGoldens
from chaoskit.dr.protect.checkpoints import checkpoint_format
from chaoskit.errors import ChaosKitError, ConfigError, StackError
from chaoskit.journal import JOURNAL_ENV
from chaoskit.objectives import Objectives
from chaoskit.stack.backend import Backend
from chaoskit.stack.gatewayed import GatewayedStack, replica_names
from chaoskit.stack.reference import make_backend
from chaoskit.stack.service import Readiness, ServiceSpec
from chaoskit.stackfile.load import load_stack_file
from chaoskit.stackfile.schema import Service, StackFile

if TYPE_CHECKING:
    from chaoskit.stack.docker_attach import AttachTarget


class _Keep(dict[str, str]):
    """Placeholders this stage does not know stay for the backend to fill."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


ATTACH = "docker-attach"


def make_file_backend(file: StackFile, name: str, run_dir: Path, data_dir: Path,
                      *, where: str = "stack file", swarm: Any = None) -> Backend:  # fmt: skip
    """The backend for a stack file's stack: on Docker, a file whose services all name
    ``attach`` containers is attached to (nothing of it is created or removed)."""
    attached = [n for n, s in file.services.items() if s.attach is not None]
    if not attached or name != "docker":
        return make_backend(name, run_dir, data_dir, swarm=swarm)
    if len(attached) != len(file.services):
        started = next(n for n in file.services if n not in attached)
        raise ConfigError(f"{where}: services.{started}: every service must name attach = "
                          "{...} when one does (chaoskit attaches to, or starts, the whole "
                          "stack)")  # fmt: skip
    from chaoskit.stack.docker_attach import DockerAttachBackend

    targets = attach_targets(file, where=where)
    try:
        return DockerAttachBackend(targets)
    except ChaosKitError as e:  # a name or label that matches nothing, or several
        named = next((t.service for t in targets if repr(t.service) in str(e)), "?")
        raise ConfigError(f"{where}: services.{named}.attach: {e}") from e


def attach_targets(file: StackFile, *, where: str = "stack file") -> list[AttachTarget]:
    """The containers a stack file's ``attach`` services name (services without one are
    left out)."""
    from chaoskit.stack.docker_attach import AttachTarget

    targets = []
    for name, service in file.services.items():
        a = service.attach
        if a is None:
            continue
        if service.replicas > 1:
            raise ConfigError(f"{where}: services.{name}.replicas: an attached service is "
                              "one container; describe each replica as a service")  # fmt: skip
        label = a.label or (f"com.docker.compose.service={a.compose_service}"
                            if a.compose_service else None)  # fmt: skip
        targets.append(AttachTarget(name, container=a.container, label=label,
                                    ports=dict(service.ports)))  # fmt: skip
    return targets


class FileStack(GatewayedStack):
    """The stack a stack file describes, on a backend (a :class:`Stack`)."""

    def __init__(
        self, file: StackFile | str | Path, backend: Backend, data_dir: Path,
        journal_path: Path, *, path: str | Path | None = None, seed: int = 0,
    ) -> None:  # fmt: skip
        if not isinstance(file, StackFile):
            path = Path(file)
            file = load_stack_file(path)
        self.file = file
        self.path = Path(path or "chaoskit.toml").absolute()
        self.where = str(path or "stack file")
        self.stack_dir = self.path.parent
        self.backend = backend
        self.data_dir = Path(data_dir).absolute()
        self.journal_path = Path(journal_path)
        self.seed = seed
        model = file.model
        self.model_name = model.name
        self.signature_name = model.signature
        self.dr_site_root = self.data_dir / "dr-site"
        self.dr_site_token_file = self.data_dir / "dr-site.token"
        self._values = _Keep(
            python=sys.executable, stack_dir=str(self.stack_dir), data_dir=str(self.data_dir),
            model_name=model.name, dr_site_root=str(self.dr_site_root),
            dr_site_token_file=str(self.dr_site_token_file),
        )  # fmt: skip
        self.model_base_path = self._path(model.base_path)
        self._values["model_base_path"] = str(self.model_base_path)
        checkpoints = file.checkpoints
        self.checkpoint_dir = self._path(checkpoints.dir) if checkpoints else None
        self._values["checkpoint_dir"] = str(self.checkpoint_dir or "")
        try:
            kind, pattern = (
                (checkpoints.format, checkpoints.pattern) if checkpoints else ("tf", None)
            )
            self.checkpoint_format = checkpoint_format(kind, pattern)
        except ConfigError as e:
            raise ConfigError(f"{self.where}: checkpoints: {e}") from None
        self.trainer = file.named("trainer")
        self.dr_site = file.named("dr-site")
        self.recovery = file.dr.recovery
        self._repository = self._path(file.dr.repository)
        self.password_file = self._path(file.dr.password_file) if file.dr.password_file else None
        if file.dr.writer_password_file:
            self.writer_password_file_setting = self._path(file.dr.writer_password_file)
        d = file.dr
        self.dr_config = DRConfig(
            probe_interval=d.probe_interval, probe_timeout=d.probe_timeout, slow_probe=d.slow,
            failures_to_alert=d.misses, recovery_timeout=d.recovery_timeout,
        )  # fmt: skip
        b = file.budgets
        self.objectives = Objectives(ttd=b.ttd, rto=b.rto, rpo=b.rpo)
        serving = file.named("serving")
        assert serving is not None  # the schema demands one
        self.serving_port = self._rest_port(serving, file.services[serving])
        if self.dr_site is not None:
            self.dr_site_port = self._first_port(self.dr_site, file.services[self.dr_site])
        self.replicas = replica_names(serving, file.services[serving].replicas)
        self.probe_protocol = file.services[serving].protocol
        self.specs: dict[str, ServiceSpec] = {}
        for name, service in file.services.items():
            for instance in self.replicas if name == serving else [name]:
                self.specs[instance] = self._spec(instance, name, service)
        self._canary_rows = (
            None if model.canary == "auto"
            else read_canary_file(self._path(model.canary), where=f"{self.where}: model.canary")
        )  # fmt: skip
        self.goldens: RecordedGoldens = RecordedGoldens(
            self.model_base_path, self.data_dir / "goldens" / model.name,
            self._canary_rows or [],
            lambda: [self.direct_client(r, timeout=2.0) for r in self.replicas],
            tolerance=model.tolerance, signature_name=model.signature,
        )  # fmt: skip

    # -- building ---------------------------------------------------------------------
    def _path(self, text: str) -> Path:
        path = Path(text.format_map(self._values))
        return path if path.is_absolute() else self.stack_dir / path

    def _first_port(self, name: str, service: Service) -> str:
        if not service.ports:
            raise ConfigError(f"{self.where}: services.{name}.ports: {service.role} needs a "
                              "port (e.g. ports = { rest = 0 })")  # fmt: skip
        return next(iter(service.ports))

    def _rest_port(self, name: str, service: Service) -> str:
        port = service.readiness.port or ("rest" if "rest" in service.ports else None)
        return port or self._first_port(name, service)

    def _spec(self, instance: str, name: str, service: Service) -> ServiceSpec:
        key = f"{self.where}: services.{name}"
        if self.backend.name == ATTACH:
            return ServiceSpec(name=instance, command=("<attached>",), ports=service.ports,
                               readiness=self._readiness(service))  # fmt: skip
        if service.attach is not None:
            raise ConfigError(f"{key}.attach: attached containers need the Docker backend "
                              "(--chaos-backend docker)")  # fmt: skip
        if self.backend.name in ("docker", "swarm") and service.docker is not None:
            return self._image_spec(instance, key, service)
        if service.command is None:
            raise ConfigError(
                f"{key}: no command for the {self.backend.name} backend "
                "(give command = [...]; the Docker backend runs it in chaoskit's image)"
            )
        command = tuple(part.format_map(self._values) for part in service.command)
        self._check_command(f"{key}.command", command[0])
        ports = dict(service.ports)
        first = service.readiness.port
        if first is not None:
            if first not in ports:
                raise ConfigError(f"{key}.readiness.port = {first!r}: no such port "
                                  f"(ports: {', '.join(ports) or 'none'})")  # fmt: skip
            ports = {first: ports.pop(first), **ports}
        r = service.readiness
        readiness = self._readiness(service)
        if (r.http or r.tcp or r.model_status) and not ports:
            raise ConfigError(f"{key}.readiness: http, tcp and model_status need a port")
        env = {JOURNAL_ENV: str(self.journal_path), "TF_CPP_MIN_LOG_LEVEL": "2", **service.env}
        return ServiceSpec(
            name=instance, command=command, ports=ports, env=env, readiness=readiness,
            stop_timeout=service.stop_timeout, cwd=str(self.stack_dir),
        )  # fmt: skip

    def _image_spec(self, instance: str, key: str, service: Service) -> ServiceSpec:
        """A service in an image of the user's (already in the local engine): its command
        is the image's own unless ``docker.command`` gives arguments."""
        d = service.docker
        assert d is not None
        command = tuple(part.format_map(self._values) for part in d.command or ())
        env = {JOURNAL_ENV: str(self.journal_path), **service.env}
        return ServiceSpec(
            name=instance, command=command, ports=service.ports, env=env, image=d.image,
            readiness=self._readiness(service), stop_timeout=service.stop_timeout,
        )  # fmt: skip

    def _check_images(self) -> None:
        """Every image the services name is in the local engine, before any starts."""
        check = getattr(self.backend, "ensure_image", None)
        for name, spec in self.specs.items():
            if spec.image is not None and check is not None:
                try:
                    check(spec.image)
                except ChaosKitError as e:
                    raise ConfigError(f"{self.where}: services.{name}.docker.image: {e}") from e

    def _readiness(self, service: Service) -> Readiness:
        r = service.readiness
        return Readiness(
            http_path=r.http, file=str(self._path(r.file)) if r.file else None, tcp=r.tcp,
            model_status=self.model_name if r.model_status else None,
            version_in=str(self.model_base_path) if r.version_exported else None,
            timeout=r.timeout,
        )  # fmt: skip

    def _check_command(self, key: str, program: str) -> None:
        if "{" in program:
            return  # filled in by the backend
        found = shutil.which(program) if os.sep not in program else None
        path = Path(program) if Path(program).is_absolute() else self.stack_dir / program
        if found is None and not (os.sep in program and path.exists()):
            raise ConfigError(f"{key}: program {program!r} not found (not on PATH, nor a file "
                              f"relative to {self.stack_dir})")  # fmt: skip

    # -- running ------------------------------------------------------------------------
    def start(self) -> FileStack:
        """Start the services (trainer, DR site, others, replicas), the gateway, then
        settle the canary: from its file, or made from the signature serving reports."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.dr_site is not None:
            ensure_secret_file(self.dr_site_token_file)
        try:
            self._check_images()
            self._start_services()
            self._settle_canary()
        except BaseException:
            self.close()
            raise
        return self

    def _settle_canary(self) -> None:
        answer = self.client(timeout=10.0).metadata()
        if not answer.ok:
            raise StackError(
                f"{self.where}: serving does not answer the metadata of model "
                f"{self.model_name!r} ({answer.status}: {answer.body.get('error')})"
            )
        try:
            inputs = signature_inputs(answer.body, self.signature_name or "serving_default")
        except ConfigError as e:
            raise ConfigError(f"{self.where}: model.signature: {e}") from None
        stored = self.data_dir / "goldens" / self.model_name / "canary-inputs.json"
        if self._canary_rows is not None:
            rows = self._canary_rows
            check_canary(rows, inputs, where=f"{self.where}: model.canary")
        elif stored.exists():
            rows = json.loads(stored.read_text())
        else:
            rows = auto_canary(inputs, seed=self.seed)
            stored.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(stored, json.dumps(rows))
        self.goldens.set_inputs(rows)

    def trainer_step(self) -> int | None:
        """The step of the newest checkpoint, when the checkpoint format tells it."""
        if self.checkpoint_dir is None:
            return None
        latest = self.checkpoint_format.latest(self.checkpoint_dir)
        return None if latest is None else latest.step

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "stack_file": str(self.path)}

    @property
    def quality_gate(self) -> str | None:
        """How a quality gate pins versions on this stack ("grpc"), or None when the
        stack file has no ``[quality]`` table (its labelled set)."""
        return "grpc" if self.file.quality is not None else None

    def labelled_set(self) -> LabelledSet:
        """The ``[quality]`` table's labelled set (ConfigError naming what is wrong)."""
        quality = self.file.quality
        if quality is None:
            raise ConfigError(f"{self.where}: no [quality] table: a quality gate needs a "
                              "labelled set")  # fmt: skip
        return read_labelled_set(self._path(quality.labelled), task=quality.task,
                                 where=f"{self.where}: quality.labelled")  # fmt: skip

    @property
    def repository(self) -> Path:
        return self._repository
