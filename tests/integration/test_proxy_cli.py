"""``chaoskit proxy serve`` as a real subprocess, driven by the toxiproxy-python client."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from chaoskit.proxy.testing import LoopbackServer, echo_server, payload_server, recv_all

pytestmark = pytest.mark.integration

SERVE = [sys.executable, "-m", "chaoskit.cli", "proxy", "serve"]


def start_serve(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([*SERVE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"serve did not start: {line!r} {err!r}")
    return proc, int(match.group(1))


def stop_serve(proc: subprocess.Popen[str]) -> int:
    """SIGTERM the server; its exit code.  Anything logged to stderr is a failure."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert err == "", err
    return proc.returncode


@pytest.fixture
def serve() -> Iterator[int]:
    proc, port = start_serve("--port", "0", "--seed", "3")
    try:
        yield port
    finally:
        assert stop_serve(proc) == 0


@pytest.fixture
def toxiproxy(serve: int) -> Iterator[Toxiproxy]:
    saved = (APIConsumer.host, APIConsumer.port)
    client = Toxiproxy()
    client.update_api_consumer("127.0.0.1", serve)
    try:
        yield client
    finally:
        APIConsumer.host, APIConsumer.port = saved


@pytest.fixture
def echo() -> Iterator[LoopbackServer]:
    with echo_server() as srv:
        yield srv


def connect(listen: str) -> socket.socket:
    host, port = listen.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def rtt(listen: str) -> float:
    with connect(listen) as conn:
        start = time.perf_counter()
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        return time.perf_counter() - start


def test_client_manages_proxies(toxiproxy: Toxiproxy, echo: LoopbackServer) -> None:
    assert toxiproxy.running() and b"version" in toxiproxy.version()
    proxy = toxiproxy.create(upstream=echo.address, name="echo")
    assert proxy.listen.startswith("127.0.0.1:") and not proxy.listen.endswith(":0")
    assert set(toxiproxy.proxies()) == {"echo"}
    with pytest.raises(ProxyExists):
        toxiproxy.create(upstream=echo.address, name="echo")
    assert rtt(proxy.listen) < 0.1
    with proxy.down():
        with pytest.raises(ConnectionRefusedError):
            connect(proxy.listen)
        assert toxiproxy.get_proxy("echo").enabled is False
    assert toxiproxy.get_proxy("echo").enabled is True
    assert rtt(proxy.listen) < 0.1
    populated = toxiproxy.populate([{"name": "two", "upstream": echo.address,
                                     "listen": "127.0.0.1:0"}])
    assert [p.name for p in populated] == ["two"]
    proxy.destroy()
    with pytest.raises(NotFound):
        proxy.destroy()
    toxiproxy.destroy_all()
    assert toxiproxy.proxies() == {}


def test_client_drives_every_toxic_on_the_wire(toxiproxy: Toxiproxy,
                                               echo: LoopbackServer) -> None:
    proxy = toxiproxy.create(upstream=echo.address, name="echo")
    base = rtt(proxy.listen)

    proxy.add_toxic(type="latency", attributes={"latency": 80})
    assert set(proxy.toxics()) == {"latency_downstream"}
    assert proxy.get_toxic("latency_downstream").attributes == {"latency": 80, "jitter": 0}
    assert rtt(proxy.listen) >= 0.080
    proxy.destroy_toxic("latency_downstream")
    assert rtt(proxy.listen) < base + 0.05

    proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 50, "jitter": 5})
    assert rtt(proxy.listen) >= 0.045
    proxy.destroy_toxic("latency_upstream")

    proxy.add_toxic(type="noop", name="nothing")
    assert rtt(proxy.listen) < 0.1
    proxy.destroy_toxic("nothing")

    proxy.add_toxic(type="timeout", attributes={"timeout": 200})
    with connect(proxy.listen) as conn:
        start = time.perf_counter()
        conn.sendall(b"x")
        assert conn.recv(1) == b""
        assert time.perf_counter() - start >= 0.19
    proxy.destroy_toxic("timeout_downstream")

    proxy.add_toxic(type="reset_peer", attributes={"timeout": 100})
    with connect(proxy.listen) as conn:
        conn.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            conn.recv(1)
    proxy.destroy_toxic("reset_peer_downstream")

    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", attributes={"latency": -1})
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="warp_drive")
    assert proxy.toxics() == {}


