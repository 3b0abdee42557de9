"""ProxyServer: the embedded Toxiproxy-compatible server, in-process or from the CLI.

It runs one asyncio loop in a daemon thread carrying both the HTTP API and every
proxied connection.  The Python methods are thread-safe: each runs the same
operation the HTTP API runs, on the loop, and waits for its answer, so callers get
exactly the API's validation and raise :class:`ApiError` (a ``ProxyError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from chaoskit.errors import ConfigError, ProxyError
from chaoskit.proxy.api import ApiHandler
from chaoskit.proxy.client import TOXIPROXY_URL_ENV, ToxiproxyAPI, toxic_body
from chaoskit.proxy.model import ApiError
from chaoskit.proxy.registry import Proxy, Registry

T = TypeVar("T")

CALL_TIMEOUT = 30.0


class ProxyServer:
    """A Toxiproxy API on ``host:port`` (port 0 picks a free one) plus its proxies.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.  ``seed`` makes
    toxicity draws and jitter reproducible; ``config`` is a JSON file of proxies, as
    for ``POST /populate``, loaded at start.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8474, *, seed: int | None = None,
                 config: str | Path | None = None) -> None:
        self.host = host
        self._requested_port = port
        self.seed = seed
        self.config = Path(config) if config is not None else None
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._registry: Registry | None = None
        self._api_server: asyncio.Server | None = None
        self._stopped = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> ProxyServer:
        """Listen and serve in a background thread; raise ProxyError if that fails."""
        if self.running:
            return self
        config = self._read_config()
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stopped.clear()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open(config))
            except BaseException as e:  # reported to start() below
                failure.append(e)
                ready.set()
                self._close_loop(loop)
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._close_loop(loop)

        self._thread = threading.Thread(target=run, name=f"chaoskit-proxy-{self.host}",
                                        daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            self._loop = None
            err = failure[0]
            if isinstance(err, ChaosKitErrorTypes):
                raise err
            raise ProxyError(f"cannot start the proxy server: {err}") from err
        return self

    async def _open(self, config: list[Any] | None) -> None:
        loop = asyncio.get_running_loop()
        self._registry = Registry(loop, self.seed)
        handler = ApiHandler(self._registry)
        try:
            self._api_server = await asyncio.start_server(
                handler.serve, self.host, self._requested_port, reuse_address=True)
        except OSError as e:
            where = f"{self.host}:{self._requested_port}"
            if e.errno == errno.EADDRINUSE:
                raise ProxyError(f"cannot listen on {where}: address already in use") from e
            raise ProxyError(f"cannot listen on {where}: {e.strerror or e}") from e
        self.port = self._api_server.sockets[0].getsockname()[1]
        if config is not None:
            try:
                await self._registry.populate(config)
            except ApiError as e:
                self._registry.close_all()
                self._api_server.close()
                raise ConfigError(f"proxy config {self.config}: {e}") from e

    def _read_config(self) -> list[Any] | None:
        if self.config is None:
            return None
        try:
            data = json.loads(self.config.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read proxy config {self.config}: {e.strerror}") from e
        except ValueError as e:
            raise ConfigError(f"proxy config {self.config} is not valid JSON: {e}") from e
        if not isinstance(data, list):
            raise ConfigError(f"proxy config {self.config} must be a JSON list of proxies")
        return data

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        for _ in range(3):  # transports closed by those tasks release their sockets
            loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(loop.shutdown_asyncgens())
        # the default executor's worker threads (name resolution) would otherwise live on
        # until the executor happened to be garbage-collected
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()

    def stop(self) -> None:
        """Close every proxy and connection and the API; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            async def shutdown() -> None:
                if self._registry is not None:
                    self._registry.close_all()
                if self._api_server is not None:
                    self._api_server.close()
                for _ in range(3):  # let accepts in flight and close callbacks finish
                    await asyncio.sleep(0)
                asyncio.get_running_loop().stop()

            asyncio.run_coroutine_threadsafe(shutdown(), loop)
            thread.join(timeout=CALL_TIMEOUT)
        self._thread = None
        self._loop = None
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` was called (the CLI's foreground mode)."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- thread-safe Python API ------------------------------------------------------------
    def _call(self, make: Callable[[Registry], Coroutine[Any, Any, T]]) -> T:
        loop, registry = self._loop, self._registry
        if loop is None or registry is None or not self.running:
            raise ProxyError("the proxy server is not running")
        try:
            if asyncio.get_running_loop() is loop:
                raise ProxyError("ProxyServer methods cannot be called from its own loop")
        except RuntimeError:
            pass
        return asyncio.run_coroutine_threadsafe(make(registry), loop).result(CALL_TIMEOUT)

    def _sync(self, fn: Callable[[Registry], T]) -> T:
        async def run(registry: Registry) -> T:
            return fn(registry)

        return self._call(run)

    def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0",
                     enabled: bool = True) -> dict[str, Any]:
        body = {"name": name, "upstream": upstream, "listen": listen, "enabled": enabled}
        return self._call(lambda r: _json(r.create(body)))

    def populate(self, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async def run(r: Registry) -> list[dict[str, Any]]:
            return [p.to_json() for p in await r.populate(proxies)]

        return self._call(run)

    def proxies(self) -> dict[str, dict[str, Any]]:
        return self._sync(lambda r: {n: p.to_json() for n, p in r.proxies.items()})

    def get_proxy(self, name: str) -> dict[str, Any]:
        return self._sync(lambda r: r.get(name).to_json())

    def update_proxy(self, name: str, **fields: Any) -> dict[str, Any]:
        return self._call(lambda r: _json(r.update(name, fields)))

    def delete_proxy(self, name: str) -> None:
        self._sync(lambda r: r.delete(name))

    def add_toxic(self, proxy: str, type: str, *, stream: str = "downstream",
                  toxicity: float = 1.0, attributes: dict[str, Any] | None = None,
                  name: str | None = None) -> dict[str, Any]:
        body = toxic_body(type, stream, toxicity, attributes, name)
        return self._sync(lambda r: r.get(proxy).add_toxic(body).to_json())

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return self._sync(lambda r: [t.to_json() for t in r.get(proxy).toxics])

    def update_toxic(self, proxy: str, name: str, **fields: Any) -> dict[str, Any]:
        return self._sync(lambda r: r.get(proxy).update_toxic(name, fields).to_json())

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._sync(lambda r: r.get(proxy).remove_toxic(name))

    def reset(self) -> None:
        self._call(lambda r: r.reset())

    def connection_count(self, proxy: str) -> int:
        """Open client connections of a proxy (for tests waiting on the data plane)."""
        return self._sync(lambda r: len(r.get(proxy).connections))


ChaosKitErrorTypes = (ProxyError, ConfigError)


@contextlib.contextmanager
def use_toxiproxy(*, seed: int | None = None) -> Iterator[ToxiproxyAPI]:
    """The Toxiproxy API to use for a block: ``$TOXIPROXY_URL`` if set (a real
    toxiproxy-server, checked to answer), else an embedded server on a free port that
    is stopped when the block ends."""
    url = os.environ.get(TOXIPROXY_URL_ENV)
    if url:
        api = ToxiproxyAPI(url)
        api.version()  # fail early, naming the URL, if nothing answers there
        yield api
        return
    with ProxyServer(port=0, seed=seed) as server:
        yield ToxiproxyAPI(server.url)


async def _json(op: Awaitable[Proxy]) -> dict[str, Any]:
    return (await op).to_json()
