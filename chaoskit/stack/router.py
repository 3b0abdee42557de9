"""The gateway's HTTP router: one client-facing port, each request sent to the routed
replica, an idempotent one retried once on another replica when its first try failed
before any answer byte.

A replica that is killed, reset or cut off fails the request it is serving although a
healthy replica was there the whole time; a ``:predict`` is idempotent, so the router
tries again elsewhere (as Envoy's ``retry_on: connect-failure,reset`` with a per-try
timeout does).  Retried: a try that could not connect, was closed or reset before the
first answer byte, or sent no first byte within a per-try deadline derived from that
replica's recent time to first byte.  Never retried: a request whose try already
received answer bytes, one that is not idempotent, or one with no other replica in
rotation — whose try is then not cut short at the per-try deadline either: a replica
slow to answer while it loads a new version, with the other one out being repaired,
gets the whole deadline (the soak lost a request to that).  One retry at most, and both
tries share one total deadline.  An answer that
needed a retry carries ``X-Chaoskit-Retried: <replica that failed>`` (the load generator
journals it, so ``retried_requests`` comes from the journal); every answer names the
replica that gave it in ``X-Chaoskit-Replica``.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from chaoskit.errors import StackError
from chaoskit.http_server import QuietHTTPServer

RETRIED_HEADER = "X-Chaoskit-Retried"
REPLICA_HEADER = "X-Chaoskit-Replica"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
INFERENCE_VERBS = (":predict", ":classify", ":regress")
"""TF Serving's inference calls: POSTs that change nothing, so safe to send twice."""
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "content-length",
})  # fmt: skip


@dataclass(frozen=True)
class RetryPolicy:
    deadline_s: float = 5.0
    """Both tries of one request together."""
    floor_s: float = 0.25
    """The shortest per-try wait for a first byte: below it, ordinary jitter would retry."""
    latency_multiple: float = 8.0
    """Per-try wait = this × the replica's recent p99 time to first byte (at least floor)."""
    window: int = 200
    """How many recent first-byte times per replica the p99 is taken over."""
    min_samples: int = 10
    """Fewer samples than this: the first try may use the whole deadline."""


class NoAnswer(OSError):
    """A try ended before any answer byte: safe to retry an idempotent request."""


