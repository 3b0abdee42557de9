"""Memory pressure on a real process (root on Linux, a memory cgroup controller): the
kernel's OOM killer kills it and its cgroup's counter says so, the balloon outlives it
until the revert, nothing is left after it (nor after Ctrl-C, nor after an owner killed
with SIGKILL), and a limit below what it holds is refused.  Docker too, where an engine
answers."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from docker_support import engine_or_skip
from owner_support import killed_owner

from chaoskit.errors import FaultError
from chaoskit.faults import FaultContext, MemoryPressure
from chaoskit.journal import Journal, read_journal
from chaoskit.stack import cgroup
from chaoskit.stack.cgroup import BALLOON_MARK
from chaoskit.stack.memory_limit import cannot_limit_memory
from chaoskit.stack.process import OWNER_ENV, ProcessBackend, chaoskit_processes
from chaoskit.stack.service import Readiness, ServiceSpec
from chaoskit.waiting import wait_until

pytestmark = pytest.mark.integration
if cannot_limit_memory():
    pytest.skip(f"memory limit tests: {cannot_limit_memory()}", allow_module_level=True)

HOLD = textwrap.dedent("""
    import http.server, sys
    held = bytearray(int(sys.argv[2]) << 20)
    held[::4096] = b"\\1" * len(range(0, len(held), 4096))  # touched: resident
    http.server.test(http.server.SimpleHTTPRequestHandler, port=int(sys.argv[1]),
                     bind=sys.argv[3])
""")
"""A service that holds some memory (argv: port, MB, bind host) and answers HTTP."""
MB = 1 << 20


def hold_spec(megabytes: int = 150) -> ServiceSpec:
    return ServiceSpec(
        name="hold",
        command=(sys.executable, "-c", HOLD, "{port_rest}", str(megabytes), "{bind_host}"),
        ports={"rest": 0},
        readiness=Readiness(http_path="/", timeout=20),
        stop_timeout=2.0,
    )


def balloons(owner: int | None = None) -> list[int]:
    """Live balloon processes (holder or push) of the process backend of *owner* (default:
    this process), found by their command line's mark and the backend's environment."""
    found = []
    for pid, markers in chaoskit_processes().items():
        try:
            marked = BALLOON_MARK.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marked and markers[OWNER_ENV] == str(owner or os.getpid()):
            found.append(pid)
    return found


def memory_groups() -> list[str]:
    home = cgroup._home("memory")
    assert home is not None
    return sorted(p.name for p in home[0].glob(f"{cgroup.PREFIX}{os.getpid()}-*"))


@pytest.fixture
def backend(tmp_path):
    backend = ProcessBackend(tmp_path / "run", tmp_path / "data")
    backend.start(hold_spec())
    yield backend
    backend.close()
    assert memory_groups() == [] and balloons() == []  # close leaves no group, no balloon


@pytest.fixture
def ctx(tmp_path, backend):
    journal = Journal(tmp_path / "journal.jsonl", source="test")
    yield FaultContext(journal, stack=SimpleNamespace(backend=backend))
    journal.close()


def injected(ctx: FaultContext) -> dict:
    (event,) = [e for e in read_journal(ctx.journal.path) if e["event"] == "fault.injected"]
    return event["changes"]


def test_the_oom_killer_kills_the_service_and_the_balloon_holds_until_the_revert(backend, ctx):
    service = backend._get("hold")
    first, group = service.proc, service.memory
    assert group is not None and first is not None and group.pids() == [first.pid]
    with MemoryPressure("hold").inject(ctx) as injection:
        holder = injection.changes.undo.__self__.balloon  # undo: its MemoryLimit's lift
        assert first.returncode == -signal.SIGKILL and backend.status("hold") == "exited"
        assert holder.poll() is None and holder.pid in group.pids()  # it outlived the service
        assert group.read("memory.limit_in_bytes").strip() == str(injection.changes.record[
            "limit_bytes"])  # fmt: skip
        backend.restart("hold")  # what the DR engine does: a new process, in a new group
        assert backend._get("hold").memory not in (None, group)
    changes = injected(ctx)
    assert changes["oom_killed"] is True and changes["exit_signal"] == "SIGKILL", changes
    assert changes["oom_kills"] >= 1 and changes["balloon_alive"] is True, changes
    assert changes["usage_bytes"] > 150 * MB and changes["cgroup"] == str(group.path)
    assert holder.poll() is not None and balloons() == [] and not group.path.exists()
    assert backend.status("hold") == "running"


def test_a_limit_below_what_it_holds_is_refused_and_nothing_is_left(backend, ctx):
    group = backend._get("hold").memory
    assert group is not None
    with pytest.raises(FaultError) as e:
        MemoryPressure("hold", limit_mb=50).inject(ctx)
    # v1: the kernel's own refusal (EBUSY: nothing more to reclaim); v2: compared first
    assert str(e.value).startswith("memory-pressure: limit_mb 50 is below the current usage "
                                   "of hold (")  # fmt: skip
    usage = float(str(e.value).rsplit("(", 1)[1].split()[0])
    assert usage > 150, e.value
    assert backend.status("hold") == "running" and backend._get("hold").memory is group
    limit = "memory.max" if group.v2 else "memory.limit_in_bytes"
    assert int(group.read(limit).replace("max", str(1 << 62))) > 1 << 40  # no limit
    assert balloons() == [] and not [e for e in read_journal(ctx.journal.path)
                                     if e["event"] == "fault.injected"]  # fmt: skip


def test_ctrl_c_in_the_fault_reverts_it(backend, ctx):
    with pytest.raises(KeyboardInterrupt):
        with MemoryPressure("hold").inject(ctx) as injection:
            group = Path(injection.changes.record["cgroup"])
            raise KeyboardInterrupt
    assert injection.reverted and balloons() == [] and not group.exists()


def test_a_service_alive_at_the_lift_stays_in_its_group_unlimited_as_before(backend):
    pid = int(backend.instance("hold"))
    group = backend._get("hold").memory
    assert group is not None
    limit = backend.limit_memory("hold", 4000 * MB)  # room for seconds of balloon
    try:
        assert limit.balloon is not None and limit.balloon.poll() is None
        assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() in ("0", "1000")
    finally:
        limit.lift()  # before the balloon got there: as a Ctrl-C would
    assert backend.instance("hold") == str(pid) and backend._get("hold").memory is group
    assert pid in group.pids() and balloons() == []
    assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "0"  # put back
    assert int(group.read("memory.limit_in_bytes")) > 1 << 40


def test_a_group_left_by_a_killed_owner_is_removed_by_the_next_run(tmp_path):
    group = killed_owner(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_memory_limit import hold_spec
        from chaoskit.stack.process import ProcessBackend
        backend = ProcessBackend({str(tmp_path / "run")!r}, {str(tmp_path / "data")!r})
        backend.start(hold_spec())
        limit = backend.limit_memory("hold", 4000 << 20)
        print(limit.group.path, flush=True)
        time.sleep(600)
    """)
    owner = int(Path(group).name.split("-")[1])  # chaoskit-<owner pid>-hold-memory-<n>
    assert os.path.isdir(group)
    wait_until(lambda: balloons(owner) == [], 10, what="the balloon gone with its owner")
    assert group in [str(g) for g in cgroup.reap_orphans()]  # (and any other run's orphans)
    assert not os.path.exists(group) and balloons(owner) == []


