"""Proxies and their toxics: the state behind every Toxiproxy API call.

All methods run on the server's event loop; the HTTP API awaits them directly and
:class:`~chaoskit.proxy.server.ProxyServer` calls them from other threads.  Bodies are
the decoded JSON of the API, so both paths share one set of rules and error codes.
Toxic changes are synchronous: they never wait on traffic, so removing a toxic under
heavy load answers at once.
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from typing import Any

from chaoskit.proxy.link import Connection
from chaoskit.proxy.model import (
    STREAMS,
    ApiError,
    Toxic,
    bad_request,
    format_address,
    missing_field,
    parse_address,
    proxy_not_found,
    toxic_not_found,
)

_RESOLVE_TIMEOUT = 5.0
_ACCEPT_RETRY = 0.1


class Proxy:
    """One named proxy: a listener, its upstream address, toxics and live connections."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random, name: str,
                 listen: str, upstream: str) -> None:
        self.loop = loop
        self.rng = rng
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.upstream_addr = parse_address(upstream, "upstream")
        self.enabled = False
        self.toxics: list[Toxic] = []
        self.chains: dict[str, list[Toxic]] = {s: [] for s in STREAMS}
        self.version = 0
        self.connections: set[Connection] = set()
        self.listener: socket.socket | None = None
        self.rx = dict.fromkeys(STREAMS, 0)
        self.tx = dict.fromkeys(STREAMS, 0)
        self.connections_total = 0
        self.upstream_failures = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics],
        }

    async def start(self) -> None:
        """Bind the listen address; a port of 0 becomes the real port in ``listen``."""
        if self.enabled:
            return
        host, port = parse_address(self.listen, "listen")
        try:
            infos = await asyncio.wait_for(
                self.loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                      flags=socket.AI_PASSIVE),
                _RESOLVE_TIMEOUT,
            )
        except (OSError, UnicodeError, TimeoutError) as e:
            raise ApiError(f"listen tcp {self.listen}: cannot resolve host: {e}", 500) from e
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            reason = "address already in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise ApiError(f"listen tcp {self.listen}: bind: {reason}", 500) from e
        self.loop.add_reader(sock.fileno(), self._accept, sock)
        self.listener = sock
        bound = sock.getsockname()
        self.listen = format_address(bound[0], bound[1])
        self.enabled = True

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(128):
            try:
                client, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError:
                # e.g. out of file descriptors: back off instead of spinning on the event
                self.loop.remove_reader(sock.fileno())
                self.loop.call_later(_ACCEPT_RETRY, self._resume_accepting, sock)
                return
            self.connections.add(Connection(self, client))
            self.connections_total += 1

    def _resume_accepting(self, sock: socket.socket) -> None:
        if self.listener is sock:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    def stop(self, drop: bool = False) -> None:
        """Close the listener and every connection (as Toxiproxy's disable does).

        ``drop`` discards data not yet delivered (server shutdown) instead of flushing it.
        """
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
        for conn in list(self.connections):
            conn.close(drop=drop)
        self.enabled = False

    # -- toxics -------------------------------------------------------------------------
    def find_toxic(self, name: str) -> Toxic:
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        raise toxic_not_found(name)

    def add_toxic(self, body: Any) -> Toxic:
        toxic = Toxic.from_json(body)
        if any(t.name == toxic.name for t in self.toxics):
            raise ApiError(f"toxic already exists: {toxic.name}", 409)
        self.toxics.append(toxic)
        self._changed()
        return toxic

    def update_toxic(self, name: str, body: Any) -> Toxic:
        toxic = self.find_toxic(name)
        toxic.toxicity, toxic.attributes = toxic.updated(body)
        self._changed()
        return toxic

    def remove_toxic(self, name: str) -> None:
        self.toxics.remove(self.find_toxic(name))
        self._changed()

    def reset_toxics(self) -> None:
        if self.toxics:
            self.toxics.clear()
            self._changed()

    def _changed(self) -> None:
        self.chains = {s: [t for t in self.toxics if t.stream == s] for s in STREAMS}
        self.version += 1
        for conn in list(self.connections):
            conn.up.on_change()
            conn.down.on_change()


