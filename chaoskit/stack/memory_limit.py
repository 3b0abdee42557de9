"""Memory pressure on one running service, ending as in production: the kernel's OOM killer.

A memory limit just above what the service holds, then a balloon
(:mod:`chaoskit.stack.balloon`) in the same memory cgroup that takes memory step by step
until the kernel, out of memory in that group, SIGKILLs the service.  The balloon is the
OOM killer's last choice (or the service its first), so the victim is the service; the
DR engine sees a dead replica and restarts it, outside the limit.  Both variants record
the kill as the kernel or the engine reported it, not as assumed (:meth:`await_kill`).

Process backend (:class:`MemoryLimit`): the kernel charges memory to the cgroup a process
was in when it touched it, and moves no charges when a process changes group (v2 never
did; v1's ``move_charge_at_immigrate`` is deprecated, refused with EINVAL by current
kernels).  A group made at the fault would be charged nothing of what the service holds,
and killing the service would not relieve it: the balloon would be the next victim.  So
every service starts in a memory cgroup of its own when the backend can limit memory
(:func:`service_group`, :func:`joining`: ``chaoskit-<owner pid>-<service>-memory-<n>``,
no limit, one per launch, reaped with the CPU groups), and the fault limits that group
to its usage plus a little.  A limit below what the kernel cannot reclaim is refused:
v1 says EBUSY; v2 would OOM-kill at once instead, so there the resident memory is
compared first (:class:`LimitBelowUsage` either way).  A restart is a new process in a
new group, outside the limit.

Docker (:class:`DockerMemoryLimit`): ``docker update --memory --memory-swap`` (no swap to
escape to), the balloon ``docker exec``'d in the container, the kill read from the
engine's events (``oom``, then ``die`` with 137).  Docker cannot remove a memory limit
(moby/moby#22516: no value means "none" to ``update``), so the lift raises it to all the
engine's memory with unlimited swap; usually there is nothing to lift, as the DR engine
replaced the killed container by a new one, without the limit.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from chaoskit.errors import BackendError, StackError
from chaoskit.stack import balloon
from chaoskit.stack.cgroup import OwnGroup, cannot_limit
from chaoskit.waiting import wait_until

HEADROOM = 64 << 20
"""Room above the current usage when no limit is given: a few balloon steps."""
KILL_WITHIN = 15.0
"""How long the balloon may take to bring the OOM killer (it fills the room in ~0.1 s)."""
MB = 1 << 20


def cannot_limit_memory() -> str | None:
    """Why the process backend cannot limit a service's memory here, or None when it can."""
    return cannot_limit("memory")


class LimitBelowUsage(StackError):
    """The limit asked for is below what the service holds already."""

    def __init__(self, service: str, limit: int, usage: int) -> None:
        super().__init__(f"a memory limit of {limit / MB:.1f} MB is below the current usage "
                         f"of {service} ({usage / MB:.1f} MB)")  # fmt: skip
        self.service, self.limit, self.usage = service, limit, usage


