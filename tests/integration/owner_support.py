"""An owner killed with SIGKILL, for the tests of what the next run reaps."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap


def killed_owner(code: str) -> str:
    """Run *code* in a Python of its own until it prints a line, SIGKILL it, return the line
    (e.g. the path of what it left behind)."""
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert owner.stdout is not None
        return owner.stdout.readline().strip()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