class FirstByteTimes:
    """Recent times to first byte of one replica's answers."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._times: deque[float] = deque(maxlen=policy.window)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._times.append(seconds)

    def per_try(self) -> float:
        """How long a try may wait for its first byte before it counts as no answer."""
        with self._lock:
            times = list(self._times)
        if len(times) < max(self.policy.min_samples, 2):
            return self.policy.deadline_s
        p99 = statistics.quantiles(times, n=100, method="inclusive")[98]
        return max(self.policy.floor_s, self.policy.latency_multiple * p99)


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class Router:
    """The client-facing HTTP endpoint in front of the replicas (their link proxies)."""

    def __init__(
        self, upstreams: dict[str, tuple[str, int]], *, policy: RetryPolicy | None = None
    ) -> None:
        """*upstreams*: replica name -> (host, port) the router reaches it at; first =
        the replica routed to at start."""
        if not upstreams:
            raise StackError("a router needs at least one replica")
        self.upstreams = dict(upstreams)
        self.policy = policy or RetryPolicy()
        self.routed = next(iter(upstreams))
        self._out: set[str] = set()
        self._times = {name: FirstByteTimes(self.policy) for name in upstreams}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.router = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="chaoskit-gateway", daemon=True,
        )  # fmt: skip
        self._thread.start()

    @property
    def endpoint(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def route_to(self, replica: str) -> None:
        with self._lock:
            self.routed = replica

    def take_out(self, replica: str) -> None:
        """Out of rotation: no retry goes there (the DR engine found it failing)."""
        with self._lock:
            self._out.add(replica)

    def put_back(self, replica: str) -> None:
        with self._lock:
            self._out.discard(replica)

    def _retry_target(self, failed: str) -> str | None:
        with self._lock:
            return next((r for r in self.upstreams if r != failed and r not in self._out), None)

    def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> Answer:
        """One client request: the routed replica, then at most one retry elsewhere."""
        deadline = time.monotonic() + self.policy.deadline_s
        first = self.routed
        retryable = method in IDEMPOTENT_METHODS or (
            method == "POST" and path.split("?", 1)[0].endswith(INFERENCE_VERBS)
        )
        # the per-try wait gives up on a slow first byte only to ask another replica: with
        # none in rotation (the other is being repaired), this one gets the whole deadline
        elsewhere = retryable and self._retry_target(first) is not None
        try:
            return self._try(first, method, path, headers, body, deadline, per_try=elsewhere)
        except NoAnswer as e:
            other = self._retry_target(first) if retryable else None
            timed_out = "timed out" in str(e)
            if other is None and elsewhere and timed_out:
                other = first  # the other one left rotation meanwhile: ask this one again
            if other is None or time.monotonic() >= deadline:
                return _error(502 if not timed_out else 504, first, str(e))
            try:
                answer = self._try(other, method, path, headers, body, deadline, per_try=False)
            except OSError as again:
                answer = _error(502 if "timed out" not in str(again) else 504, other, str(again))
            return Answer(answer.status, answer.reason,
                          [*answer.headers, (RETRIED_HEADER, first)], answer.body)  # fmt: skip
        except OSError as e:
            return _error(502, first, str(e))

    def _try(
        self, replica: str, method: str, path: str, headers: list[tuple[str, str]],
        body: bytes | None, deadline: float, *, per_try: bool,
    ) -> Answer:  # fmt: skip
        """One try; raises NoAnswer when it ended before the first answer byte (within the
        replica's per-try wait if *per_try*, else within the deadline)."""
        host, port = self.upstreams[replica]
        started = time.monotonic()
        wait = deadline - started
        if per_try:
            wait = min(wait, self._times[replica].per_try())
        conn = http.client.HTTPConnection(host, port, timeout=max(wait, 0.001))
        try:
            try:
                conn.request(method, path, body=body, headers=dict(headers))
                assert conn.sock is not None
                if not conn.sock.recv(1, socket.MSG_PEEK):
                    raise NoAnswer(f"{replica} closed the connection before answering")
            except NoAnswer:
                raise
            except (OSError, http.client.HTTPException) as e:
                raise NoAnswer(f"{replica}: {_describe(e)}") from e
            self._times[replica].add(time.monotonic() - started)
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                answer = conn.getresponse()
                data = answer.read()
            except (OSError, http.client.HTTPException) as e:
                raise OSError(f"{replica} broke off its answer: {_describe(e)}") from e
        finally:
            conn.close()
        kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP]
        return Answer(answer.status, answer.reason, [*kept, (REPLICA_HEADER, replica)], data)

    def close(self) -> None:
        """Stop serving, end open client connections, and wait for every handler thread."""
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError) or "timed out" in str(error):
        return "timed out waiting for an answer"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _error(status: int, replica: str, message: str) -> Answer:
    body = json.dumps({"error": f"gateway: {message}"}).encode()
    reason = "Gateway Timeout" if status == 504 else "Bad Gateway"
    return Answer(status, reason, [("Content-Type", "application/json"),
                                   (REPLICA_HEADER, replica)], body)  # fmt: skip


class _Server(QuietHTTPServer):
    daemon_threads = False  # handler threads are joined on close: none outlives the stack
    block_on_close = True
    router: Router

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[no-untyped-def]
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handlers blocked reading an idle keep-alive connection."""
        with self._open_lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive client does not hold its thread for ever
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the journal, not stderr, is where requests are recorded."""

    def _forward(self) -> None:
        try:
            body = self._read_body()
        except ValueError as e:
            self._send(_error(400, self.server.router.routed, str(e)))
            return
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        self._send(self.server.router.forward(self.command, self.path, headers, body))

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        if not length.isdigit():
            raise ValueError(f"bad Content-Length {length!r}")
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ValueError(f"bad chunk size {size_line[:20]!r}") from None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)

    def _send(self, answer: Answer) -> None:
        self.send_response_only(answer.status, answer.reason)  # the replica's Date, Server
        for key, value in answer.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _forward
