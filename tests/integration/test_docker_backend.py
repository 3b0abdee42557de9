"""The Docker backend against a real engine, with a tiny HTTP server as the service."""

from __future__ import annotations

import socket
import sys
import urllib.request

import pytest
from docker_support import NOTHING_LEFT, answers, docker_client, engine_or_skip, get, http_spec  # noqa: F401

from chaoskit.errors import StackError
from chaoskit.stack.docker import DockerBackend
from chaoskit.stack.docker_engine import managed_objects
from chaoskit.stack.service import Readiness, ServiceSpec
from chaoskit.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]
engine_or_skip()


@pytest.fixture
def backend(docker_client, tmp_path):  # noqa: F811
    backend = DockerBackend(tmp_path / "run", tmp_path / "data")
    yield backend
    backend.close()


def exit_code(backend, service):
    info = backend.client.api.inspect_container(backend.container_id(service))
    return info["State"]["ExitCode"]


def test_kill_then_restart_replaces_the_container_and_keeps_the_port(backend):
    backend.start(http_spec())
    host, port = backend.endpoint("web", "rest")
    assert get(port) == 200 and backend.status("web") == "running"
    first, first_id = backend.instance("web"), backend.container_id("web")
    assert backend.kill("web", "SIGKILL") == first
    wait_until(lambda: backend.status("web") == "exited", 5, what="killed container exits")
    assert exit_code(backend, "web") == 137 and backend.instance("web") is None
    assert not answers(port)
    backend.restart("web")
    assert backend.container_id("web") != first_id and backend.instance("web") != first
    assert backend.endpoint("web", "rest") == (host, port) and get(port) == 200


def test_pause_is_alive_but_silent_and_resume_undoes_it(backend):
    backend.start(http_spec())
    _, port = backend.endpoint("web", "rest")
    backend.pause("web")
    assert backend.status("web") == "paused"
    with pytest.raises(OSError):  # the published port accepts, but nothing answers
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5)
    backend.resume("web")
    assert backend.status("web") == "running" and get(port) == 200


def test_a_paused_container_is_recovered_by_restart(backend):
    backend.start(http_spec())
    _, port = backend.endpoint("web", "rest")
    backend.pause("web")
    backend.restart("web")
    assert backend.status("web") == "running" and get(port) == 200


def test_graceful_stop_and_in_place_restart(backend):
    backend.start(http_spec())
    container = backend.container_id("web")
    before = backend.instance("web")
    backend.stop("web", timeout=5)
    assert backend.status("web") == "exited" and exit_code(backend, "web") == 143  # SIGTERM
    backend.restart_in_place("web")
    assert backend.container_id("web") == container and backend.instance("web") != before
    assert get(backend.endpoint("web", "rest")[1]) == 200


def test_any_signal_reaches_the_service(backend):
    backend.start(http_spec())
    backend.kill("web", "TERM")
    wait_until(lambda: backend.status("web") == "exited", 5, what="SIGTERM ends the server")
    assert exit_code(backend, "web") == 143


def test_services_reach_each_other_by_name_and_a_partition_cuts_them_off(backend):
    backend.start(http_spec("web"))
    backend.start(http_spec("other"))
    _, port = backend.endpoint("web", "rest")
    url = f"http://web:{port}/"
    fetch = [sys.executable, "-c",
             f"import urllib.request as u; print(u.urlopen({url!r}, timeout=1).status)"]

    def fetch_from_other():
        api = backend.client.api
        run = api.exec_create(backend.container_id("other"), fetch)
        return api.exec_start(run["Id"]).decode()

    assert "200" in fetch_from_other()
    backend.disconnect("web")
    assert not backend.connected("web") and backend.status("web") == "running"
    assert "200" not in fetch_from_other()
    assert not answers(port)  # clients on the host are cut off too
    backend.connect("web")
    wait_until(lambda: answers(port), 5, what="web answers again after reconnect")
    assert "200" in fetch_from_other()


