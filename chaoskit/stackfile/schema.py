"""The schema of a stack file (``chaoskit.toml``): the user's stack, described.

Pydantic models with unknown keys forbidden, so every mistake is found at load time with
its location (``services.serving.readiness.timeout``) and a typed value; hand-written
checks would repeat what a schema states once.  Paths are relative to the stack file;
``{data_dir}`` in a path is chaoskit's per-run working directory.  Example::

    [model]
    name = "custom"
    base_path = "{data_dir}/models/custom"
    canary = "auto"                  # or a request file: {"instances": [...]}

    [checkpoints]
    dir = "{data_dir}/checkpoints"
    format = "keras"                 # tf | keras | files

    [services.trainer]
    role = "trainer"
    command = ["{python}", "train.py", "--models", "{model_base_path}"]
    readiness = { version_exported = true }

    [services.serving]
    role = "serving"
    replicas = 2
    command = ["{python}", "-m", "chaoskit.serving", "--model-name", "{model_name}",
               "--model-base-path", "{model_base_path}", "--rest-port", "{port_rest}"]
    ports = { rest = 0 }
    readiness = { model_status = true }
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from chaoskit.durations import parse_duration

ROLES = ("serving", "trainer", "dr-site", "other")


def _seconds(value: Any) -> float:
    return parse_duration(value, what="")


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
"""A duration: seconds as a number, or a string such as "500ms", "30s", "5m"."""


ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Model(Strict):
    """The model under test: where its SavedModel versions are and how to check them."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    base_path: str
    """TF Serving's layout: ``<base_path>/<int version>/saved_model.pb``."""
    signature: str = "serving_default"
    canary: str = "auto"
    """A request file in TF Serving's REST format, or ``auto`` (made from the signature)."""
    tolerance: float = Field(default=1e-4, ge=0)
    """Largest absolute difference between a canary answer and its golden output."""


class Checkpoints(Strict):
    dir: str
    format: Literal["tf", "keras", "files"] = "tf"
    pattern: str | None = None
    """For ``files``: a glob of checkpoint files (default ``*``)."""


class Readiness(Strict):
    """When a service is ready; several kinds may be combined (all must hold)."""

    # ``model_status`` is a field name, not pydantic's namespace (pydantic < 2.10 warned)
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    http: str | None = None
    """GET on this path answers 200."""
    tcp: bool = False
    """The port accepts a connection."""
    model_status: bool = False
    """TF Serving's model status shows a version AVAILABLE (for serving)."""
    version_exported: bool = False
    """The model base path holds a version (for a trainer that exports)."""
    file: str | None = None
    """This path exists."""
    port: str | None = None
    """Which named port http/tcp/model_status use (default: the first)."""
    timeout: Seconds = 120.0


class Docker(Strict):
    """How the service runs on the Docker backend: an image in the local engine."""

    image: str = Field(min_length=1)
    command: list[str] | None = None
    """Arguments after the image (None: the image's own command)."""


class Attach(Strict):
    """An existing container (started by the user) to attach to instead of starting one."""

    container: str | None = None
    label: str | None = None
    """``key=value``; one container must carry it."""
    compose_service: str | None = None
    """Docker compose's ``com.docker.compose.service`` label."""

    @model_validator(mode="after")
    def _one(self) -> Attach:
        given = [k for k in ("container", "label", "compose_service") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of container, label, compose_service")
        return self


class Service(Strict):
    role: Literal["serving", "trainer", "dr-site", "other"]
    command: list[str] | None = Field(default=None, min_length=1)
    """The process backend's command line (placeholders allowed)."""
    docker: Docker | None = None
    attach: Attach | None = None
    ports: dict[str, Annotated[int, Field(ge=0, le=65535)]] = {}
    """Port name -> number; 0 chooses a free port at first start."""
    env: dict[str, str] = {}
    readiness: Readiness = Readiness()
    replicas: int = Field(default=1, ge=1, le=26)
    """For serving: how many replicas (behind chaoskit's gateway)."""
    protocol: Literal["rest", "grpc"] = "rest"
    """How the DR engine probes serving: TF Serving's REST API, or its gRPC API on the
    port named ``grpc`` (status, metadata and the clients' load stay on REST)."""
    stop_timeout: Seconds = 5.0

    @model_validator(mode="after")
    def _roles(self) -> Service:
        if self.replicas > 1 and self.role != "serving":
            raise ValueError("replicas applies to role = \"serving\" only")
        if self.role == "serving" and self.protocol == "grpc" and "grpc" not in self.ports:
            raise ValueError("protocol = \"grpc\" needs the gRPC port named grpc (ports = "
                             "{ rest = 0, grpc = 0 }): chaoskit probes it")
        if self.replicas > 1 and any(p != 0 for p in self.ports.values()):
            raise ValueError("replicas > 1 needs ports chosen by chaoskit (0), not fixed ports")
        return self


class DR(Strict):
    """The DR engine's policy for this stack."""

    probe_interval: Seconds = 0.1
    probe_timeout: Seconds = 0.3
    misses: int = Field(default=2, ge=1)
    """Failed probes in a row before an alert."""
    slow: Seconds = 0.2
    """A correct answer slower than this counts as a miss."""
    recovery: Literal["chaoskit", "observe"] = "chaoskit"
    """chaoskit: restart, fail over, restore; observe: detect only, the platform recovers."""
    recovery_timeout: Seconds = 90.0
    repository: str = "{data_dir}/backups"
    password_file: str | None = None
    """Default: ``<repository>.password`` beside it, created when missing."""
    writer_password_file: str | None = None
    """The write-only key of the backup agent and the replicator.  Default:
    ``<repository>.writer-password`` beside it, created with its key when missing."""


class Quality(Strict):
    """The labelled set a quality gate judges new versions on (``chaos_quality``); the
    gate pins versions through the serving replicas' port named ``grpc``
    (``HandleReloadConfigRequest``, as a real tensorflow/serving takes it)."""

    labelled: str
    """A JSON file: ``{"instances": [...], "targets": [...]}`` (regression) or
    ``{"instances": [...], "labels": [...]}`` (classification: class indices)."""
    task: Literal["regression", "classification"] = "regression"


class Budgets(Strict):
    ttd: Seconds | None = None
    rto: Seconds | None = None
    rpo: Seconds | None = None


class StackFile(Strict):
    """The whole file."""

    model: Model
    checkpoints: Checkpoints | None = None
    services: dict[ServiceName, Service] = Field(min_length=1)
    dr: DR = DR()
    budgets: Budgets = Budgets()
    quality: Quality | None = None

    @model_validator(mode="after")
    def _quality_needs_grpc(self) -> StackFile:
        serving = self.named("serving")
        if self.quality is not None and serving is not None \
                and "grpc" not in self.services[serving].ports:
            raise ValueError("[quality] needs the serving service's gRPC port (ports = { ..., "
                             "grpc = 0 }): the gate pins versions with HandleReloadConfigRequest")
        return self

    @model_validator(mode="after")
    def _one_of_each(self) -> StackFile:
        for role in ("serving", "trainer", "dr-site"):
            named = [name for name, s in self.services.items() if s.role == role]
            if len(named) > 1:
                raise ValueError(f"only one service may have role {role!r}, got {named}")
        if not any(s.role == "serving" for s in self.services.values()):
            raise ValueError("no service has role \"serving\": chaoskit needs one to test")
        return self

    def named(self, role: str) -> str | None:
        """The name of the service with *role*, if any."""
        return next((name for name, s in self.services.items() if s.role == role), None)