def resident_bytes(pid: int) -> int | None:
    """The process's resident memory (VmRSS), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def _chosen_limit(service: str, usage: int, limit: int | None, headroom: int) -> int:
    limit = usage + headroom if limit is None else limit
    if limit < usage:
        raise LimitBelowUsage(service, limit, usage)
    return limit


def service_group(service: str, launch: int) -> OwnGroup | None:
    """A memory cgroup for one launch of *service*, or None where none can be made."""
    if cannot_limit_memory() is not None:
        return None
    try:
        return OwnGroup("memory", f"{service}-memory-{launch}")
    except StackError:  # a service starts anyway; a memory fault on it says why not
        return None


def joining(group: OwnGroup, argv: list[str]) -> list[str]:
    """*argv* started inside *group*: a shell joins it and execs the command, so every
    page the service ever touches is charged there (it starts also if it cannot join:
    a memory fault then finds it outside the group and says so)."""
    return ["/bin/sh", "-c", '{ echo $$ > "$0"; } 2>/dev/null; exec "$@"',
            str(group.path / "cgroup.procs"), *argv]  # fmt: skip


class MemoryLimit:
    """Process *pid* (service *service*), started in *group*, may hold at most
    *limit_bytes* (default: the group's usage now + *headroom*) until :meth:`lift`;
    :meth:`inflate` starts the balloon.

    *proc*, the service's Popen when we are its parent, tells how it ended; *release*
    takes the group back at the lift (default: dissolve it)."""

    def __init__(
        self, group: OwnGroup, pid: int, service: str, limit_bytes: int | None = None, *,
        headroom: int = HEADROOM, proc: subprocess.Popen[bytes] | None = None,
        release: Callable[[OwnGroup], None] | None = None,
    ) -> None:  # fmt: skip
        self.group, self.pid, self.service, self.proc = group, pid, service, proc
        self._release = release or OwnGroup.dissolve
        self._lifted = False
        self.balloon: subprocess.Popen[bytes] | None = None
        if pid not in group.pids():
            raise StackError(f"cannot limit the memory of {service}: its process {pid} is not "
                             f"in {group.path}")  # fmt: skip
        self.usage = self._usage()
        self.limit = self.usage + headroom if limit_bytes is None else limit_bytes
        try:
            resident = resident_bytes(pid) or 0
            if group.v2 and self.limit < resident:  # v2 would OOM-kill it at once
                raise LimitBelowUsage(service, self.limit, resident)
            self._limit(self.limit)  # v1: the kernel reclaims what it can, or says EBUSY
        except OSError as e:
            self.group.unlimit()
            self._release(group)
            if e.errno == errno.EBUSY:  # v1: it holds more, and nothing more is reclaimable
                raise LimitBelowUsage(service, self.limit, self._usage()) from e
            raise StackError(f"cannot limit the memory of {service} in {group.path}: "
                             f"{e.strerror or e}") from e  # fmt: skip
        except BaseException:
            self._release(group)
            raise

    def _usage(self) -> int:
        return int(self.group.read("memory.current" if self.group.v2 else "memory.usage_in_bytes"))

    def _limit(self, limit: int) -> None:
        if self.group.v2:
            self.group.write("memory.max", limit)
            if (self.group.path / "memory.swap.max").exists():
                self.group.write("memory.swap.max", 0)
            return
        self.group.write("memory.limit_in_bytes", limit)
        if (self.group.path / "memory.memsw.limit_in_bytes").exists():  # swap accounting on
            self.group.write("memory.memsw.limit_in_bytes", limit)

    def oom_kills(self) -> int:
        """The group's OOM kills so far (v1 ``memory.oom_control``, v2 ``memory.events``)."""
        name = "memory.events" if self.group.v2 else "memory.oom_control"
        return _counter(self.group.read(name), "oom_kill")

    def inflate(self, spawn: Callable[[list[str]], subprocess.Popen[bytes]]) -> None:
        """Start the balloon with *spawn* and wait until it is in the group (or lift)."""
        try:
            self._inflate(spawn)
        except BaseException:
            self.lift()
            raise

    def _inflate(self, spawn: Callable[[list[str]], subprocess.Popen[bytes]]) -> None:
        self.balloon = spawn(balloon.argv(
            sys.executable, hold=(self.limit - self.usage) // 2, max_bytes=self.limit,
            victims=str(self.pid),
            cgroup=str(self.group.path / "cgroup.procs"),
        ))  # fmt: skip
        started = self.balloon

        def joined() -> bool:
            if started.poll() is not None:
                raise StackError(f"the memory balloon for {self.service} exited with "
                                 f"{started.returncode} before joining {self.group.path}")
            return started.pid in self.group.pids()

        wait_until(joined, 10, what=f"the memory balloon in {self.group.path}")

    def await_kill(self, timeout: float = KILL_WITHIN) -> dict[str, Any]:
        """Wait until the service is dead; what the kernel says of it (StackError if alive)."""
        try:
            wait_until(lambda: resident_bytes(self.pid) is None, timeout, interval=0.005,
                       what=f"{self.service} dead")  # fmt: skip
        except TimeoutError as e:
            raise StackError(f"{self.service} was not OOM-killed within {timeout:g}s under a "
                             f"{self.limit / MB:.1f} MB limit (oom_kill "
                             f"{self.oom_kills()})") from e  # fmt: skip
        code = None if self.proc is None else self.proc.wait(timeout)
        killed = None if code is None or code >= 0 else signal.Signals(-code).name
        kills = self.oom_kills()
        alive = self.balloon is not None and self.balloon.poll() is None
        return {"oom_kills": kills, "exit_signal": killed,
                "oom_killed": kills > 0 and killed in ("SIGKILL", None),
                "balloon_alive": alive}  # fmt: skip

    def facts(self) -> dict[str, Any]:
        return {"usage_bytes": self.usage, "limit_bytes": self.limit,
                "cgroup": str(self.group.path)}  # fmt: skip

    def lift(self) -> None:
        """Stop the balloon (SIGTERM: it puts back any oom_score_adj it raised), lift the
        group's limit and hand it back (a service still alive in it stays there)."""
        if self._lifted:
            return
        if self.balloon is not None and self.balloon.poll() is None:
            self.balloon.terminate()
            try:
                self.balloon.wait(5)
            except subprocess.TimeoutExpired:
                self.balloon.kill()
                self.balloon.wait()
        self.group.unlimit()
        self._release(self.group)
        self._lifted = True


class DockerMemoryLimit:
    """The container of *service* may hold at most *limit_bytes* (default: its usage +
    *headroom*) until :meth:`lift`; :meth:`inflate` execs the balloon with *python*."""

    def __init__(
        self, client: Any, container: str, service: str, limit_bytes: int | None, *,
        python: str, headroom: int = HEADROOM,
    ) -> None:  # fmt: skip
        from chaoskit.stack.docker_engine import engine_errors

        self.api, self.container, self.service, self.python = client.api, container, service, python
        self.since = time.time()
        with engine_errors(f"reading the memory usage of service {service!r}"):
            stats = self.api.stats(container, stream=False, one_shot=True)
        self.usage = int(stats.get("memory_stats", {}).get("usage") or 0)
        if not self.usage:
            raise StackError(f"cannot limit the memory of {service}: it is not running")
        self.limit = _chosen_limit(service, self.usage, limit_bytes, headroom)
        try:
            with engine_errors(f"limiting the memory of service {service!r}"):
                self.api.update_container(container, mem_limit=self.limit,
                                          memswap_limit=self.limit)  # fmt: skip
        except BackendError as e:
            if "unable to set memory limit" in str(e):  # runc: below its usage meanwhile
                raise LimitBelowUsage(service, self.limit, self.usage) from e
            raise
        self._exec: str | None = None
        self._stream: Any = None
        self.ready = ""

    def inflate(self) -> None:
        """Exec the balloon in the container and wait for its first line (or lift)."""
        try:
            self._inflate()
        except BaseException:
            self.lift()
            raise

    def _inflate(self) -> None:
        from docker.utils.socket import next_frame_header, read_exactly

        from chaoskit.stack.docker_engine import engine_errors

        command = balloon.argv(self.python, hold=(self.limit - self.usage) // 2,
                               max_bytes=self.limit, victims="auto", until_eof=True)  # fmt: skip
        with engine_errors(f"starting the memory balloon in service {self.service!r}"):
            self._exec = self.api.exec_create(self.container, command, stdin=True)["Id"]
            self._stream = self.api.exec_start(self._exec, socket=True)
        raw = getattr(self._stream, "_sock", self._stream)
        raw.settimeout(10)
        said = b""
        try:
            while b"\n" not in said:
                _, size = next_frame_header(raw)
                if size <= 0:
                    break
                said += read_exactly(raw, size)
        except OSError as e:
            said += f" ({e})".encode()
        if not said.startswith(b"ready"):
            raise StackError(f"the memory balloon in service {self.service!r} did not start: "
                             f"{said.decode(errors='replace').strip()}")  # fmt: skip
        self.ready = said.decode().split("\n", 1)[0]

    def await_kill(self, timeout: float = KILL_WITHIN) -> dict[str, Any]:
        """Wait for the container's ``die``; the engine's ``oom`` events (one for each time
        the kernel found the container out of memory, not one a kill) and exit code."""
        from chaoskit.stack.docker_engine import engine_errors

        seen: list[dict[str, Any]] = []

        def died() -> bool:
            with engine_errors(f"reading the events of service {self.service!r}"):
                seen[:] = list(self.api.events(since=self.since, until=time.time(), decode=True,
                                               filters={"container": self.container}))  # fmt: skip
            return any(e.get("status") == "die" for e in seen)

        try:
            wait_until(died, timeout, interval=0.05, what=f"{self.service} dead")
        except TimeoutError as e:
            raise StackError(f"{self.service} was not OOM-killed within {timeout:g}s under a "
                             f"{self.limit / MB:.1f} MB limit") from e
        ooms = sum(e.get("status") == "oom" for e in seen)
        die = next(e for e in seen if e.get("status") == "die")
        code = int(die.get("Actor", {}).get("Attributes", {}).get("exitCode", -1))
        killed = signal.Signals(code - 128).name if 128 < code < 128 + 65 else None
        return {"oom_events": ooms, "exit_code": code, "exit_signal": killed,
                "oom_killed": ooms > 0 and killed == "SIGKILL", "balloon": self.ready}  # fmt: skip

    def facts(self) -> dict[str, Any]:
        return {"usage_bytes": self.usage, "limit_bytes": self.limit, "container": self.container}

    def lift(self) -> None:
        """Close the balloon's stream (it exits), raise the limit to all the engine's memory;
        a container the DR engine replaced is gone, with its limit."""
        import docker.errors

        from chaoskit.stack.docker_engine import engine_errors

        if self._stream is not None:
            raw = getattr(self._stream, "_sock", None)  # SocketIO.close() forgets it
            self._stream.close()
            if raw is not None:
                raw.close()
            self._stream = None
            wait_until(lambda: not self._balloon_running(), 10, what="the memory balloon gone")
        try:
            with engine_errors(f"lifting the memory limit of service {self.service!r}"):
                everything = int(self.api.info()["MemTotal"])
                self.api.update_container(self.container, mem_limit=everything,
                                          memswap_limit=-1)  # fmt: skip
        except BackendError as e:
            if not isinstance(e.__cause__, docker.errors.NotFound):
                raise  # gone: a restart replaced it by one without the limit

    def _balloon_running(self) -> bool:
        import docker.errors

        try:
            return bool(self.api.exec_inspect(self._exec)["Running"])
        except docker.errors.NotFound:
            return False  # its container is gone
