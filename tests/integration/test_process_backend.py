"""The process backend with real processes (a tiny HTTP server stands in as the service)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from chaoskit.errors import StackError
from chaoskit.stack import cgroup
from chaoskit.stack.memory_limit import cannot_limit_memory
from chaoskit.stack.process import ProcessBackend, chaoskit_processes, process_state
from chaoskit.stack.service import Readiness, ServiceSpec
from chaoskit.waiting import wait_until

pytestmark = pytest.mark.integration


def http_spec(name="web", port=0, timeout=20.0):
    return ServiceSpec(
        name=name,
        command=(sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port_rest}"),
        ports={"rest": port},
        readiness=Readiness(http_path="/", timeout=timeout),
        stop_timeout=2.0,
    )


def get(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
        return answer.status


@pytest.fixture
def backend(tmp_path):
    backend = ProcessBackend(tmp_path / "run", tmp_path / "data")
    yield backend
    backend.close()


def test_start_kill_restart_keeps_the_port(backend):
    backend.start(http_spec())
    host, port = backend.endpoint("web", "rest")
    assert get(port) == 200 and backend.status("web") == "running"
    first = backend.instance("web")
    assert backend.kill("web", "SIGKILL") == first
    wait_until(lambda: backend.status("web") == "exited", 5, what="killed process exits")
    backend.restart("web")
    assert backend.instance("web") != first
    assert backend.endpoint("web", "rest") == (host, port) and get(port) == 200


def test_pause_is_alive_but_silent_and_resume_undoes_it(backend):
    backend.start(http_spec())
    _, port = backend.endpoint("web", "rest")
    backend.pause("web")
    assert backend.status("web") == "paused"
    with pytest.raises(OSError):  # the port accepts, but nothing answers
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5)
    backend.resume("web")
    assert backend.status("web") == "running" and get(port) == 200


def test_close_leaves_no_process_even_when_paused(backend):
    backend.start(http_spec("a"))
    backend.start(http_spec("b"))
    pids = [int(backend.instance(n)) for n in ("a", "b")]
    backend.pause("a")
    backend.close()
    for pid in pids:
        assert process_state(pid) in (None, "Z")
    assert backend.status("a") == "exited"


def test_port_in_use_is_a_clear_error(backend):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StackError, match=f"port 127.0.0.1:{port} is already in use"):
            backend.start(http_spec(port=port))


def test_a_service_that_dies_at_start_reports_its_output(backend):
    spec = ServiceSpec(
        name="broken",
        command=(sys.executable, "-c", "import sys; print('boom: bad flag'); sys.exit(3)"),
        readiness=Readiness(file="{run_dir}/never", timeout=20),
    )
    with pytest.raises(StackError, match=r"exited with code 3(.|\n)*boom: bad flag"):
        backend.start(spec)


def test_unknown_service_names_the_known_ones(backend):
    backend.start(http_spec())
    with pytest.raises(StackError, match=r"no service 'nope'.*web"):
        backend.kill("nope")


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from chaoskit.stack.process import ProcessBackend
    from chaoskit.stack.service import Readiness, ServiceSpec
    backend = ProcessBackend(sys.argv[1], sys.argv[2])
    backend.start(ServiceSpec(
        name="web",
        command=(sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port_rest}"),
        ports={"rest": 0}, readiness=Readiness(http_path="/", timeout=20)))
    print(backend.instance("web"), flush=True)
    time.sleep(120)
    """
)


def test_children_die_with_their_owner_even_on_sigkill(tmp_path):
    owner = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path / "run"), str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(owner.stdout.readline())
        assert child in chaoskit_processes()
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        wait_until(lambda: process_state(child) in (None, "Z"), 10, what="service dies with owner")
        # the memory cgroup it started in (where the backend can make one) goes with the
        # next run's reap
        reaped = [g.name for g in cgroup.reap_orphans()]
        assert reaped == ([] if cannot_limit_memory() else [f"chaoskit-{owner.pid}-web-memory-1"])
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
