"""What every stack chaoskit runs has in common: services on a backend, serving replicas
behind the gateway, and the clients and repairs built on that.

The reference stack and a stack file's stack differ in which services they describe and
how; starting them in order (trainer, DR site, others, then the replicas in parallel,
since TensorFlow starts take seconds), putting the gateway in front, reaching serving
and repairing between experiments is the same code, here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoskit.dr.online.engine import DRConfig
from chaoskit.dr.online.goldens import Goldens
from chaoskit.errors import ConfigError, StackError
from chaoskit.objectives import Objectives
from chaoskit.serving.client import ServingClient
from chaoskit.stack.backend import Backend
from chaoskit.stack.gateway import GATEWAY, GRPC_LINK_SUFFIX, Gateway
from chaoskit.stack.protocol import Recovery
from chaoskit.stack.service import ServiceSpec

if TYPE_CHECKING:
    from chaoskit.serving.grpc_client import GrpcServingClient


def replica_names(service: str, count: int) -> list[str]:
    """``serving``, ``serving-b``, ``serving-c`` …: the primary keeps the service's name."""
    if not 1 <= count <= 26:
        raise ConfigError(f"replicas must be 1..26, got {count!r}")
    return [service] + [f"{service}-{chr(ord('a') + i)}" for i in range(1, count)]


