from __future__ import annotations

import sys
import threading

import pytest

from chaoskit.dr.protect.inotify import Watcher

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux only")


def test_a_change_wakes_the_watcher_and_quiet_times_out(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    watcher = Watcher()
    assert watcher.available
    watcher.watch(tmp_path)
    assert watcher.wait(0.05) is False  # nothing happened
    timer = threading.Timer(0.1, lambda: (tmp_path / "f").write_bytes(b"y"))
    timer.start()
    assert watcher.wait(5.0) is True
    timer.join()
    while watcher.wait(0.05):  # the rest of that write's events (modify, close)
        pass
    assert watcher.wait(0.1) is False  # quiet again
    (tmp_path / "f").unlink()
    assert watcher.wait(1.0) is True
    watcher.close()


def test_missing_directories_are_skipped_and_forgotten(tmp_path):
    watcher = Watcher()
    watcher.watch(tmp_path / "nope")
    gone = tmp_path / "gone"
    gone.mkdir()
    watcher.watch(gone)
    gone.rmdir()
    assert watcher.wait(1.0) is True
    watcher.forget_missing()
    assert watcher.wait(0.05) is False
    watcher.close()
    assert watcher.wait(0.01) is False  # closed: never blocks, never reports


def test_a_directory_replaced_under_the_same_path_is_watched_again(tmp_path):
    """A restore swaps a new directory in under the old name: its changes must count."""
    target = tmp_path / "version"
    target.mkdir()
    watcher = Watcher()
    watcher.watch(target)
    target.rename(tmp_path / "aside")
    target.mkdir()
    while watcher.wait(0.1):
        pass
    watcher.watch(target)  # the old watch followed the renamed directory; this is the new one
    (target / "f").write_bytes(b"damage")
    assert watcher.wait(2.0) is True
    watcher.close()
