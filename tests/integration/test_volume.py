"""The checkpoint volume and the disk-full fault on a real tmpfs (root on Linux).

A volume is mounted, filled to the byte asked for and emptied by the revert; a fill that
cannot be (larger than the volume), a directory shared with the host and bad parameters
are one message each and leave nothing; a volume whose owner was SIGKILLed is unmounted
by the next one to look.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaoskit.errors import FaultError, StackError
from chaoskit.faults import DiskFull, FaultContext
from chaoskit.faults.resources import FILL_NAME
from chaoskit.journal import Journal
from chaoskit.stack import volume
from chaoskit.waiting import wait_until

pytestmark = pytest.mark.integration
if volume.cannot_mount():
    pytest.skip(f"volume tests: {volume.cannot_mount()}", allow_module_level=True)


@pytest.fixture
def mounted(tmp_path: Path):
    path = tmp_path / "checkpoints"
    volume.mount_volume(path, 4)
    yield path
    volume.unmount_volume(path)
    assert not volume.is_mount_point(path)


@pytest.fixture
def ctx(tmp_path: Path, mounted: Path):
    journal = Journal(tmp_path / "journal.jsonl", source="test")
    stack = SimpleNamespace(checkpoint_dir=mounted, model_base_path=tmp_path / "models")
    yield FaultContext(journal, stack=stack)
    journal.close()


def free_bytes(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def test_a_volume_is_its_own_file_system_and_owned_by_this_process(mounted: Path):
    assert volume.is_mount_point(mounted)
    assert volume.chaoskit_mounts()[mounted] == os.getpid()
    assert volume.reap_orphans() == []  # its owner is alive
    busy = mounted.parent / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(StackError, match="not empty"):
        volume.mount_volume(busy, 1)
    assert not volume.is_mount_point(busy)


def test_disk_full_fills_to_the_byte_asked_for_and_the_revert_empties(ctx, mounted: Path):
    before = free_bytes(mounted)
    with DiskFull("checkpoints", leave_bytes=8192).inject(ctx) as injection:
        assert free_bytes(mounted) <= 8192 + 4096
        assert injection.changes.record["filled_bytes"] >= before - 8192 - 4096
        with pytest.raises(OSError) as e:
            (mounted / "big").write_bytes(bytes(64 * 1024))
        assert e.value.errno == 28  # ENOSPC
        (mounted / "big").unlink(missing_ok=True)
    assert not (mounted / FILL_NAME).exists() and free_bytes(mounted) >= before - 4096


def test_a_fill_larger_than_the_volume_is_refused_and_leaves_nothing(ctx, mounted: Path):
    with pytest.raises(FaultError, match=r"leave_bytes 8388608 is not smaller than the volume"):
        DiskFull("checkpoints", leave_bytes=8 << 20).inject(ctx)
    assert list(mounted.iterdir()) == []


def test_a_directory_shared_with_the_host_is_refused(tmp_path: Path):
    journal = Journal(tmp_path / "journal.jsonl", source="test")
    stack = SimpleNamespace(checkpoint_dir=tmp_path, model_base_path=tmp_path / "models")
    try:
        with pytest.raises(FaultError, match="is not a file system of its own"):
            DiskFull("models").inject(FaultContext(journal, stack=stack))
    finally:
        journal.close()
    assert not (tmp_path / FILL_NAME).exists()


@pytest.mark.parametrize("make, message", [
    (lambda: DiskFull("logs"), "target must be one of checkpoints, models, got 'logs'"),
    (lambda: DiskFull(leave_bytes=-1), "leave_bytes must be a whole number >= 0, got -1"),
    (lambda: DiskFull(leave_bytes=1.5), "got 1.5"),
])  # fmt: skip
def test_bad_parameters_are_named(make, message):
    with pytest.raises(FaultError, match=message):
        make()


def test_a_volume_left_by_a_killed_owner_is_unmounted_by_the_next(tmp_path: Path):
    path = tmp_path / "orphan"
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from chaoskit.stack import volume
        volume.mount_volume(Path({str(path)!r}), 1)
        print("mounted", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "mounted"
        assert volume.chaoskit_mounts()[path] == owner.pid
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
    assert volume.is_mount_point(path)  # SIGKILL: nobody unmounted it
    assert volume.reap_orphans() == [path]
    wait_until(lambda: not volume.is_mount_point(path), 10, what="the orphan unmounted")


def test_ctrl_c_reverts_the_fill(mounted: Path, tmp_path: Path):
    # a shell's background job inherits SIGINT ignored; the user's process has Ctrl-C's default
    script = textwrap.dedent(f"""
        import signal, time
        from pathlib import Path
        from types import SimpleNamespace
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from chaoskit.faults import DiskFull, FaultContext
        from chaoskit.journal import Journal
        stack = SimpleNamespace(checkpoint_dir=Path({str(mounted)!r}), model_base_path=None)
        ctx = FaultContext(Journal({str(tmp_path / 'j.jsonl')!r}), stack=stack)
        with DiskFull("checkpoints").inject(ctx):
            print("injected", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "injected"
        assert (mounted / FILL_NAME).exists() and free_bytes(mounted) < 1 << 20
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "KeyboardInterrupt" in err
    assert not (mounted / FILL_NAME).exists() and free_bytes(mounted) > 3 << 20
