"""Crash safety: backup, forget and prune SIGKILLed at random moments, hundreds of times.

Each round a real child process (forked from a helper subprocess that imported chaoskit
once) opens the repository and runs one operation; the test SIGKILLs it after a random
delay drawn from the operation's observed duration, so kills land before, inside and
after the writes.
After every kill: the repository passes ``check --read-data``, no snapshot that had
completed is lost (forget may only remove what its policy does not keep), and at the
end every snapshot whose content the test knows restores byte-identical.
"""

from __future__ import annotations

import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from chaoskit.dr import init_repository, open_repository
from chaoskit.dr.protect.repository.repo import Repository

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = int(os.environ.get("CHAOSKIT_CRASH_ROUNDS", "300"))
ROUND_TIMEOUT = 60.0  # seconds one round may take before the test fails instead of hanging

# A long-lived subprocess that has imported chaoskit once and forks one child per round:
# the child opens the repository and runs the operation; the test SIGKILLs it by pid.
# Forking keeps a round near 0.1 s, so hundreds of kills fit in the test budget.
ZYGOTE = r"""
import os, sys, time, warnings
warnings.simplefilter("ignore")
from chaoskit.dr import RetentionPolicy, open_repository
while line := sys.stdin.readline():
    op, root, src = line.split()
    pid = os.fork()
    if pid == 0:
        try:
            started = time.monotonic()
            repo = open_repository(root, "pw")
            if op == "backup":
                print("snapshot", repo.backup(src).id, flush=True)
            elif op == "forget":
                repo.forget(RetentionPolicy(keep_last=3), prune=True)
            else:
                repo.prune()
            print("done", time.monotonic() - started, flush=True)
        finally:
            os._exit(0)
    print("child", pid, flush=True)
    sys.stdin.readline()  # reap only when told: until then the pid cannot be reused
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def mutate(src: Path, rng: random.Random) -> None:
    name = src / f"f{rng.randrange(8)}"
    action = rng.random()
    if action < 0.15 and name.exists():
        name.unlink()
    elif action < 0.4 and name.exists():
        with open(name, "ab") as f:
            f.write(rng.randbytes(rng.randrange(1, 5000)))
    else:
        name.write_bytes(rng.randbytes(rng.randrange(0, 40_000)))


def quiet_open(path: Path) -> Repository:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_repository(path, "pw")


def test_sigkill_never_breaks_the_repository(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    root, src = tmp_path / "repo", tmp_path / "src"
    init_repository(root, "pw", scrypt_n=2**8)
    src.mkdir()
    contents: dict[str, dict[str, bytes]] = {}
    durations: dict[str, list[float]] = {"backup": [0.02], "forget": [0.02], "prune": [0.02]}
    killed = completed = 0
    zygote = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    try:
        for round_no in range(ROUNDS):
            op = rng.choices(["backup", "forget", "prune"], weights=[6, 2, 2])[0]
            mutate(src, rng)
            tree = read_tree(src)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                before = quiet_open(root).snapshots()
            zygote.stdin.write(f"{op} {root} {src}\n")
            zygote.stdin.flush()
            lines = []
            watchdog = threading.Timer(ROUND_TIMEOUT, zygote.kill)  # a hang fails, not blocks
            watchdog.daemon = True
            watchdog.start()
            # a child killed mid-print may leave half a line: match the ends of lines
            while not (found := re.search(r"child (\d+)\n$", line := zygote.stdout.readline())):
                assert line, f"round {round_no}: the zygote process died or hung"
                lines.append(line.strip())
            pid = int(found.group(1))
            if round_no % 5:  # every fifth round runs to the end, to measure the operation
                # the kill moment: uniform over (a bit beyond) the operation's typical run
                time.sleep(rng.uniform(0, 1.1 * statistics.median(durations[op][-20:])))
                os.kill(pid, signal.SIGKILL)  # alive or a zombie: never another process
            zygote.stdin.write("reap\n")
            zygote.stdin.flush()
            while not (line := zygote.stdout.readline()).endswith("reaped\n"):
                assert line, f"round {round_no}: the zygote process died or hung"
                lines.append(line.strip())
            watchdog.cancel()
            if lines and lines[-1].startswith("done"):
                completed += 1
                durations[op].append(float(lines[-1].split()[1]))
            else:
                killed += 1
            for line in lines:
                if line.startswith("snapshot "):
                    contents[line.split()[1]] = tree

            repo = quiet_open(root)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = repo.check(read_data=True)
                after = {s.id for s in repo.snapshots()}
            assert report.ok, f"round {round_no} ({op}): {[str(p) for p in report.problems]}"
            must_keep = {s.id for s in before}
            if op == "forget":
                newest = sorted(before, key=lambda s: (s.time, s.backup_time))[-3:]
                must_keep = {s.id for s in newest}
            assert must_keep <= after, f"round {round_no} ({op}) lost {must_keep - after}"
            for snap_id in list(contents):
                if snap_id not in after:
                    del contents[snap_id]
    finally:
        zygote.kill()
        zygote.wait(timeout=30)
    print(f"{ROUNDS} rounds: {killed} killed mid-operation, {completed} completed")
    assert killed >= ROUNDS // 3 and completed >= ROUNDS // 10, (killed, completed)
    repo = quiet_open(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n, (snap_id, tree) in enumerate(contents.items()):
            target = tmp_path / f"restore{n}"
            repo.restore(snap_id, target)
            assert read_tree(target) == tree
