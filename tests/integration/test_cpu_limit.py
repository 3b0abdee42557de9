"""A CPU limit on a real process (a cgroup of its own; root on Linux): it holds, it is
lifted, and one a SIGKILLed owner left behind is removed by the next run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from owner_support import killed_owner

from chaoskit.errors import FaultError
from chaoskit.faults import CpuStarvation
from chaoskit.stack import cgroup

pytestmark = pytest.mark.integration
if cgroup.cannot_limit():
    pytest.skip(f"CPU limit tests: {cgroup.cannot_limit()}", allow_module_level=True)

BUSY = "while True: pass"


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def share_of_a_cpu(pid: int, seconds: float = 1.0) -> float:
    start, began = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start) / (time.monotonic() - began)


@pytest.fixture
def busy():
    proc = subprocess.Popen([sys.executable, "-c", BUSY])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_a_limit_holds_and_lifting_it_gives_the_cpu_back(busy):
    assert share_of_a_cpu(busy.pid, 0.5) > 0.5
    limit = cgroup.CpuLimit(busy.pid, "busy", 0.05)
    try:
        assert (limit.group / "cgroup.procs").read_text().split() == [str(busy.pid)]
        assert share_of_a_cpu(busy.pid) < 0.15
    finally:
        limit.lift()
    assert not limit.group.exists()
    assert share_of_a_cpu(busy.pid, 0.5) > 0.5


def test_a_group_left_by_a_killed_owner_is_removed_by_the_next_run(busy):
    group = killed_owner(f"""
        import time
        from chaoskit.stack.cgroup import CpuLimit
        limit = CpuLimit({busy.pid}, "busy", 0.05)
        print(limit.group, flush=True)
        time.sleep(600)
    """)
    assert os.path.isdir(group) and share_of_a_cpu(busy.pid) < 0.15  # still starved
    assert group in [str(g) for g in cgroup.reap_orphans()]  # (and any other run's orphans)
    assert not os.path.exists(group) and share_of_a_cpu(busy.pid, 0.5) > 0.5


@pytest.mark.parametrize("cpus", [0, 0.001, 1e9, True, "half"])
def test_a_cpu_share_out_of_range_is_named(cpus):
    with pytest.raises(FaultError) as e:
        CpuStarvation("serving", cpus=cpus)
    assert "cpus must be a number from 0.01 to below" in str(e.value)
    assert str(e.value).endswith(f"got {cpus!r}")
