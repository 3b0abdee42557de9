"""SIGTERM never deadlocks a process that waits on the Event it stops with.

The old way (a signal handler calling ``event.set()``) hung about 1 run in 20 with the
loop below: the handler ran while the main thread held the Event's lock inside
``Event.wait``.  These run real processes and send real signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

WAITER = """
import threading
from chaoskit.signals import StopSignals
stop = threading.Event()
with StopSignals(stop.set):
    print("ready", flush=True)
    while not stop.is_set():
        stop.wait(0.0002)  # the main thread holds the Event's lock most of the time
print("stopped", flush=True)
"""


def start(code: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_sigterm_stops_a_busy_waiter_every_time() -> None:
    hung = 0
    for i in range(40):
        proc = start(WAITER)
        time.sleep(0.001 * (i % 10))  # land the signal at different points of the loop
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            hung += 1
            proc.kill()
            proc.communicate()
            continue
        assert proc.returncode == 0 and out == "stopped\n"
    assert hung == 0, f"{hung} of 40 processes hung on SIGTERM"


def test_a_thread_started_before_does_not_let_sigterm_kill_the_process() -> None:
    """A thread started before the watcher still has SIGTERM unblocked; a signal the
    kernel hands to it is passed on, not the default action (death by SIGTERM: -15)."""
    proc = start("""
import threading
from chaoskit.signals import StopSignals
early = [threading.Thread(target=threading.Event().wait, args=(60,), daemon=True)
         for _ in range(8)]
for t in early:
    t.start()
stop = threading.Event()
StopSignals(stop.set).start()
print("ready", flush=True)
stop.wait(60)
print("stopped", flush=True)
""")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert (proc.returncode, out) == (0, "stopped\n")


def test_a_second_signal_ends_the_process_at_once() -> None:
    proc = start("""
import threading
from chaoskit.signals import StopSignals
StopSignals(lambda: None).start()  # the first signal is taken, nothing stops
print("ready", flush=True)
threading.Event().wait(60)
""")
    proc.send_signal(signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)  # the first one only asked
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM


def test_leaving_the_block_restores_the_handlers() -> None:
    out = subprocess.run([sys.executable, "-c", """
import signal
from chaoskit.signals import StopSignals
before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
with StopSignals(lambda: None):
    inside = signal.getsignal(signal.SIGTERM)
after = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
print(inside not in before, after == before, signal.set_wakeup_fd(-1))
"""], capture_output=True, text=True, timeout=30, env=os.environ.copy())  # fmt: skip
    assert out.stdout.split() == ["True", "True", "-1"], out.stderr