class GatewayedStack:
    """Base of the stacks: subclasses fill in the specs and roles in ``__init__``."""

    backend: Backend
    data_dir: Path
    model_name: str
    model_base_path: Path
    checkpoint_dir: Path | None
    specs: dict[str, ServiceSpec]
    replicas: list[str]
    trainer: str | None
    dr_site: str | None
    recovery: Recovery = "chaoskit"
    goldens: Goldens
    dr_config: DRConfig
    objectives: Objectives
    signature_name: str | None = None
    serving_port: str = "rest"
    """The named port of each replica where TF Serving's REST API answers."""
    grpc_port: str = "grpc"
    """The named port where a replica answers TF Serving's gRPC API, when it has one."""
    probe_protocol: str = "rest"
    """How the DR engine probes each replica: "rest", or "grpc" through the replica's
    second proxy (``<replica>-grpc``, which network faults on the replica cut too)."""
    dr_site_port: str = "http"

    gateway: Gateway | None = None

    @property
    def repository(self) -> Path:
        """The local backup repository of the store guard."""
        return self.data_dir / "backups"

    password_file: Path | None = None
    """The repository's password file; None: ``<repository>.password``, made when missing."""
    writer_password_file_setting: Path | None = None

    @property
    def writer_password_file(self) -> Path:
        """The password of the write-only key the backup agent and the replicator use
        (default ``<repository>.writer-password``, made with the key when missing)."""
        if self.writer_password_file_setting is not None:
            return self.writer_password_file_setting
        return self.repository.with_name(self.repository.name + ".writer-password")

    def describe(self) -> dict[str, object]:
        """What the journal records of the stack under test (``stack.started``)."""
        return {"stack": type(self).__name__, "model": self.model_name,
                "replicas": self.replicas, "trainer": self.trainer, "dr_site": self.dr_site,
                "recovery": self.recovery}  # fmt: skip

    @property
    def services(self) -> list[str]:
        return list(self.specs)

    @property
    def storage_roots(self) -> list[Path]:
        roots = [self.data_dir, self.model_base_path]
        return roots + ([self.checkpoint_dir] if self.checkpoint_dir is not None else [])

    def _start_services(self) -> None:
        """Trainer first (it exports the first version serving needs), then the DR site and
        other services, then the replicas in parallel, then the gateway."""
        first = [n for n in (self.trainer, self.dr_site) if n is not None]
        others = [n for n in self.specs if n not in first and n not in self.replicas]
        for name in first + others:
            self.backend.start(self.specs[name])
        start_replicas = getattr(self.backend, "start_replicas", None)
        if start_replicas is not None:  # an orchestrator: one service, N tasks
            start_replicas([self.specs[r] for r in self.replicas])
        else:
            with ThreadPoolExecutor(len(self.replicas)) as pool:
                for started in [pool.submit(self.backend.start, self.specs[r])
                                for r in self.replicas]:  # fmt: skip
                    started.result()
        endpoints = {r: self.backend.endpoint(r, self.serving_port) for r in self.replicas}
        links = {}
        if self.dr_site is not None:
            links[self.dr_site] = self.backend.endpoint(self.dr_site, self.dr_site_port)
        if self.probe_protocol == "grpc":
            for replica in self.replicas:
                links[replica + GRPC_LINK_SUFFIX] = self.backend.endpoint(replica, self.grpc_port)
        self.gateway = Gateway(endpoints, links=links)

    @property
    def toxiproxy_url(self) -> str | None:
        """The Toxiproxy API holding this stack's proxies (network faults use it)."""
        return None if self.gateway is None else self.gateway.url

    def _client(self, endpoint: tuple[str, int], timeout: float) -> ServingClient:
        return ServingClient(
            *endpoint, self.model_name, timeout=timeout, signature_name=self.signature_name
        )

    def client(self, *, timeout: float = 5.0) -> ServingClient:
        """Serving as clients see it: through the gateway (or directly, before it exists)."""
        if self.gateway is None:
            return self.direct_client(self.replicas[0], timeout=timeout)
        return self._client(self.gateway.endpoint(), timeout)

    def replica_client(self, replica: str, *, timeout: float = 5.0) -> ServingClient:
        """One replica as the gateway reaches it: through its proxy, where links break."""
        if self.gateway is None:
            return self.direct_client(replica, timeout=timeout)
        return self._client(self.gateway.replica_endpoint(replica), timeout)

    def direct_client(self, replica: str, *, timeout: float = 5.0) -> ServingClient:
        """One replica on its own port, bypassing every proxy (tells link from process)."""
        return self._client(self.backend.endpoint(replica, self.serving_port), timeout)

    def probe_client(self, replica: str, *, timeout: float = 5.0) -> Any:
        """What the DR engine probes *replica* with, through its proxies: a REST client,
        or a gRPC one (a ``GrpcServingClient``) when the stack is probed over gRPC."""
        if self.probe_protocol != "grpc" or self.gateway is None:
            if len(self.replicas) == 1:
                return self.client(timeout=timeout)  # one replica: what clients reach
            return self.replica_client(replica, timeout=timeout)
        from chaoskit.serving.grpc_client import GrpcServingClient  # its stubs import TF

        return GrpcServingClient(*self.gateway.link_endpoint(replica + GRPC_LINK_SUFFIX),
                                 self.model_name, timeout=timeout,
                                 signature_name=self.signature_name)  # fmt: skip

    def grpc_client(self, replica: str, *, timeout: float = 5.0) -> GrpcServingClient | None:
        """One replica's gRPC API on its own port, or None when it has no ``grpc`` port."""
        if self.grpc_port not in self.specs[replica].ports:
            return None
        from chaoskit.serving.grpc_client import GrpcServingClient  # its stubs import TF

        return GrpcServingClient(*self.backend.endpoint(replica, self.grpc_port),
                                 self.model_name, timeout=timeout,
                                 signature_name=self.signature_name)  # fmt: skip

    def dr_site_endpoint(self) -> tuple[str, int]:
        """The DR site as the backup agent reaches it: through its proxy, where links break."""
        if self.dr_site is None:
            raise StackError("this stack has no DR site (no service with role 'dr-site')")
        if self.gateway is None:
            return self.backend.endpoint(self.dr_site, self.dr_site_port)
        return self.gateway.link_endpoint(self.dr_site)

    def ensure_running(self) -> list[str]:
        """Between experiments: restart what is not running, route the gateway to the
        primary replica again; returns what it had to repair."""
        repaired = []
        for name in self.specs:
            if self.backend.status(name) != "running":
                self.backend.restart(name)
                repaired.append(name)
        rebalance = getattr(self.backend, "rebalance", None)  # an orchestrator's placement
        if rebalance is not None:
            repaired += rebalance()
        if self.gateway is not None:
            for replica in self.replicas:
                self.gateway.put_back(replica)
            if self.gateway.route_to(self.gateway.primary):
                repaired.append(GATEWAY)
        return repaired

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.close()
            self.gateway = None
        self.backend.close()
