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


def test_leaving_the_block_restores_the_signal_mask() -> None:
    out = subprocess.run([sys.executable, "-c", """
import signal
from chaoskit.signals import StopSignals
with StopSignals(lambda: None):
    inside = signal.pthread_sigmask(signal.SIG_BLOCK, [])
after = signal.pthread_sigmask(signal.SIG_BLOCK, [])
print(signal.SIGTERM in inside, signal.SIGTERM in after)
"""], capture_output=True, text=True, timeout=30, env=os.environ.copy())  # fmt: skip
    assert out.stdout.split() == ["True", "False"], out.stderr
