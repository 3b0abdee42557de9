"""The data plane's two paths (zero-copy splice and through Python) keep every byte in order."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from chaoskit.proxy import ProxyServer
from chaoskit.proxy import endpoint as endpoint_module
from chaoskit.proxy.testing import echo_server, payload_server, recv_all

pytestmark = pytest.mark.integration

PAYLOAD = hashlib.sha256(b"seed").digest() * (12 << 20 >> 5)  # 12 MiB, not repetitive per MiB


@pytest.fixture(params=["splice", "copy"])
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[ProxyServer]:
    if request.param == "copy":
        monkeypatch.setattr(endpoint_module, "SPLICE", False)
    elif not endpoint_module.SPLICE:
        pytest.skip("os.splice is not available here")
    with ProxyServer(port=0, seed=3) as srv:
        yield srv


def connect(listen: str) -> socket.socket:
    host, port = listen.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=20)


def test_bulk_download_is_intact(server: ProxyServer) -> None:
    with payload_server(PAYLOAD) as upstream:
        listen = server.create_proxy("bulk", upstream.address)["listen"]
        with connect(listen) as conn:
            assert recv_all(conn) == PAYLOAD


def test_toxics_toggled_mid_stream_keep_the_byte_order(server: ProxyServer) -> None:
    """Switching between the direct path and the toxic path must not reorder data."""
    with payload_server(PAYLOAD) as upstream:
        listen = server.create_proxy("bulk", upstream.address)["listen"]
        stop = threading.Event()
        toggles = [0]

        def toggle() -> None:
            kinds = [("latency", {"latency": 1}), ("slicer", {"average_size": 50000,
                                                            "size_variation": 1000,
                                                            "delay": 10}),
                     ("bandwidth", {"rate": 200_000}), ("noop", {})]
            while not stop.is_set():
                i = toggles[0]
                kind, attrs = kinds[i % len(kinds)]
                server.add_toxic("bulk", kind, name="t", attributes=attrs)
                time.sleep(0.003)
                server.remove_toxic("bulk", "t")
                time.sleep(0.003)
                toggles[0] += 1

        toggler = threading.Thread(target=toggle)
        with connect(listen) as conn:
            toggler.start()
            try:
                got = bytearray()
                while data := conn.recv(65536):
                    got += data
                    time.sleep(0.0005)  # a slowish reader keeps data queued in the proxy
            finally:
                stop.set()
                toggler.join(10)
    assert toggles[0] >= 5
    assert len(got) == len(PAYLOAD)
    assert bytes(got) == PAYLOAD


def test_upload_and_echo_with_half_close(server: ProxyServer) -> None:
    with echo_server() as upstream:
        listen = server.create_proxy("echo", upstream.address)["listen"]
        with connect(listen) as conn:
            received = bytearray()

            def read() -> None:
                received.extend(recv_all(conn))

            reader = threading.Thread(target=read)
            reader.start()
            conn.sendall(PAYLOAD[: 4 << 20])
            conn.shutdown(socket.SHUT_WR)  # the echo server closes after echoing all
            reader.join(20)
    assert bytes(received) == PAYLOAD[: 4 << 20]


def test_many_concurrent_connections(server: ProxyServer) -> None:
    with echo_server() as upstream:
        listen = server.create_proxy("echo", upstream.address)["listen"]
        conns = [connect(listen) for _ in range(100)]
        try:
            for i, conn in enumerate(conns):
                conn.sendall(f"hello {i}".encode())
            for i, conn in enumerate(conns):
                expected = f"hello {i}".encode()
                got = b""
                while len(got) < len(expected):
                    got += conn.recv(64)
                assert got == expected
            assert server.connection_count("echo") == 100
        finally:
            for conn in conns:
                conn.close()


def test_client_vanishing_mid_download_is_cleaned_up(server: ProxyServer) -> None:
    with payload_server(PAYLOAD) as upstream:
        listen = server.create_proxy("bulk", upstream.address)["listen"]
        for _ in range(5):
            conn = connect(listen)
            conn.recv(1000)
            conn.close()  # with unread data: the kernel sends RST
        deadline = time.monotonic() + 10
        while server.connection_count("bulk") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.connection_count("bulk") == 0
        with connect(listen) as conn:
            assert recv_all(conn) == PAYLOAD
