"""The gateway: Toxiproxy proxies in front of the serving replicas.

Clients reach serving through the ``gateway`` proxy; each replica is reached through a
proxy named after it (``serving``, ``serving-b``), which is where network faults act;
other links (``dr-site``: the backup agent to the DR site) get a proxy of their own.
Failover re-points the gateway's upstream at another replica's proxy (Toxiproxy drops
the gateway's open connections when its upstream changes).  The proxies live in the
embedded Toxiproxy-compatible server, or in a real toxiproxy-server when
``$TOXIPROXY_URL`` names one.
"""

from __future__ import annotations

import os
import threading

from chaoskit.errors import ProxyError, StackError
from chaoskit.proxy.client import TOXIPROXY_URL_ENV, ToxiproxyAPI

GATEWAY = "gateway"


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class Gateway:
    """Owns the gateway and replica proxies; remembers which replica the gateway uses."""

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
        try:
            for name, (host, port) in replicas.items():
                self._listen[name] = self._create(name, host, port)
            for name, (host, port) in (links or {}).items():
                self._links[name] = self._create(name, host, port)
            self._delete_if_present(GATEWAY)
            made = self.api.create_proxy(GATEWAY, self._listen[self.primary], "127.0.0.1:0")
            self._gateway_listen = made["listen"]
        except ProxyError:
            self.close()
            raise
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
        return _host_port(self._gateway_listen)

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
            self.api.update_proxy(GATEWAY, upstream=self._listen[replica])
            self.routed = replica
            return True

    def close(self) -> None:
        """Remove the proxies (an external server keeps running) or stop the embedded one."""
        if self._server is not None:
            self._server.stop()
            self._server = None
            return
        for name in [GATEWAY, *self._listen, *self._links]:
            try:
                self._delete_if_present(name)
            except ProxyError:
                pass
