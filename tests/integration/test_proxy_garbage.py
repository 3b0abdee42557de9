"""Generated garbage thrown at the API and at proxied ports: clear errors, server survives."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaoskit.proxy import ProxyServer, ToxiproxyAPI
from chaoskit.proxy.model import TOXIC_ATTRIBUTES
from chaoskit.proxy.testing import LoopbackServer, echo_server, recv_all

pytestmark = pytest.mark.integration

ALLOWED = {200, 201, 204, 400, 403, 404, 405, 409, 413, 431, 500}


@pytest.fixture(scope="module")
def echo() -> Iterator[LoopbackServer]:
    with echo_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def server(echo: LoopbackServer) -> Iterator[ProxyServer]:
    with ProxyServer(port=0, seed=11) as srv:
        srv.create_proxy("p", echo.address)
        yield srv


@pytest.fixture(scope="module")
def data_server(echo: LoopbackServer) -> Iterator[ProxyServer]:
    """Separate from ``server``, whose generated requests may delete or break proxy p."""
    with ProxyServer(port=0, seed=12) as srv:
        srv.create_proxy("p", echo.address)
        yield srv


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
attr_values = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=False), st.text(max_size=5),
                        st.booleans(), st.none(), st.lists(st.integers(), max_size=2))
toxics = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=10), st.integers()),
        "type": st.sampled_from([*TOXIC_ATTRIBUTES, "bogus", ""]) | st.integers(),
        "stream": st.sampled_from(["upstream", "downstream", "sideways", ""]) | st.none(),
        "toxicity": st.one_of(st.floats(allow_nan=False), st.integers(-2, 2), st.text(max_size=3)),
        "attributes": st.dictionaries(
            st.sampled_from(["latency", "jitter", "rate", "delay", "timeout", "bytes",
                             "average_size", "size_variation", "other"]),
            attr_values, max_size=4) | json_values,
    },
)
listens = st.sampled_from(["127.0.0.1:0", "127.0.0.1", "nohost.invalid:0", "127.0.0.1:99999",
                           "[::1]:0", "", "127.0.0.1:x", ":0"]) | st.text(max_size=12)
proxies = st.fixed_dictionaries(
    {},
    optional={"name": st.text(max_size=6) | st.integers(), "listen": listens,
              "upstream": listens, "enabled": st.booleans() | st.integers(0, 1)},
)
paths = st.sampled_from(["/proxies", "/proxies/p", "/proxies/p/toxics",
                         "/proxies/p/toxics/latency_downstream", "/populate", "/reset",
                         "/version", "/metrics", "/proxies/%00", "/proxies/p/toxics/../x",
                         "/", "//", "/proxies/p/toxics/a/b"])
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    toxics.map(lambda v: json.dumps(v).encode()),
    proxies.map(lambda v: json.dumps(v).encode()),
    st.lists(proxies, max_size=3).map(lambda v: json.dumps(v).encode()),
)
methods = st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "FOO"])


def send_raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return recv_all(conn)


def status_of(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def check_alive(server: ProxyServer) -> None:
    assert ToxiproxyAPI(server.url).version()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=methods, path=paths, body=bodies)
def test_generated_requests_get_toxiproxy_answers(server: ProxyServer, method: str, path: str,
                                                  body: bytes) -> None:
    request = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               "Connection: close\r\n\r\n").encode() + body
    status, payload = status_of(send_raw(server.port, request))
    assert status in ALLOWED
    if status >= 400 and status != 403:
        error = json.loads(payload)
        assert error["status"] == status and error["error"]
        if status == 500:  # only binding a listen address may fail on the server side
            assert error["error"].startswith("listen tcp"), error
    check_alive(server)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=3000))
def test_non_http_bytes_at_the_api(server: ProxyServer, garbage: bytes) -> None:
    answer = send_raw(server.port, garbage)
    if answer:
        assert answer.startswith(b"HTTP/1.1 ")
        assert status_of(answer)[0] in ALLOWED
    check_alive(server)


data_toxics = st.lists(
    st.sampled_from([
        ("noop", {}),
        ("latency", {"latency": 2, "jitter": 1}),
        ("slicer", {"average_size": 7, "size_variation": 3, "delay": 50}),
        ("bandwidth", {"rate": 5000}),
    ]),
    max_size=3, unique_by=lambda t: t[0],
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(min_size=1, max_size=5000), min_size=1, max_size=6),
       chain=data_toxics, stream=st.sampled_from(["upstream", "downstream"]),
       abort=st.booleans())
def test_garbage_through_the_proxy_arrives_intact(data_server: ProxyServer,
                                                  chunks: list[bytes],
                                                  chain: list[tuple[str, dict[str, Any]]],
                                                  stream: str, abort: bool) -> None:
    server = data_server
    server.reset()
    for toxic_type, attributes in chain:
        server.add_toxic("p", toxic_type, stream=stream, attributes=attributes)
    host, port = server.get_proxy("p")["listen"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        for chunk in chunks:
            conn.sendall(chunk)
        expected = b"".join(chunks)
        if abort:  # a client that vanishes mid-stream must not hurt the server
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            conn.shutdown(socket.SHUT_WR)
            assert recv_all(conn) == expected
    server.reset()
    check_alive(server)
