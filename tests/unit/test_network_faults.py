"""Network faults against the embedded Toxiproxy server: effects, exact revert, no orphans."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chaoskit.errors import ConfigError, FaultError
from chaoskit.faults.base import FaultContext
from chaoskit.faults.network import (
    TOXIC_PREFIX,
    Bandwidth,
    Latency,
    LimitData,
    Partition,
    ResetPeer,
    Slicer,
    remove_fault_toxics,
)
from chaoskit.journal import Journal, read_journal
from chaoskit.proxy import ApiError, ProxyServer, ToxiproxyAPI
from chaoskit.proxy.testing import LoopbackServer, echo_server, wait_until


@pytest.fixture
def server() -> Iterator[ProxyServer]:
    with ProxyServer(port=0) as srv:
        yield srv


@pytest.fixture
def echo() -> Iterator[LoopbackServer]:
    with echo_server() as srv:
        yield srv


@pytest.fixture
def listen(server: ProxyServer, echo: LoopbackServer) -> str:
    return str(server.create_proxy("serving", echo.address)["listen"])


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "journal.jsonl") as j:
        yield j


@pytest.fixture
def ctx(journal: Journal, server: ProxyServer,
        monkeypatch: pytest.MonkeyPatch) -> FaultContext:
    monkeypatch.delenv("TOXIPROXY_URL", raising=False)
    return FaultContext(journal, seed=5, stack=SimpleNamespace(toxiproxy_url=server.url))


def rtt(listen: str, timeout: float = 5.0) -> float:
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        return time.perf_counter() - start


def toxic_names(server: ProxyServer) -> list[str]:
    return toxic_names_of(server, "serving")


def toxic_names_of(server: ProxyServer, proxy: str) -> list[str]:
    return [t["name"] for t in server.toxics(proxy)]


def test_latency_is_on_the_wire_and_revert_removes_it(ctx: FaultContext, server: ProxyServer,
                                                      listen: str, journal: Journal) -> None:
    with Latency(delay="80ms", stream="both").inject(ctx) as injection:
        names = toxic_names(server)
        assert len(names) == 2 and all(n.startswith(TOXIC_PREFIX + "latency-") for n in names)
        assert rtt(listen) >= 0.160
        assert injection.changes.record["toxics"] == names
    assert toxic_names(server) == []
    assert rtt(listen) < 0.05
    events = [e["event"] for e in read_journal(journal.path)]
    assert events == ["fault.injected", "fault.reverted"]
    injected = read_journal(journal.path)[0]
    assert injected["changes"]["attributes"] == {"latency": 80, "jitter": 0}


def test_revert_removes_exactly_what_it_added(ctx: FaultContext, server: ProxyServer,
                                              listen: str) -> None:
    server.add_toxic("serving", "latency", name="someone-elses", attributes={"latency": 1})
    first = Latency(delay="10ms").inject(ctx)
    second = Latency(delay="10ms").inject(ctx)
    assert len(toxic_names(server)) == 3
    first.revert()
    first.revert()  # idempotent
    assert sorted(toxic_names(server)) == sorted(
        ["someone-elses", *second.changes.record["toxics"]])
    second.revert()
    assert toxic_names(server) == ["someone-elses"]


def test_revert_tolerates_toxic_or_proxy_gone(ctx: FaultContext, server: ProxyServer,
                                              listen: str, echo: LoopbackServer) -> None:
    injection = Bandwidth(rate_kbps=50).inject(ctx)
    server.reset()
    injection.revert()
    assert injection.reverted
    injection = ResetPeer(after="50ms").inject(ctx)
    server.delete_proxy("serving")
    injection.revert()
    server.create_proxy("serving", echo.address)
    refuse = Partition(mode="refuse").inject(ctx)
    server.delete_proxy("serving")
    refuse.revert()
    assert refuse.reverted


def test_partition_refuse_disables_then_restores(ctx: FaultContext, server: ProxyServer,
                                                 listen: str) -> None:
    with Partition(mode="refuse").inject(ctx):
        with pytest.raises(ConnectionRefusedError):
            rtt(listen)
        assert server.get_proxy("serving")["enabled"] is False
    assert rtt(listen) < 0.05
    server.update_proxy("serving", enabled=False)
    Partition(mode="refuse").inject(ctx).revert()
    assert server.get_proxy("serving")["enabled"] is False, "it was not ours to re-enable"


def test_partition_hang_black_holes_then_restores(ctx: FaultContext, server: ProxyServer,
                                                  listen: str) -> None:
    with Partition(mode="hang").inject(ctx) as injection:
        assert [t["type"] for t in server.toxics("serving")] == ["timeout", "timeout"]
        with pytest.raises(TimeoutError):
            rtt(listen, timeout=0.3)
        assert injection.changes.record["mode"] == "hang"
    assert toxic_names(server) == []
    assert rtt(listen) < 0.05
    with Partition(mode="hang", close_after="100ms").inject(ctx):
        host, port = listen.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(b"x")
            assert conn.recv(1) == b""  # closed after 100 ms


def test_data_faults_set_the_documented_toxics(ctx: FaultContext, server: ProxyServer,
                                               listen: str) -> None:
    cases: list[tuple[Any, str, dict[str, int]]] = [
        (Bandwidth(rate_kbps=64), "bandwidth", {"rate": 64}),
        (ResetPeer(after="1.5s"), "reset_peer", {"timeout": 1500}),
        (Slicer(average_size=10, size_variation=2, delay="250ms"), "slicer",
         {"average_size": 10, "size_variation": 2, "delay": 250_000}),
        (LimitData(bytes=3, stream="upstream"), "limit_data", {"bytes": 3}),
    ]
    for fault, toxic_type, attributes in cases:
        with fault.inject(ctx):
            (toxic,) = server.toxics("serving")
            assert (toxic["type"], toxic["attributes"]) == (toxic_type, attributes)
            assert toxic["stream"] == fault.stream
        assert server.toxics("serving") == []


def test_limit_data_closes_on_the_wire(ctx: FaultContext, listen: str) -> None:
    with LimitData(bytes=2, stream="downstream").inject(ctx):
        host, port = listen.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(b"hello")
            got = b""
            while data := conn.recv(10):
                got += data
    assert got == b"he"


def test_exception_in_the_block_still_reverts(ctx: FaultContext, server: ProxyServer,
                                              listen: str) -> None:
    with pytest.raises(AssertionError):
        with Latency(delay="5ms").inject(ctx):
            raise AssertionError("a failing test")
    assert toxic_names(server) == []
    with pytest.raises(KeyboardInterrupt):
        with Slicer().inject(ctx):
            raise KeyboardInterrupt
    assert toxic_names(server) == []


def test_interrupt_during_inject_leaves_no_orphan(ctx: FaultContext, server: ProxyServer,
                                                  listen: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    original = ToxiproxyAPI.add_toxic
    calls = []

    def add_then_interrupt(self: ToxiproxyAPI, *args: Any, **kwargs: Any) -> Any:
        original(self, *args, **kwargs)  # the server added it ...
        calls.append(kwargs["name"])
        raise KeyboardInterrupt  # ... but Ctrl-C lands before the answer is used

    monkeypatch.setattr(ToxiproxyAPI, "add_toxic", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        Latency(delay="5ms", stream="both").inject(ctx)
    assert calls and toxic_names(server) == []


def test_ctrl_c_during_revert_still_removes_everything(
        ctx: FaultContext, server: ProxyServer, listen: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    injection = Latency(delay="5ms", stream="both").inject(ctx)
    original = ToxiproxyAPI.remove_toxic
    interrupts = [1]

    def interrupt_once(self: ToxiproxyAPI, *args: Any) -> None:
        if interrupts:
            interrupts.pop()
            raise KeyboardInterrupt  # Ctrl-C while reverting the first toxic
        original(self, *args)

    monkeypatch.setattr(ToxiproxyAPI, "remove_toxic", interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        injection.revert()
    assert toxic_names(server) == []


def test_failure_half_way_removes_the_first_toxic(ctx: FaultContext, server: ProxyServer,
                                                  listen: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    original = ToxiproxyAPI.add_toxic

    def fail_second(self: ToxiproxyAPI, *args: Any, **kwargs: Any) -> Any:
        if kwargs["stream"] == "downstream":
            raise ApiError("boom", 500)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ToxiproxyAPI, "add_toxic", fail_second)
    with pytest.raises(FaultError, match="boom"):
        Latency(delay="5ms", stream="both").inject(ctx)
    assert toxic_names(server) == []


def test_ctrl_c_in_a_real_process_leaves_no_orphan(server: ProxyServer, listen: str,
                                                   tmp_path: Path) -> None:
    # a shell's background job inherits SIGINT ignored; the user's process has Ctrl-C's default
    script = textwrap.dedent(f"""
        import signal, sys, time
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from chaoskit.faults.base import FaultContext
        from chaoskit.faults.network import Latency
        from chaoskit.journal import Journal
        ctx = FaultContext(Journal({str(tmp_path / 'j.jsonl')!r}))
        with Latency(delay="50ms", stream="both", api={server.url!r}).inject(ctx):
            print("injected", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "injected"
        assert len(toxic_names(server)) == 2
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "KeyboardInterrupt" in err
    assert toxic_names(server) == []


def test_sweep_removes_only_fault_toxics(ctx: FaultContext, server: ProxyServer,
                                        listen: str) -> None:
    server.add_toxic("serving", "noop", name="keep-me")
    Latency(delay="5ms").inject(ctx)  # never reverted: a crashed run
    removed = remove_fault_toxics(ToxiproxyAPI(server.url))
    assert len(removed) == 1 and removed[0].startswith("serving/" + TOXIC_PREFIX)
    wait_until(lambda: toxic_names(server) == ["keep-me"], what="only keep-me left")


def test_api_is_found_from_field_then_env_then_stack(journal: Journal, server: ProxyServer,
                                                     listen: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOXIPROXY_URL", raising=False)
    with pytest.raises(FaultError, match="no Toxiproxy API"):
        Latency().inject(FaultContext(journal))
    dead = "http://127.0.0.1:1"
    stack = SimpleNamespace(toxiproxy_url=dead)
    Latency(api=server.url).inject(FaultContext(journal, stack=stack)).revert()
    monkeypatch.setenv("TOXIPROXY_URL", server.url)
    Latency().inject(FaultContext(journal, stack=stack)).revert()
    monkeypatch.delenv("TOXIPROXY_URL")
    with pytest.raises(FaultError, match="cannot reach Toxiproxy"):
        Latency().inject(FaultContext(journal, stack=stack))


@pytest.mark.parametrize(
    "fault",
    [Latency(proxy="serving-c"), Partition(proxy="serving-c"),
     Partition(proxy="serving-c", mode="hang")],
)  # fmt: skip
def test_unknown_proxy_lists_the_proxies_without_client_traceback(
    ctx: FaultContext, server: ProxyServer, echo: LoopbackServer, fault: Any
) -> None:
    for name in ("serving", "serving-b", "dr-site"):
        server.create_proxy(name, echo.address)
    with pytest.raises(FaultError) as caught:
        fault.inject(ctx)
    error = caught.value
    assert f"{fault.kind}: no proxy 'serving-c' at {server.url}" in str(error)
    assert "(proxies there: dr-site, serving, serving-b)" in str(error)
    shown = "".join(traceback.format_exception(error))  # what Python or pytest would print
    assert "client.py" not in shown and "ApiError" not in shown
    assert all(toxic_names_of(server, n) == [] for n in ("serving", "serving-b", "dr-site"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Latency(stream="sideways"),
        lambda: Latency(toxicity=1.5),
        lambda: Latency(delay="soon"),
        lambda: Bandwidth(rate_kbps=-1),
        lambda: LimitData(bytes=2.5),
        lambda: Slicer(average_size=4, size_variation=4),
        lambda: Partition(mode="sideways"),
        lambda: Partition(mode="refuse", close_after="1s"),
    ],
)
def test_bad_parameters_fail_at_construction(make: Any) -> None:
    with pytest.raises(ConfigError):
        make()