@pytest.mark.docker
def test_on_docker_the_oom_killer_kills_the_container_and_the_limit_goes(tmp_path):
    engine_or_skip()
    from chaoskit.stack.docker import DockerBackend

    backend = DockerBackend(tmp_path / "run", tmp_path / "data")
    journal = Journal(tmp_path / "journal.jsonl", source="test")
    try:
        backend.start(hold_spec())
        ctx = FaultContext(journal, stack=SimpleNamespace(backend=backend))
        with pytest.raises(FaultError, match="limit_mb 50 is below the current usage of hold"):
            MemoryPressure("hold", limit_mb=50).inject(ctx)  # runc: "unable to set memory limit"
        container = backend.container_id("hold")
        api = backend.client.api
        assert api.inspect_container(container)["HostConfig"]["Memory"] == 0  # left as it was
        with MemoryPressure("hold").inject(ctx):
            state = api.inspect_container(container)["State"]
            assert state["OOMKilled"] is True and state["ExitCode"] == 137
        changes = injected(ctx)
        assert changes["oom_killed"] and changes["oom_events"] >= 1, changes
        assert changes["exit_code"] == 137 and changes["exit_signal"] == "SIGKILL", changes
        memory = api.inspect_container(container)["HostConfig"]["Memory"]
        assert memory >= api.info()["MemTotal"]  # no value means "none" to docker update
        backend.restart("hold")  # a new container, without the limit
        assert api.inspect_container(backend.container_id("hold"))["HostConfig"]["Memory"] == 0
    finally:
        backend.close()
        journal.close()
