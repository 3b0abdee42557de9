"""Every toxic, measured on the wire: real loopback sockets through the embedded server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from chaoskit.proxy import ProxyServer
from chaoskit.proxy.testing import (
    LoopbackServer,
    echo_server,
    payload_server,
    recv_all,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[ProxyServer]:
    with ProxyServer(port=0, seed=7) as srv:
        yield srv


@pytest.fixture
def echo() -> Iterator[LoopbackServer]:
    with echo_server() as srv:
        yield srv


def connect(listen: str, timeout: float = 5.0) -> socket.socket:
    host, port = listen.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def rtt(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.perf_counter()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        data = sock.recv(65536)
        assert data, "connection closed during a round trip"
        got += data
    assert got == payload
    return time.perf_counter() - start


def test_latency_adds_the_set_delay_each_way(server: ProxyServer, echo: LoopbackServer) -> None:
    listen = server.create_proxy("svc", echo.address)["listen"]
    with connect(listen) as conn:
        base = min(rtt(conn) for _ in range(5))
        server.add_toxic("svc", "latency", attributes={"latency": 60})  # live connection
        down = [rtt(conn) for _ in range(3)]
        server.add_toxic("svc", "latency", stream="upstream", attributes={"latency": 40})
        both = [rtt(conn) for _ in range(3)]
        server.remove_toxic("svc", "latency_downstream")
        server.remove_toxic("svc", "latency_upstream")
        after = min(rtt(conn) for _ in range(3))
    assert all(0.060 <= d < 0.060 + 0.045 for d in down), down
    assert all(0.100 <= d < 0.100 + 0.045 for d in both), both
    assert after < base + 0.030


def test_jitter_varies_the_delay_within_bounds(server: ProxyServer,
                                               echo: LoopbackServer) -> None:
    listen = server.create_proxy("svc", echo.address)["listen"]
    server.add_toxic("svc", "latency", attributes={"latency": 40, "jitter": 20})
    with connect(listen) as conn:
        delays = [rtt(conn) for _ in range(12)]
    assert all(0.020 <= d < 0.060 + 0.035 for d in delays), delays
    assert max(delays) - min(delays) > 0.005, "jitter should vary the delay"


def test_bandwidth_limits_the_rate(server: ProxyServer) -> None:
    payload = bytes(range(256)) * 200  # 51 200 bytes
    with payload_server(payload) as upstream:
        listen = server.create_proxy("svc", upstream.address)["listen"]
        server.add_toxic("svc", "bandwidth", attributes={"rate": 100})  # 100 KB/s
        start = time.perf_counter()
        with connect(listen) as conn:
            got = recv_all(conn)
        elapsed = time.perf_counter() - start
    assert got == payload
    assert 0.40 <= elapsed < 1.2, elapsed  # 51.2 kB at 100 kB/s ≈ 0.51 s


def test_slow_close_delays_the_close(server: ProxyServer) -> None:
    with payload_server(b"hello") as upstream:
        listen = server.create_proxy("svc", upstream.address)["listen"]
        with connect(listen) as conn:
            assert conn.recv(5) == b"hello"
            start = time.perf_counter()
            assert conn.recv(5) == b""
            plain = time.perf_counter() - start
        server.add_toxic("svc", "slow_close", attributes={"delay": 300})
        with connect(listen) as conn:
            assert conn.recv(5) == b"hello"
            start = time.perf_counter()
            assert conn.recv(5) == b""
            slow = time.perf_counter() - start
    assert plain < 0.1
    assert 0.29 <= slow < 0.6, slow


def test_timeout_stops_data_then_closes(server: ProxyServer, echo: LoopbackServer) -> None:
    listen = server.create_proxy("svc", echo.address)["listen"]
    server.add_toxic("svc", "timeout", attributes={"timeout": 300})
    start = time.perf_counter()
    with connect(listen) as conn:
        conn.sendall(b"lost")
        assert conn.recv(10) == b""  # no echo, just the close
    elapsed = time.perf_counter() - start
    assert 0.29 <= elapsed < 0.8, elapsed


def test_timeout_zero_holds_until_removed(server: ProxyServer, echo: LoopbackServer) -> None:
    listen = server.create_proxy("svc", echo.address)["listen"]
    with connect(listen, timeout=0.5) as conn:
        assert rtt(conn) < 0.1
        server.add_toxic("svc", "timeout", attributes={"timeout": 0})
        conn.sendall(b"dropped")
        with pytest.raises(TimeoutError):
            conn.recv(10)  # held: neither data nor a close for 0.5 s
        server.remove_toxic("svc", "timeout_downstream")
        conn.settimeout(5)
        assert rtt(conn, b"again") < 0.1  # flows again; the held bytes were dropped


def test_reset_peer_resets_after_the_timeout(server: ProxyServer, echo: LoopbackServer) -> None:
    listen = server.create_proxy("svc", echo.address)["listen"]
    server.add_toxic("svc", "reset_peer", stream="upstream", attributes={"timeout": 200})
    with connect(listen) as conn:
        start = time.perf_counter()
        conn.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            conn.recv(10)
        elapsed = time.perf_counter() - start
    assert 0.19 <= elapsed < 0.6, elapsed


def test_slicer_cuts_data_into_small_delayed_pieces(server: ProxyServer) -> None:
    payload = b"s" * 2000
    with payload_server(payload) as upstream:
        listen = server.create_proxy("svc", upstream.address)["listen"]
        server.add_toxic("svc", "slicer",
                         attributes={"average_size": 100, "size_variation": 20, "delay": 5000})
        sizes = []
        start = time.perf_counter()
        with connect(listen) as conn:
            while data := conn.recv(65536):
                sizes.append(len(data))
        elapsed = time.perf_counter() - start
    assert sum(sizes) == len(payload)
    assert len(sizes) >= 10, sizes  # ~16-20 slices, each sent on its own
    assert elapsed >= 0.05, elapsed  # ≥ 15 gaps of 5 ms
    assert min(sizes) >= 1 and sorted(sizes)[len(sizes) // 2] <= 240, sizes


def test_limit_data_closes_after_n_bytes(server: ProxyServer, echo: LoopbackServer) -> None:
    payload = b"x" * 5000
    with payload_server(payload) as upstream:
        listen = server.create_proxy("svc", upstream.address)["listen"]
        server.add_toxic("svc", "limit_data", attributes={"bytes": 1000})
        with connect(listen) as conn:
            assert recv_all(conn) == payload[:1000]
    seen: list[bytes] = []
    with LoopbackServer(lambda c: seen.append(recv_all(c))) as sink:
        listen = server.create_proxy("up", sink.address)["listen"]
        server.add_toxic("up", "limit_data", stream="upstream", attributes={"bytes": 3})
        with connect(listen) as conn:
            conn.sendall(b"abcdef")
            assert recv_all(conn) == b""  # the proxy closed the connection
        wait_until(lambda: bool(seen), what="the upstream to see the close")
    assert seen == [b"abc"]


def test_noop_changes_nothing(server: ProxyServer, echo: LoopbackServer) -> None:
    listen = server.create_proxy("svc", echo.address)["listen"]
    server.add_toxic("svc", "noop")
    server.add_toxic("svc", "noop", stream="upstream")
    with connect(listen) as conn:
        assert rtt(conn, bytes(range(256)) * 100) < 0.2


def test_toxicity_is_drawn_once_per_connection_and_seeded(echo: LoopbackServer) -> None:
    def pattern(seed: int) -> list[bool]:
        with ProxyServer(port=0, seed=seed) as srv:
            listen = srv.create_proxy("svc", echo.address)["listen"]
            srv.add_toxic("svc", "latency", toxicity=0.5, attributes={"latency": 60})
            slow = []
            for _ in range(12):
                with connect(listen) as conn:
                    first, second = rtt(conn), rtt(conn)
                assert (first >= 0.06) == (second >= 0.06), "same draw for the connection"
                slow.append(first >= 0.06)
            return slow

    a = pattern(123)
    assert any(a) and not all(a), a
    assert pattern(123) == a


def test_disable_drops_connections_and_refuses(server: ProxyServer, echo: LoopbackServer) -> None:
    listen = server.create_proxy("svc", echo.address)["listen"]
    with connect(listen) as conn:
        rtt(conn)
        server.update_proxy("svc", enabled=False)
        with pytest.raises(OSError):
            conn.sendall(b"x")
            assert conn.recv(10) == b""
            raise OSError("closed")
    with pytest.raises(ConnectionRefusedError):
        connect(listen).close()


def test_changed_upstream_drops_connections(server: ProxyServer, echo: LoopbackServer) -> None:
    listen = server.create_proxy("svc", echo.address)["listen"]
    with echo_server() as other, connect(listen) as conn:
        rtt(conn)
        server.update_proxy("svc", upstream=other.address)
        with pytest.raises(OSError):
            conn.sendall(b"x")
            assert conn.recv(10) == b""
            raise OSError("closed")
        with connect(listen) as fresh:
            rtt(fresh)
        assert other.accepted == 1


def test_unreachable_upstream_closes_the_client(server: ProxyServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    listen = server.create_proxy("svc", dead)["listen"]
    with connect(listen) as conn:
        assert recv_all(conn) == b""


def test_removing_a_toxic_under_heavy_traffic_answers_at_once(server: ProxyServer) -> None:
    """Toxiproxy users see its API hang ~25 s here; the link re-reads its chain instead."""
    payload = b"z" * (8 << 20)
    with payload_server(payload) as upstream:
        listen = server.create_proxy("svc", upstream.address)["listen"]
        server.add_toxic("svc", "latency", attributes={"latency": 5})
        server.add_toxic("svc", "bandwidth", name="bw", attributes={"rate": 2000})
        received = [0] * 8
        done = threading.Event()

        def drain(i: int) -> None:
            with connect(listen, timeout=20) as conn:
                while not done.is_set() and (data := conn.recv(262144)):
                    received[i] += len(data)

        readers = [threading.Thread(target=drain, args=(i,)) for i in range(8)]
        for t in readers:
            t.start()
        try:
            while sum(received) < 1_000_000:
                time.sleep(0.01)
            timings = []
            for name in ("bw", "latency_downstream"):
                start = time.perf_counter()
                server.remove_toxic("svc", name)
                timings.append(time.perf_counter() - start)
            start = time.perf_counter()
            server.proxies()
            timings.append(time.perf_counter() - start)
        finally:
            done.set()
            for t in readers:
                t.join(20)
    assert max(timings) < 0.5, timings
