"""The data plane: one proxied TCP connection as two links, each running its toxics.

Every connection is a client socket and an upstream socket (each an
:class:`~chaoskit.proxy.endpoint.Endpoint`) joined by two :class:`Link` objects
(upstream = client→server, downstream = server→client).  A link with no active toxic
is *direct*: its endpoint moves data with ``splice(2)`` (or one write per read) and no
task, queue or timer is involved — which keeps bulk throughput and small-request
latency close to a direct connection.  When toxics apply, chunks go through a queue
drained by one pump task that re-reads the proxy's toxic chain whenever it is woken,
so toxics added, changed or removed through the API act on live connections at once.
Everything here runs on the server's single event-loop thread; nothing needs a lock.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from chaoskit.proxy.endpoint import Endpoint
from chaoskit.proxy.model import Toxic, slice_offsets

if TYPE_CHECKING:
    from chaoskit.proxy.server import Proxy

HIGH_WATER = 1 << 20
"""Queued bytes at which a link stops reading its source (backpressure)."""

_LINGER_RESET = struct.pack("ii", 1, 0)


class _State:
    """What one link remembers about one toxic: its toxicity draw and running counters."""

    __slots__ = ("enabled", "toxicity", "sent", "next_free", "timer", "timer_ms")

    def __init__(self, enabled: bool, toxicity: float) -> None:
        self.enabled = enabled
        self.toxicity = toxicity
        self.sent = 0  # limit_data: bytes let through so far
        self.next_free = 0.0  # bandwidth: loop time when the next byte may leave
        self.timer: asyncio.TimerHandle | None = None  # timeout / reset_peer
        self.timer_ms = -1

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Link:
    """One direction of a connection: reads ``src``, applies the toxics, writes ``dst``."""

    def __init__(self, conn: Connection, direction: str) -> None:
        self.conn = conn
        self.direction = direction
        self.proxy = conn.proxy
        self.loop = conn.loop
        self.src: Endpoint | None = None
        self.dst: Endpoint | None = None
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.task: asyncio.Task[None] | None = None
        self.eof_at: float | None = None
        self.finished = False
        self.dst_paused = False
        self.src_paused = False
        self.states: dict[Toxic, _State] = {}
        self._cache_version = -1
        self._cache: list[tuple[Toxic, _State]] = []
        self._waiter: asyncio.Future[None] | None = None
        self._idle = False

    # -- set-up and toxic bookkeeping -------------------------------------------------
    def start(self, src: Endpoint, dst: Endpoint) -> None:
        self.src, self.dst = src, dst
        self.on_change()

    def direct(self) -> bool:
        """True while data may bypass the toxics (and Python: the zero-copy path)."""
        return self.task is None and self.eof_at is None and (
            not self.proxy.chains[self.direction] or not self.active())

    def active(self) -> list[tuple[Toxic, _State]]:
        """The toxics of this direction that apply to this connection (toxicity drawn once)."""
        version = self.proxy.version
        if version == self._cache_version:
            return self._cache
        chain = self.proxy.chains[self.direction]
        result = []
        for toxic in chain:
            state = self.states.get(toxic)
            if state is None or state.toxicity != toxic.toxicity:
                enabled = self.proxy.rng.random() < toxic.toxicity
                if state is None:
                    state = self.states[toxic] = _State(enabled, toxic.toxicity)
                state.enabled, state.toxicity = enabled, toxic.toxicity
            if state.enabled:
                result.append((toxic, state))
        for gone in [t for t in self.states if t not in chain]:
            self.states.pop(gone).cancel()
        self._cache_version, self._cache = version, result
        return result

    def on_change(self) -> None:
        """The proxy's toxics changed: redraw, re-arm timers and wake the pump."""
        if self.src is None or self.conn.closed:
            return
        for toxic, state in self.active():
            if toxic.type == "timeout":
                ms = toxic.attributes["timeout"]
                if state.timer_ms != ms:
                    state.cancel()
                    state.timer_ms = ms
                    if ms > 0:
                        state.timer = self.loop.call_later(ms / 1000, self.conn.close)
        for state in self.states.values():
            if not state.enabled:
                state.cancel()
                state.timer_ms = -1
        if self.queue or self.eof_at is not None:
            self._ensure_task()
        self.wake()

    # -- input from the source transport --------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.proxy.rx[self.direction] += len(data)
        if self.task is None and (not self.proxy.chains[self.direction] or not self.active()):
            self._send(data)
            return
        self.queue.append((self.loop.time(), data))
        self.queued += len(data)
        self._ensure_task()
        if self._idle:
            self.wake()
        self.update_reading()

    def feed_eof(self) -> None:
        self.eof_at = self.loop.time()
        if self.task is None and not self.active():
            self._propagate_eof()
            return
        self._ensure_task()
        self.wake()

    def set_dst_paused(self, paused: bool) -> None:
        self.dst_paused = paused
        self.update_reading()
        if not paused:
            self.wake()

    def update_reading(self) -> None:
        src = self.src
        if src is None or src.is_closing():
            return
        want = self.dst_paused or self.queued > HIGH_WATER
        if want != self.src_paused:
            self.src_paused = want
            if want:
                src.pause_reading()
            else:
                src.resume_reading()

    # -- the pump -------------------------------------------------------------------------
    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, deadline: float | None) -> None:
        """Sleep until ``deadline`` (loop time) or until woken, whichever is first."""
        fut = self._waiter = self.loop.create_future()
        handle = self.loop.call_at(deadline, _resolve, fut) if deadline is not None else None
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            self._waiter = None

    def _ensure_task(self) -> None:
        if self.task is None and not self.conn.closed:
            self.task = self.loop.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            while not self.conn.closed:
                if self.queue:
                    t0, data = self.queue.popleft()
                    await self._process(t0, data)
                    self.queued -= len(data)
                    self.update_reading()
                elif self.eof_at is not None:
                    await self._finish_eof()
                    return
                elif not self.active():
                    return  # back to the direct path
                else:
                    self._idle = True
                    try:
                        await self._wait(None)
                    finally:
                        self._idle = False
        finally:
            self.task = None

    async def _process(self, t0: float, data: bytes) -> None:
        """Carry one chunk through the current toxics; re-evaluated after every wake-up."""
        drawn: dict[Toxic, tuple[tuple[int, int], float]] = {}
        while True:
            if self.conn.closed:
                return
            deadline = t0
            for toxic, state in self.active():
                kind = toxic.type
                if kind == "timeout":
                    return  # held: data is dropped until the toxic goes or the timer fires
                if kind == "reset_peer":
                    if state.timer is None:
                        ms = toxic.attributes["timeout"]
                        state.timer = self.loop.call_later(ms / 1000, self.conn.close, True)
                    return
                if kind == "latency":
                    key = (toxic.attributes["latency"], toxic.attributes["jitter"])
                    entry = drawn.get(toxic)
                    if entry is None or entry[0] != key:
                        jitter = self.proxy.rng.uniform(-key[1], key[1]) if key[1] else 0.0
                        entry = drawn[toxic] = (key, max(0.0, key[0] + jitter) / 1000)
                    deadline += entry[1]
            if self.dst_paused:
                await self._wait(None)
            elif deadline > self.loop.time():
                await self._wait(deadline)
            else:
                break
        limits = [(t, s) for t, s in self.active() if t.type == "limit_data"]
        if limits:
            remaining = min(t.attributes["bytes"] - s.sent for t, s in limits)
            if remaining <= 0:
                self.conn.close()
                return
            data = data[:remaining]
        await self._write_sliced(data)
        if limits:
            for _, state in limits:
                state.sent += len(data)
            if any(t.attributes["bytes"] - s.sent <= 0 for t, s in limits):
                self.conn.close()

    def _first(self, kind: str) -> tuple[Toxic, _State] | None:
        for toxic, state in self.active():
            if toxic.type == kind:
                return toxic, state
        return None

    async def _write_sliced(self, data: bytes) -> None:
        slicer = self._first("slicer")
        if slicer is None:
            await self._write_paced(data)
            return
        attrs = slicer[0].attributes
        cuts = slice_offsets(len(data), attrs["average_size"], attrs["size_variation"],
                             self.proxy.rng)
        start = 0
        for i, end in enumerate(cuts):
            await self._write_paced(data[start:end])
            start = end
            if i == len(cuts) - 1:
                return
            while not self.conn.closed:
                current = self._first("slicer")
                if current is None:  # removed mid-chunk: the rest goes at once
                    await self._write_paced(data[start:])
                    return
                pause_until = self.loop.time() + current[0].attributes["delay"] / 1e6
                if pause_until <= self.loop.time():
                    break
                await self._wait(pause_until)
                if self.loop.time() >= pause_until:
                    break
            if self.conn.closed:
                return

    async def _write_paced(self, data: bytes) -> None:
        """Write ``data``, at the bandwidth toxic's rate when one applies.

        Each piece (at most 100 ms worth) waits for its own transmission time before it
        leaves, as Toxiproxy does, so a limited transfer takes size/rate from the start.
        """
        release: float | None = None
        release_rate = 0
        while data and not self.conn.closed:
            if self.dst_paused:
                await self._wait(None)
                continue
            rates = [t.attributes["rate"] for t, _ in self.active()
                     if t.type == "bandwidth" and t.attributes["rate"] > 0]
            if not rates:
                self._send(data)
                return
            bw = self._first("bandwidth")
            assert bw is not None
            state = bw[1]
            rate = min(rates) * 1000  # KB/s -> bytes/s, as Toxiproxy counts
            size = max(1, rate // 10)
            now = self.loop.time()
            if release is None or release_rate != rate:
                release = max(state.next_free, now) + min(size, len(data)) / rate
                release_rate = rate
            if release > now:
                await self._wait(release)
                continue
            self._send(data[:size])
            data = data[size:]
            state.next_free = release
            release = None

    def _send(self, data: bytes) -> None:
        dst = self.dst
        if dst is not None and not dst.is_closing():
            dst.write(data)
            self.proxy.tx[self.direction] += len(data)

    async def _finish_eof(self) -> None:
        """The source closed: pass the close on, after any slow_close delay."""
        while not self.conn.closed:
            deadline = self.eof_at or self.loop.time()
            held = False
            for toxic, _ in self.active():
                if toxic.type in ("timeout", "reset_peer"):
                    held = True
                elif toxic.type == "slow_close":
                    deadline += toxic.attributes["delay"] / 1000
            if held:
                await self._wait(None)
            elif deadline > self.loop.time():
                await self._wait(deadline)
            else:
                self._propagate_eof()
                return

    def _propagate_eof(self) -> None:
        self.finished = True
        other = self.conn.down if self is self.conn.up else self.conn.up
        dst = self.dst
        if other.finished or dst is None or not dst.can_write_eof():
            self.conn.close()
        elif not dst.is_closing():
            dst.write_eof()

    def stop(self) -> None:
        for state in self.states.values():
            state.cancel()
        self.wake()


class Connection:
    """A client connection and its upstream connection, joined by two links."""

    def __init__(self, proxy: Proxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.up = Link(self, "upstream")
        self.down = Link(self, "downstream")
        self.client = Endpoint(self.loop, client)
        self.client.reader, self.client.writer = self.up, self.down
        self.upstream: Endpoint | None = None
        self.closed = False
        self.connect_task: asyncio.Task[None] | None = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        host, port = self.proxy.upstream_addr
        host = host or "127.0.0.1"
        sock = None
        try:
            try:
                family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 \
                    else socket.AF_INET
                address: Any = (host, port)
            except ValueError:
                infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, address = infos[0][0], infos[0][4]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            await self.loop.sock_connect(sock, address)
        except asyncio.CancelledError:
            if sock is not None:
                sock.close()
            raise
        except (OSError, ValueError, UnicodeError):
            if sock is not None:
                sock.close()
            self.proxy.upstream_failures += 1
            self.close()
            return
        if self.closed:
            sock.close()
            return
        upstream = self.upstream = Endpoint(self.loop, sock)
        upstream.reader, upstream.writer = self.down, self.up
        self.client.peer, upstream.peer = upstream, self.client
        self.up.start(self.client, upstream)
        self.down.start(upstream, self.client)
        self.client.start()
        upstream.start()

    def close(self, reset: bool = False, drop: bool = False) -> None:
        """Close both sides; ``reset`` sends a TCP RST instead of a FIN (reset_peer).

        Without ``drop`` what the proxy still holds for a side is delivered first.
        """
        if self.closed:
            return
        self.closed = True
        self.proxy.connections.discard(self)
        for link in (self.up, self.down):
            link.stop()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        for endpoint in (self.client, self.upstream):
            if endpoint is None:
                continue
            if reset:
                try:
                    endpoint.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
                endpoint.abort()
            elif drop:
                endpoint.abort()
            else:
                endpoint.close()

    def lost(self, exc: Exception | None) -> None:
        self.close(reset=exc is not None)
