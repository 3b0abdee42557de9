"""The memory balloon: a small process that takes memory step by step, in the service's
memory cgroup, until the kernel's OOM killer kills the service, then holds it.

It runs as ``python -c <this file's source> chaoskit-balloon ARGS`` (:func:`argv`), so it
needs nothing but a Python (in a container too) and its command line carries the mark by
which a dissolving cgroup recognises it (:data:`chaoskit.stack.cgroup.BALLOON_MARK`).

1. It makes itself the OOM killer's last choice, ``oom_score_adj`` -1000.  That needs
   CAP_SYS_RESOURCE, which a sandbox or an unprivileged container may lack even for
   root; then it makes the *victims* the first choice instead (1000, which needs no
   privilege) and puts their old values back when it is stopped: either way the kernel
   kills the service, not the balloon.
2. With ``--cgroup`` it joins that cgroup (the process backend's group of the service).
3. It allocates and touches ``--step`` bytes every ``--interval`` seconds until it holds
   ``--hold`` bytes (well below the limit); then a child of it, the push, goes on up to
   ``--max``, until every victim is gone (dead, or a zombie: its memory is free); the
   balloon holds what it has.  ``--victims auto`` means every other process in its pid namespace
   but init: inside a container, the service.
4. It stops on SIGTERM, or when its standard input closes with ``--until-eof`` (a Docker
   exec's stream: the balloon goes when its owner does, however the owner ends).

It prints one line once set up: ``ready protected`` or ``ready victims=<pid>,<pid>``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

MARK = "chaoskit-balloon"
PAGE = 4096


def argv(
    python: str, *, hold: int, max_bytes: int, victims: str, step: int = 8 << 20,
    interval: float = 0.01, cgroup: str | None = None, until_eof: bool = False,
) -> list[str]:  # fmt: skip
    """The balloon's command line (the source travels in it: nothing to install)."""
    with open(__file__) as f:
        source = f.read()
    args = [python, "-c", source, MARK, "--hold", str(hold), "--max", str(max_bytes),
            "--step", str(step),
            "--interval", str(interval), "--victims", victims]  # fmt: skip
    if cgroup:
        args += ["--cgroup", cgroup]
    return args + (["--until-eof"] if until_eof else [])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _others() -> list[int]:
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]


def _set_adj(pid: int | str, value: int) -> None:
    with open(f"/proc/{pid}/oom_score_adj", "w") as f:
        f.write(f"{value}\n")


def _adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


def main(args: list[str]) -> int:
    until_eof = "--until-eof" in args
    args = [a for a in args if a != "--until-eof"]
    opts = dict(zip(args[1::2], args[2::2], strict=False))
    hold, max_bytes, step = int(opts["--hold"]), int(opts["--max"]), int(opts["--step"])
    interval = float(opts["--interval"])
    named = opts["--victims"]
    victims = _others() if named == "auto" else [int(p) for p in named.split(",") if p]
    raised: dict[int, int] = {}
    pushes: list[int] = []

    def stop(*_: object) -> None:
        for push in pushes:
            try:
                os.kill(push, signal.SIGKILL)
            except OSError:
                pass  # it ended meanwhile
        for pid, old in raised.items():
            if _alive(pid):
                try:
                    _set_adj(pid, old)
                except OSError:
                    pass  # gone meanwhile
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        _set_adj("self", -1000)
        ready = "ready protected"
    except OSError:  # no CAP_SYS_RESOURCE: the victims go first instead
        for pid in victims:
            try:
                old = _adj(pid)
                _set_adj(pid, 1000)
                raised[pid] = old
            except OSError:
                pass  # it exited meanwhile: not a victim any more
        ready = "ready victims=" + ",".join(map(str, raised))
        if not raised:
            print(f"{MARK}: cannot set oom_score_adj: no CAP_SYS_RESOURCE, and no victim "
                  f"among {victims} could be made the first choice", file=sys.stderr)  # fmt: skip
            return 2
    if "--cgroup" in opts:
        with open(opts["--cgroup"], "w") as f:
            f.write(f"{os.getpid()}\n")

    def stop_at_eof() -> None:
        sys.stdin.read()
        stop()

    if until_eof:
        threading.Thread(target=stop_at_eof, daemon=True).start()
    print(ready, flush=True)
    # the holder takes part of the room and stays out of the OOM killer's way; a child, the
    # push, takes the rest until the victims are gone.  The kernel may count a second
    # kill while it still frees a big victim (the victim is no longer seen, its memory not
    # yet returned): that one is the push (999, or -1000 with the holder), never the holder.
    held = _fill(hold, step, interval, victims)
    if any(_alive(p) for p in victims):
        push = os.fork()
        if push == 0:
            _die_with_parent()
            if raised:
                _set_adj("self", 999)
            _fill(max_bytes - held, step, interval, victims)
            os._exit(0)
        pushes.append(push)
        _, status = os.waitpid(push, 0)
        pushes.clear()
        ended = f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else "done"
        print(f"push {ended}", flush=True)
    print(f"holding {held} bytes", flush=True)
    while True:
        time.sleep(3600)


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the push must not outlive the holder (a fork does not inherit it)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # no libc to ask: the cgroup's dissolve kills it (its command line is marked)


def _fill(size: int, step: int, interval: float, victims: list[int]) -> int:
    """Take *size* bytes step by step (while a victim lives) and keep them; the bytes taken."""
    total = 0
    while total < size and any(_alive(p) for p in victims):
        chunk = bytearray(min(step, size - total))
        chunk[::PAGE] = b"\1" * len(range(0, len(chunk), PAGE))  # touched: charged now
        _HELD.append(chunk)
        total += len(chunk)
        time.sleep(interval)
    return total


_HELD: list[bytearray] = []


if __name__ == "__main__" and MARK in sys.argv:
    sys.exit(main(sys.argv[sys.argv.index(MARK) :]))
