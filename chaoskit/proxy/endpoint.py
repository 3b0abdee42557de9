"""One proxied socket on the event loop, with a zero-copy path for untouched data.

asyncio's transports copy every chunk through Python; for a proxy that is most of its
CPU.  An :class:`Endpoint` owns a non-blocking socket directly: while the link reading
it has no toxic to apply, data moves with ``splice(2)`` — socket → pipe → peer socket —
without entering Python (a third of the CPU per byte on loopback).  Otherwise it
reads chunks and hands them to the link, whose toxics decide when to :meth:`write`
them.  Writes drain the incoming pipe before the Python buffer, so bytes keep their
order however a connection switches between the two paths.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaoskit.proxy.link import Link

READ_SIZE = 256 << 10
"""Bytes per recv() when data goes through Python (toxics apply)."""
SPLICE_SIZE = 1 << 20
"""Pipe size and bytes per splice() on the zero-copy path (Linux's default pipe maximum)."""
HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
CLOSE_FLUSH_TIMEOUT = 30.0
"""How long a closing endpoint keeps trying to deliver what it still holds."""

SPLICE_ROUNDS = 4
"""Splices per readable event while the peer keeps up (bounded, for fairness)."""

SPLICE = hasattr(os, "splice")
_SPLICE_FLAGS = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if SPLICE else 0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_NOT_SPLICEABLE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


class Endpoint:
    """A socket read into ``reader`` (the link it feeds) and written by ``writer``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.reader: Link | None = None  # consumes what this socket receives
        self.writer: Link | None = None  # produces what this socket sends
        self.peer: Endpoint | None = None  # where spliced data goes
        self.buffer = bytearray()
        self.pipe: tuple[int, int] | None = None  # incoming zero-copy data, not yet sent
        self.piped = 0
        self.splice_ok = SPLICE
        self.started = False
        self.read_eof = False
        self.paused = False  # by the link (backpressure of its queue or destination)
        self.blocked = False  # by the peer while its pipe holds our data
        self.write_paused = False
        self.eof_requested = False
        self.closing = False
        self.closed = False
        self._reading = False
        self._writing = False
        self._close_timer: asyncio.TimerHandle | None = None

    # -- the transport interface used by links --------------------------------------------
    def start(self) -> None:
        self.started = True
        self._update_reader()

    def pause_reading(self) -> None:
        self.paused = True
        self._update_reader()

    def resume_reading(self) -> None:
        self.paused = False
        self._update_reader()

    def is_closing(self) -> bool:
        return self.closing or self.closed

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self.buffer) + self.piped

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default

    def write(self, data: bytes) -> None:
        if self.closing or self.closed or self.eof_requested or not data:
            return
        if not self.piped and not self.buffer:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as e:
                self._lost(e)
                return
            if sent == len(data):
                return
            data = data[sent:]
        self.buffer += data
        self._set_writing(True)
        if len(self.buffer) > HIGH_WATER and not self.write_paused and self.writer is not None:
            self.write_paused = True
            self.writer.set_dst_paused(True)

    def write_eof(self) -> None:
        self.eof_requested = True
        if not self.piped and not self.buffer:
            self._shutdown_write()

    def close(self) -> None:
        """Stop reading; deliver what is pending (for a while), then close."""
        if self.closing or self.closed:
            return
        self.closing = True
        self._update_reader()
        if not self.piped and not self.buffer:
            self._close_now()
        else:
            self._close_timer = self.loop.call_later(CLOSE_FLUSH_TIMEOUT, self.abort)

    def abort(self) -> None:
        self._close_now()

    # -- reading --------------------------------------------------------------------------
    def _update_reader(self) -> None:
        want = (self.started and not self.read_eof and not self.paused and not self.blocked
                and not self.closing and not self.closed)
        if want != self._reading:
            self._reading = want
            if want:
                self.loop.add_reader(self.fd, self._on_readable)
            else:
                self.loop.remove_reader(self.fd)

    def _on_readable(self) -> None:
        link, peer = self.reader, self.peer
        if link is None or peer is None:
            return
        try:
            if self.splice_ok and not peer.buffer and not peer.piped \
                    and not peer.is_closing() and link.direct():
                for _ in range(SPLICE_ROUNDS):  # fewer loop wake-ups per byte
                    count = peer._splice_in(self.fd)
                    if not count:
                        break
                    link.proxy.rx[link.direction] += count
                    link.proxy.tx[link.direction] += count
                    peer._flush()
                    if peer.piped or self.closed or peer.closed:
                        break
            else:
                data = self.sock.recv(READ_SIZE)
                count = len(data)
                if count:
                    link.feed(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno in _NOT_SPLICEABLE and self.splice_ok:
                self.splice_ok = False  # e.g. a kernel without socket splicing: copy instead
                return
            self._lost(e)
            return
        if count == 0:
            self.read_eof = True
            self._update_reader()
            link.feed_eof()

    def _splice_in(self, src_fd: int) -> int:
        """Move what ``src_fd`` has into our pipe; 0 at EOF."""
        if self.pipe is None:
            self.pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fcntl.fcntl(self.pipe[1], _F_SETPIPE_SZ, SPLICE_SIZE)
            except OSError:
                pass
        count = os.splice(src_fd, self.pipe[1], SPLICE_SIZE, flags=_SPLICE_FLAGS)
        self.piped += count
        return count

    # -- writing --------------------------------------------------------------------------
    def _set_writing(self, want: bool) -> None:
        if want != self._writing and not self.closed:
            self._writing = want
            if want:
                self.loop.add_writer(self.fd, self._flush)
            else:
                self.loop.remove_writer(self.fd)

    def _flush(self) -> None:
        """Send the pipe, then the buffer; wait for writability when the socket is full."""
        if self.closed:
            return
        try:
            while self.piped:
                assert self.pipe is not None
                self.piped -= os.splice(self.pipe[0], self.fd, self.piped, flags=_SPLICE_FLAGS)
            if self.buffer:
                sent = self.sock.send(self.buffer)
                del self.buffer[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._lost(e)
            return
        peer = self.peer
        if peer is not None and peer.blocked != bool(self.piped):
            peer.blocked = bool(self.piped)  # the feeder waits while our pipe is full
            peer._update_reader()
        if self.write_paused and len(self.buffer) <= LOW_WATER and self.writer is not None:
            self.write_paused = False
            self.writer.set_dst_paused(False)
        if self.piped or self.buffer:
            self._set_writing(True)
            return
        self._set_writing(False)
        if self.closing:
            self._close_now()
        elif self.eof_requested:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # -- closing --------------------------------------------------------------------------
    def _close_now(self) -> None:
        if self.closed:
            return
        self.closing = True
        self._update_reader()
        self._set_writing(False)
        self.closed = True
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.sock.close()
        if self.pipe is not None:
            for fd in self.pipe:
                os.close(fd)
            self.pipe = None
        self.buffer.clear()
        self.piped = 0
        peer = self.peer
        if peer is not None and peer.blocked:
            peer.blocked = False
            peer._update_reader()

    def _lost(self, exc: Exception) -> None:
        """An I/O error: this socket is gone; the connection decides what that means."""
        self._close_now()
        link = self.reader or self.writer
        if link is not None:
            link.conn.lost(exc)
