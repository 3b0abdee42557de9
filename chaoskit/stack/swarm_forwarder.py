"""One address per service while Swarm replaces its tasks.

A task's published port (host mode) changes with every replacement, and may be on
another node.  The forwarder listens on this host at a fixed port per route (a service
and one of its ports) and sends each new connection to the route's current upstream,
which a follower thread re-reads every :data:`FOLLOW_INTERVAL` seconds (and the backend
at once after a restart).  It is chaoskit's embedded Toxiproxy-compatible server with no
toxics: a changed upstream drops the connections to the old one, which are dead anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from chaoskit.errors import BackendError
from chaoskit.stack.ports import HOST

FOLLOW_INTERVAL = 0.2
"""Seconds between reads of the upstreams (a replacement's longest delay to be reached)."""
DISCARD = f"{HOST}:9"
"""A route's upstream before its task runs: the discard port, which refuses."""


class Forwarder:
    def __init__(self, upstreams: Callable[[], dict[str, str]]) -> None:
        """*upstreams*: route -> ``host:port`` of its current task (routes whose task does
        not run are left out: they keep their last upstream, refused like a dead port)."""
        from chaoskit.proxy.server import ProxyServer

        self._upstreams = upstreams
        self._server: Any = ProxyServer(port=0).start()
        self._routes: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="swarm-forwarder", daemon=True)
        self._thread.start()

    def add(self, route: str, port: int) -> None:
        """Listen for *route* on this host's *port* (a no-op if it listens already)."""
        with self._lock:
            if route not in self._routes:
                self._server.create_proxy(route, DISCARD, f"{HOST}:{port}")
                self._routes[route] = DISCARD

    def follow(self) -> None:
        """Point every route at its current upstream now."""
        upstreams = self._upstreams()  # outside the lock: it takes the backend's
        with self._lock:
            for route, upstream in upstreams.items():
                if route in self._routes and self._routes[route] != upstream:
                    self._server.update_proxy(route, upstream=upstream)
                    self._routes[route] = upstream

    def _loop(self) -> None:
        while not self._stop.wait(FOLLOW_INTERVAL):
            try:
                self.follow()
            except BackendError:
                continue  # the engine hiccuped: the next round tries again

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.stop()