def test_client_drives_data_shaping_toxics(toxiproxy: Toxiproxy) -> None:
    payload = b"d" * 30_000
    with payload_server(payload) as upstream:
        proxy = toxiproxy.create(upstream=upstream.address, name="data")

        proxy.add_toxic(type="bandwidth", attributes={"rate": 100})
        start = time.perf_counter()
        with connect(proxy.listen) as conn:
            assert recv_all(conn) == payload
        assert time.perf_counter() - start >= 0.25  # 30 kB at 100 kB/s = 0.3 s
        proxy.destroy_toxic("bandwidth_downstream")

        proxy.add_toxic(type="limit_data", attributes={"bytes": 1234})
        with connect(proxy.listen) as conn:
            assert recv_all(conn) == payload[:1234]
        proxy.destroy_toxic("limit_data_downstream")

        proxy.add_toxic(type="slicer",
                        attributes={"average_size": 500, "size_variation": 100, "delay": 2000})
        with connect(proxy.listen) as conn:
            sizes = []
            while data := conn.recv(65536):
                sizes.append(len(data))
        assert sum(sizes) == len(payload) and len(sizes) >= 20
        proxy.destroy_toxic("slicer_downstream")

        proxy.add_toxic(type="slow_close", attributes={"delay": 250})
        with connect(proxy.listen) as conn:
            start = time.perf_counter()
            assert recv_all(conn) == payload
            assert time.perf_counter() - start >= 0.24
        proxy.destroy_toxic("slow_close_downstream")
        assert proxy.toxics() == {}
        toxiproxy.reset()


def test_serve_reports_an_address_in_use_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run([*SERVE, "--port", str(port)], capture_output=True, text=True,
                                timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"chaoskit: error: cannot listen on 127.0.0.1:{port}: address already in use")


def test_serve_loads_a_config_and_rejects_a_bad_one(tmp_path: Path,
                                                    echo: LoopbackServer) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "cfg", "upstream": echo.address,
                                   "listen": "127.0.0.1:0"}]))
    proc, port = start_serve("--port", "0", "--config", str(config))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as api:
            api.sendall(b"GET /proxies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = recv_all(api)
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert rtt(body["cfg"]["listen"]) < 0.1
    finally:
        assert stop_serve(proc) == 0
    config.write_text("{oops")
    result = subprocess.run([*SERVE, "--port", "0", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("chaoskit: error: proxy config")
    assert "Traceback" not in result.stderr


def test_running_out_of_file_descriptors_is_survived(echo: LoopbackServer) -> None:
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    proc = subprocess.Popen([*SERVE, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=low_limit)
    assert proc.stdout is not None
    port = int(re.search(r":(\d+)$", proc.stdout.readline().strip()).group(1))  # type: ignore[union-attr]
    saved = (APIConsumer.host, APIConsumer.port)
    clients: list[socket.socket] = []
    try:
        client = Toxiproxy()
        client.update_api_consumer("127.0.0.1", port)
        proxy = client.create(upstream=echo.address, name="echo")
        host, lport = proxy.listen.rsplit(":", 1)
        for _ in range(40):  # far more than 48 descriptors' worth of proxied connections
            clients.append(socket.create_connection((host, int(lport)), timeout=5))
            clients[-1].sendall(b"x")
        served = 0
        for c in clients:
            try:
                served += c.recv(1) == b"x"
            except OSError:
                pass
        assert served < len(clients), "descriptors were not exhausted: the test proves nothing"
        for c in clients:
            c.close()
        clients.clear()
        deadline = time.monotonic() + 10
        while True:  # once descriptors are free again, the proxy accepts and serves
            try:
                if rtt(proxy.listen) < 1:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the proxy did not recover"
            time.sleep(0.1)
        assert set(client.proxies()) == {"echo"}
    finally:
        for c in clients:
            c.close()
        APIConsumer.host, APIConsumer.port = saved
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err, err
