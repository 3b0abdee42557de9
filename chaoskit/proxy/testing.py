"""Small loopback servers and waits for testing code that runs through a proxy.

Used by chaoskit's own tests and benchmarks, and handy for experiments that need a
known upstream: an echo server, a server that sends a fixed payload and closes, and
:func:`serving` to run any ``socketserver`` server (a DR site, an HTTP stand-in) in a
thread for the length of a ``with`` block.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

_Server = TypeVar("_Server", bound=socketserver.BaseServer)


@contextmanager
def serving(server: _Server) -> Iterator[_Server]:
    """*server* answering in a thread; shut down, closed and joined at the end."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005,
               what: str = "condition") -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class LoopbackServer:
    """A threaded TCP server on 127.0.0.1 running ``handler(conn)`` per connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self._handler = handler
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(512)
        self.port: int = self._sock.getsockname()[1]
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.accepted = 0
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self.accepted += 1
                self._conns.add(conn)
                thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
                self._threads = [t for t in self._threads if t.is_alive()]
                thread.start()  # under the lock: a thread in the list can always be joined
                self._threads.append(thread)

    def _run(self, conn: socket.socket) -> None:
        try:
            self._handler(conn)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def wait_connections_closed(self, timeout: float = 5.0) -> bool:
        """Wait until every connection accepted so far was closed by its peer and its
        handler thread ended; False if one is still open after *timeout*."""
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        return not any(t.is_alive() for t in threads)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = list(self._conns)
            threads = list(self._threads)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._accept_thread.join(5)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _echo(conn: socket.socket) -> None:
    while True:
        data = conn.recv(262144)
        if not data:
            return
        conn.sendall(data)


def echo_server() -> LoopbackServer:
    """Echoes every byte back; closes when the client half-closes."""
    return LoopbackServer(_echo)


def payload_server(payload: bytes) -> LoopbackServer:
    """Sends ``payload`` to each client, then closes its side."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(10)
        while conn.recv(65536):
            pass

    return LoopbackServer(handler)


def recv_all(sock: socket.socket, limit: int | None = None) -> bytes:
    """Read until EOF (or ``limit`` bytes); honours the socket's timeout."""
    chunks = []
    total = 0
    while limit is None or total < limit:
        data = sock.recv(262144)
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)
