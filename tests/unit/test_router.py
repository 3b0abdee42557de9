"""The gateway's router retries an idempotent request once, elsewhere, only when its first
try ended before any answer byte.  Upstreams here are real sockets that misbehave in one
way each (stand-ins for replicas: the router is the thing under test)."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chaoskit.stack.router import FirstByteTimes, RetryPolicy, Router

_OPEN = threading.Event()
_OPEN.set()


class _Answering(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        self.server.on_request()  # type: ignore[attr-defined]
        self.server.answering.wait(10)  # type: ignore[attr-defined]  # a slow replica: not yet
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps({"path": self.path, "got": self.rfile.read(length).decode(),
                           "by": self.server.name}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@contextmanager
def answering(
    name: str, gate: threading.Event | None = None, on_request: Callable[[], None] = lambda: None
) -> Iterator[tuple[str, int]]:
    """A replica that answers each request (once *gate* is set, when one is given),
    calling *on_request* as each arrives."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    server.name = name  # type: ignore[attr-defined]
    server.answering = gate or _OPEN  # type: ignore[attr-defined]
    server.on_request = on_request  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield ("127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def misbehaving(behaviour: str) -> Iterator[tuple[str, int]]:
    """A listener that reads a request, then: ``close`` (no answer byte), ``hang`` (holds
    the connection), or ``partial`` (half a status line, then close); ``refused`` is
    handled by the caller (a port nobody listens on)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            if behaviour == "partial":
                conn.sendall(b"HTTP/1.1 2")
            if behaviour == "hang":
                held.append(conn)
            else:
                conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield ("127.0.0.1", listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def refused() -> tuple[str, int]:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return ("127.0.0.1", port)


def call(router: Router, method: str = "POST", path: str = "/v1/models/m:predict",
         body: bytes | None = b'{"instances": [1]}', timeout: float = 2.0,
         headers: dict[str, str] | None = None):  # fmt: skip
    conn = http.client.HTTPConnection(*router.endpoint, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


@contextmanager
def router_over(upstreams: dict[str, tuple[str, int]], **policy: float) -> Iterator[Router]:
    router = Router(upstreams, policy=RetryPolicy(**policy))  # type: ignore[arg-type]
    try:
        yield router
    finally:
        router.close()


def test_answers_from_the_routed_replica_without_retry() -> None:
    with answering("a") as a, answering("b") as b, router_over({"a": a, "b": b}) as router:
        status, headers, body = call(router)
        assert status == 200 and json.loads(body)["by"] == "a"
        assert json.loads(body)["got"] == '{"instances": [1]}'
        assert headers["X-Chaoskit-Replica"] == "a" and "X-Chaoskit-Retried" not in headers
        router.route_to("b")
        assert json.loads(call(router)[2])["by"] == "b"


@pytest.mark.parametrize("broken", ["refused", "close", "hang"])
def test_a_predict_whose_try_got_no_answer_byte_is_retried_once_elsewhere(broken) -> None:
    """A hung replica is given up after a multiple of its own recent p99 time to first
    byte, so it costs a fraction of the total deadline (30 s here), not all of it."""
    with answering("a") as a, answering("b") as b, misbehaving(broken) as bad:
        with router_over({"a": a, "b": b}, deadline_s=30.0) as router:
            for _ in range(12):  # quick answers from "a" teach the router its latency
                assert call(router)[0] == 200
            router.upstreams["a"] = refused() if broken == "refused" else bad  # "a" breaks
            status, headers, body = call(router, timeout=3.0)
    assert status == 200 and json.loads(body)["by"] == "b"
    assert headers["X-Chaoskit-Retried"] == "a" and headers["X-Chaoskit-Replica"] == "b"


def slow_call(router: Router, gate: threading.Event, after: float) -> tuple:
    """A call whose replica answers only *after* seconds (set by a timer, not a sleep in
    the test: the replica is slow, the router is what waits)."""
    timer = threading.Timer(after, gate.set)
    timer.start()
    try:
        return call(router, timeout=5.0)
    finally:
        timer.cancel()


def test_with_no_other_replica_in_rotation_a_slow_answer_is_waited_for() -> None:
    """Soak, fault 359: the killed replica was out for repair and the other, loading a
    new version, took 0.37 s to answer; cut off at its 0.25 s per-try wait, the request
    failed (504) although nobody else could have answered it."""
    gate = threading.Event()
    with answering("a", gate) as a, answering("b") as b:
        with router_over({"a": a, "b": b}, deadline_s=5.0) as router:
            gate.set()
            for _ in range(12):  # quick answers: a per-try wait of 0.25 s
                assert call(router)[0] == 200
            gate.clear()
            router.take_out("b")
            status, headers, body = slow_call(router, gate, 0.6)
    assert status == 200 and json.loads(body)["by"] == "a"
    assert "X-Chaoskit-Retried" not in headers


def test_a_replica_that_leaves_rotation_during_the_try_sends_it_back_to_the_first() -> None:
    """"b" leaves rotation while "a" holds the first try; "a" answers nothing until the
    router asks it again (so the answer proves the second try), then both."""
    gate, arrivals = threading.Event(), []
    routers: list[Router] = []

    def arrived() -> None:
        arrivals.append(1)
        if len(arrivals) == 13:  # the slow request's first try
            routers[0].take_out("b")
        elif len(arrivals) == 14:  # asked again after the per-try wait
            gate.set()

    with answering("a", gate, arrived) as a, answering("b") as b:
        with router_over({"a": a, "b": b}, deadline_s=5.0) as router:
            routers.append(router)
            gate.set()
            for _ in range(12):
                assert call(router)[0] == 200
            gate.clear()
            status, headers, body = call(router, timeout=5.0)
    assert status == 200 and json.loads(body)["by"] == "a"
    assert headers["X-Chaoskit-Retried"] == "a" and len(arrivals) == 14


def test_answer_bytes_already_received_are_never_retried() -> None:
    with answering("b") as b, misbehaving("partial") as partial:
        with router_over({"a": partial, "b": b}) as router:
            status, headers, body = call(router)
    assert status == 502 and "X-Chaoskit-Retried" not in headers
    assert "broke off its answer" in json.loads(body)["error"]


def test_a_request_that_is_not_idempotent_is_not_retried() -> None:
    with answering("b") as b, misbehaving("close") as bad, router_over({"a": bad, "b": b}) as r:
        status, headers, body = call(r, path="/v1/models/m/config")
    assert status == 502 and "X-Chaoskit-Retried" not in headers
    # closed with the request read (EOF) or unread (the kernel answers with a reset)
    error = json.loads(body)["error"]
    assert error in ("gateway: a closed the connection before answering",
                     "gateway: a: ConnectionResetError: [Errno 104] Connection reset by peer")


def test_no_retry_goes_to_a_replica_out_of_rotation() -> None:
    with answering("b") as b, misbehaving("close") as bad, router_over({"a": bad, "b": b}) as r:
        r.take_out("b")
        assert call(r)[0] == 502
        r.put_back("b")
        status, headers, _ = call(r)
    assert status == 200 and headers["X-Chaoskit-Retried"] == "a"


def test_when_both_tries_fail_the_client_gets_one_clear_error() -> None:
    with router_over({"a": refused(), "b": refused()}) as router:
        status, headers, body = call(router)
    assert status == 502 and headers["X-Chaoskit-Retried"] == "a"
    assert json.loads(body)["error"].startswith("gateway: b: ConnectionRefusedError")


def test_a_chunked_request_body_reaches_the_replica_whole() -> None:
    with answering("a") as a, router_over({"a": a}) as router:
        conn = http.client.HTTPConnection(*router.endpoint, timeout=2.0)
        conn.request("POST", "/v1/models/m:predict", body=iter([b'{"inst', b'ances": [2]}']),
                     encode_chunked=True)  # fmt: skip
        got = json.loads(conn.getresponse().read())["got"]
        conn.close()
    assert got == '{"instances": [2]}'


def test_close_ends_idle_keep_alive_connections_and_every_thread() -> None:
    before = set(threading.enumerate())
    with answering("a") as a:
        router = Router({"a": a})
        conn = http.client.HTTPConnection(*router.endpoint, timeout=2.0)
        conn.request("GET", "/v1/models/m")
        assert conn.getresponse().read()  # the connection stays open (HTTP/1.1 keep-alive)
        router.close()
        conn.close()
    assert set(threading.enumerate()) - before == set()


def test_a_client_that_gave_up_before_the_answer_prints_nothing(capfd) -> None:
    """A probe gives up on a slow replica and hangs up; the router's answer then meets a
    reset connection.  That is routine: 60 such tracebacks buried a benchmark's output."""
    gate, arrived = threading.Event(), threading.Event()
    with answering("a", gate, arrived.set) as a, router_over({"a": a}, deadline_s=5.0) as router:
        client = socket.create_connection(router.endpoint, timeout=2.0)
        client.sendall(b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n")
        assert arrived.wait(2.0), "the router did not forward the request"
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset, not a FIN: the router's write fails at once
        gate.set()
        assert call(router, method="GET", path="/v1/models/m")[0] == 200  # still serving
    # the router is closed: every handler thread, the hung-up one too, has ended
    assert capfd.readouterr().err == ""


def test_per_try_wait_is_a_multiple_of_recent_p99_with_a_floor() -> None:
    policy = RetryPolicy(deadline_s=5.0, floor_s=0.25, latency_multiple=8.0, min_samples=10)
    times = FirstByteTimes(policy)
    assert times.per_try() == 5.0  # nothing learnt yet: the whole deadline
    for _ in range(20):
        times.add(0.002)
    assert times.per_try() == 0.25  # 8 × 2 ms is below the floor
    for _ in range(20):
        times.add(0.1)
    assert times.per_try() == pytest.approx(0.8)
