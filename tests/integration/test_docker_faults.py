"""Container faults (and the generic kill/hang faults) on the Docker backend."""

from __future__ import annotations

import http.client
import subprocess
import time
from types import SimpleNamespace

import pytest
from docker_support import answers, docker_client, engine_or_skip, get, http_spec  # noqa: F401

from chaoskit.errors import FaultError
from chaoskit.faults.base import FaultContext
from chaoskit.faults.container import (
    FirewallPartition,
    NetworkPartition,
    RemoveContainer,
    RestartContainer,
    StopService,
)
from chaoskit.faults.service import HangService, KillService
from chaoskit.journal import Journal, read_journal
from chaoskit.stack.docker import DockerBackend
from chaoskit.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]
engine_or_skip()


@pytest.fixture
def ctx(docker_client, tmp_path):  # noqa: F811
    backend = DockerBackend(tmp_path / "run", tmp_path / "data")
    journal = Journal(tmp_path / "journal.jsonl")
    backend.start(http_spec())
    yield FaultContext(journal=journal, stack=SimpleNamespace(backend=backend))
    backend.close()
    journal.close()


def port(ctx):
    return ctx.stack.backend.endpoint("web", "rest")[1]


def test_stop_is_graceful_and_left_for_recovery(ctx):
    backend = ctx.stack.backend
    with StopService("web", timeout=3).inject(ctx) as injection:
        assert backend.status("web") == "exited"
    assert injection.reverted and backend.status("web") == "exited"  # nothing undone
    changes = [e for e in read_journal(ctx.journal.path) if e["event"] == "fault.injected"]
    assert changes[0]["changes"]["service"] == "web" and changes[0]["changes"]["instance"]


def test_restart_container_is_a_blip_on_the_same_container(ctx):
    backend = ctx.stack.backend
    container = backend.container_id("web")
    with RestartContainer("web").inject(ctx) as injection:
        record = injection.changes.record
    assert record["instance"] != record["new_instance"]
    assert backend.container_id("web") == container and answers(port(ctx))


def test_remove_makes_the_service_absent_and_restart_replaces_it(ctx):
    backend = ctx.stack.backend
    with RemoveContainer("web").inject(ctx):
        assert backend.status("web") == "absent" and not answers(port(ctx))
    backend.restart("web")
    assert backend.status("web") == "running" and answers(port(ctx))


def test_partition_is_undone_on_revert(ctx):
    backend = ctx.stack.backend
    with NetworkPartition("web").inject(ctx):
        assert not backend.connected("web") and backend.status("web") == "running"
        assert not answers(port(ctx))
    assert backend.connected("web")
    wait_until(lambda: answers(port(ctx)), 5, what="service answers after the partition")


def test_partition_revert_leaves_a_replacement_alone(ctx):
    backend = ctx.stack.backend
    injection = NetworkPartition("web").inject(ctx)
    backend.restart("web")  # the DR engine replaced the cut-off container
    injection.revert()
    assert backend.connected("web") and answers(port(ctx))


def test_kill_with_any_signal_and_hang_work_through_the_generic_faults(ctx):
    backend = ctx.stack.backend
    with HangService("web").inject(ctx):
        assert backend.status("web") == "paused"
    assert backend.status("web") == "running"
    with KillService("web", signal="SIGINT").inject(ctx):
        wait_until(lambda: backend.status("web") == "exited", 5, what="SIGINT stops the server")


def test_container_faults_need_a_container_backend(tmp_path):
    ctx = FaultContext(journal=Journal(tmp_path / "j.jsonl"),
                       stack=SimpleNamespace(backend=SimpleNamespace(name="process")))
    with pytest.raises(FaultError, match=r"partition\(service='serving'\) is not available on "
                       r"the 'process' backend \(it has no disconnect\(\)\)"):
        NetworkPartition().inject(ctx)


def firewall(ctx) -> str:
    """``iptables -S`` in the web container's namespace, read without chaoskit's helpers."""
    pid = ctx.stack.backend.netns_pid("web")
    command = ["/usr/bin/nsenter", "--target", str(pid), "--net", "/usr/sbin/iptables", "-S"]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=15).stdout


def attempt(port: int, timeout: float) -> tuple[str, float]:
    """What one request gets: "ok", "timeout" or "refused" (refused or reset), and how fast."""
    began = time.monotonic()
    try:
        get(port, timeout=timeout)
        result = "ok"
    except (ConnectionError, http.client.RemoteDisconnected):
        result = "refused"
    except TimeoutError:
        result = "timeout"
    except OSError as e:  # urllib wraps connect errors: look at the reason
        reason = getattr(e, "reason", e)
        result = "timeout" if isinstance(reason, TimeoutError) else "refused"
    return result, time.monotonic() - began


def test_firewall_drop_makes_clients_hang_and_revert_removes_exactly_its_rule(ctx):
    backend = ctx.stack.backend
    container = backend.container_id("web")
    with FirewallPartition("web", mode="drop").inject(ctx) as injection:
        record = injection.changes.record
        assert record["rule"] in firewall(ctx)
        assert attempt(port(ctx), timeout=1.0)[0] == "timeout"
        assert backend.status("web") == "running" and backend.connected("web")
    assert "chaoskit" not in firewall(ctx)
    wait_until(lambda: answers(port(ctx)), 5, what="service answers after the firewall partition")
    assert backend.container_id("web") == container
    (event,) = [e for e in read_journal(ctx.journal.path) if e["event"] == "fault.injected"]
    assert event["fault"] == "partition" and event["params"]["mode"] == "drop"
    assert event["changes"] == {
        "service": "web", "container": container[:12], "mode": "drop", "rule": record["rule"]
    }  # fmt: skip


def test_firewall_reject_refuses_quickly(ctx):
    with FirewallPartition("web", mode="reject").inject(ctx):
        result, took = attempt(port(ctx), timeout=5.0)
        assert result == "refused" and took < 2.0, (result, took)
        assert ctx.stack.backend.status("web") == "running"
    assert "chaoskit" not in firewall(ctx)
    wait_until(lambda: answers(port(ctx)), 5, what="service answers after the firewall partition")


def test_firewall_revert_leaves_a_replacement_alone(ctx):
    backend = ctx.stack.backend
    injection = FirewallPartition("web", mode="drop").inject(ctx)
    old = backend.container_id("web")
    backend.restart("web")  # the DR engine replaced the firewalled container
    assert backend.container_id("web") != old and answers(port(ctx))
    injection.revert()
    assert injection.reverted and answers(port(ctx))
    assert "chaoskit" not in firewall(ctx)


def test_firewall_bad_mode_is_a_fault_error_naming_it(ctx):
    with pytest.raises(FaultError, match=r"mode 'blackhole' is not one of \('drop', 'reject'\)"):
        FirewallPartition("web", mode="blackhole").inject(ctx)
    assert "chaoskit" not in firewall(ctx) and answers(port(ctx))


def test_firewall_partition_needs_a_container_backend(tmp_path):
    ctx = FaultContext(journal=Journal(tmp_path / "j.jsonl"),
                       stack=SimpleNamespace(backend=SimpleNamespace(name="process")))
    with pytest.raises(FaultError, match=r"partition\(service='serving', mode='drop'\) is not "
                       r"available on the 'process' backend \(it has no netns_pid\(\)\)"):
        FirewallPartition().inject(ctx)
