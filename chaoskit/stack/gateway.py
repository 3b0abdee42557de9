"""The gateway: an HTTP router in front of the serving replicas' Toxiproxy proxies.

Clients reach serving through the router (:mod:`chaoskit.stack.router`), which sends
each request to the routed replica and retries an idempotent one on another; each
replica is reached through a proxy named after it (``serving``, ``serving-b``), which is
where network faults act; other links (``dr-site``: the backup agent to the DR site) get
a proxy of their own.  Failover routes to another replica and takes the failed one out
of rotation.  The proxies live in the embedded Toxiproxy-compatible server, or in a real
toxiproxy-server when ``$TOXIPROXY_URL`` names one.
"""

from __future__ import annotations

import os
import threading

from chaoskit.errors import ProxyError, StackError
from chaoskit.proxy.client import TOXIPROXY_URL_ENV, ToxiproxyAPI
from chaoskit.stack.router import Router

GATEWAY = "gateway"
GRPC_LINK_SUFFIX = "-grpc"
"""A replica's gRPC port is reached through the proxy ``<replica>-grpc`` (when its stack
is probed over gRPC); network faults on the replica's proxy act on both."""


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class Gateway:
    """Owns the router and the replica proxies; remembers which replica the gateway uses."""

    def __init__(
        self,
        replicas: dict[str, tuple[str, int]],
        *,
        links: dict[str, tuple[str, int]] | None = None,
        seed: int | None = None,
    ) -> None:
        """*replicas*: service name -> (host, port) of its REST endpoint; first = primary.
        *links*: proxy name -> (host, port) of other services reached through a proxy."""
        if not replicas:
            raise StackError("a gateway needs at least one replica")
        self._server = None
        url = os.environ.get(TOXIPROXY_URL_ENV)
        if not url:
            from chaoskit.proxy.server import ProxyServer

            self._server = ProxyServer(port=0, seed=seed).start()
            url = self._server.url
        self.url = url
        self.api = ToxiproxyAPI(url)
        self.primary = next(iter(replicas))
        self._lock = threading.Lock()
        self._listen: dict[str, str] = {}
        self._links: dict[str, str] = {}
        self._router: Router | None = None
        try:
            for name, (host, port) in replicas.items():
                self._listen[name] = self._create(name, host, port)
            for name, (host, port) in (links or {}).items():
                self._links[name] = self._create(name, host, port)
        except ProxyError:
            self.close()
            raise
        self._router = Router({r: _host_port(listen) for r, listen in self._listen.items()})
        self.routed = self.primary

    def _create(self, name: str, host: str, port: int) -> str:
        """A fresh proxy *name* to host:port on a free local port; returns its listen address."""
        self._delete_if_present(name)
        return str(self.api.create_proxy(name, f"{host}:{port}", "127.0.0.1:0")["listen"])

    def _delete_if_present(self, name: str) -> None:
        if name in self.api.proxies():
            self.api.delete_proxy(name)

    @property
    def replicas(self) -> list[str]:
        return list(self._listen)

    def endpoint(self) -> tuple[str, int]:
        """Where clients connect."""
        assert self._router is not None, "the gateway is closed"
        return self._router.endpoint

    def replica_endpoint(self, replica: str) -> tuple[str, int]:
        """The replica as the gateway reaches it: through its (fault-injectable) proxy."""
        return _host_port(self._listen[replica])

    def link_endpoint(self, name: str) -> tuple[str, int]:
        """Another service as the stack reaches it: through its (fault-injectable) proxy."""
        return _host_port(self._links[name])

    def route_to(self, replica: str) -> bool:
        """Send the gateway's traffic to *replica*; False if it already went there."""
        with self._lock:
            if replica == self.routed:
                return False
            assert self._router is not None, "the gateway is closed"
            self._router.route_to(replica)
            self.routed = replica
            return True

    def take_out(self, replica: str) -> None:
        """Out of rotation (found failing): the router retries no request there."""
        if self._router is not None:
            self._router.take_out(replica)

    def put_back(self, replica: str) -> None:
        """Back in rotation (healed)."""
        if self._router is not None:
            self._router.put_back(replica)

    def close(self) -> None:
        """Stop the router; remove the proxies (an external server keeps running) or stop
        the embedded one."""
        if self._router is not None:
            self._router.close()
            self._router = None
        if self._server is not None:
            self._server.stop()
            self._server = None
            return
        for name in [*self._listen, *self._links]:
            try:
                self._delete_if_present(name)
            except ProxyError:
                pass
