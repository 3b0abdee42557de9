"""The embedded server's HTTP API: every endpoint, its status codes and error body."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chaoskit.errors import ConfigError, ProxyError
from chaoskit.proxy import ApiError, ProxyServer, ToxiproxyAPI, use_toxiproxy
from chaoskit.proxy.testing import LoopbackServer, echo_server


@pytest.fixture
def server() -> Iterator[ProxyServer]:
    with ProxyServer(port=0, seed=1) as srv:
        yield srv


@pytest.fixture
def api(server: ProxyServer) -> ToxiproxyAPI:
    return ToxiproxyAPI(server.url)


@pytest.fixture
def echo() -> Iterator[LoopbackServer]:
    with echo_server() as srv:
        yield srv


def raw(server: ProxyServer, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type") or ""
        return resp.status, json.loads(data) if data and "json" in ctype else data
    finally:
        conn.close()


def test_keep_alive_serves_several_requests_on_one_connection(server: ProxyServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/version")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["version"]
        conn.request("POST", "/reset")
        assert conn.getresponse().status == 204
    finally:
        conn.close()


def test_stop_frees_ports_and_threads(echo: LoopbackServer) -> None:
    before = set(threading.enumerate())  # other tests' threads may end meanwhile: compare sets
    srv = ProxyServer(port=0).start()
    listen = srv.create_proxy("svc", echo.address)["listen"]
    host, port = listen.rsplit(":", 1)
    client = socket.create_connection((host, int(port)), timeout=5)
    srv.stop()
    srv.stop()  # idempotent
    assert client.recv(1) == b""  # the proxied connection was closed
    client.close()
    # ... and its upstream side: the echo server's handler saw the close and ended (its
    # thread is the fixture's, not the proxy's, but it ends only after the proxy closed)
    assert echo.wait_connections_closed(), "the proxy left its upstream connection open"
    left = [t.name for t in set(threading.enumerate()) - before]
    assert left == [], f"threads the proxy server left running: {left}"
    for address in ((host, int(port)), ("127.0.0.1", srv.port)):
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(address)


def test_version_and_empty_list(api: ToxiproxyAPI) -> None:
    assert api.version().startswith("2.")
    assert api.proxies() == {}


def test_create_with_port_zero_answers_the_real_port(api: ToxiproxyAPI,
                                                     echo: LoopbackServer) -> None:
    created = api.create_proxy("svc", echo.address, listen="127.0.0.1:0")
    host, port = created["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert created == {"name": "svc", "listen": created["listen"], "upstream": echo.address,
                       "enabled": True, "toxics": []}
    assert api.proxies() == {"svc": created}
    assert api.get_proxy("svc") == created
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"


def test_create_status_codes(server: ProxyServer, echo: LoopbackServer) -> None:
    body = {"name": "a", "upstream": echo.address, "listen": "127.0.0.1:0"}
    assert raw(server, "POST", "/proxies", json.dumps(body).encode())[0] == 201
    status, answer = raw(server, "POST", "/proxies", json.dumps(body).encode())
    assert (status, answer["status"]) == (409, 409) and "already exists" in answer["error"]
    status, answer = raw(server, "POST", "/proxies", b'{"upstream": "x:1"}')
    assert status == 400 and answer["error"] == "missing required field: name"
    status, answer = raw(server, "POST", "/proxies", b'{"name": "b"}')
    assert status == 400 and answer["error"] == "missing required field: upstream"
    status, answer = raw(server, "POST", "/proxies", b'{"name": ')
    assert status == 400 and answer["error"].startswith("bad request body")


def test_listen_address_in_use_is_an_error_and_the_server_keeps_running(
        api: ToxiproxyAPI, echo: LoopbackServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ApiError) as info:
            api.create_proxy("busy", echo.address, listen=address)
    assert info.value.status == 500
    assert f"listen tcp {address}: bind: address already in use" in str(info.value)
    assert api.proxies() == {}
    assert api.version()


def test_update_disable_enable_and_delete(api: ToxiproxyAPI, echo: LoopbackServer) -> None:
    listen = api.create_proxy("svc", echo.address)["listen"]
    assert api.set_enabled("svc", False)["enabled"] is False
    host, port = listen.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5).close()
    answer = api.set_enabled("svc", True)
    assert answer["enabled"] is True and answer["listen"] == listen  # same port again
    socket.create_connection((host, int(port)), timeout=5).close()
    api.delete_proxy("svc")
    with pytest.raises(ApiError) as info:
        api.get_proxy("svc")
    assert info.value.status == 404
    with pytest.raises(ApiError) as info:
        api.delete_proxy("svc")
    assert info.value.status == 404


def test_toxic_crud(api: ToxiproxyAPI, echo: LoopbackServer, server: ProxyServer) -> None:
    api.create_proxy("svc", echo.address)
    toxic = api.add_toxic("svc", "latency", attributes={"latency": 10})
    assert toxic["name"] == "latency_downstream"
    with pytest.raises(ApiError) as info:
        api.add_toxic("svc", "latency", attributes={"latency": 10})
    assert info.value.status == 409
    api.add_toxic("svc", "bandwidth", stream="upstream", name="bw", attributes={"rate": 5})
    assert [t["name"] for t in api.toxics("svc")] == ["latency_downstream", "bw"]
    assert api.get_toxic("svc", "bw")["stream"] == "upstream"
    updated = api.update_toxic("svc", "bw", attributes={"rate": 7})
    assert updated["attributes"] == {"rate": 7}
    assert api.get_proxy("svc")["toxics"][1]["attributes"] == {"rate": 7}
    # PATCH is accepted too (Toxiproxy 2.x)
    status, answer = raw(server, "PATCH", "/proxies/svc/toxics/bw", b'{"toxicity": 0.5}')
    assert status == 200 and answer["toxicity"] == 0.5
    api.remove_toxic("svc", "bw")
    for bad in (lambda: api.remove_toxic("svc", "bw"), lambda: api.get_toxic("svc", "bw"),
                lambda: api.update_toxic("svc", "bw", toxicity=1)):
        with pytest.raises(ApiError) as info:
            bad()
        assert info.value.status == 404
    with pytest.raises(ApiError) as info:
        api.add_toxic("nope", "latency")
    assert info.value.status == 404


def test_toxic_errors_keep_the_server_running(api: ToxiproxyAPI, echo: LoopbackServer,
                                              server: ProxyServer) -> None:
    api.create_proxy("svc", echo.address)
    cases = [
        (b'{"type": "teleport"}', "invalid toxic type"),
        (b'{"type": "latency", "attributes": {"latency": -3}}', "must not be negative"),
        (b'{"type": "latency", "attributes": {"latency": "x"}}', "is not a number"),
        (b'{"type": "latency", "stream": "up"}', "stream was invalid"),
        (b'not json', "bad request body"),
    ]
    for body, fragment in cases:
        status, answer = raw(server, "POST", "/proxies/svc/toxics", body)
        assert status == 400, body
        assert answer["status"] == 400 and fragment in answer["error"]
    assert api.toxics("svc") == []


def test_reset_enables_all_and_removes_all_toxics(api: ToxiproxyAPI,
                                                  echo: LoopbackServer) -> None:
    api.create_proxy("a", echo.address)
    api.create_proxy("b", echo.address, enabled=False)
    api.add_toxic("a", "timeout", attributes={"timeout": 0})
    api.reset()
    proxies = api.proxies()
    assert all(p["enabled"] and p["toxics"] == [] for p in proxies.values())


def test_populate_replaces_only_changed_proxies(api: ToxiproxyAPI, echo: LoopbackServer,
                                                server: ProxyServer) -> None:
    first = api.populate([{"name": "a", "upstream": echo.address},
                          {"name": "b", "upstream": echo.address}])
    listen_a = first[0]["listen"]
    api.add_toxic("a", "noop")
    again = api.populate([{"name": "a", "upstream": echo.address, "listen": listen_a},
                          {"name": "b", "upstream": "127.0.0.1:1"}])
    assert again[0]["toxics"] != [], "unchanged proxy kept with its toxics"
    assert again[1]["upstream"] == "127.0.0.1:1"
    status, answer = raw(server, "POST", "/populate", b'[{"name": "c"}]')
    assert status == 400 and "upstream at proxy 1" in answer["error"]
    status, answer = raw(server, "POST", "/populate", b'{"name": "c"}')
    assert status == 400


def test_unknown_paths_methods_and_browsers(server: ProxyServer) -> None:
    assert raw(server, "GET", "/nope")[0] == 404
    assert raw(server, "PUT", "/proxies")[0] == 405
    assert raw(server, "GET", "/proxies/x/toxics/y/z")[0] == 404
    assert raw(server, "GET", "/version", headers={"User-Agent": "Mozilla/5.0"})[0] == 403


def test_metrics_in_prometheus_text(api: ToxiproxyAPI, echo: LoopbackServer) -> None:
    listen = api.create_proxy("svc", echo.address)["listen"]
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"x" * 1000)
        got = 0
        while got < 1000:
            got += len(conn.recv(4096))
    text = api.metrics()
    assert "# TYPE toxiproxy_proxy_received_bytes_total counter" in text
    line = (f'toxiproxy_proxy_received_bytes_total{{direction="upstream",listener="{listen}",'
            f'proxy="svc",upstream="{echo.address}"}} 1000')
    assert line in text
    assert 'chaoskit_proxy_connections_total{proxy="svc"} 1' in text


def test_python_api_is_the_same_api(server: ProxyServer, echo: LoopbackServer) -> None:
    created = server.create_proxy("svc", echo.address)
    assert server.proxies() == {"svc": created}
    server.add_toxic("svc", "slow_close", attributes={"delay": 5}, name="sc")
    assert server.toxics("svc")[0]["name"] == "sc"
    with pytest.raises(ApiError) as info:
        server.add_toxic("svc", "latency", attributes={"latency": -1})
    assert info.value.status == 400
    server.remove_toxic("svc", "sc")
    server.delete_proxy("svc")
    assert server.proxies() == {}


def test_client_reports_an_unreachable_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProxyError, match="cannot reach Toxiproxy"):
        ToxiproxyAPI(f"127.0.0.1:{port}", timeout=2).version()


def test_client_honours_toxiproxy_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOXIPROXY_URL", "http://127.0.0.1:9999/")
    assert ToxiproxyAPI().url == "http://127.0.0.1:9999"
    monkeypatch.delenv("TOXIPROXY_URL")
    with pytest.raises(ConfigError):
        ToxiproxyAPI()


def test_api_address_in_use_is_a_proxy_error(server: ProxyServer) -> None:
    with pytest.raises(ProxyError, match=f"127.0.0.1:{server.port}: address already in use"):
        ProxyServer(port=server.port).start()


def test_config_file_populates_at_start(tmp_path: Any, echo: LoopbackServer) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "cfg", "upstream": echo.address}]))
    with ProxyServer(port=0, config=config) as srv:
        assert list(srv.proxies()) == ["cfg"]
    config.write_text("[{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ProxyServer(port=0, config=config).start()
    config.write_text('[{"name": "x"}]')
    with pytest.raises(ConfigError, match="missing required field: upstream"):
        ProxyServer(port=0, config=config).start()


def test_python_api_is_thread_safe(server: ProxyServer, echo: LoopbackServer) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            server.create_proxy(f"p{i}", echo.address)
            server.add_toxic(f"p{i}", "latency", attributes={"latency": i})
            server.remove_toxic(f"p{i}", "latency_downstream")
        except BaseException as e:  # collected and re-raised below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    proxies = server.proxies()
    assert len(proxies) == 20 and all(p["toxics"] == [] for p in proxies.values())
    assert len({p["listen"] for p in proxies.values()}) == 20


def test_upstream_by_host_name_and_ipv6_listen(api: ToxiproxyAPI, echo: LoopbackServer) -> None:
    listen = api.create_proxy("byname", f"localhost:{echo.port}")["listen"]
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"name")
        assert conn.recv(4) == b"name"
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    created = api.create_proxy("v6", echo.address, listen="[::1]:0")
    assert created["listen"].startswith("[::1]:")
    port6 = int(created["listen"].rsplit(":", 1)[1])
    with socket.create_connection(("::1", port6), timeout=5) as conn:
        conn.sendall(b"six")
        assert conn.recv(3) == b"six"


def test_use_toxiproxy_prefers_toxiproxy_url(monkeypatch: pytest.MonkeyPatch,
                                            server: ProxyServer) -> None:
    monkeypatch.delenv("TOXIPROXY_URL", raising=False)
    with use_toxiproxy(seed=1) as embedded:
        assert embedded.url != server.url and embedded.version()
        embedded_url = embedded.url
    with pytest.raises(ProxyError):
        ToxiproxyAPI(embedded_url, timeout=2).version()  # stopped with the block
    monkeypatch.setenv("TOXIPROXY_URL", server.url)
    with use_toxiproxy() as external:
        assert external.url == server.url
    monkeypatch.setenv("TOXIPROXY_URL", "http://127.0.0.1:1")
    with pytest.raises(ProxyError, match="127.0.0.1:1"):
        with use_toxiproxy():
            pass


def test_expect_100_continue_is_answered(server: ProxyServer, echo: LoopbackServer) -> None:
    body = json.dumps([{"name": f"p{i}", "upstream": echo.address} for i in range(30)]).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(f"POST /populate HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                     "Expect: 100-continue\r\nConnection: close\r\n\r\n".encode())
        assert conn.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(body)
        answer = b""
        while data := conn.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 201 ")
    assert len(server.proxies()) == 30