def test_data_dir_is_shared_and_the_stores_are_labelled_volumes(backend, tmp_path):
    spec = ServiceSpec(
        name="writer",
        command=(sys.executable, "-c",
                 "import pathlib, time; pathlib.Path('{data_dir}/models/m.txt').write_text('x');"
                 "pathlib.Path('{data_dir}/ready').write_text('1'); time.sleep(300)"),
        readiness=Readiness(file="{data_dir}/ready", timeout=20),
    )
    backend.start(spec)
    assert (tmp_path / "data" / "models" / "m.txt").read_text() == "x"
    names = {v["Name"] for v in managed_objects(backend.client, project=backend.project)["volumes"]}
    assert names == {backend.volume(k) for k in ("models", "checkpoints", "backups", "dr-site")}


def test_close_leaves_nothing_behind_even_when_paused(backend):
    backend.start(http_spec("a"))
    backend.start(http_spec("b"))
    backend.pause("a")
    backend.close()
    left = managed_objects(backend.client, project=backend.project)
    assert left == NOTHING_LEFT
    assert backend.status("a") == "absent"
    assert "Serving HTTP" in (backend.run_dir / "logs" / "a.log").read_text()  # logs kept


def test_a_service_that_dies_at_start_reports_its_output(backend):
    spec = ServiceSpec(
        name="broken",
        command=(sys.executable, "-c", "import sys; print('boom: bad flag'); sys.exit(3)"),
        readiness=Readiness(file="{run_dir}/never", timeout=20),
    )
    with pytest.raises(StackError, match=r"exited with code 3(.|\n)*boom: bad flag"):
        backend.start(spec)


def test_a_service_never_ready_times_out_and_is_killed(backend):
    spec = ServiceSpec(
        name="slow", command=(sys.executable, "-c", "import time; time.sleep(300)"),
        readiness=Readiness(file="{run_dir}/never", timeout=1.5),
    )
    with pytest.raises(StackError, match=r"'slow' was not ready within 1.5s"):
        backend.start(spec)
    wait_until(lambda: backend.status("slow") == "exited", 5, what="timed-out container killed")


def test_port_in_use_and_unknown_service_are_clear_errors(backend):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StackError, match=f"port 127.0.0.1:{port} is already in use"):
            backend.start(http_spec(port=port))
    with pytest.raises(StackError, match=r"no service 'nope'"):
        backend.kill("nope")


def test_kill_is_a_crash_to_the_engine_so_a_restart_policy_acts(docker_client, tmp_path):  # noqa: F811
    """The benchmark's baseline: Docker's own policy restarts a killed container (not a
    paused one), because kill signals the container's init as a crash would."""
    backend = DockerBackend(tmp_path / "run", tmp_path / "data", restart_policy="on-failure")
    try:
        backend.start(http_spec())
        _, port = backend.endpoint("web", "rest")
        container, first = backend.container_id("web"), backend.instance("web")
        backend.kill("web")
        wait_until(lambda: backend.instance("web") not in (None, first) and answers(port), 15,
                   what="the restart policy brings the container back")
        assert backend.container_id("web") == container
    finally:
        backend.close()


def test_signals_read_cpu_and_memory_of_a_container_process_tree(backend, tmp_path):
    from types import SimpleNamespace

    from chaoskit.dr.learned.signals import SignalSampler

    backend.start(http_spec())
    stack = SimpleNamespace(backend=backend, replicas=["web"])
    sampler = SignalSampler(stack, None, tmp_path / "journal.jsonl")
    try:
        cpu, rss = sampler._proc("web", 1.0)
        assert cpu is None and rss is not None and 5 < rss < 500  # a Python http.server
        cpu, _ = sampler._proc("web", 2.0)
        assert cpu is not None and 0 <= cpu < 100
        backend.kill("web", "SIGKILL")
        wait_until(lambda: backend.status("web") == "exited", 5, what="killed container exits")
        assert sampler._proc("web", 3.0) == (0.0, 0.0)  # a dead service shows as zero
    finally:
        sampler.close()