def _proxy_fields(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request(f"proxy must be a JSON object, not {type(body).__name__}")
    for key in ("name", "listen", "upstream"):
        if key in body and not isinstance(body[key], str):
            raise bad_request(f"{key}={body[key]!r} is not a string")
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise bad_request(f"enabled={body['enabled']!r} is not a boolean")
    return body


class Registry:
    """All proxies of one server, by name."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seed: int | None = None) -> None:
        self.loop = loop
        self.rng = random.Random(seed)
        self.proxies: dict[str, Proxy] = {}
        self._lock = asyncio.Lock()  # creation binds sockets across awaits

    def get(self, name: str) -> Proxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise proxy_not_found(name) from None

    def _new(self, body: dict[str, Any], where: str = "") -> tuple[Proxy, bool]:
        if not body.get("name"):
            raise missing_field("name" + where)
        if not body.get("upstream"):
            raise missing_field("upstream" + where)
        listen = body.get("listen") or "127.0.0.1:0"
        parse_address(listen, "listen")
        proxy = Proxy(self.loop, self.rng, body["name"], listen, body["upstream"])
        return proxy, body.get("enabled", True)

    async def create(self, body: Any) -> Proxy:
        proxy, enabled = self._new(_proxy_fields(body))
        async with self._lock:
            if proxy.name in self.proxies:
                raise ApiError(f"proxy already exists: {proxy.name}", 409)
            if enabled:
                await proxy.start()
            self.proxies[proxy.name] = proxy
        return proxy

    async def populate(self, body: Any) -> list[Proxy]:
        """Create or replace a list of proxies; ones with equal listen/upstream are kept."""
        if not isinstance(body, list):
            raise bad_request(f"populate needs a JSON list, not {type(body).__name__}")
        planned = []
        names: set[str] = set()
        for i, item in enumerate(body, 1):
            proxy, enabled = self._new(_proxy_fields(item), f" at proxy {i}")
            if proxy.name in names:
                raise ApiError(f"duplicate proxy name {proxy.name!r}", 400)
            names.add(proxy.name)
            planned.append((proxy, enabled))
        result = []
        async with self._lock:
            for proxy, enabled in planned:
                old = self.proxies.get(proxy.name)
                if old is not None and old.listen == proxy.listen \
                        and old.upstream == proxy.upstream:
                    result.append(old)
                    continue
                if old is not None:
                    old.stop()
                    del self.proxies[old.name]
                if enabled:
                    await proxy.start()
                self.proxies[proxy.name] = proxy
                result.append(proxy)
        return result

    async def update(self, name: str, body: Any) -> Proxy:
        """Change listen, upstream or enabled; a changed address drops connections."""
        proxy = self.get(name)
        body = _proxy_fields(body)
        listen = body.get("listen") or proxy.listen
        upstream = body.get("upstream") or proxy.upstream
        enabled = body.get("enabled", proxy.enabled)
        parse_address(listen, "listen")
        upstream_addr = parse_address(upstream, "upstream")
        async with self._lock:
            if listen != proxy.listen or upstream != proxy.upstream:
                proxy.stop()
                proxy.listen, proxy.upstream, proxy.upstream_addr = listen, upstream, upstream_addr
            if enabled and not proxy.enabled:
                await proxy.start()
            elif not enabled and proxy.enabled:
                proxy.stop()
        return proxy

    def delete(self, name: str) -> None:
        self.get(name).stop()
        del self.proxies[name]

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        for proxy in list(self.proxies.values()):
            proxy.reset_toxics()
            if not proxy.enabled:
                async with self._lock:
                    await proxy.start()

    def close_all(self) -> None:
        """Server shutdown: close every listener and socket now."""
        for proxy in self.proxies.values():
            proxy.stop(drop=True)
